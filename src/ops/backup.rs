//! `opentranscribe backup` and `restore`: a database snapshot from one read transaction, the
//! blobs it refers to, and a manifest with the size and SHA-256 of every file; restore only into
//! an empty data dir, verifying every checksum.
//!
//! Online, the daemon stages the backup inside its own data dir (the only place a hardened unit
//! lets it write): it hard-links every blob file, snapshots the database, then links whatever a
//! file in the snapshot refers to that appeared meanwhile and drops the links nothing refers to.
//! Blobs are immutable and content-addressed, so a link is a frozen copy even if the file is
//! deleted a moment later. The CLI then copies the staged files to DEST, hashing as it goes, and
//! asks the daemon to remove the staging dir. The search index is not backed up: it is rebuilt.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::admin::{self, AdminError, Request};
use crate::app::AppState;
use crate::config::Config;

pub const MANIFEST_FILE: &str = "manifest.json";
pub const MANIFEST_FORMAT: &str = "opentranscribe-backup";
pub const MANIFEST_VERSION: u32 = 1;
const DB_FILE: &str = "opentranscribe.redb";
const BLOBS: &str = "blobs";
/// Data-dir subdirectories that hold secrets: copied only with `--include-secrets`.
const SECRET_DIRS: &[&str] = &["secrets", "tls"];
/// Where a backup keeps the config file (never restored into the data dir).
const CONFIG_COPY: &str = "config/opentranscribe.toml";
/// Prefix of the directories `--keep` creates and prunes.
const ROTATED_PREFIX: &str = "opentranscribe-";
const COPY_BUFFER: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("checksum mismatch, nothing restored: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Store(String),
}

impl BackupError {
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Io { .. } => "backup-io",
            BackupError::Refused(_) => "backup-refused",
            BackupError::Corrupt(_) => "backup-corrupt",
            BackupError::Admin(_) => "admin-socket",
            BackupError::Store(_) => "backup-store",
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

fn store_err(e: crate::error::Error) -> BackupError {
    BackupError::Store(match e.internal_cause {
        Some(cause) => cause,
        None => e.message,
    })
}

/// One file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative to the backup root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub created_at: String,
    pub program_version: String,
    pub schema_version: u64,
    /// Taken from a running daemon (true) or an idle data dir.
    pub online: bool,
    pub includes_secrets: bool,
    pub file_records: u64,
    pub blobs: u64,
    pub entries: Vec<Entry>,
}

/// What `backup` was asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub dest: PathBuf,
    pub include_secrets: bool,
    /// Some(n): `dest` is a directory of dated backups, of which the newest n are kept.
    pub keep: Option<usize>,
    /// The config file in force, copied with the secrets.
    pub config_file: Option<PathBuf>,
}

#[derive(Debug)]
pub struct BackupSummary {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub bytes: u64,
    pub pruned: Vec<PathBuf>,
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Daemon side.

/// Stages an online backup under `data_dir/backup-staging/<id>` and describes it.
pub fn stage_online(state: &AppState) -> crate::error::Result<Value> {
    let internal = |e: BackupError| crate::error::Error::internal("backup", e);
    let data_dir = &state.config.data_dir;
    let id = uuid::Uuid::now_v7().to_string();
    let dir = data_dir.join(super::STAGING_DIR).join(&id);
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
    let dir = data_dir.join(super::STAGING_DIR).join(id);
    fs::remove_dir_all(&dir).map_err(|e| {
        crate::error::Error::internal("backup", format!("removing {}: {e}", dir.display()))
    })?;
    Ok(json!({"released": id}))
}

/// At start-up no backup can be in progress: staging dirs left by a crash are removed.
pub fn clean_staging(data_dir: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(data_dir.join(super::STAGING_DIR)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// CLI side: backup.

/// Takes a backup: from the running daemon if there is one, else from the idle data dir.
pub fn run_backup(config: &Config, options: &BackupOptions) -> Result<BackupSummary, BackupError> {
    let (final_path, parent) = match options.keep {
        Some(0) => return Err(BackupError::Refused("--keep must be at least 1".to_owned())),
        Some(_) => {
            let name = format!("{ROTATED_PREFIX}{}", crate::store::backup::utc_stamp());
            (options.dest.join(name), options.dest.clone())
        }
        None => {
            let parent = match options.dest.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            (options.dest.clone(), parent)
        }
    };
    if final_path.exists() && !is_empty_dir(&final_path)? {
        return Err(BackupError::Refused(format!(
            "{} exists and is not empty; give a new directory",
            final_path.display()
        )));
    }
    create_dir_mode(&parent, 0o700)?;
    let file_name = final_path
        .file_name()
        .ok_or_else(|| BackupError::Refused(format!("{} has no name", final_path.display())))?
        .to_string_lossy()
        .into_owned();
    let partial = parent.join(format!(".{file_name}.partial-{}", std::process::id()));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(io(format!("removing {}", partial.display())))?;
    }
    create_dir_mode(&partial, 0o700)?;
    let result = write_backup(config, options, &partial);
    let (manifest, bytes, warnings) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    if final_path.exists() {
        fs::remove_dir(&final_path).map_err(io(format!("replacing {}", final_path.display())))?;
    }
    fs::rename(&partial, &final_path).map_err(io(format!(
        "renaming {} to {}",
        partial.display(),
        final_path.display()
    )))?;
    sync_dir(&parent)?;
    let pruned = match options.keep {
        Some(keep) => prune(&options.dest, keep)?,
        None => Vec::new(),
    };
    Ok(BackupSummary {
        path: final_path,
        manifest,
        bytes,
        pruned,
        warnings,
    })
}

fn write_backup(
    config: &Config,
    options: &BackupOptions,
    out: &Path,
) -> Result<(Manifest, u64, Vec<String>), BackupError> {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    let staged = admin::request(
        &config.data_dir,
        &Request::BackupStage,
        Duration::from_secs(3600),
    );
    let (online, schema_version, file_records, blobs, blob_root, release) = match staged {
        Ok(answer) => {
            let dir = PathBuf::from(answer["dir"].as_str().unwrap_or_default());
            let id = answer["id"].as_str().unwrap_or_default().to_owned();
            let blobs: BTreeSet<String> = answer["blobs"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let copied = copy_file(&dir.join(DB_FILE), out, DB_FILE, None);
            if let Err(e) = copied {
                let _ = admin::request(
                    &config.data_dir,
                    &Request::BackupRelease { id },
                    Duration::from_secs(60),
                );
                return Err(e);
            }
            entries.push(copied?);
            (
                true,
                answer["schema_version"].as_u64().unwrap_or(0),
                answer["files"].as_u64().unwrap_or(0),
                blobs,
                dir.join(BLOBS),
                Some(id),
            )
        }
        Err(AdminError::NotRunning(_)) => {
            let db_path = config.db_path();
            if !db_path.is_file() {
                return Err(BackupError::Refused(format!(
                    "no database at {} (wrong --data-dir or --config?)",
                    db_path.display()
                )));
            }
            let report = crate::store::backup::snapshot_file(&db_path, &out.join(DB_FILE))
                .map_err(|e| {
                    BackupError::Refused(format!(
                        "{} (a daemon without an admin socket may hold it; stop it or upgrade it)",
                        store_err(e)
                    ))
                })?;
            entries.push(hash_in_place(out, DB_FILE)?);
            (
                false,
                report.schema_version,
                report.files,
                report.blobs,
                config.blob_dir(),
                None,
            )
        }
        Err(e) => return Err(e.into()),
    };
    let copied = copy_blobs(&blob_root, &blobs, out, &mut entries);
    if let Some(id) = release
        && let Err(e) = admin::request(
            &config.data_dir,
            &Request::BackupRelease { id },
            Duration::from_secs(60),
        )
    {
        warnings.push(format!("the daemon could not remove its staging dir: {e}"));
    }
    let encrypted = copied?;
    if options.include_secrets {
        for dir in SECRET_DIRS {
            let source = config.data_dir.join(dir);
            for (relative, _) in files_under(&source)? {
                let path = format!("{dir}/{}", slash(&relative));
                entries.push(copy_file(&source.join(&relative), out, &path, None)?);
            }
        }
        match &options.config_file {
            Some(file) if file.is_file() => {
                entries.push(copy_file(file, out, CONFIG_COPY, None)?);
            }
            _ => warnings.push("no config file in force; none copied".to_owned()),
        }
    } else if encrypted > 0 {
        warnings.push(format!(
            "{encrypted} blobs are encrypted at rest and the key is not in this backup: keep {} safe, or back up with --include-secrets",
            config.secrets_dir().join("blob.key").display()
        ));
    }
    let bytes = entries.iter().map(|e| e.size).sum();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.to_owned(),
        format_version: MANIFEST_VERSION,
        created_at: crate::store::backup::utc_stamp(),
        program_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version,
        online,
        includes_secrets: options.include_secrets,
        file_records,
        blobs: blobs.len() as u64,
        entries,
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Io {
        context: "encoding the manifest".to_owned(),
        source: std::io::Error::other(e),
    })?;
    write_new_file(&out.join(MANIFEST_FILE), &text)?;
    sync_tree(out)?;
    Ok((manifest, bytes, warnings))
}

/// Copies each referenced blob (plain and/or encrypted file); a plain blob whose content does
/// not hash to its name is refused. Returns how many were encrypted.
fn copy_blobs(
    root: &Path,
    blobs: &BTreeSet<String>,
    out: &Path,
    entries: &mut Vec<Entry>,
) -> Result<usize, BackupError> {
    let mut encrypted = 0;
    for sha in blobs {
        let mut found = false;
        for relative in blob_candidates(sha) {
            let source = root.join(&relative);
            if !source.is_file() {
                continue;
            }
            found = true;
            let is_plain = !relative.to_string_lossy().ends_with(".enc");
            if !is_plain {
                encrypted += 1;
            }
            let expect = is_plain.then_some(sha.as_str());
            let path = format!("{BLOBS}/{}", slash(&relative));
            entries.push(copy_file(&source, out, &path, expect)?);
        }
        if !found {
            return Err(BackupError::Refused(format!(
                "blob {sha} is referenced by a file but missing from {}",
                root.display()
            )));
        }
    }
    Ok(encrypted)
}

/// Keeps the newest `keep` complete backups in `dir`, removes older ones. Returns what went.
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
    let mut complete: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(ROTATED_PREFIX))
                && p.join(MANIFEST_FILE).is_file()
        })
        .collect();
    // Dated names sort by age.
    complete.sort();
    let excess = complete.len().saturating_sub(keep);
    let old: Vec<PathBuf> = complete.into_iter().take(excess).collect();
    for path in &old {
        fs::remove_dir_all(path).map_err(io(format!("removing {}", path.display())))?;
    }
    Ok(old)
}

// ---------------------------------------------------------------------------------------------
// CLI side: restore.

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

// ---------------------------------------------------------------------------------------------
// Files.

/// The two names a blob can have on disk, relative to the blob root (`ab/cd/<sha>[.enc]`, the
/// layout of `crate::blobs`).
pub fn blob_candidates(sha: &str) -> Vec<PathBuf> {
    if !crate::blobs::is_valid_sha256(sha) {
        return Vec::new();
    }
    let dir = Path::new(&sha[0..2]).join(&sha[2..4]);
    vec![dir.join(sha), dir.join(format!("{sha}.enc"))]
}

/// Blob files under a blob root (not temp files or readiness probes), relative paths.
fn blob_files(root: &Path) -> Result<Vec<(PathBuf, u64)>, BackupError> {
    Ok(files_under(root)?
        .into_iter()
        .filter(|(relative, _)| {
            let name = relative
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            relative.components().count() == 3
                && crate::blobs::is_valid_sha256(name.trim_end_matches(".enc"))
        })
        .collect())
}

/// Regular files below `root` (recursively), as relative paths with sizes, sorted.
fn files_under(root: &Path) -> Result<Vec<(PathBuf, u64)>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = root.join(&relative);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(BackupError::Io {
                    context: format!("listing {}", dir.display()),
                    source: e,
                });
            }
        };
        for entry in entries {
            let entry = entry.map_err(io(format!("listing {}", dir.display())))?;
            let kind = entry
                .file_type()
                .map_err(io(format!("reading {}", entry.path().display())))?;
            let child = relative.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_file() {
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push((child, size));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn slash(relative: &Path) -> String {
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn is_safe_backup_path(path: &str) -> bool {
    let candidate = Path::new(path);
    !path.is_empty()
        && candidate
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
        && (path == DB_FILE
            || path == CONFIG_COPY
            || [BLOBS, "secrets", "tls"]
                .iter()
                .any(|dir| path.starts_with(&format!("{dir}/"))))
}

/// Copies `source` to `out_root/relative` (a new file, 0600), hashing on the way. With
/// `expect`, the content must hash to it.
fn copy_file(
    source: &Path,
    out_root: &Path,
    relative: &str,
    expect: Option<&str>,
) -> Result<Entry, BackupError> {
    let target = out_root.join(relative);
    if let Some(parent) = target.parent() {
        create_dir_mode(parent, 0o700)?;
    }
    let mut input = File::open(source).map_err(io(format!("opening {}", source.display())))?;
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(io(format!("creating {}", target.display())))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut size = 0u64;
    loop {
        let n = input
            .read(&mut buffer)
            .map_err(io(format!("reading {}", source.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        output
            .write_all(&buffer[..n])
            .map_err(io(format!("writing {}", target.display())))?;
        size += n as u64;
    }
    output
        .sync_all()
        .map_err(io(format!("syncing {}", target.display())))?;
    let sha256 = hex::encode(hasher.finalize());
    if let Some(expected) = expect
        && expected != sha256
    {
        return Err(BackupError::Corrupt(format!(
            "{} hashes to {sha256}, not its name {expected}: the data dir holds a damaged blob",
            source.display()
        )));
    }
    Ok(Entry {
        path: relative.to_owned(),
        size,
        sha256,
    })
}

fn hash_in_place(root: &Path, relative: &str) -> Result<Entry, BackupError> {
    let path = root.join(relative);
    let size = fs::metadata(&path)
        .map_err(io(format!("reading {}", path.display())))?
        .len();
    Ok(Entry {
        path: relative.to_owned(),
        size,
        sha256: sha256_of(&path)?,
    })
}

fn sha256_of(path: &Path) -> Result<String, BackupError> {
    let mut input = File::open(path).map_err(io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; COPY_BUFFER];
    loop {
        let n = input
            .read(&mut buffer)
            .map_err(io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(format!("creating {}", path.display())))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(format!("writing {}", path.display())))
}

fn create_dir_mode(dir: &Path, mode: u32) -> Result<(), BackupError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting permissions on {}", dir.display())))
}

fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
    if !dir.is_dir() {
        return Err(BackupError::Refused(format!(
            "{} exists and is not a directory",
            dir.display()
        )));
    }
    Ok(fs::read_dir(dir)
        .map_err(io(format!("listing {}", dir.display())))?
        .next()
        .is_none())
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Syncs every directory of a tree (files were synced as they were written).
fn sync_tree(root: &Path) -> Result<(), BackupError> {
    let mut dirs = BTreeSet::new();
    for (relative, _) in files_under(root)? {
        let mut path = root.join(relative);
        while let Some(parent) = path.parent() {
            if !parent.starts_with(root) {
                break;
            }
            dirs.insert(parent.to_path_buf());
            path = parent.to_path_buf();
        }
    }
    dirs.insert(root.to_path_buf());
    for dir in dirs {
        sync_dir(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_candidates_match_the_blob_store_layout() {
        let dir = tempfile::tempdir().unwrap();
        let plain = crate::blobs::BlobStore::open(&dir.path().join("plain"), None).unwrap();
        let mut writer = plain.begin_write().unwrap();
        writer.write_all(b"some bytes").unwrap();
        let info = writer.finish().unwrap();
        let candidates = blob_candidates(&info.sha256);
        assert!(dir.path().join("plain").join(&candidates[0]).is_file());
        let encrypted = crate::blobs::BlobStore::open(
            &dir.path().join("enc"),
            Some(&dir.path().join("keys/blob.key")),
        )
        .unwrap();
        let mut writer = encrypted.begin_write().unwrap();
        writer.write_all(b"some bytes").unwrap();
        let info = writer.finish().unwrap();
        assert!(
            dir.path()
                .join("enc")
                .join(&blob_candidates(&info.sha256)[1])
                .is_file()
        );
        assert!(blob_candidates("../../etc/passwd").is_empty());
    }

    #[test]
    fn backup_paths_outside_the_layout_are_unsafe() {
        for good in [
            "opentranscribe.redb",
            "blobs/ab/cd/x",
            "secrets/blob.key",
            "tls/key.pem",
            "config/opentranscribe.toml",
        ] {
            assert!(is_safe_backup_path(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "blobs/../../x",
            "other/file",
            "blobs",
            "./opentranscribe.redb",
        ] {
            assert!(!is_safe_backup_path(bad), "{bad}");
        }
    }

    #[test]
    fn prune_keeps_the_newest_complete_backups() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "opentranscribe-20260101T000000Z",
            "opentranscribe-20260102T000000Z",
            "opentranscribe-20260103T000000Z",
        ] {
            fs::create_dir(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join(MANIFEST_FILE), "{}").unwrap();
        }
        // Incomplete and foreign directories are never touched.
        fs::create_dir(dir.path().join("opentranscribe-20250101T000000Z")).unwrap();
        fs::create_dir(dir.path().join("mine")).unwrap();
        let pruned = prune(dir.path(), 2).unwrap();
        assert_eq!(
            pruned,
            vec![dir.path().join("opentranscribe-20260101T000000Z")]
        );
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "mine",
                "opentranscribe-20250101T000000Z",
                "opentranscribe-20260102T000000Z",
                "opentranscribe-20260103T000000Z"
            ]
        );
    }
}
