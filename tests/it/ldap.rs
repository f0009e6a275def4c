//! LDAP sign-in against a real OpenLDAP `slapd` (Debian's package) started by the test: its
//! own config and mdb database in a temporary directory, users and groups loaded with
//! `slapadd`, StartTLS and LDAPS with a CA generated here. scripts/test installs slapd.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{TestServer, json};

const SLAPD: &str = "/usr/sbin/slapd";
const SUFFIX: &str = "dc=example,dc=org";

pub struct Slapd {
    child: Child,
    pub dir: tempfile::TempDir,
    pub ldap_port: u16,
    pub ldaps_port: u16,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA and a certificate it signed for localhost / 127.0.0.1: (ca pem, cert pem, key pem).
pub fn test_pki() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "OpenTranscribe test CA");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

fn person(uid: &str, password: &str) -> String {
    format!(
        "dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nuserPassword: {password}\n\n"
    )
}

fn group(cn: &str, members: &[&str]) -> String {
    let mut text = format!("dn: cn={cn},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {cn}\n");
    for member in members {
        text.push_str(&format!("member: uid={member},ou=people,{SUFFIX}\n"));
    }
    text + "\n"
}

impl Slapd {
    /// slapd with alice (staff), bob (admins), carol (others) and a reader service account.
    pub fn start() -> Self {
        assert!(
            Path::new(SLAPD).exists(),
            "{SLAPD} is missing: apt-get install slapd ldap-utils (scripts/test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (ca, cert, key) = test_pki();
        std::fs::write(d.join("ca.pem"), ca).unwrap();
        std::fs::write(d.join("server.pem"), cert).unwrap();
        std::fs::write(d.join("server.key"), key).unwrap();
        std::fs::create_dir(d.join("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include /etc/ldap/schema/nis.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             argsfile {dir}/slapd.args\n\
             TLSCACertificateFile {dir}/ca.pem\n\
             TLSCertificateFile {dir}/server.pem\n\
             TLSCertificateKeyFile {dir}/server.key\n\
             database mdb\n\
             maxsize 16777216\n\
             suffix \"{SUFFIX}\"\n\
             rootdn \"cn=admin,{SUFFIX}\"\n\
             rootpw admin-secret\n\
             directory {dir}/db\n",
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let mut ldif = format!(
            "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
             dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
             dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n\n\
             dn: cn=reader,{SUFFIX}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: reader\nuserPassword: reader-secret\n\n"
        );
        ldif += &person("alice", "alice-ldap-pw");
        ldif += &person("bob", "bob-ldap-pw");
        ldif += &person("carol", "carol-ldap-pw");
        ldif += &group("staff", &["alice"]);
        ldif += &group("admins", &["bob"]);
        ldif += &group("others", &["carol"]);
        std::fs::write(d.join("data.ldif"), ldif).unwrap();
        let added = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .unwrap();
        assert!(
            added.status.success(),
            "slapadd: {}",
            String::from_utf8_lossy(&added.stderr)
        );
        let ldap_port = free_port();
        let ldaps_port = free_port();
        let child = Command::new(SLAPD)
            .arg("-d")
            .arg("0")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut slapd = Slapd {
            child,
            dir,
            ldap_port,
            ldaps_port,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", ldaps_port)).is_err() {
            if let Ok(Some(status)) = slapd.child.try_wait() {
                let mut err = String::new();
                use std::io::Read;
                slapd
                    .child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("slapd exited ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "slapd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        slapd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Changes the directory with `ldapmodify` as its root DN (plain LDAP on localhost).
    pub fn modify(&self, ldif: &str) {
        use std::io::Write;
        let mut child = Command::new("ldapmodify")
            .args(["-x", "-H"])
            .arg(format!("ldap://127.0.0.1:{}/", self.ldap_port))
            .args(["-D", &format!("cn=admin,{SUFFIX}"), "-w", "admin-secret"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify (ldap-utils)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn secret_file(dir: &Path, mode: u32) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("bind-password-{mode:o}"));
    std::fs::write(&path, "reader-secret\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn ldap_config(
    slapd: &Slapd,
    url: String,
    ca: &Path,
    mode: u32,
) -> opentranscribe::config::LdapConfig {
    opentranscribe::config::LdapConfig {
        enabled: true,
        url,
        starttls: true,
        ca_file: ca.display().to_string(),
        bind_dn: format!("cn=reader,{SUFFIX}"),
        bind_password_file: secret_file(slapd.dir.path(), mode),
        user_base: format!("ou=people,{SUFFIX}"),
        user_filter: "(&(objectClass=inetOrgPerson)(uid={username}))".to_owned(),
        group_base: format!("ou=groups,{SUFFIX}"),
        admin_groups: vec!["admins".to_owned()],
        allowed_groups: vec![format!("cn=staff,ou=groups,{SUFFIX}")],
        timeout_secs: 5,
        ..Default::default()
    }
}

async fn login(server: &TestServer, username: &str, password: &str) -> (u16, Value) {
    let response = server.login(username, password).await;
    let status = response.status().as_u16();
    (status, json(response).await)
}

#[tokio::test]
async fn ldap_sign_in_with_groups_starttls_ldaps_and_a_wrong_ca() {
    let slapd = Slapd::start();
    let starttls_url = format!("ldap://127.0.0.1:{}", slapd.ldap_port);
    let config = ldap_config(&slapd, starttls_url.clone(), &slapd.path("ca.pem"), 0o600);
    let server = TestServer::start_with(|c| c.ldap = config).await;
    let admin = server.admin().await;

    // A group member gets a session with the role of their groups.
    let (status, body) = login(&server, "bob", "bob-ldap-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "admin");
    assert_eq!(body["user"]["source"], "ldap");
    let (status, body) = login(&server, "alice", "alice-ldap-pw").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["role"], "user");
    let alice_token = body["token"].as_str().unwrap().to_owned();
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&alice_token)
        .send()
        .await
        .unwrap();
    assert_eq!(json(me).await["username"], "alice");

    // Wrong password, unknown name, empty password: 401.
    for (name, password) in [
        ("alice", "wrong-password"),
        ("nobody", "whatever-pw"),
        ("alice", ""),
        ("*", "alice-ldap-pw"),
    ] {
        let (status, body) = login(&server, name, password).await;
        assert!(
            status == 401 || status == 400,
            "{name}/{password}: {status} {body}"
        );
    }

    // Not in an allowed group: refused, and the local record is disabled.
    let (status, body) = login(&server, "carol", "carol-ldap-pw").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("directory-access-denied"))
    );
    let users = server
        .client
        .get(server.url("/api/admin/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let users = json(users).await;
    let carol = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "carol")
        .unwrap();
    assert_eq!(carol["disabled"], true);

    // Groups are read at every sign-in: alice joins the admins, carol the staff.
    slapd.modify(&format!(
        "dn: cn=admins,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=alice,ou=people,{SUFFIX}\n\n\
         dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: uid=carol,ou=people,{SUFFIX}\n"
    ));
    let (status, body) = login(&server, "alice", "alice-ldap-pw").await;
    assert_eq!(
        (status, body["user"]["role"].as_str()),
        (200, Some("admin"))
    );
    let (status, body) = login(&server, "carol", "carol-ldap-pw").await;
    assert_eq!(
        status, 200,
        "re-enabled once the directory allows it: {body}"
    );
    // Removed from every allowed group: disabled again, and the session ends.
    let carol_token = body["token"].as_str().unwrap().to_owned();
    slapd.modify(&format!(
        "dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\nmember: uid=carol,ou=people,{SUFFIX}\n"
    ));
    let (status, _) = login(&server, "carol", "carol-ldap-pw").await;
    assert_eq!(status, 403);
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&carol_token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    // A local account of the same name as a directory user comes first.
    let local = server
        .client
        .post(server.url("/api/admin/users"))
        .bearer_auth(&admin)
        .json(&json!({"username": "admin2", "password": "local-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 201);
    assert_eq!(login(&server, "admin2", "local-password").await.0, 200);
    server.stop().await;

    // StartTLS against a CA that did not sign the server's certificate: a clear error.
    let (other_ca, _, _) = test_pki();
    std::fs::write(slapd.path("other-ca.pem"), other_ca).unwrap();
    let config = ldap_config(
        &slapd,
        starttls_url.clone(),
        &slapd.path("other-ca.pem"),
        0o600,
    );
    let server = TestServer::start_with(|c| c.ldap = config).await;
    server.admin().await;
    let (status, body) = login(&server, "alice", "alice-ldap-pw").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (503, Some("directory-unavailable"))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("certificate") && message.contains("ca_file"),
        "{message}"
    );
    server.stop().await;

    // LDAPS with the right CA; a bind password file readable by others is refused.
    let ldaps_url = format!("ldaps://127.0.0.1:{}", slapd.ldaps_port);
    let config = ldap_config(&slapd, ldaps_url.clone(), &slapd.path("ca.pem"), 0o600);
    let server = TestServer::start_with(|c| c.ldap = config).await;
    server.admin().await;
    let (status, body) = login(&server, "bob", "bob-ldap-pw").await;
    assert_eq!(
        (status, body["user"]["role"].as_str()),
        (200, Some("admin")),
        "{body}"
    );
    server.stop().await;
    let config = ldap_config(&slapd, ldaps_url, &slapd.path("ca.pem"), 0o644);
    let server = TestServer::start_with(|c| c.ldap = config).await;
    server.admin().await;
    let (status, body) = login(&server, "bob", "bob-ldap-pw").await;
    assert_eq!(status, 503);
    assert!(body["message"].as_str().unwrap().contains("0600"), "{body}");
    server.stop().await;
}

/// Direct bind with a DN template (no service account), groups searched as the user.
#[tokio::test]
async fn ldap_direct_bind_with_a_dn_template() {
    let slapd = Slapd::start();
    let config = opentranscribe::config::LdapConfig {
        enabled: true,
        url: format!("ldap://127.0.0.1:{}", slapd.ldap_port),
        starttls: true,
        ca_file: slapd.path("ca.pem").display().to_string(),
        user_dn_template: format!("uid={{username}},ou=people,{SUFFIX}"),
        group_base: format!("ou=groups,{SUFFIX}"),
        admin_groups: vec!["admins".to_owned()],
        timeout_secs: 5,
        ..Default::default()
    };
    let server = TestServer::start_with(|c| c.ldap = config).await;
    server.admin().await;
    let (status, body) = login(&server, "bob", "bob-ldap-pw").await;
    assert_eq!(
        (status, body["user"]["role"].as_str()),
        (200, Some("admin")),
        "{body}"
    );
    let (status, body) = login(&server, "carol", "carol-ldap-pw").await;
    assert_eq!(
        (status, body["user"]["role"].as_str()),
        (200, Some("user")),
        "{body}"
    );
    assert_eq!(login(&server, "carol", "bob-ldap-pw").await.0, 401);
    server.stop().await;
}

/// Many first sign-ins of the same new directory user at once make exactly one local account:
/// every racer gets a session for the same user id, and the user list holds each name once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_ldap_sign_ins_make_exactly_one_account() {
    let slapd = Slapd::start();
    let url = format!("ldap://127.0.0.1:{}", slapd.ldap_port);
    let config = ldap_config(&slapd, url, &slapd.path("ca.pem"), 0o600);
    let users = crate::races::iterations().div_ceil(2).max(10);
    let mut ldif = String::new();
    for i in 0..users {
        ldif.push_str(&format!(
            "dn: uid=racer{i},ou=people,{SUFFIX}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: racer{i}\ncn: racer{i}\nsn: racer{i}\nuserPassword: racer-pw-{i}\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=staff,ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\n"
    ));
    for i in 0..users {
        ldif.push_str(&format!("member: uid=racer{i},ou=people,{SUFFIX}\n"));
    }
    slapd.modify(&ldif);
    let server = TestServer::start_with(|c| {
        c.ldap = config;
        // Attempts under way count against the lockout; six at once of one account are
        // legitimate here.
        c.auth.login_max_failures = 20;
        c.auth.login_ip_max_failures = 1000;
    })
    .await;
    let admin = server.admin().await;
    const RACERS: usize = 6;
    for i in 0..users {
        let name = format!("racer{i}");
        let password = format!("racer-pw-{i}");
        let logins = (0..RACERS).map(|_| login(&server, &name, &password));
        let answers = futures_util::future::join_all(logins).await;
        let mut ids = std::collections::BTreeSet::new();
        for (status, body) in &answers {
            assert_eq!(*status, 200, "{name}: {body}");
            assert_eq!(body["user"]["source"], "ldap", "{body}");
            ids.insert(body["user"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(ids.len(), 1, "{name}: {RACERS} racers made {ids:?}");
    }
    let listed = server
        .client
        .get(server.url("/api/admin/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let listed = json(listed).await;
    let names: Vec<&str> = listed
        .as_array()
        .or_else(|| listed["users"].as_array())
        .expect("a user list")
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    for i in 0..users {
        let name = format!("racer{i}");
        assert_eq!(
            names.iter().filter(|n| **n == name).count(),
            1,
            "{name} in {names:?}"
        );
    }
    server.stop().await;
}

/// `doctor` checks the directory: connection with StartTLS and the service account's bind;
/// a wrong service password or an untrusted CA is a problem it names.
#[test]
fn doctor_checks_the_ldap_directory() {
    let slapd = Slapd::start();
    let data = tempfile::tempdir().unwrap();
    let url = format!("ldap://127.0.0.1:{}", slapd.ldap_port);
    let doctor = |ca: &Path, password_file: &str| {
        let config = data.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[ldap]\nenabled = true\nurl = \"{url}\"\nstarttls = true\nca_file = \"{}\"\nbind_dn = \"cn=reader,{SUFFIX}\"\nbind_password_file = \"{password_file}\"\nuser_base = \"ou=people,{SUFFIX}\"\n",
                ca.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_opentranscribe"))
            .arg("doctor")
            .arg("--config")
            .arg(&config)
            .env_remove("OPENTRANSCRIBE_CONFIG")
            .env("OPENTRANSCRIBE_DATA_DIR", data.path())
            .env("OPENTRANSCRIBE_MODELS_DIR", crate::models::models_dir())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let good = secret_file(slapd.dir.path(), 0o600);
    let ok = doctor(&slapd.path("ca.pem"), &good);
    assert!(
        ok.contains(&format!(
            "ldap: ok, connected to {url} (StartTLS), service account cn=reader,{SUFFIX} bound"
        )),
        "{ok}"
    );
    let wrong = slapd.path("wrong-password");
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let refused = doctor(&slapd.path("ca.pem"), &wrong.display().to_string());
    assert!(
        refused.contains("ldap: FAILED") && refused.contains("service account"),
        "{refused}"
    );
    assert!(!refused.contains("all checks passed"), "{refused}");
    // A CA that did not sign the server's certificate.
    let (other_ca, _, _) = test_pki();
    let other = slapd.path("other-ca.pem");
    std::fs::write(&other, other_ca).unwrap();
    let untrusted = doctor(&other, &good);
    assert!(
        untrusted.contains("ldap: FAILED") && untrusted.contains("ca_file"),
        "{untrusted}"
    );
}
