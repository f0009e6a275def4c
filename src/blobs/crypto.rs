//! Encryption at rest: the master key file, per-file key derivation, the encrypted header and
//! the per-chunk nonce and associated data (format described in `mod.rs`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aes_gcm::aead::KeyInit;
use aes_gcm::{Aes256Gcm, Nonce};
use sha2::{Digest, Sha256};

use super::{BlobError, create_private_dir_all, sync_dir};

const ENCRYPTED_MAGIC: &[u8; 8] = b"OTBLOBEN";
const ENCRYPTED_VERSION: u8 = 1;
pub(super) const ENCRYPTED_HEADER_LEN: usize = 48;
const SALT_LEN: usize = 32;
pub(super) const TAG_LEN: usize = 16;
pub(super) const KEY_LEN: usize = 32;
/// Bounds accepted when reading a header, so a damaged header cannot make us allocate gigabytes.
const MIN_CHUNK_SIZE: u32 = 1024;
const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
const KEY_DERIVATION_LABEL: &[u8] = b"opentranscribe blob v1";

/// The 32-byte master key. Debug never shows the bytes.
pub(super) struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MasterKey(<redacted>)")
    }
}

pub(super) fn load_or_create_key(path: &Path) -> Result<MasterKey, BlobError> {
    match fs::metadata(path) {
        Ok(_) => read_key_file(path),
        Err(error) if error.kind() == io::ErrorKind::NotFound => create_key_file(path),
        Err(error) => Err(BlobError::Key(format!(
            "cannot access key file {}: {error}",
            path.display()
        ))),
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey, BlobError> {
    let mut file = File::open(path).map_err(|error| {
        BlobError::Key(format!("cannot open key file {}: {error}", path.display()))
    })?;
    let metadata = file.metadata().map_err(|error| {
        BlobError::Key(format!("cannot stat key file {}: {error}", path.display()))
    })?;
    if !metadata.is_file() {
        return Err(BlobError::Key(format!(
            "key file {} is not a regular file",
            path.display()
        )));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BlobError::Key(format!(
            "key file {} has permissions {mode:04o}; it must not be accessible to group or others (chmod 600)",
            path.display()
        )));
    }
    if metadata.len() != KEY_LEN as u64 {
        return Err(BlobError::Key(format!(
            "key file {} is {} bytes; it must contain exactly {KEY_LEN} raw bytes",
            path.display(),
            metadata.len()
        )));
    }
    let mut key = [0u8; KEY_LEN];
    file.read_exact(&mut key).map_err(|error| {
        BlobError::Key(format!("cannot read key file {}: {error}", path.display()))
    })?;
    Ok(MasterKey(key))
}

fn create_key_file(path: &Path) -> Result<MasterKey, BlobError> {
    let key_error = |what: &str, error: io::Error| {
        BlobError::Key(format!(
            "cannot {what} key file {}: {error}",
            path.display()
        ))
    };
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_private_dir_all(parent).map_err(|error| key_error("create directory for", error))?;
    let key: [u8; KEY_LEN] = rand::random();
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        // Another process created it first: use theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => return read_key_file(path),
        Err(error) => return Err(key_error("create", error)),
    };
    let written = file
        .write_all(&key)
        .and_then(|()| file.sync_all())
        .and_then(|()| sync_dir(parent));
    if let Err(error) = written {
        // Never leave a short key file behind: it would be refused on the next start.
        let _ = fs::remove_file(path);
        return Err(key_error("write", error));
    }
    Ok(MasterKey(key))
}

/// HMAC-SHA256 (RFC 2104) for keys up to one block, which is all we need (32-byte master key).
pub(super) fn hmac_sha256(key: &[u8; KEY_LEN], message_parts: &[&[u8]]) -> [u8; 32] {
    const BLOCK_LEN: usize = 64;
    let mut inner_pad = [0x36u8; BLOCK_LEN];
    let mut outer_pad = [0x5cu8; BLOCK_LEN];
    for (index, byte) in key.iter().enumerate() {
        inner_pad[index] ^= byte;
        outer_pad[index] ^= byte;
    }
    let mut inner = Sha256::new();
    inner.update(inner_pad);
    for part in message_parts {
        inner.update(part);
    }
    let inner_digest = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(outer_pad);
    outer.update(inner_digest);
    outer.finalize().into()
}

pub(super) struct EncryptedHeader {
    pub(super) chunk_size: u32,
    salt: [u8; SALT_LEN],
}

impl EncryptedHeader {
    pub(super) fn new_random(chunk_size: u32) -> Self {
        EncryptedHeader {
            chunk_size,
            salt: rand::random(),
        }
    }

    pub(super) fn to_bytes(&self) -> [u8; ENCRYPTED_HEADER_LEN] {
        let mut bytes = [0u8; ENCRYPTED_HEADER_LEN];
        bytes[0..8].copy_from_slice(ENCRYPTED_MAGIC);
        bytes[8] = ENCRYPTED_VERSION;
        // bytes[9..12] reserved, zero.
        bytes[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        bytes[16..48].copy_from_slice(&self.salt);
        bytes
    }

    pub(super) fn parse(
        bytes: &[u8; ENCRYPTED_HEADER_LEN],
        sha256: &str,
    ) -> Result<Self, BlobError> {
        if &bytes[0..8] != ENCRYPTED_MAGIC {
            return Err(BlobError::corrupt(sha256, "bad magic in encrypted header"));
        }
        if bytes[8] != ENCRYPTED_VERSION {
            return Err(BlobError::corrupt(
                sha256,
                format!("unsupported encrypted blob version {}", bytes[8]),
            ));
        }
        if bytes[9..12] != [0, 0, 0] {
            return Err(BlobError::corrupt(sha256, "reserved header bytes not zero"));
        }
        let chunk_size = u32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&chunk_size) {
            return Err(BlobError::corrupt(
                sha256,
                format!("implausible chunk size {chunk_size}"),
            ));
        }
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&bytes[16..48]);
        Ok(EncryptedHeader { chunk_size, salt })
    }

    pub(super) fn file_cipher(&self, master_key: &MasterKey) -> Aes256Gcm {
        let file_key = hmac_sha256(&master_key.0, &[KEY_DERIVATION_LABEL, &self.salt]);
        Aes256Gcm::new(&file_key.into())
    }
}

/// Nonce = 4 zero bytes || chunk index; unique because every file has its own derived key.
pub(super) fn chunk_nonce(chunk_index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut nonce = [0u8; 12];
    nonce[4..12].copy_from_slice(&chunk_index.to_be_bytes());
    Nonce::from(nonce)
}

/// AAD = header || chunk index || last-chunk flag.
pub(super) fn chunk_associated_data(
    header_bytes: &[u8; ENCRYPTED_HEADER_LEN],
    chunk_index: u64,
    is_last: bool,
) -> [u8; ENCRYPTED_HEADER_LEN + 9] {
    let mut associated_data = [0u8; ENCRYPTED_HEADER_LEN + 9];
    associated_data[..ENCRYPTED_HEADER_LEN].copy_from_slice(header_bytes);
    associated_data[ENCRYPTED_HEADER_LEN..ENCRYPTED_HEADER_LEN + 8]
        .copy_from_slice(&chunk_index.to_be_bytes());
    associated_data[ENCRYPTED_HEADER_LEN + 8] = u8::from(is_last);
    associated_data
}
