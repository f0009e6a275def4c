//! The watch folder: media files dropped into a configured directory are imported once for a
//! configured user (streamed into the blob store, then the same ingest path as an upload), and
//! then moved to `imported/` (refused ones to `failed/` with a `.reason.txt`) or marked with a
//! `.imported`/`.failed` file next to them.
//!
//! A file is taken only once its size and modification time are unchanged between two scans
//! and at least two seconds old, so a copy in progress is never imported half-way. Hidden
//! files, marker files and common partial-download names are ignored.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppState, blocking};
use crate::blobs::PinnedBlob;
use crate::error::{Error, Result};
use crate::store::records::UploadOptions;

const IMPORTED_DIR: &str = "imported";
const FAILED_DIR: &str = "failed";
const IGNORED_SUFFIXES: &[&str] = &[
    ".imported",
    ".failed",
    ".part",
    ".partial",
    ".crdownload",
    ".tmp",
    ".reason.txt",
];
const MIN_AGE: Duration = Duration::from_secs(2);

/// Starts the watcher when `watch.dir` is set.
pub fn spawn(state: AppState, shutdown: CancellationToken, tracker: &TaskTracker) {
    if state.config.watch.dir.is_empty() {
        return;
    }
    tracing::info!(dir = %state.config.watch.dir, user = %state.config.watch.user, "watching a folder for media");
    tracker.spawn(run(state, shutdown));
}

type Signature = (u64, SystemTime);

async fn run(state: AppState, shutdown: CancellationToken) {
    let dir = PathBuf::from(&state.config.watch.dir);
    let interval = Duration::from_secs(state.config.watch.interval_secs);
    let mut pending: HashMap<PathBuf, Signature> = HashMap::new();
    loop {
        let scan_dir = dir.clone();
        let mark = state.config.watch.after == "mark";
        match blocking(move || scan(&scan_dir, mark)).await {
            Ok(found) => {
                let mut still = HashMap::new();
                for (path, signature) in found {
                    let old_enough = signature
                        .1
                        .elapsed()
                        .map(|age| age >= MIN_AGE)
                        .unwrap_or(false);
                    if pending.get(&path) == Some(&signature) && old_enough {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        import_one(&state, &path).await;
                    } else {
                        still.insert(path, signature);
                    }
                }
                pending = still;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot scan the watch folder")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Regular, visible, not-yet-handled files in `dir` with their size and modification time.
fn scan(dir: &Path, mark: bool) -> Result<Vec<(PathBuf, Signature)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::internal("watch-io", format!("{}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || IGNORED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let path = entry.path();
        if mark && (marker(&path, "imported").exists() || marker(&path, "failed").exists()) {
            continue;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        out.push((path, (meta.len(), modified)));
    }
    out.sort();
    Ok(out)
}

fn marker(path: &Path, kind: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{kind}"));
    path.with_file_name(name)
}

async fn import_one(state: &AppState, path: &Path) {
    let outcome = import(state, path).await;
    let (kind, reason) = match &outcome {
        Ok(file_id) => {
            tracing::info!(path = %path.display(), %file_id, "imported from the watch folder");
            ("imported", None)
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "watch folder import refused");
            ("failed", Some(e.message.clone()))
        }
    };
    let mark = state.config.watch.after == "mark";
    let path = path.to_owned();
    let result = blocking(move || settle(&path, kind, reason.as_deref(), mark)).await;
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot move or mark a watch folder file; it may be imported again");
    }
}

/// Moves the file to `imported/`/`failed/` (never overwriting: a numbered name is chosen),
/// or writes the marker file.
fn settle(path: &Path, kind: &str, reason: Option<&str>, mark: bool) -> Result<()> {
    let io = |e: std::io::Error| Error::internal("watch-io", format!("{}: {e}", path.display()));
    if mark {
        let mut file = std::fs::File::create(marker(path, kind)).map_err(io)?;
        if let Some(reason) = reason {
            writeln!(file, "{reason}").map_err(io)?;
        }
        return Ok(());
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    let target_dir = parent.join(if kind == "imported" {
        IMPORTED_DIR
    } else {
        FAILED_DIR
    });
    std::fs::create_dir_all(&target_dir).map_err(io)?;
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let mut target = target_dir.join(&name);
    let mut n = 1;
    while target.exists() {
        target = target_dir.join(format!("{n}-{name}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(io)?;
    if let Some(reason) = reason {
        let mut note = target.as_os_str().to_os_string();
        note.push(".reason.txt");
        std::fs::write(PathBuf::from(note), format!("{reason}\n")).map_err(io)?;
    }
    Ok(())
}

async fn import(state: &AppState, path: &Path) -> Result<String> {
    let store = state.store.clone();
    let username = state.config.watch.user.clone();
    let owner = blocking(move || store.get_user_by_name(&username))
        .await?
        .filter(|u| !u.disabled)
        .ok_or_else(|| {
            Error::new(
                "not-found",
                format!(
                    "watch.user `{}` is not an active user",
                    state.config.watch.user
                ),
            )
        })?;
    let blobs = state.blobs.clone();
    let limit = state.config.server.max_upload_bytes;
    let source = path.to_owned();
    let info: PinnedBlob = blocking(move || {
        let mut file = std::fs::File::open(&source)
            .map_err(|e| Error::internal("watch-io", format!("{}: {e}", source.display())))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if size > limit {
            return Err(Error::new(
                "payload-too-large",
                format!("file exceeds the upload limit of {limit} bytes"),
            ));
        }
        let mut writer = blobs
            .begin_write()
            .map_err(|e| Error::internal("blob-io", e))?;
        std::io::copy(&mut file, &mut writer).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                Error::new("disk-full", "the server's disk is full")
            } else {
                Error::internal("blob-io", e)
            }
        })?;
        writer
            .finish_pinned()
            .map_err(|e| Error::internal("blob-io", e))
    })
    .await?;
    let filename = crate::http::files::sanitize_filename(
        &path.file_name().unwrap_or_default().to_string_lossy(),
    );
    let options = UploadOptions {
        diarize: true,
        ..UploadOptions::default()
    };
    let record = crate::http::files::ingest(state, &owner.id, filename, info, options).await?;
    Ok(record.id)
}
