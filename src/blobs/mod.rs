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

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod crypto;
mod pins;
mod read;
mod sweep;
#[cfg(test)]
mod tests;
mod write;

use crypto::{MasterKey, load_or_create_key};
pub use pins::{BlobPin, PinnedBlob};
pub use read::BlobReader;
pub use sweep::SweepReport;
pub use write::BlobWriter;
/// Plaintext bytes per encrypted chunk for new blobs.
pub const ENCRYPTION_CHUNK_SIZE: usize = 64 * 1024;

const ENCRYPTED_SUFFIX: &str = ".enc";
const TEMP_DIR_NAME: &str = "tmp";

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
