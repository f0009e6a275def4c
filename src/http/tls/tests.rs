//! Unit tests of TLS: generated material, loading errors, the cipher policy, and handshakes
//! with rustls and (where installed) openssl clients.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use rustls::pki_types::DnsName;

use super::self_signed::{host_name, host_name_libc, interface_addrs};
use super::*;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, ClientConnection, ProtocolVersion, ServerConnection};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Instant;

const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Negotiated {
    version: ProtocolVersion,
    suite: CipherSuite,
    alpn: Option<Vec<u8>>,
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn have_openssl() -> bool {
    let found = Command::new("which")
        .arg("openssl")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("NOTE: openssl not on PATH, skipping openssl-based checks");
    }
    found
}

fn openssl(args: &[&str]) -> std::process::Output {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn generated() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ensure_self_signed(dir.path()).unwrap();
    (dir, cert, key)
}

fn drive<C, D>(conn: &mut C, sock: &mut TcpStream) -> Result<(), String>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
{
    while conn.is_handshaking() {
        conn.complete_io(sock).map_err(|e| e.to_string())?;
    }
    // Flush whatever the last flight left (e.g. the TLS 1.3 client Finished).
    while conn.wants_write() {
        conn.write_tls(sock).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn negotiated<D>(conn: &rustls::ConnectionCommon<D>) -> Negotiated {
    Negotiated {
        version: conn.protocol_version().unwrap(),
        suite: conn.negotiated_cipher_suite().unwrap().suite(),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
    }
}

/// Accept one connection on a loopback port and run the server side of a handshake.
fn serve_once(config: Arc<ServerConfig>) -> (u16, JoinHandle<Result<Negotiated, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        // Non-blocking accept with a deadline so a client that never connects cannot hang the test.
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return Err("no client connected".to_owned());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.to_string()),
            }
        };
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        drive(&mut conn, &mut sock)?;
        let result = negotiated(&conn);
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
        Ok(result)
    });
    (port, handle)
}

fn client_config(
    cert: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Option<Vec<rustls::SupportedCipherSuite>>,
) -> Arc<ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(suites) = suites {
        provider.cipher_suites = suites;
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(cert).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

fn connect(
    port: u16,
    cfg: Arc<ClientConfig>,
    name: ServerName<'static>,
) -> Result<Negotiated, String> {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut conn = ClientConnection::new(cfg, name).map_err(|e| e.to_string())?;
    drive(&mut conn, &mut sock)?;
    let result = negotiated(&conn);
    // Read until the server's close_notify so both sides finish cleanly.
    let _ = conn.complete_io(&mut sock);
    let _ = conn.reader().read_to_end(&mut Vec::new());
    Ok(result)
}

/// Full handshake against a fresh server; returns (client view, server view).
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> (Result<Negotiated, String>, Result<Negotiated, String>) {
    let (port, srv) = serve_once(server);
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let c = connect(port, client, name);
    (c, srv.join().unwrap())
}

#[test]
fn host_name_sources_agree() {
    let proc_name = host_name().unwrap();
    assert_eq!(host_name_libc().as_deref(), Some(proc_name.as_str()));
    // Loopback is always up, so getifaddrs must at least report it.
    assert!(interface_addrs().contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
}

#[test]
fn install_crypto_provider_is_idempotent() {
    install_crypto_provider();
    install_crypto_provider();
    assert!(CryptoProvider::get_default().is_some());
}

#[test]
fn ensure_self_signed_creates_files_with_modes_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ensure_self_signed(dir.path()).unwrap();
    assert_eq!(cert, dir.path().join("tls/cert.pem"));
    assert_eq!(key, dir.path().join("tls/key.pem"));
    assert_eq!(mode(&dir.path().join("tls")), 0o700);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&cert), 0o644);
    // No temp files left behind.
    let names: Vec<_> = fs::read_dir(dir.path().join("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let fp1 = cert_fingerprint_sha256(&cert).unwrap();
    let key1 = fs::read(&key).unwrap();
    let (cert2, key2) = ensure_self_signed(dir.path()).unwrap();
    assert_eq!((&cert2, &key2), (&cert, &key));
    assert_eq!(cert_fingerprint_sha256(&cert2).unwrap(), fp1);
    assert_eq!(fs::read(&key2).unwrap(), key1);
}

#[test]
fn ensure_self_signed_regenerates_incomplete_pair() {
    let (dir, cert, key) = generated();
    let fp1 = cert_fingerprint_sha256(&cert).unwrap();
    fs::remove_file(&cert).unwrap();
    ensure_self_signed(dir.path()).unwrap();
    assert_ne!(cert_fingerprint_sha256(&cert).unwrap(), fp1);
    load_server_config(&cert, &key).unwrap();
}

#[test]
fn generated_key_is_pkcs8_p256() {
    let (_dir, _cert, key) = generated();
    match read_key(&key).unwrap() {
        PrivateKeyDer::Pkcs8(_) => {}
        other => panic!("unexpected key type {other:?}"),
    }
}

#[test]
fn fingerprint_format() {
    let (_dir, cert, _key) = generated();
    let fp = cert_fingerprint_sha256(&cert).unwrap();
    assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
    assert!(
        fp.split(':')
            .all(|b| b.len() == 2 && b.chars().all(|c| matches!(c, '0'..='9' | 'A'..='F'))),
        "{fp}"
    );
    if have_openssl() {
        let cert = cert.to_str().unwrap();
        let out = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", cert]);
        let text = String::from_utf8(out.stdout).unwrap();
        let theirs = text.trim().rsplit('=').next().unwrap();
        assert_eq!(fp, theirs);
    }
}

#[test]
fn generated_config_loads_with_policy() {
    let (_dir, cert, key) = generated();
    let config = load_server_config(&cert, &key).unwrap();
    assert!(config.ignore_client_order);
    assert!(!config.ticketer.enabled());
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let suites = &config.crypto_provider().cipher_suites;
    let tls12: Vec<CipherSuite> = suites
        .iter()
        .filter(|s| s.version() == &version::TLS12)
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        tls12,
        vec![
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ]
    );
    let tls13: Vec<CipherSuite> = suites
        .iter()
        .filter(|s| s.version() == &version::TLS13)
        .map(|s| s.suite())
        .collect();
    assert_eq!(
        tls13,
        vec![
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    );
    assert_eq!(suites.len(), tls12.len() + tls13.len());
}

#[test]
fn garbage_cert_is_rejected_naming_file() {
    let (dir, _cert, key) = generated();
    let bad = dir.path().join("garbage.pem");
    fs::write(&bad, "this is not a certificate\n").unwrap();
    let err = load_server_config(&bad, &key).unwrap_err();
    assert_eq!(err.code(), "tls-cert");
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("no certificate found in {}", bad.display())
    );

    // PEM armour around bytes that are not X.509.
    fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let err = load_server_config(&bad, &key).unwrap_err();
    assert_eq!(err.code(), "tls-cert");
    assert!(err.to_string().contains(&*bad.to_string_lossy()), "{err}");
    assert!(
        err.to_string().starts_with("invalid certificate in"),
        "{err}"
    );

    let err = cert_fingerprint_sha256(&bad).unwrap_err();
    assert_eq!(err.code(), "tls-cert");
}

#[test]
fn empty_and_bad_key_files_are_rejected_naming_file() {
    let (dir, cert, _key) = generated();
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let err = load_server_config(&cert, &empty).unwrap_err();
    assert_eq!(err.code(), "tls-key");
    assert_eq!(
        err.to_string(),
        format!("no private key found in {}", empty.display())
    );

    // A certificate where the key should be is "no key", not a crash.
    let err = load_server_config(&cert, &cert).unwrap_err();
    assert_eq!(err.code(), "tls-key");

    let enc = dir.path().join("enc.pem");
    fs::write(
        &enc,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = load_server_config(&cert, &enc).unwrap_err();
    assert_eq!(err.code(), "tls-key");
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[test]
fn missing_files_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = load_server_config(&missing, &missing).unwrap_err();
    assert_eq!(err.code(), "tls-io");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
}

#[test]
fn mismatched_key_is_rejected() {
    let (_d1, cert_a, _key_a) = generated();
    let (_d2, _cert_b, key_b) = generated();
    let err = load_server_config(&cert_a, &key_b).unwrap_err();
    assert_eq!(err.code(), "tls-key-mismatch");
    let msg = err.to_string();
    assert!(msg.starts_with("key does not match certificate"), "{msg}");
    assert!(msg.contains(&*cert_a.to_string_lossy()), "{msg}");
    assert!(msg.contains(&*key_b.to_string_lossy()), "{msg}");
}

#[test]
fn handshake_tls13_with_sans() {
    let (_dir, cert, key) = generated();
    let server = load_server_config(&cert, &key).unwrap();
    let client = client_config(&cert, &[&version::TLS13, &version::TLS12], None);

    // Hostname verification against SANs: localhost, 127.0.0.1 and (if usable) the host name.
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(h) = host_name().filter(|h| DnsName::try_from(h.as_str()).is_ok()) {
        names.push(h);
    }
    for name in names {
        let (c, s) = handshake(server.clone(), client.clone(), &name);
        let c = c.unwrap_or_else(|e| panic!("client ({name}): {e}"));
        let s = s.unwrap();
        assert_eq!(c.version, ProtocolVersion::TLSv1_3);
        assert_eq!(s.version, ProtocolVersion::TLSv1_3);
        assert_eq!(s.suite, CipherSuite::TLS13_AES_128_GCM_SHA256);
        assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
    }

    // A name that is not in the certificate must fail verification.
    let (c, _s) = handshake(server, client, "not-in-cert.example");
    let err = c.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
}

#[test]
fn handshake_tls12_client() {
    let (_dir, cert, key) = generated();
    let server = load_server_config(&cert, &key).unwrap();
    let client = client_config(&cert, &[&version::TLS12], None);
    let (c, s) = handshake(server, client, "localhost");
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(c.version, ProtocolVersion::TLSv1_2);
    assert_eq!(s.version, ProtocolVersion::TLSv1_2);
    // Server order wins even though ring's client prefers AES-256 first.
    assert_eq!(
        s.suite,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    assert_eq!(c.alpn.as_deref(), Some(&b"h2"[..]));
}

#[test]
fn handshake_tls12_chacha_only_client_fails() {
    let (_dir, cert, key) = generated();
    let server = load_server_config(&cert, &key).unwrap();
    let client = client_config(
        &cert,
        &[&version::TLS12],
        Some(vec![
            cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]),
    );
    let (c, s) = handshake(server, client, "localhost");
    assert!(c.is_err(), "client unexpectedly succeeded: {c:?}");
    let err = s.unwrap_err();
    assert!(err.contains("NoCipherSuitesInCommon"), "{err}");
}

fn s_client(port: u16, args: &[&str]) -> (bool, String) {
    let connect = format!("127.0.0.1:{port}");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &connect])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn openssl_s_client_policy() {
    if !have_openssl() {
        return;
    }
    let (_dir, cert, key) = generated();
    let server = load_server_config(&cert, &key).unwrap();

    // TLS 1.1 must be refused by the server. SECLEVEL=0 lets OpenSSL 3 actually offer 1.1,
    // so the refusal comes from our server rather than the local client.
    let (port, srv) = serve_once(server.clone());
    let (ok, text) = s_client(port, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"]);
    let server_result = srv.join().unwrap();
    assert!(!ok, "TLS 1.1 handshake succeeded:\n{text}");
    let err = server_result.unwrap_err();
    assert!(
        err.contains("peer is incompatible") || err.contains("no client connected"),
        "{err}"
    );
    if err.contains("no client connected") {
        eprintln!("NOTE: local openssl refused to offer TLS 1.1 at all:\n{text}");
    }

    let (port, srv) = serve_once(server.clone());
    let (ok, text) = s_client(
        port,
        &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
    );
    let s = srv.join().unwrap();
    assert!(ok, "TLS 1.2 handshake failed:\n{text}");
    let s = s.unwrap();
    assert_eq!(s.version, ProtocolVersion::TLSv1_2);
    assert_eq!(
        s.suite,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
    );
    assert!(text.contains("ECDHE-ECDSA-AES128-GCM-SHA256"), "{text}");

    // A TLS 1.2 CBC suite from outside the policy is refused.
    let (port, srv) = serve_once(server);
    let (ok, text) = s_client(port, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA"]);
    let _ = srv.join().unwrap();
    assert!(!ok, "CBC suite accepted:\n{text}");
}

#[test]
fn openssl_rsa_pkcs1_and_sec1_keys_load() {
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_owned();

    // RSA certificate with a PKCS#1 ("BEGIN RSA PRIVATE KEY") key.
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost",
        "-addext",
        // req -x509 makes a CA certificate by default, which webpki refuses as a leaf.
        "basicConstraints=critical,CA:FALSE",
        "-keyout",
        &p("rsa8.pem"),
        "-out",
        &p("rsa.crt"),
    ]);
    openssl(&[
        "rsa",
        "-traditional",
        "-in",
        &p("rsa8.pem"),
        "-out",
        &p("rsa1.pem"),
    ]);
    assert!(
        fs::read_to_string(p("rsa1.pem"))
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    let rsa_cert = PathBuf::from(p("rsa.crt"));
    let server = load_server_config(&rsa_cert, Path::new(&p("rsa1.pem"))).unwrap();
    let client = client_config(&rsa_cert, &[&version::TLS12], None);
    let (c, s) = handshake(server, client, "localhost");
    c.unwrap();
    assert_eq!(
        s.unwrap().suite,
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    );

    // Our generated P-256 key converted to SEC1 ("BEGIN EC PRIVATE KEY").
    let (gen_dir, cert, key) = generated();
    let sec1 = gen_dir.path().join("sec1.pem");
    openssl(&[
        "ec",
        "-in",
        key.to_str().unwrap(),
        "-out",
        sec1.to_str().unwrap(),
    ]);
    assert!(
        fs::read_to_string(&sec1)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    assert!(matches!(read_key(&sec1).unwrap(), PrivateKeyDer::Sec1(_)));
    load_server_config(&cert, &sec1).unwrap();
}
