//! Blob lifetime: the one place that decides when a blob's bytes may go.
//!
//! A finished upload whose content is already stored reuses the existing blob (dedup). Between
//! that moment and the commit of the file record that references it, the blob has no reference
//! in redb, so a concurrent delete of the last other file with the same content would see a
//! count of zero and remove the bytes under an upload that is about to be acknowledged.
//!
//! The rule: `finish` (exists-or-rename) and "count references, then remove" both run under
//! one lock, and `finish` leaves the hash *pinned* until the caller has recorded its reference
//! (or given up). Removal skips pinned hashes and re-counts references under the lock, so a blob
//! is removed only when nothing refers to it and no upload is about to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{BlobError, BlobInfo, BlobStore, StoreInner};

/// In-flight uploads per hash; its mutex is the blob lifetime lock.
#[derive(Debug, Default)]
pub(super) struct Pins {
    counts: Mutex<HashMap<String, usize>>,
}

impl Pins {
    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps a blob from being removed until dropped. Returned by [`super::BlobWriter::finish_pinned`];
/// drop it only after the reference to the blob is committed (or the upload is abandoned, then
/// call [`BlobStore::remove_unreferenced`]).
#[derive(Debug)]
pub struct BlobPin {
    store: Arc<StoreInner>,
    sha256: String,
}

impl BlobPin {
    /// Pins `sha256`; the caller holds the lifetime lock (`counts`).
    pub(super) fn new(
        store: &Arc<StoreInner>,
        counts: &mut HashMap<String, usize>,
        sha256: &str,
    ) -> Self {
        *counts.entry(sha256.to_owned()).or_insert(0) += 1;
        BlobPin {
            store: Arc::clone(store),
            sha256: sha256.to_owned(),
        }
    }
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut counts = self.store.pins.lock();
        if let Some(count) = counts.get_mut(&self.sha256) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.sha256);
            }
        }
    }
}

/// A finished upload: its content's identity and the pin that keeps its bytes.
#[derive(Debug)]
pub struct PinnedBlob {
    pub info: BlobInfo,
    pub pin: BlobPin,
}

impl BlobStore {
    /// Removes the blob only if no upload has it pinned and `references()` (read under the
    /// lifetime lock, so no upload can pin it meanwhile) is zero. Returns whether it was removed.
    pub fn remove_unreferenced<E: From<BlobError>>(
        &self,
        sha256: &str,
        references: impl FnOnce() -> Result<u64, E>,
    ) -> Result<bool, E> {
        let counts = self.inner.pins.lock();
        if counts.get(sha256).is_some_and(|count| *count > 0) {
            return Ok(false);
        }
        if references()? > 0 {
            return Ok(false);
        }
        let removed = self.remove(sha256)?;
        drop(counts);
        Ok(removed)
    }

    /// How many uploads hold a pin on this hash (for tests and diagnostics).
    pub fn pinned(&self, sha256: &str) -> usize {
        self.inner.pins.lock().get(sha256).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn put(store: &BlobStore, bytes: &[u8]) -> PinnedBlob {
        let mut writer = store.begin_write().unwrap();
        writer.write_all(bytes).unwrap();
        writer.finish_pinned().unwrap()
    }

    #[test]
    fn a_pinned_or_referenced_blob_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        let first = put(&store, b"same bytes");
        // A second upload of the same bytes dedups and pins the same hash.
        let second = put(&store, b"same bytes");
        assert_eq!(first.info, second.info);
        let sha = first.info.sha256.clone();
        assert_eq!(store.pinned(&sha), 2);
        drop(first.pin);
        let none = || Ok::<u64, BlobError>(0);
        assert!(!store.remove_unreferenced(&sha, none).unwrap());
        assert!(store.exists(&sha));
        drop(second.pin);
        assert_eq!(store.pinned(&sha), 0);
        assert!(
            !store
                .remove_unreferenced(&sha, || Ok::<u64, BlobError>(1))
                .unwrap()
        );
        assert!(store.exists(&sha));
        assert!(store.remove_unreferenced(&sha, none).unwrap());
        assert!(!store.exists(&sha));
    }

    #[test]
    fn finish_and_removal_race_never_lose_a_pinned_blob() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path(), None).unwrap();
        for round in 0..200 {
            let bytes = format!("round {round}").into_bytes();
            let sha = put(&store, &bytes).info.sha256;
            let remover = {
                let store = store.clone();
                let sha = sha.clone();
                std::thread::spawn(move || {
                    store
                        .remove_unreferenced(&sha, || Ok::<u64, BlobError>(0))
                        .unwrap()
                })
            };
            let pinned = put(&store, &bytes);
            remover.join().unwrap();
            // Whichever ran first, the pinned upload has its bytes.
            assert!(store.exists(&pinned.info.sha256), "round {round}");
        }
    }
}
