//! Daemon side of an online backup: staging hard links and a database snapshot inside the data
//! dir, and releasing or cleaning the staging dir.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use super::files::{blob_candidates, blob_files};
use super::{BLOBS, BackupError, DB_FILE, io, store_err};
use crate::app::AppState;
use crate::ops::STAGING_DIR;
/// Stages an online backup under `data_dir/backup-staging/<id>` and describes it.
pub fn stage_online(state: &AppState) -> crate::error::Result<Value> {
    let internal = |e: BackupError| crate::error::Error::internal("backup", e);
    let data_dir = &state.config.data_dir;
    let id = uuid::Uuid::now_v7().to_string();
    let dir = data_dir.join(STAGING_DIR).join(&id);
    crate::fsutil::create_private_dir(&dir)
        .map_err(io(format!("creating {}", dir.display())))
        .map_err(internal)?;
    let staged = stage_into(state, &dir);
    match staged {
        Ok((report, blobs)) => Ok(json!({
            "id": id,
            "dir": dir,
            "schema_version": report.schema_version,
            "files": report.files,
            "blobs": blobs,
        })),
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            Err(internal(e))
        }
    }
}

fn stage_into(
    state: &AppState,
    dir: &Path,
) -> Result<(crate::store::backup::SnapshotReport, Vec<String>), BackupError> {
    let live = state.blobs.root();
    let staged_blobs = dir.join(BLOBS);
    // First every blob on disk: whatever the snapshot will refer to is already here, unless it
    // was uploaded in between (linked below).
    for (relative, _) in blob_files(live)? {
        link_blob(live, &staged_blobs, &relative)?;
    }
    let report = state
        .store
        .snapshot_to(&dir.join(DB_FILE))
        .map_err(store_err)?;
    let mut wanted = BTreeSet::new();
    for sha in &report.blobs {
        let candidates = blob_candidates(sha);
        let mut found = candidates
            .iter()
            .any(|relative| staged_blobs.join(relative).is_file());
        if !found {
            for relative in &candidates {
                if live.join(relative).is_file() {
                    link_blob(live, &staged_blobs, relative)?;
                    found = true;
                }
            }
        }
        if !found {
            return Err(BackupError::Refused(format!(
                "blob {sha} of a file in the snapshot is missing from {}",
                live.display()
            )));
        }
        wanted.extend(candidates);
    }
    // Links to blobs the snapshot does not refer to (deleted files, uploads after it) go.
    for (relative, _) in blob_files(&staged_blobs)? {
        if !wanted.contains(&relative) {
            fs::remove_file(staged_blobs.join(&relative))
                .map_err(io(format!("removing staged {}", relative.display())))?;
        }
    }
    let blobs = report.blobs.iter().cloned().collect();
    Ok((report, blobs))
}

fn link_blob(from_root: &Path, to_root: &Path, relative: &Path) -> Result<(), BackupError> {
    let target = to_root.join(relative);
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    match fs::hard_link(from_root.join(relative), &target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        // Deleted since the directory was listed: the snapshot decides whether it is needed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackupError::Io {
            context: format!("linking blob {}", relative.display()),
            source: e,
        }),
    }
}

/// Removes a staged backup once the CLI has copied it.
pub fn release_staged(data_dir: &Path, id: &str) -> crate::error::Result<Value> {
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(crate::error::Error::bad_request("not a staging id"));
    }
    let dir = data_dir.join(STAGING_DIR).join(id);
    fs::remove_dir_all(&dir).map_err(|e| {
        crate::error::Error::internal("backup", format!("removing {}: {e}", dir.display()))
    })?;
    Ok(json!({"released": id}))
}

/// At start-up no backup can be in progress: staging dirs left by a crash are removed.
pub fn clean_staging(data_dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(data_dir.join(STAGING_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
