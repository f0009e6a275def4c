//! Writing blobs: `BlobStore::begin_write`, the `BlobWriter` upload (hashing, encryption on
//! write chunk by chunk) and `finish`, which moves the temp file into place under the lifetime lock.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::AeadInPlace;
use sha2::{Digest, Sha256};

use super::crypto::{ENCRYPTED_HEADER_LEN, EncryptedHeader, chunk_associated_data, chunk_nonce};
use super::{
    BlobError, BlobInfo, BlobPin, BlobStore, ENCRYPTION_CHUNK_SIZE, PinnedBlob, StoreInner,
    ensure_durable_dir, io_error, sync_dir,
};
const TEMP_SUFFIX: &str = ".tmp";
const WRITE_BUFFER_SIZE: usize = 256 * 1024;

impl BlobStore {
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
