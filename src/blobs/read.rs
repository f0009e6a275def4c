//! Reading blobs: `BlobStore::open_read` and the `BlobReader`, which serves plain blobs directly
//! and decrypts encrypted ones chunk by chunk, with random access.

use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::Path;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, Tag};

use super::crypto::{
    ENCRYPTED_HEADER_LEN, EncryptedHeader, MasterKey, TAG_LEN, chunk_associated_data, chunk_nonce,
};
use super::{BlobError, BlobStore, io_error, is_valid_sha256};
const PLAIN_READ_BUFFER_SIZE: usize = 64 * 1024;

impl BlobStore {
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
