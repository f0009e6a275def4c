//! Listing stored blobs and sweeping orphans and stale temp files (`BlobStore::list`, `sweep`).

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{BlobError, BlobStore, ENCRYPTED_SUFFIX, io_error, is_lower_hex, is_valid_sha256};
/// Counts from `BlobStore::sweep`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub removed_blobs: usize,
    pub kept_blobs: usize,
    pub removed_temp_files: usize,
    /// On-disk bytes freed (stored size, including encryption overhead).
    pub freed_bytes: u64,
}

impl BlobStore {
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
