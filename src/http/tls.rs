//! TLS for the HTTP listener: self-signed certificate bootstrap, certificate/key loading and a
//! hardened rustls server configuration (ring provider, TLS 1.2 + 1.3, production-guide suites).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer};
use rustls::server::{ParsedCertificate, ServerConfig};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{InconsistentKeys, version};
use sha2::{Digest, Sha256};

/// Validity of a generated certificate: 825 days is the longest lifetime Apple platforms accept.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);
/// Backdate `notBefore` a little so clients with a slightly slow clock accept a fresh certificate.
const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(60 * 60);

const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Errors from loading or generating TLS material. Messages name the offending file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no certificate found in {}", .path.display())]
    NoCertificate { path: PathBuf },
    #[error("invalid certificate in {}: {reason}", .path.display())]
    InvalidCertificate { path: PathBuf, reason: String },
    #[error("no private key found in {}", .path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("invalid private key in {}: {reason}", .path.display())]
    InvalidPrivateKey { path: PathBuf, reason: String },
    #[error(
        "key does not match certificate (key {}, certificate {})",
        .key.display(),
        .cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("generating self-signed certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("building TLS server configuration failed: {0}")]
    Config(#[source] rustls::Error),
}

impl TlsError {
    /// Stable machine-readable code for logs and status output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Io { .. } => "tls-io",
            Self::NoCertificate { .. } | Self::InvalidCertificate { .. } => "tls-cert",
            Self::NoPrivateKey { .. } | Self::InvalidPrivateKey { .. } => "tls-key",
            Self::KeyMismatch { .. } => "tls-key-mismatch",
            Self::Generate(_) => "tls-generate",
            Self::Config(_) => "tls-config",
        }
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TlsError {
    move |source| TlsError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Install ring as the process-level rustls CryptoProvider; idempotent, safe to call many times and from tests.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed (by us or someone else); either way one exists.
    if CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The ring provider restricted to the production guide's cipher policy, in server preference order.
fn server_crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            // TLS 1.2: ECDHE + AES-GCM only, mirroring the NGINX `ssl_ciphers` line (no ChaCha20).
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// If dir/tls/cert.pem and dir/tls/key.pem exist, return their paths. Otherwise generate a self-signed certificate
/// (ECDSA P-256, valid ~825 days, CN = hostname, SubjectAltNames: the host name (read /proc/sys/kernel/hostname or libc::gethostname),
/// "localhost", 127.0.0.1, ::1 and every IP address of the host's interfaces (libc::getifaddrs)) and write them:
/// dir/tls created 0700, key file 0600 (written via temp file + rename so a crash never leaves half a key), cert 0644.
pub fn ensure_self_signed(data_dir: &Path) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join(TLS_DIR);
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);

    let cert_exists = exists(&cert_path)?;
    let key_exists = exists(&key_path)?;
    if cert_exists && key_exists {
        return Ok((cert_path, key_path));
    }
    if cert_exists || key_exists {
        // Key is written before the certificate, so a lone key is an interrupted earlier run.
        tracing::warn!(
            dir = %dir.display(),
            "incomplete TLS certificate/key pair, generating a new self-signed pair"
        );
    }

    fs::create_dir_all(&dir).map_err(io_err("cannot create", &dir))?;
    // Set explicitly: create_dir_all's mode is subject to the umask, and the dir may predate us.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
        .map_err(io_err("cannot set permissions on", &dir))?;

    let (cert_pem, key_pem) = generate_self_signed()?;
    write_atomic(&key_path, key_pem.as_bytes(), 0o600)?;
    write_atomic(&cert_path, cert_pem.as_bytes(), 0o644)?;
    // Make the renames durable before reporting success.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync", &dir))?;

    let fingerprint = cert_fingerprint_sha256(&cert_path)?;
    tracing::info!(
        cert = %cert_path.display(),
        sha256 = %fingerprint,
        "generated self-signed TLS certificate"
    );
    Ok((cert_path, key_path))
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(io_err("cannot access", path))
}

/// Returns (certificate PEM, PKCS#8 private key PEM).
fn generate_self_signed() -> Result<(String, String), TlsError> {
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair,
        KeyUsagePurpose, SanType,
    };

    // Only names that are valid DNS names can go into a dNSName SAN (webpki rejects others).
    let host = host_name().filter(|h| DnsName::try_from(h.as_str()).is_ok());

    let mut sans = Vec::new();
    let mut dns_names: Vec<String> = Vec::new();
    if let Some(h) = &host {
        dns_names.push(h.clone());
    }
    if !dns_names
        .iter()
        .any(|n| n.eq_ignore_ascii_case("localhost"))
    {
        dns_names.push("localhost".to_owned());
    }
    for name in dns_names {
        sans.push(SanType::DnsName(name.try_into()?));
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    for ip in interface_addrs() {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    sans.extend(ips.into_iter().map(SanType::IpAddress));

    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host.as_deref().unwrap_or("localhost"));
    params.distinguished_name = dn;
    let now = SystemTime::now();
    params.not_before = now
        .checked_sub(SELF_SIGNED_BACKDATE)
        .unwrap_or(SystemTime::UNIX_EPOCH)
        .into();
    params.not_after = (now + SELF_SIGNED_VALIDITY).into();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];

    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write via a temp file in the same directory + rename, so readers never see a partial file.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    // A stale temp file can only be left by a crashed process that had our pid.
    let _ = fs::remove_file(&tmp);

    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err("cannot create", &tmp))?;
        // The open mode is masked by the umask; make the final mode exact.
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set permissions on", &tmp))?;
        f.write_all(data).map_err(io_err("cannot write", &tmp))?;
        f.sync_all().map_err(io_err("cannot sync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("cannot rename into place", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn host_name() -> Option<String> {
    if let Ok(s) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let s = s.trim();
        if !s.is_empty() {
            return Some(s.to_owned());
        }
    }
    host_name_libc()
}

// The crate warns on unsafe code; these FFI calls are the module's only uses.
#[allow(unsafe_code)]
fn host_name_libc() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes and gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let s = std::ffi::CStr::from_bytes_until_nul(&buf)
        .ok()?
        .to_str()
        .ok()?
        .trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// IPv4/IPv6 addresses of all interfaces; empty (with a warning) if they cannot be listed.
#[allow(unsafe_code)]
fn interface_addrs() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success it receives a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "cannot list interface addresses; certificate will only cover loopback"
        );
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list from getifaddrs, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        // SAFETY: `ifa_addr` is null or points to a sockaddr whose family tells its real type.
        if let Some(ip) = unsafe { sockaddr_ip(ifa.ifa_addr) } {
            out.push(ip);
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// # Safety
/// `sa` must be null or point to a valid sockaddr of the type its `sa_family` names.
#[allow(unsafe_code)]
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: non-null and valid per the caller; read_unaligned avoids alignment assumptions.
    let family = unsafe { std::ptr::addr_of!((*sa).sa_family).read_unaligned() };
    match i32::from(family) {
        libc::AF_INET => {
            // SAFETY: family AF_INET means `sa` points to a sockaddr_in.
            let sin = unsafe { sa.cast::<libc::sockaddr_in>().read_unaligned() };
            Some(IpAddr::V4(Ipv4Addr::from(
                sin.sin_addr.s_addr.to_ne_bytes(),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: family AF_INET6 means `sa` points to a sockaddr_in6.
            let sin6 = unsafe { sa.cast::<libc::sockaddr_in6>().read_unaligned() };
            Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

/// Read a PEM certificate chain; the leaf must come first and parse as X.509.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err("cannot read", path))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidCertificate {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    let Some(leaf) = certs.first() else {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    };
    ParsedCertificate::try_from(leaf).map_err(|e| TlsError::InvalidCertificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(certs)
}

/// Read the first private key (PKCS#8, PKCS#1/RSA or SEC1) from a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = fs::read(path).map_err(io_err("cannot read", path))?;
    let invalid = |reason: String| TlsError::InvalidPrivateKey {
        path: path.to_path_buf(),
        reason,
    };
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(key)) => Ok(key),
        Err(e) => Err(invalid(format!("malformed PEM: {e}"))),
        // pemfile silently skips encrypted keys; say so instead of "no key found".
        Ok(None) if pem.windows(9).any(|w| w == b"ENCRYPTED") => Err(invalid(
            "encrypted private keys are not supported; decrypt it first".to_owned(),
        )),
        Ok(None) => Err(TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        }),
    }
}

/// Load cert chain + private key with rustls-pemfile (PKCS#8, PKCS#1/RSA and SEC1 keys) and build the server config:
/// TLS 1.2 and 1.3 only; for TLS 1.2 exactly these suites (the production guide's NGINX policy):
/// ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384
/// (no ChaCha20 for 1.2); TLS 1.3 suites: AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305. Server prefers its own order.
/// No stateless session tickets (the guide's `ssl_session_tickets off`); resumption uses a server-side cache.
/// ALPN: ["h2", "http/1.1"]. The key is checked against the certificate's public key.
pub fn load_server_config(
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(server_crypto_provider());

    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::InvalidPrivateKey {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        // Unknown: the key type cannot report its public key; rustls itself accepts that too.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(TlsError::KeyMismatch {
                cert: cert_path.to_path_buf(),
                key: key_path.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(TlsError::InvalidCertificate {
                path: cert_path.to_path_buf(),
                reason: e.to_string(),
            });
        }
    }

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    // The builder's default ticketer never issues stateless tickets (no ticket key to rotate or
    // leak); TLS 1.3 resumption goes through the default in-memory session cache instead.
    Ok(Arc::new(config))
}

/// SHA-256 fingerprint of the leaf certificate (DER) as uppercase colon-separated hex,
/// e.g. "AB:CD:...", the format of `openssl x509 -fingerprint -sha256`.
pub fn cert_fingerprint_sha256(cert_path: &Path) -> Result<String, TlsError> {
    let certs = read_certs(cert_path)?;
    let leaf = certs.first().ok_or_else(|| TlsError::NoCertificate {
        path: cert_path.to_path_buf(),
    })?;
    let digest = Sha256::digest(leaf.as_ref());
    Ok(digest
        .iter()
        .map(|b| hex::encode_upper([*b]))
        .collect::<Vec<_>>()
        .join(":"))
}

#[cfg(test)]
mod tests {
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
}
