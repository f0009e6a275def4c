//! Content-addressed blob store on local disk, with optional chunked AES-256-GCM encryption at rest.
//!
//! Layout under the root directory:
//!
//! ```text
//! root/tmp/<random>.tmp          uploads in progress (same filesystem, so the final rename is atomic)
//! root/ab/cd/<sha256>            plain blob, named by the SHA-256 of its content
//! root/ab/cd/<sha256>.enc        encrypted blob, named by the SHA-256 of its PLAINTEXT
//! ```
//!
//! Encrypted file format (all integers big-endian):
//!
//! ```text
//! header (48 bytes): magic "OTBLOBEN" (8) | version = 1 (1) | reserved zero (3) | chunk size C (u32) | salt (32)
//! chunks:            ciphertext of min(C, remaining) plaintext bytes | 16-byte GCM tag
//! ```
//!
//! Every chunk except the last holds exactly C plaintext bytes; the last holds 1..=C bytes (0 only for
//! an empty blob, which is stored as a single empty chunk). The per-file key is
//! HMAC-SHA256(master key, "opentranscribe blob v1" || salt) with a fresh random salt per file, so the
//! nonce can simply be the chunk index (4 zero bytes || u64 index) without ever repeating a
//! (key, nonce) pair. The associated data of every chunk is header || u64 index || last-chunk flag,
//! which detects reordering, truncation, extension and header tampering. The plaintext size follows
//! from the file size alone, so a reader can seek to any offset and decrypt only the chunks it needs.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

mod pins;
pub use pins::{BlobPin, PinnedBlob};

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use sha2::{Digest, Sha256};

/// Plaintext bytes per encrypted chunk for new blobs.
pub const ENCRYPTION_CHUNK_SIZE: usize = 64 * 1024;

const ENCRYPTED_MAGIC: &[u8; 8] = b"OTBLOBEN";
const ENCRYPTED_VERSION: u8 = 1;
const ENCRYPTED_HEADER_LEN: usize = 48;
const SALT_LEN: usize = 32;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Bounds accepted when reading a header, so a damaged header cannot make us allocate gigabytes.
const MIN_CHUNK_SIZE: u32 = 1024;
const MAX_CHUNK_SIZE: u32 = 16 * 1024 * 1024;
const KEY_DERIVATION_LABEL: &[u8] = b"opentranscribe blob v1";
const ENCRYPTED_SUFFIX: &str = ".enc";
const TEMP_DIR_NAME: &str = "tmp";
const TEMP_SUFFIX: &str = ".tmp";
const WRITE_BUFFER_SIZE: usize = 256 * 1024;
const PLAIN_READ_BUFFER_SIZE: usize = 64 * 1024;

/// Errors from the blob store. `code()` gives a stable machine-readable identifier.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {0} not found")]
    NotFound(String),
    #[error("blob storage I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("blob storage is full while {context}: {source}")]
    DiskFull {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {sha256} is corrupt: {reason}")]
    Corrupt { sha256: String, reason: String },
    #[error("blob encryption key problem: {0}")]
    Key(String),
}

impl BlobError {
    /// Stable kebab-case error code for APIs and logs.
    pub fn code(&self) -> &'static str {
        match self {
            BlobError::NotFound(_) => "blob-not-found",
            BlobError::Io { .. } => "blob-io",
            BlobError::DiskFull { .. } => "disk-full",
            BlobError::Corrupt { .. } => "blob-corrupt",
            BlobError::Key(_) => "blob-key",
        }
    }

    /// Classifies an I/O error, mapping "no space" and "quota exceeded" to `DiskFull`.
    /// An `io::Error` that wraps a `BlobError` (as returned by `BlobReader`/`BlobWriter`) is unwrapped.
    pub fn from_io(context: impl Into<String>, error: io::Error) -> BlobError {
        let error = match error.downcast::<BlobError>() {
            Ok(blob_error) => return blob_error,
            Err(error) => error,
        };
        if is_disk_full(&error) {
            BlobError::DiskFull {
                context: context.into(),
                source: error,
            }
        } else {
            BlobError::Io {
                context: context.into(),
                source: error,
            }
        }
    }

    fn corrupt(sha256: &str, reason: impl Into<String>) -> BlobError {
        BlobError::Corrupt {
            sha256: sha256.to_owned(),
            reason: reason.into(),
        }
    }

    /// Wraps this error in an `io::Error` (for the `Read`/`Write` impls) so `from_io` can recover it.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            BlobError::Corrupt { .. } => io::ErrorKind::InvalidData,
            BlobError::NotFound(_) => io::ErrorKind::NotFound,
            BlobError::DiskFull { .. } => io::ErrorKind::StorageFull,
            BlobError::Io { source, .. } => source.kind(),
            BlobError::Key(_) => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}

/// Lets `?` turn errors from `BlobReader`/`BlobWriter` (or plain I/O) back into a `BlobError`.
impl From<io::Error> for BlobError {
    fn from(error: io::Error) -> Self {
        BlobError::from_io("accessing blob data", error)
    }
}

/// True for "no space left on device" and "disk quota exceeded".
pub fn is_disk_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> BlobError {
    move |error| BlobError::from_io(context, error)
}

/// Result of a successful write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    /// Lowercase hex SHA-256 of the plaintext.
    pub sha256: String,
    /// Plaintext size in bytes.
    pub size: u64,
}

/// Counts from `BlobStore::sweep`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub removed_blobs: usize,
    pub kept_blobs: usize,
    pub removed_temp_files: usize,
    /// On-disk bytes freed (stored size, including encryption overhead).
    pub freed_bytes: u64,
}

/// The 32-byte master key. Debug never shows the bytes.
struct MasterKey([u8; KEY_LEN]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("MasterKey(<redacted>)")
    }
}

#[derive(Debug)]
struct StoreInner {
    root: PathBuf,
    temp_dir: PathBuf,
    master_key: Option<MasterKey>,
    /// The blob lifetime lock and the uploads in flight per hash (see `pins.rs`).
    pins: pins::Pins,
}

/// Handle to a blob directory. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<StoreInner>,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BlobStore")
            .field("root", &self.inner.root)
            .field("encrypt_new_blobs", &self.inner.master_key.is_some())
            .finish()
    }
}

impl BlobStore {
    /// root = blob directory (created if missing, mode 0700). key_file: Some(path) turns on encryption
    /// at rest for NEW blobs: the 32-byte key is read from that file, or generated (random) and written
    /// there with mode 0600 (parent dir created 0700) if missing. A key file with the wrong size or
    /// permissions wider than 0600 is an error. None = new blobs stored plain. Either way, plain and
    /// encrypted existing blobs are readable (encrypted ones need the key).
    pub fn open(root: &Path, key_file: Option<&Path>) -> Result<Self, BlobError> {
        create_private_dir_all(root)
            .map_err(io_error(format!("creating blob root {}", root.display())))?;
        let temp_dir = root.join(TEMP_DIR_NAME);
        create_private_dir_all(&temp_dir)
            .map_err(io_error(format!("creating {}", temp_dir.display())))?;
        let master_key = match key_file {
            Some(path) => Some(load_or_create_key(path)?),
            None => None,
        };
        Ok(BlobStore {
            inner: Arc::new(StoreInner {
                root: root.to_path_buf(),
                temp_dir,
                master_key,
                pins: pins::Pins::default(),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Whether new blobs are encrypted at rest.
    pub fn encrypts_new_blobs(&self) -> bool {
        self.inner.master_key.is_some()
    }

    /// Starts a new upload into a temp file under root/tmp/.
    pub fn begin_write(&self) -> Result<BlobWriter, BlobError> {
        let temp_name = format!("{}{TEMP_SUFFIX}", hex::encode(rand::random::<[u8; 16]>()));
        let temp_path = self.inner.temp_dir.join(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp_path)
            .map_err(io_error(format!(
                "creating temp file {}",
                temp_path.display()
            )))?;
        let mut writer = BlobWriter {
            store: Arc::clone(&self.inner),
            temp_path: Some(temp_path),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER_SIZE, file)),
            hasher: Sha256::new(),
            plaintext_len: 0,
            encryptor: None,
            poisoned: false,
        };
        if let Some(master_key) = &self.inner.master_key {
            let header = EncryptedHeader::new_random(ENCRYPTION_CHUNK_SIZE as u32);
            let header_bytes = header.to_bytes();
            if let Some(file) = writer.file.as_mut() {
                file.write_all(&header_bytes)
                    .map_err(io_error("writing encrypted blob header"))?;
            }
            writer.encryptor = Some(ChunkEncryptor {
                cipher: header.file_cipher(master_key),
                header_bytes,
                chunk: Vec::with_capacity(ENCRYPTION_CHUNK_SIZE),
                chunk_size: ENCRYPTION_CHUNK_SIZE,
                chunk_index: 0,
            });
        }
        Ok(writer)
    }

    /// Opens a blob for reading. Strings that are not 64 lowercase hex characters are "not found".
    pub fn open_read(&self, sha256: &str) -> Result<BlobReader, BlobError> {
        if !is_valid_sha256(sha256) {
            return Err(BlobError::NotFound(sha256.to_owned()));
        }
        let plain_path = self.plain_path(sha256);
        match File::open(&plain_path) {
            Ok(file) => return BlobReader::open_plain(file, &plain_path),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(BlobError::from_io(
                    format!("opening {}", plain_path.display()),
                    error,
                ));
            }
        }
        let encrypted_path = self.encrypted_path(sha256);
        let file = match File::open(&encrypted_path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(sha256.to_owned()));
            }
            Err(error) => {
                return Err(BlobError::from_io(
                    format!("opening {}", encrypted_path.display()),
                    error,
                ));
            }
        };
        let Some(master_key) = &self.inner.master_key else {
            return Err(BlobError::Key(format!(
                "blob {sha256} is encrypted at rest but no key file is configured"
            )));
        };
        BlobReader::open_encrypted(file, sha256, master_key)
    }

    pub fn exists(&self, sha256: &str) -> bool {
        is_valid_sha256(sha256)
            && (self.plain_path(sha256).is_file() || self.encrypted_path(sha256).is_file())
    }

    /// Removes the blob (plain and/or encrypted copy). Returns true if something was removed.
    pub fn remove(&self, sha256: &str) -> Result<bool, BlobError> {
        if !is_valid_sha256(sha256) {
            return Ok(false);
        }
        let mut removed = false;
        for path in [self.plain_path(sha256), self.encrypted_path(sha256)] {
            match fs::remove_file(&path) {
                Ok(()) => removed = true,
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(BlobError::from_io(
                        format!("removing {}", path.display()),
                        error,
                    ));
                }
            }
        }
        Ok(removed)
    }

    /// All stored sha256s, sorted, each once (even if both a plain and an encrypted copy exist).
    pub fn list(&self) -> Result<Vec<String>, BlobError> {
        Ok(self
            .stored_files()?
            .into_iter()
            .map(|stored| stored.sha256)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect())
    }

    /// Removes every stored blob whose sha is not in `referenced`, and every file in tmp/ older
    /// than `tmp_grace`. Meant for start-up, before uploads begin: a blob finished concurrently
    /// but not yet referenced would be removed.
    pub fn sweep(
        &self,
        referenced: &HashSet<String>,
        tmp_grace: Duration,
    ) -> Result<SweepReport, BlobError> {
        let mut report = SweepReport::default();
        let mut kept = BTreeSet::new();
        for stored in self.stored_files()? {
            if referenced.contains(&stored.sha256) {
                kept.insert(stored.sha256);
                continue;
            }
            let size = fs::symlink_metadata(&stored.path).map_or(0, |metadata| metadata.len());
            match fs::remove_file(&stored.path) {
                Ok(()) => {
                    report.removed_blobs += 1;
                    report.freed_bytes += size;
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(BlobError::from_io(
                        format!("removing orphan {}", stored.path.display()),
                        error,
                    ));
                }
            }
        }
        report.kept_blobs = kept.len();

        let now = SystemTime::now();
        let temp_dir = &self.inner.temp_dir;
        for entry in
            fs::read_dir(temp_dir).map_err(io_error(format!("listing {}", temp_dir.display())))?
        {
            let entry = entry.map_err(io_error(format!("listing {}", temp_dir.display())))?;
            let Ok(metadata) = entry.metadata() else {
                continue; // vanished meanwhile
            };
            if !metadata.is_file() {
                continue;
            }
            // A modification time in the future counts as fresh: never delete an upload in progress.
            let age = metadata
                .modified()
                .ok()
                .and_then(|modified| now.duration_since(modified).ok())
                .unwrap_or(Duration::ZERO);
            if age < tmp_grace {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    report.removed_temp_files += 1;
                    report.freed_bytes += metadata.len();
                }
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(BlobError::from_io(
                        format!("removing temp file {}", entry.path().display()),
                        error,
                    ));
                }
            }
        }
        Ok(report)
    }

    fn fan_out_dir(&self, sha256: &str) -> PathBuf {
        self.inner.root.join(&sha256[0..2]).join(&sha256[2..4])
    }

    fn plain_path(&self, sha256: &str) -> PathBuf {
        self.fan_out_dir(sha256).join(sha256)
    }

    fn encrypted_path(&self, sha256: &str) -> PathBuf {
        self.fan_out_dir(sha256)
            .join(format!("{sha256}{ENCRYPTED_SUFFIX}"))
    }

    /// Every blob file in the fan-out tree (a sha may appear twice: plain and encrypted).
    fn stored_files(&self) -> Result<Vec<StoredFile>, BlobError> {
        let mut found = Vec::new();
        for first_level in read_dir_names(&self.inner.root)? {
            if !is_fan_out_name(&first_level) {
                continue;
            }
            let first_dir = self.inner.root.join(&first_level);
            if !first_dir.is_dir() {
                continue;
            }
            for second_level in read_dir_names(&first_dir)? {
                if !is_fan_out_name(&second_level) {
                    continue;
                }
                let second_dir = first_dir.join(&second_level);
                if !second_dir.is_dir() {
                    continue;
                }
                let prefix = format!("{first_level}{second_level}");
                for file_name in read_dir_names(&second_dir)? {
                    let sha256 = file_name
                        .strip_suffix(ENCRYPTED_SUFFIX)
                        .unwrap_or(&file_name);
                    if is_valid_sha256(sha256) && sha256.starts_with(&prefix) {
                        found.push(StoredFile {
                            sha256: sha256.to_owned(),
                            path: second_dir.join(&file_name),
                        });
                    }
                }
            }
        }
        Ok(found)
    }
}

struct StoredFile {
    sha256: String,
    path: PathBuf,
}

/// Names of the entries in `dir` that are valid UTF-8 (others cannot be ours).
fn read_dir_names(dir: &Path) -> Result<Vec<String>, BlobError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(format!("listing {}", dir.display())))? {
        let entry = entry.map_err(io_error(format!("listing {}", dir.display())))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}

fn is_fan_out_name(name: &str) -> bool {
    name.len() == 2 && name.bytes().all(is_lower_hex)
}

fn is_lower_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
}

/// Exactly 64 lowercase hex characters; this is also what makes path traversal impossible.
pub fn is_valid_sha256(candidate: &str) -> bool {
    candidate.len() == 64 && candidate.bytes().all(is_lower_hex)
}

fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// Creates one directory (0700) if missing and makes its entry durable by syncing the parent.
fn ensure_durable_dir(path: &Path) -> io::Result<()> {
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            if let Some(parent) = path.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn load_or_create_key(path: &Path) -> Result<MasterKey, BlobError> {
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
fn hmac_sha256(key: &[u8; KEY_LEN], message_parts: &[&[u8]]) -> [u8; 32] {
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

struct EncryptedHeader {
    chunk_size: u32,
    salt: [u8; SALT_LEN],
}

impl EncryptedHeader {
    fn new_random(chunk_size: u32) -> Self {
        EncryptedHeader {
            chunk_size,
            salt: rand::random(),
        }
    }

    fn to_bytes(&self) -> [u8; ENCRYPTED_HEADER_LEN] {
        let mut bytes = [0u8; ENCRYPTED_HEADER_LEN];
        bytes[0..8].copy_from_slice(ENCRYPTED_MAGIC);
        bytes[8] = ENCRYPTED_VERSION;
        // bytes[9..12] reserved, zero.
        bytes[12..16].copy_from_slice(&self.chunk_size.to_be_bytes());
        bytes[16..48].copy_from_slice(&self.salt);
        bytes
    }

    fn parse(bytes: &[u8; ENCRYPTED_HEADER_LEN], sha256: &str) -> Result<Self, BlobError> {
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

    fn file_cipher(&self, master_key: &MasterKey) -> Aes256Gcm {
        let file_key = hmac_sha256(&master_key.0, &[KEY_DERIVATION_LABEL, &self.salt]);
        Aes256Gcm::new(&file_key.into())
    }
}

/// Nonce = 4 zero bytes || chunk index; unique because every file has its own derived key.
fn chunk_nonce(chunk_index: u64) -> Nonce<aes_gcm::aead::consts::U12> {
    let mut nonce = [0u8; 12];
    nonce[4..12].copy_from_slice(&chunk_index.to_be_bytes());
    Nonce::from(nonce)
}

/// AAD = header || chunk index || last-chunk flag.
fn chunk_associated_data(
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

struct ChunkEncryptor {
    cipher: Aes256Gcm,
    header_bytes: [u8; ENCRYPTED_HEADER_LEN],
    /// Plaintext of the chunk being filled.
    chunk: Vec<u8>,
    chunk_size: usize,
    chunk_index: u64,
}

impl ChunkEncryptor {
    /// Encrypts the buffered chunk in place and writes ciphertext || tag.
    fn emit_chunk(&mut self, output: &mut impl Write, is_last: bool) -> io::Result<()> {
        let associated_data = chunk_associated_data(&self.header_bytes, self.chunk_index, is_last);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                &chunk_nonce(self.chunk_index),
                &associated_data,
                &mut self.chunk,
            )
            .map_err(|_| io::Error::other("AES-GCM encryption failed"))?;
        output.write_all(&self.chunk)?;
        output.write_all(&tag)?;
        self.chunk.clear();
        self.chunk_index += 1;
        Ok(())
    }
}

/// An upload in progress. Write the content, then call `finish`. Dropping it unfinished removes
/// the temp file.
pub struct BlobWriter {
    store: Arc<StoreInner>,
    /// Some until the temp file is renamed into place or removed.
    temp_path: Option<PathBuf>,
    file: Option<BufWriter<File>>,
    hasher: Sha256,
    plaintext_len: u64,
    encryptor: Option<ChunkEncryptor>,
    /// Set after a failed write that left the encrypted stream inconsistent.
    poisoned: bool,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BlobWriter")
            .field("temp_path", &self.temp_path)
            .field("bytes_written", &self.plaintext_len)
            .field("encrypted", &self.encryptor.is_some())
            .finish()
    }
}

impl BlobWriter {
    /// Plaintext bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.plaintext_len
    }

    /// Like [`Self::finish_pinned`], without keeping the pin: for callers that record no
    /// reference (tests, tools).
    pub fn finish(self) -> Result<BlobInfo, BlobError> {
        self.finish_pinned().map(|pinned| pinned.info)
    }

    /// Flushes and fsyncs the temp file, renames it to root/ab/cd/<sha>[.enc] and fsyncs that
    /// directory. If the blob already exists, the temp file is dropped instead (dedup). Both
    /// happen under the blob lifetime lock, and the hash stays pinned (not removable) until the
    /// returned pin is dropped: drop it once the file record referencing it is committed.
    pub fn finish_pinned(mut self) -> Result<PinnedBlob, BlobError> {
        if self.poisoned {
            return Err(BlobError::Io {
                context: "finishing blob".to_owned(),
                source: io::Error::other("an earlier write to this blob failed"),
            });
        }
        let Some(mut buffered) = self.file.take() else {
            return Err(BlobError::Io {
                context: "finishing blob".to_owned(),
                source: io::Error::other("blob writer already closed"),
            });
        };
        if let Some(encryptor) = self.encryptor.as_mut() {
            encryptor
                .emit_chunk(&mut buffered, true)
                .map_err(io_error("writing final encrypted chunk"))?;
        }
        let file = buffered
            .into_inner()
            .map_err(|error| BlobError::from_io("flushing blob temp file", error.into_error()))?;
        file.sync_all()
            .map_err(io_error("syncing blob temp file"))?;
        drop(file);

        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let info = BlobInfo {
            sha256,
            size: self.plaintext_len,
        };
        let Some(temp_path) = self.temp_path.clone() else {
            return Err(BlobError::Io {
                context: "finishing blob".to_owned(),
                source: io::Error::other("blob temp file missing"),
            });
        };
        let store = BlobStore {
            inner: Arc::clone(&self.store),
        };
        let mut pins = self.store.pins.lock();
        if store.exists(&info.sha256) {
            // Dedup: identical content is already stored; Drop removes the temp file.
            let pin = BlobPin::new(&self.store, &mut pins, &info.sha256);
            return Ok(PinnedBlob { info, pin });
        }
        let destination = if self.encryptor.is_some() {
            store.encrypted_path(&info.sha256)
        } else {
            store.plain_path(&info.sha256)
        };
        let second_level_dir = store.fan_out_dir(&info.sha256);
        if let Some(first_level_dir) = second_level_dir.parent() {
            ensure_durable_dir(first_level_dir)
                .map_err(io_error(format!("creating {}", first_level_dir.display())))?;
        }
        ensure_durable_dir(&second_level_dir)
            .map_err(io_error(format!("creating {}", second_level_dir.display())))?;
        fs::rename(&temp_path, &destination).map_err(io_error(format!(
            "moving blob into place at {}",
            destination.display()
        )))?;
        self.temp_path = None;
        let pin = BlobPin::new(&self.store, &mut pins, &info.sha256);
        drop(pins);
        sync_dir(&second_level_dir)
            .map_err(io_error(format!("syncing {}", second_level_dir.display())))?;
        Ok(PinnedBlob { info, pin })
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(io::Error::other("an earlier write to this blob failed"));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("blob writer already closed"));
        };
        let Some(encryptor) = self.encryptor.as_mut() else {
            let written = file.write(buf)?;
            self.hasher.update(&buf[..written]);
            self.plaintext_len += written as u64;
            return Ok(written);
        };
        if buf.is_empty() {
            return Ok(0);
        }
        // A full chunk is only emitted once more data arrives, so the final chunk (flagged as
        // last in finish) is never empty unless the whole blob is.
        if encryptor.chunk.len() == encryptor.chunk_size
            && let Err(error) = encryptor.emit_chunk(file, false)
        {
            self.poisoned = true;
            return Err(error);
        }
        let accepted = (encryptor.chunk_size - encryptor.chunk.len()).min(buf.len());
        encryptor.chunk.extend_from_slice(&buf[..accepted]);
        self.hasher.update(&buf[..accepted]);
        self.plaintext_len += accepted as u64;
        Ok(accepted)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // Close before unlinking; errors are irrelevant since the content is being discarded.
        self.file = None;
        if let Some(temp_path) = self.temp_path.take() {
            let _ = fs::remove_file(temp_path);
        }
    }
}

/// Reads a blob's plaintext, with random access.
pub struct BlobReader {
    source: ReaderSource,
}

enum ReaderSource {
    Plain { reader: BufReader<File>, len: u64 },
    Encrypted(Box<EncryptedReader>),
}

struct EncryptedReader {
    file: File,
    sha256: String,
    cipher: Aes256Gcm,
    header_bytes: [u8; ENCRYPTED_HEADER_LEN],
    chunk_size: u64,
    plaintext_len: u64,
    chunk_count: u64,
    position: u64,
    /// Index of the chunk whose plaintext is in `chunk`, if any.
    cached_chunk: Option<u64>,
    chunk: Vec<u8>,
}

impl fmt::Debug for BlobReader {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("BlobReader")
            .field("len", &self.len())
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

impl BlobReader {
    fn open_plain(file: File, path: &Path) -> Result<Self, BlobError> {
        let len = file
            .metadata()
            .map_err(io_error(format!("reading metadata of {}", path.display())))?
            .len();
        Ok(BlobReader {
            source: ReaderSource::Plain {
                reader: BufReader::with_capacity(PLAIN_READ_BUFFER_SIZE, file),
                len,
            },
        })
    }

    fn open_encrypted(file: File, sha256: &str, master_key: &MasterKey) -> Result<Self, BlobError> {
        let file_len = file
            .metadata()
            .map_err(io_error(format!("reading metadata of blob {sha256}")))?
            .len();
        if file_len < ENCRYPTED_HEADER_LEN as u64 {
            return Err(BlobError::corrupt(sha256, "file shorter than its header"));
        }
        let mut header_bytes = [0u8; ENCRYPTED_HEADER_LEN];
        file.read_exact_at(&mut header_bytes, 0)
            .map_err(io_error(format!("reading header of blob {sha256}")))?;
        let header = EncryptedHeader::parse(&header_bytes, sha256)?;
        let chunk_size = u64::from(header.chunk_size);
        let stored_chunk_size = chunk_size + TAG_LEN as u64;
        let body_len = file_len - ENCRYPTED_HEADER_LEN as u64;
        let full_chunks = body_len / stored_chunk_size;
        let remainder = body_len % stored_chunk_size;
        let (chunk_count, plaintext_len) = if remainder == 0 {
            if full_chunks == 0 {
                return Err(BlobError::corrupt(sha256, "no chunks after header"));
            }
            (full_chunks, full_chunks * chunk_size)
        } else if remainder < TAG_LEN as u64 || (remainder == TAG_LEN as u64 && full_chunks > 0) {
            return Err(BlobError::corrupt(
                sha256,
                "file size is not a valid chunk layout (truncated?)",
            ));
        } else {
            (
                full_chunks + 1,
                full_chunks * chunk_size + remainder - TAG_LEN as u64,
            )
        };
        let mut reader = EncryptedReader {
            file,
            sha256: sha256.to_owned(),
            cipher: header.file_cipher(master_key),
            header_bytes,
            chunk_size,
            plaintext_len,
            chunk_count,
            position: 0,
            cached_chunk: None,
            chunk: Vec::with_capacity(header.chunk_size as usize + TAG_LEN),
        };
        // Authenticating the last chunk up front makes len() trustworthy (truncation/extension
        // is caught here, not halfway through an HTTP response).
        reader.load_chunk(chunk_count - 1)?;
        Ok(BlobReader {
            source: ReaderSource::Encrypted(Box::new(reader)),
        })
    }

    /// Plaintext size in bytes.
    pub fn len(&self) -> u64 {
        match &self.source {
            ReaderSource::Plain { len, .. } => *len,
            ReaderSource::Encrypted(reader) => reader.plaintext_len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the blob is stored encrypted.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.source, ReaderSource::Encrypted(_))
    }
}

impl EncryptedReader {
    /// Reads and authenticates one chunk into `self.chunk`.
    fn load_chunk(&mut self, chunk_index: u64) -> Result<(), BlobError> {
        if self.cached_chunk == Some(chunk_index) {
            return Ok(());
        }
        self.cached_chunk = None;
        let is_last = chunk_index + 1 == self.chunk_count;
        let chunk_start = chunk_index * self.chunk_size;
        let plain_len = (self.plaintext_len - chunk_start).min(self.chunk_size) as usize;
        let stored_offset =
            ENCRYPTED_HEADER_LEN as u64 + chunk_index * (self.chunk_size + TAG_LEN as u64);
        self.chunk.resize(plain_len + TAG_LEN, 0);
        self.file
            .read_exact_at(&mut self.chunk, stored_offset)
            .map_err(|error| {
                if error.kind() == io::ErrorKind::UnexpectedEof {
                    BlobError::corrupt(&self.sha256, "file truncated while reading")
                } else {
                    BlobError::from_io(format!("reading blob {}", self.sha256), error)
                }
            })?;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(&self.chunk[plain_len..]);
        self.chunk.truncate(plain_len);
        let associated_data = chunk_associated_data(&self.header_bytes, chunk_index, is_last);
        self.cipher
            .decrypt_in_place_detached(
                &chunk_nonce(chunk_index),
                &associated_data,
                &mut self.chunk,
                &Tag::from(tag_bytes),
            )
            .map_err(|_| {
                BlobError::corrupt(
                    &self.sha256,
                    format!("chunk {chunk_index} failed authentication (damaged, reordered, truncated or wrong key)"),
                )
            })?;
        self.cached_chunk = Some(chunk_index);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, BlobError> {
        if buf.is_empty() || self.position >= self.plaintext_len {
            return Ok(0);
        }
        let chunk_index = self.position / self.chunk_size;
        self.load_chunk(chunk_index)?;
        let offset_in_chunk = (self.position - chunk_index * self.chunk_size) as usize;
        let available = &self.chunk[offset_in_chunk..];
        let copied = available.len().min(buf.len());
        buf[..copied].copy_from_slice(&available[..copied]);
        self.position += copied as u64;
        Ok(copied)
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.source {
            ReaderSource::Plain { reader, .. } => reader.read(buf),
            ReaderSource::Encrypted(reader) => reader.read(buf).map_err(BlobError::into_io),
        }
    }
}

impl Seek for BlobReader {
    fn seek(&mut self, position: SeekFrom) -> io::Result<u64> {
        match &mut self.source {
            ReaderSource::Plain { reader, .. } => reader.seek(position),
            ReaderSource::Encrypted(reader) => {
                let target = match position {
                    SeekFrom::Start(offset) => Some(offset),
                    SeekFrom::End(delta) => reader.plaintext_len.checked_add_signed(delta),
                    SeekFrom::Current(delta) => reader.position.checked_add_signed(delta),
                };
                let Some(target) = target else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "seek to a negative or overflowing position",
                    ));
                };
                reader.position = target;
                Ok(target)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = ENCRYPTION_CHUNK_SIZE;

    /// Deterministic SplitMix64, so failures reproduce without extra dependencies.
    struct TestRng(u64);

    impl TestRng {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut mixed = self.0;
            mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            mixed ^ (mixed >> 31)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next_u64() % bound
        }

        fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next_u64() as u8).collect()
        }
    }

    fn sha256_hex(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    struct TestStores {
        _dir: tempfile::TempDir,
        root: PathBuf,
        key_path: PathBuf,
    }

    impl TestStores {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("blobs");
            let key_path = dir.path().join("keys").join("blob.key");
            TestStores {
                _dir: dir,
                root,
                key_path,
            }
        }

        fn plain(&self) -> BlobStore {
            BlobStore::open(&self.root, None).unwrap()
        }

        fn encrypted(&self) -> BlobStore {
            BlobStore::open(&self.root, Some(&self.key_path)).unwrap()
        }
    }

    fn put(store: &BlobStore, data: &[u8]) -> BlobInfo {
        let mut writer = store.begin_write().unwrap();
        // Odd-sized pieces exercise the chunk boundary handling in the writer.
        for piece in data.chunks(7919) {
            writer.write_all(piece).unwrap();
        }
        assert_eq!(writer.bytes_written(), data.len() as u64);
        writer.finish().unwrap()
    }

    fn read_all(store: &BlobStore, sha256: &str) -> Vec<u8> {
        let mut reader = store.open_read(sha256).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        out
    }

    fn stored_path(store: &BlobStore, sha256: &str) -> PathBuf {
        let encrypted = store.encrypted_path(sha256);
        if encrypted.exists() {
            encrypted
        } else {
            store.plain_path(sha256)
        }
    }

    fn temp_file_count(store: &BlobStore) -> usize {
        fs::read_dir(store.root().join(TEMP_DIR_NAME))
            .unwrap()
            .count()
    }

    fn interesting_sizes() -> Vec<usize> {
        vec![0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]
    }

    fn round_trip(store: &BlobStore, expect_encrypted: bool) {
        let mut rng = TestRng(42);
        for size in interesting_sizes() {
            let data = rng.bytes(size);
            let info = put(store, &data);
            assert_eq!(info.sha256, sha256_hex(&data), "size {size}");
            assert_eq!(info.size, size as u64);
            assert!(store.exists(&info.sha256));
            let path = stored_path(store, &info.sha256);
            assert_eq!(
                path.to_string_lossy().ends_with(ENCRYPTED_SUFFIX),
                expect_encrypted
            );
            assert!(
                path.starts_with(
                    store
                        .root()
                        .join(&info.sha256[0..2])
                        .join(&info.sha256[2..4])
                )
            );
            let file_mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(file_mode, 0o600);
            let on_disk = fs::read(&path).unwrap();
            if expect_encrypted {
                assert_ne!(on_disk.get(ENCRYPTED_HEADER_LEN..), Some(&data[..]));
            } else {
                assert_eq!(on_disk, data);
            }
            let reader = store.open_read(&info.sha256).unwrap();
            assert_eq!(reader.len(), size as u64);
            assert_eq!(reader.is_empty(), size == 0);
            assert_eq!(reader.is_encrypted(), expect_encrypted);
            assert_eq!(read_all(store, &info.sha256), data, "size {size}");
        }
        assert_eq!(temp_file_count(store), 0);
    }

    #[test]
    fn round_trip_plain() {
        let stores = TestStores::new();
        round_trip(&stores.plain(), false);
    }

    #[test]
    fn round_trip_encrypted() {
        let stores = TestStores::new();
        round_trip(&stores.encrypted(), true);
    }

    fn random_ranges(store: &BlobStore) {
        let mut rng = TestRng(7);
        let data = rng.bytes(3 * CHUNK + 777);
        let info = put(store, &data);
        let mut reader = store.open_read(&info.sha256).unwrap();
        for _ in 0..300 {
            let start = rng.below(data.len() as u64 + 10) as usize;
            let want = rng.below(2 * CHUNK as u64 + 5) as usize;
            let position = match rng.below(3) {
                0 => reader.seek(SeekFrom::Start(start as u64)).unwrap(),
                1 => reader
                    .seek(SeekFrom::End(start as i64 - data.len() as i64))
                    .unwrap(),
                _ => {
                    let current = reader.stream_position().unwrap() as i64;
                    reader
                        .seek(SeekFrom::Current(start as i64 - current))
                        .unwrap()
                }
            };
            assert_eq!(position, start as u64);
            let mut got = Vec::new();
            (&mut reader)
                .take(want as u64)
                .read_to_end(&mut got)
                .unwrap();
            let expected_end = (start + want).min(data.len());
            let expected = data.get(start..expected_end).unwrap_or(&[]);
            assert_eq!(got, expected, "range {start}+{want}");
        }
        assert!(
            reader
                .seek(SeekFrom::End(-(data.len() as i64) - 1))
                .is_err()
        );
    }

    #[test]
    fn random_ranges_plain() {
        let stores = TestStores::new();
        random_ranges(&stores.plain());
    }

    #[test]
    fn random_ranges_encrypted() {
        let stores = TestStores::new();
        random_ranges(&stores.encrypted());
    }

    #[test]
    fn dedup_keeps_one_copy_and_no_temp_files() {
        let stores = TestStores::new();
        let store = stores.encrypted();
        let first = put(&store, b"same content");
        let path = stored_path(&store, &first.sha256);
        let before = fs::read(&path).unwrap();
        let second = put(&store, b"same content");
        assert_eq!(first, second);
        // The existing file was kept (a fresh encryption would have a different salt).
        assert_eq!(fs::read(&path).unwrap(), before);
        assert_eq!(store.list().unwrap(), vec![first.sha256.clone()]);
        assert_eq!(temp_file_count(&store), 0);
        // A plain store sees the encrypted copy as existing too and does not add a plain one.
        let plain_store = stores.plain();
        put(&plain_store, b"same content");
        assert!(!plain_store.plain_path(&first.sha256).exists());
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let stores = TestStores::new();
        for store in [stores.plain(), stores.encrypted()] {
            let mut writer = store.begin_write().unwrap();
            writer.write_all(&vec![5u8; CHUNK * 2 + 3]).unwrap();
            assert_eq!(temp_file_count(&store), 1);
            drop(writer);
            assert_eq!(temp_file_count(&store), 0);
            assert!(store.list().unwrap().is_empty());
        }
    }

    #[test]
    fn flipped_byte_is_corrupt_only_for_its_chunk() {
        let stores = TestStores::new();
        let store = stores.encrypted();
        let data = TestRng(3).bytes(3 * CHUNK + 100);
        let info = put(&store, &data);
        let path = stored_path(&store, &info.sha256);
        let mut bytes = fs::read(&path).unwrap();
        // A byte inside chunk 1.
        bytes[ENCRYPTED_HEADER_LEN + (CHUNK + TAG_LEN) + 500] ^= 0x01;
        fs::write(&path, &bytes).unwrap();

        let mut reader = store.open_read(&info.sha256).unwrap();
        let mut first_chunk = vec![0u8; CHUNK];
        reader.read_exact(&mut first_chunk).unwrap();
        assert_eq!(first_chunk, data[..CHUNK]);
        let mut one = [0u8; 1];
        let error = reader.read(&mut one).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(BlobError::from(error).code(), "blob-corrupt");
        // Chunk 2 is still fine after seeking past the damage.
        reader.seek(SeekFrom::Start(2 * CHUNK as u64)).unwrap();
        reader.read_exact(&mut one).unwrap();
        assert_eq!(one[0], data[2 * CHUNK]);
    }

    #[test]
    fn tampering_with_layout_is_corrupt() {
        let stores = TestStores::new();
        let store = stores.encrypted();
        let data = TestRng(4).bytes(3 * CHUNK);
        let info = put(&store, &data);
        let path = stored_path(&store, &info.sha256);
        let original = fs::read(&path).unwrap();
        let stored_chunk = CHUNK + TAG_LEN;
        let open_code = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            match store.open_read(&info.sha256) {
                Ok(mut reader) => {
                    let mut sink = Vec::new();
                    match reader.read_to_end(&mut sink) {
                        Ok(_) => "ok",
                        Err(error) => BlobError::from(error).code(),
                    }
                }
                Err(error) => error.code(),
            }
        };
        assert_eq!(open_code(&original), "ok");
        // Cut in the middle of the last chunk.
        assert_eq!(open_code(&original[..original.len() - 10]), "blob-corrupt");
        // Drop the whole last chunk: the new last chunk is not flagged as last.
        assert_eq!(
            open_code(&original[..original.len() - stored_chunk]),
            "blob-corrupt"
        );
        // Extension by a duplicate of the last chunk.
        let mut extended = original.clone();
        extended.extend_from_slice(&original[original.len() - stored_chunk..]);
        assert_eq!(open_code(&extended), "blob-corrupt");
        // Swap chunks 0 and 1.
        let mut swapped = original.clone();
        let (chunk0, chunk1) = (ENCRYPTED_HEADER_LEN, ENCRYPTED_HEADER_LEN + stored_chunk);
        let first: Vec<u8> = original[chunk0..chunk1].to_vec();
        swapped[chunk0..chunk1].copy_from_slice(&original[chunk1..chunk1 + stored_chunk]);
        swapped[chunk1..chunk1 + stored_chunk].copy_from_slice(&first);
        assert_eq!(open_code(&swapped), "blob-corrupt");
        // Header: changed salt, and truncation into the header.
        let mut bad_salt = original.clone();
        bad_salt[20] ^= 0x80;
        assert_eq!(open_code(&bad_salt), "blob-corrupt");
        assert_eq!(open_code(&original[..20]), "blob-corrupt");
        assert_eq!(open_code(&original[..ENCRYPTED_HEADER_LEN]), "blob-corrupt");
    }

    #[test]
    fn plain_blob_stays_readable_after_enabling_encryption() {
        let stores = TestStores::new();
        let plain_info = put(&stores.plain(), b"written before encryption");
        let store = stores.encrypted();
        assert!(store.encrypts_new_blobs());
        assert_eq!(
            read_all(&store, &plain_info.sha256),
            b"written before encryption"
        );
        let encrypted_info = put(&store, b"written after");
        // Reopen with the same (now existing) key file: both still readable.
        let reopened = stores.encrypted();
        assert_eq!(
            read_all(&reopened, &encrypted_info.sha256),
            b"written after"
        );
        assert_eq!(
            read_all(&reopened, &plain_info.sha256),
            b"written before encryption"
        );
        // Without a key the encrypted blob is a clear key error, the plain one still works.
        let keyless = stores.plain();
        assert_eq!(
            keyless
                .open_read(&encrypted_info.sha256)
                .unwrap_err()
                .code(),
            "blob-key"
        );
        assert_eq!(
            read_all(&keyless, &plain_info.sha256),
            b"written before encryption"
        );
        let mut listed = keyless.list().unwrap();
        listed.sort();
        let mut expected = vec![plain_info.sha256, encrypted_info.sha256];
        expected.sort();
        assert_eq!(listed, expected);
    }

    #[test]
    fn wrong_key_is_corrupt() {
        let stores = TestStores::new();
        let info = put(&stores.encrypted(), b"secret");
        fs::remove_file(&stores.key_path).unwrap();
        let store = stores.encrypted(); // generates a different key
        assert_eq!(
            store.open_read(&info.sha256).unwrap_err().code(),
            "blob-corrupt"
        );
    }

    #[test]
    fn key_file_permissions_and_size() {
        let stores = TestStores::new();
        let store = stores.encrypted();
        assert!(format!("{store:?}").contains("encrypt_new_blobs: true"));
        let metadata = fs::metadata(&stores.key_path).unwrap();
        assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
        assert_eq!(metadata.len(), KEY_LEN as u64);
        let key_dir = stores.key_path.parent().unwrap();
        assert_eq!(
            fs::metadata(key_dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(&stores.root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key_bytes = fs::read(&stores.key_path).unwrap();
        assert!(!format!("{store:?}").contains(&format!("{:?}", &key_bytes[..4])));

        fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o644)).unwrap();
        let error = BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap_err();
        assert_eq!(error.code(), "blob-key");
        assert!(error.to_string().contains("0644"), "{error}");

        fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o400)).unwrap();
        BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap();

        fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&stores.key_path, [1u8; 31]).unwrap();
        let error = BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap_err();
        assert_eq!(error.code(), "blob-key");
        assert!(error.to_string().contains("31 bytes"), "{error}");
    }

    #[test]
    fn sweep_removes_orphans_and_old_temp_files() {
        let stores = TestStores::new();
        let store = stores.encrypted();
        let keep = put(&store, b"keep me");
        let orphan = put(&store, b"orphan");
        let plain_orphan = put(&stores.plain(), b"plain orphan");
        let temp_dir = store.root().join(TEMP_DIR_NAME);
        let old_temp = temp_dir.join("old.tmp");
        let fresh_temp = temp_dir.join("fresh.tmp");
        fs::write(&old_temp, b"partial").unwrap();
        fs::write(&fresh_temp, b"in progress").unwrap();
        File::options()
            .write(true)
            .open(&old_temp)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        // A file that is not a blob must be left alone.
        let stray = store.root().join("README");
        fs::write(&stray, b"not a blob").unwrap();

        let referenced: HashSet<String> = [keep.sha256.clone()].into_iter().collect();
        let report = store.sweep(&referenced, Duration::from_secs(3600)).unwrap();
        assert_eq!(report.removed_blobs, 2);
        assert_eq!(report.kept_blobs, 1);
        assert_eq!(report.removed_temp_files, 1);
        assert!(report.freed_bytes > 0);
        assert!(store.exists(&keep.sha256));
        assert!(!store.exists(&orphan.sha256));
        assert!(!store.exists(&plain_orphan.sha256));
        assert!(!old_temp.exists());
        assert!(fresh_temp.exists());
        assert!(stray.exists());
        assert_eq!(store.list().unwrap(), vec![keep.sha256.clone()]);
        assert_eq!(read_all(&store, &keep.sha256), b"keep me");
    }

    #[test]
    fn remove_and_invalid_names() {
        let stores = TestStores::new();
        let store = stores.plain();
        let info = put(&store, b"x");
        let upper = info.sha256.to_uppercase();
        // Plant a file where an uppercase name would map, so only validation can refuse it.
        let upper_dir = store.root().join(&upper[0..2]).join(&upper[2..4]);
        fs::create_dir_all(&upper_dir).unwrap();
        fs::write(upper_dir.join(&upper), b"x").unwrap();
        assert!(!is_valid_sha256(&upper));
        assert!(is_valid_sha256(&info.sha256));
        for invalid in [
            "../x",
            "",
            upper.as_str(),
            &info.sha256[..63],
            "../../../../../../../../../../../../../../../../../../etc/passwd",
            &format!("{}/", &info.sha256[..63]),
        ] {
            assert_eq!(
                store.open_read(invalid).unwrap_err().code(),
                "blob-not-found"
            );
            assert!(!store.exists(invalid));
            assert!(!store.remove(invalid).unwrap());
        }
        let missing = "0".repeat(64);
        assert_eq!(
            store.open_read(&missing).unwrap_err().code(),
            "blob-not-found"
        );
        assert!(store.remove(&info.sha256).unwrap());
        assert!(!store.remove(&info.sha256).unwrap());
        assert!(!store.exists(&info.sha256));
        assert_eq!(
            store.open_read(&info.sha256).unwrap_err().code(),
            "blob-not-found"
        );
    }

    #[test]
    fn handles_are_thread_safe() {
        fn assert_shareable<T: Send + Sync + Clone + fmt::Debug>() {}
        fn assert_sendable<T: Send>() {}
        assert_shareable::<BlobStore>();
        assert_sendable::<BlobWriter>();
        assert_sendable::<BlobReader>();
        assert_shareable::<BlobInfo>();
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // RFC 4231 test case 2, with the key zero-padded to 32 bytes (HMAC pads to the block anyway).
        let mut key = [0u8; KEY_LEN];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac_sha256(&key, &[b"what do ya ", b"want for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn disk_full_errors_are_classified() {
        let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(BlobError::from_io("writing", enospc).code(), "disk-full");
        let storage_full = io::Error::from(io::ErrorKind::StorageFull);
        assert_eq!(BlobError::from(storage_full).code(), "disk-full");
        let other = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(BlobError::from(other).code(), "blob-io");
        // A BlobError tunnelled through io::Error comes back unchanged.
        let tunnelled = BlobError::corrupt("abc", "test").into_io();
        assert_eq!(BlobError::from(tunnelled).code(), "blob-corrupt");
    }
}
