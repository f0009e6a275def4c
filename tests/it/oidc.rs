//! OIDC sign-in against a real provider: panva's `oidc-provider` (npm, tests/oidc, installed by
//! scripts/test with `npm ci`) run by node. The test is the browser: it follows every redirect,
//! keeps each site's cookies, fills in the provider's login and consent forms, and ends with
//! our session cookie.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use crate::support::{TestServer, json};

const CLIENT_SECRET: &str = "test-client-secret-0123456789";

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the provider; returns it and its issuer URL.
fn start_provider(redirect_uri: &str, alg: &str) -> (Node, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
    assert!(
        dir.join("node_modules/oidc-provider").exists(),
        "run `npm ci` in tests/oidc first (scripts/test does)"
    );
    let port = free_port();
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("OIDC_PORT", port.to_string())
        .env("OIDC_CLIENT_ID", "opentranscribe")
        .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
        .env("OIDC_REDIRECT_URI", redirect_uri)
        .env("OIDC_ALG", alg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("node");
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    // Keep draining: a closed pipe would end the provider at its next log line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    assert!(line.starts_with("READY "), "provider: {line:?}");
    (Node(child), line.trim()["READY ".len()..].to_owned())
}

/// One site's cookies, as a browser keeps them (enough for these two sites).
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn absorb(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let expired = text.to_ascii_lowercase().contains("max-age=0")
                || text
                    .to_ascii_lowercase()
                    .contains("expires=thu, 01 jan 1970");
            if value.is_empty() || expired {
                self.0.remove(name);
            } else {
                self.0.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn form_action(html: &str) -> String {
    let start = html.find("action=\"").expect("a form") + "action=\"".len();
    let end = start + html[start..].find('"').unwrap();
    html[start..end].replace("&amp;", "&")
}

/// Signs `login` in at the provider, starting at our `/api/auth/oidc/start`; returns the
/// callback URL the provider sent the browser to, and our site's cookies.
async fn through_the_provider(server: &TestServer, issuer: &str, login: &str) -> (String, Jar) {
    let provider = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut ours = Jar::default();
    let mut theirs = Jar::default();
    let start = server
        .client
        .get(server.url("/api/auth/oidc/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    ours.absorb(&start);
    let mut url = start.headers()["location"].to_str().unwrap().to_owned();
    assert!(url.starts_with(issuer), "{url}");
    assert!(url.contains("code_challenge_method=S256") && url.contains("nonce="));
    for _ in 0..20 {
        if url.starts_with(&server.url("/api/auth/oidc/callback")) {
            return (url, ours);
        }
        let response = provider
            .get(&url)
            .header("cookie", theirs.header())
            .send()
            .await
            .unwrap();
        theirs.absorb(&response);
        let response = if response.status().is_redirection() {
            response
        } else {
            assert_eq!(response.status(), 200, "{url}");
            let html = response.text().await.unwrap();
            let action = form_action(&html);
            let body = if html.contains("name=\"login\"") {
                format!("prompt=login&login={login}&password=any-password")
            } else {
                "prompt=consent".to_owned()
            };
            let target = if action.starts_with('/') {
                format!("{issuer}{action}")
            } else {
                action
            };
            let posted = provider
                .post(target)
                .header("cookie", theirs.header())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap();
            theirs.absorb(&posted);
            assert!(posted.status().is_redirection(), "{}", posted.status());
            posted
        };
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        url = if location.starts_with('/') {
            format!("{issuer}{location}")
        } else {
            location
        };
    }
    panic!("the provider never sent the browser back");
}

async fn callback(server: &TestServer, url: &str, jar: &Jar) -> reqwest::Response {
    server
        .client
        .get(url)
        .header("cookie", jar.header())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn oidc_code_flow_with_pkce_against_a_real_provider() {
    code_flow("RS256", true).await;
}

/// The same flow with ID tokens signed ES256 (P-256), the other algorithm accepted.
#[tokio::test]
async fn oidc_id_tokens_signed_es256() {
    code_flow("ES256", false).await;
}

async fn code_flow(alg: &str, every_case: bool) {
    let port = free_port();
    let redirect = format!("https://localhost:{port}/api/auth/oidc/callback");
    let (_provider, issuer) = start_provider(&redirect, alg);
    let dir = tempfile::tempdir().unwrap();
    let secret_path = dir.path().join("client-secret");
    std::fs::write(&secret_path, format!("{CLIENT_SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let config = opentranscribe::config::OidcConfig {
        enabled: true,
        issuer: issuer.clone(),
        display_name: "Test IdP".to_owned(),
        client_id: "opentranscribe".to_owned(),
        client_secret_file: secret_path.display().to_string(),
        redirect_url: redirect.clone(),
        admin_groups: vec!["admins".to_owned()],
        allowed_groups: vec!["staff".to_owned()],
        allow_http: true,
        ..Default::default()
    };
    let server = TestServer::start_with(|c| {
        c.server.listen = format!("127.0.0.1:{port}").parse().unwrap();
        c.oidc = config;
    })
    .await;
    server.admin().await;
    let providers = server
        .client
        .get(server.url("/api/auth/providers"))
        .send()
        .await
        .unwrap();
    assert_eq!(json(providers).await["oidc"]["display_name"], "Test IdP");

    for (login, role) in [("alice", "user"), ("bob", "admin")] {
        let (url, jar) = through_the_provider(&server, &issuer, login).await;
        let response = callback(&server, &url, &jar).await;
        assert_eq!(response.status(), 303, "{login}");
        assert_eq!(response.headers()["location"], "/");
        let mut ours = Jar::default();
        ours.absorb(&response);
        assert!(
            !ours.0.contains_key("__Host-ot_oidc"),
            "flow cookie cleared"
        );
        let session = ours
            .0
            .get("__Host-ot_session")
            .expect("session cookie")
            .clone();
        let me = server
            .client
            .get(server.url("/api/auth/me"))
            .header("cookie", format!("__Host-ot_session={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(me.status(), 200);
        let me: Value = json(me).await;
        assert_eq!(me["username"], login);
        assert_eq!(me["role"], role);
        assert_eq!(me["source"], "oidc");
        // A code works once.
        let again = callback(&server, &url, &jar).await;
        assert_eq!(again.status(), 401);
        if !every_case {
            server.stop().await;
            return;
        }
    }

    // Not in an allowed group: refused.
    let (url, jar) = through_the_provider(&server, &issuer, "carol").await;
    let response = callback(&server, &url, &jar).await;
    assert_eq!(response.status(), 403);
    assert_eq!(json(response).await["code"], "directory-access-denied");

    // A callback in another browser (no flow cookie), or with another state, is refused.
    let (url, jar) = through_the_provider(&server, &issuer, "alice").await;
    let response = callback(&server, &url, &Jar::default()).await;
    assert_eq!(response.status(), 401);
    assert_eq!(json(response).await["code"], "oidc-failed");
    let forged = url.replace("state=", "state=x");
    let response = callback(&server, &forged, &jar).await;
    assert_eq!(response.status(), 401);
    let body = json(response).await;
    assert!(
        body["message"].as_str().unwrap().contains("state"),
        "{body}"
    );
    server.stop().await;
}

/// `doctor` checks the provider: discovery for the configured issuer and its signing keys; an
/// issuer that does not answer as configured is a problem it names.
#[test]
fn doctor_checks_the_oidc_provider() {
    let redirect = "https://localhost:8443/api/auth/oidc/callback";
    let (_provider, issuer) = start_provider(redirect, "RS256");
    let data = tempfile::tempdir().unwrap();
    let secret_path = data.path().join("client-secret");
    std::fs::write(&secret_path, format!("{CLIENT_SECRET}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let doctor = |issuer: &str| {
        let config = data.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[oidc]\nenabled = true\nissuer = \"{issuer}\"\nclient_id = \"opentranscribe\"\nclient_secret_file = \"{}\"\nredirect_url = \"{redirect}\"\nallow_http = true\n",
                secret_path.display()
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
    let ok = doctor(&issuer);
    assert!(
        ok.contains(&format!("oidc: ok, issuer {issuer} answers discovery")),
        "{ok}"
    );
    let wrong = doctor(&format!("{issuer}/elsewhere"));
    assert!(wrong.contains("oidc: FAILED"), "{wrong}");
    assert!(!wrong.contains("all checks passed"), "{wrong}");
}
