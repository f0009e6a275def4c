//! The self-signed certificate bootstrap: generation (ECDSA P-256, the host's names and
//! addresses as SANs) and the atomic, mode-exact writing of the key and certificate.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustls::pki_types::DnsName;

use super::{TlsError, cert_fingerprint_sha256, io_err};

/// Validity of a generated certificate: 825 days is the longest lifetime Apple platforms accept.
const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(825 * 24 * 60 * 60);
/// Backdate `notBefore` a little so clients with a slightly slow clock accept a fresh certificate.
const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(60 * 60);

const TLS_DIR: &str = "tls";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

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

pub(super) fn host_name() -> Option<String> {
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
pub(super) fn host_name_libc() -> Option<String> {
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
pub(super) fn interface_addrs() -> Vec<IpAddr> {
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
