//! CLI side of `restore`: into an empty data dir only, every checksum verified, ownership
//! matched to the data dir, everything written removed on failure.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use super::files::{
    blob_candidates, copy_file, create_dir_mode, files_under, is_empty_dir, is_safe_backup_path,
    sha256_of, slash, sync_tree,
};
use super::{
    BackupError, CONFIG_COPY, DB_FILE, Entry, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION,
    Manifest, io, store_err,
};
use crate::config::Config;
#[derive(Debug)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    pub files_restored: usize,
    pub bytes: u64,
    pub users: usize,
    pub notes: Vec<String>,
}

/// Restores `source` into `config.data_dir`, which must be missing or empty and not in use.
/// Every file is hashed while it is copied; on any mismatch everything written is removed.
pub fn run_restore(config: &Config, source: &Path) -> Result<RestoreSummary, BackupError> {
    let manifest = read_manifest(source)?;
    let data_dir = &config.data_dir;
    let existed = data_dir.exists();
    if existed && !is_empty_dir(data_dir)? {
        return Err(BackupError::Refused(format!(
            "{} is not empty: restore only into an empty data dir (stop the daemon and move the old one aside)",
            data_dir.display()
        )));
    }
    // Every file on disk must be in the manifest, and the other way round.
    let listed: BTreeMap<&str, &Entry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    for (relative, _) in files_under(source)? {
        let path = slash(&relative);
        if path != MANIFEST_FILE && !listed.contains_key(path.as_str()) {
            return Err(BackupError::Refused(format!(
                "{} holds {path}, which its manifest does not list",
                source.display()
            )));
        }
    }
    if !listed.contains_key(DB_FILE) {
        return Err(BackupError::Refused(format!(
            "{}: the manifest lists no {DB_FILE}",
            source.display()
        )));
    }
    create_dir_mode(data_dir, 0o700)?;
    let result = restore_files(&manifest, source, data_dir);
    let (restored, bytes, mut notes) = match result {
        Ok(done) => done,
        Err(e) => {
            empty_dir(data_dir);
            if !existed {
                let _ = fs::remove_dir(data_dir);
            }
            return Err(e);
        }
    };
    // The database opens (and migrates, if the backup is older), and every blob it refers to is
    // present.
    let checked = check_restored(config);
    let users = match checked {
        Ok(users) => users,
        Err(e) => {
            empty_dir(data_dir);
            return Err(e);
        }
    };
    if let Some(owner) = owner_to_match(data_dir, existed) {
        chown_tree(data_dir, owner)?;
        notes.push(format!(
            "files given to uid {} gid {}, the owner of {}",
            owner.0,
            owner.1,
            data_dir.display()
        ));
    }
    Ok(RestoreSummary {
        manifest,
        files_restored: restored,
        bytes,
        users,
        notes,
    })
}

fn read_manifest(source: &Path) -> Result<Manifest, BackupError> {
    let path = source.join(MANIFEST_FILE);
    let text = fs::read(&path).map_err(io(format!(
        "{} is not a backup (cannot read {MANIFEST_FILE})",
        source.display()
    )))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        BackupError::Refused(format!("{}: not a backup manifest: {e}", path.display()))
    })?;
    if manifest.format != MANIFEST_FORMAT || manifest.format_version > MANIFEST_VERSION {
        return Err(BackupError::Refused(format!(
            "{}: format {} version {} is not one this program reads ({MANIFEST_FORMAT} {MANIFEST_VERSION})",
            path.display(),
            manifest.format,
            manifest.format_version
        )));
    }
    if manifest.schema_version > crate::store::migrate::CURRENT_VERSION {
        return Err(BackupError::Refused(format!(
            "the backup's database has schema version {}, newer than this program understands ({}); restore it with opentranscribe {} or newer",
            manifest.schema_version,
            crate::store::migrate::CURRENT_VERSION,
            manifest.program_version
        )));
    }
    for entry in &manifest.entries {
        if !is_safe_backup_path(&entry.path) {
            return Err(BackupError::Refused(format!(
                "{}: unsafe path `{}`",
                path.display(),
                entry.path
            )));
        }
    }
    Ok(manifest)
}

fn restore_files(
    manifest: &Manifest,
    source: &Path,
    data_dir: &Path,
) -> Result<(usize, u64, Vec<String>), BackupError> {
    let mut notes = Vec::new();
    let mut restored = 0;
    let mut bytes = 0;
    let mut bad = Vec::new();
    for entry in &manifest.entries {
        if entry.path == CONFIG_COPY {
            notes.push(format!(
                "the backup holds a config file, {}: not installed; compare it with yours",
                source.join(CONFIG_COPY).display()
            ));
            // Still verified, so a damaged config is reported.
            let actual = sha256_of(&source.join(&entry.path))?;
            if actual != entry.sha256 {
                bad.push(format!(
                    "{} (sha256 {actual}, manifest {})",
                    entry.path, entry.sha256
                ));
            }
            continue;
        }
        let written = copy_file(&source.join(&entry.path), data_dir, &entry.path, None)?;
        if written.sha256 != entry.sha256 || written.size != entry.size {
            bad.push(format!(
                "{} (sha256 {}, size {}; manifest {}, {})",
                entry.path, written.sha256, written.size, entry.sha256, entry.size
            ));
        }
        restored += 1;
        bytes += written.size;
    }
    if !bad.is_empty() {
        return Err(BackupError::Corrupt(bad.join(", ")));
    }
    sync_tree(data_dir)?;
    Ok((restored, bytes, notes))
}

fn check_restored(config: &Config) -> Result<usize, BackupError> {
    let store = crate::store::Store::open(&config.db_path()).map_err(store_err)?;
    let referenced = store.referenced_blobs().map_err(store_err)?;
    let blob_root = config.blob_dir();
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|sha| {
            !blob_candidates(sha)
                .iter()
                .any(|relative| blob_root.join(relative).is_file())
        })
        .collect();
    if !missing.is_empty() {
        return Err(BackupError::Refused(format!(
            "the restored database refers to blobs the backup lacks: {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(store.list_users().map_err(store_err)?.len())
}

fn owner_to_match(data_dir: &Path, existed: bool) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if !existed || euid != 0 {
        return None;
    }
    let meta = fs::metadata(data_dir).ok()?;
    (meta.uid() != 0).then_some((meta.uid(), meta.gid()))
}

fn chown_tree(root: &Path, (uid, gid): (u32, u32)) -> Result<(), BackupError> {
    for (relative, _) in files_under(root)? {
        let mut path = root.join(&relative);
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(io(format!("chown {}", path.display())))?;
        while let Some(parent) = path.parent() {
            if parent == root {
                break;
            }
            std::os::unix::fs::chown(parent, Some(uid), Some(gid))
                .map_err(io(format!("chown {}", parent.display())))?;
            path = parent.to_path_buf();
        }
    }
    Ok(())
}

fn empty_dir(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let _ = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
        }
    }
}
