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

mod create;
mod files;
mod restore;
mod stage;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::admin::AdminError;

pub use create::run_backup;
pub use files::blob_candidates;
pub use restore::{RestoreSummary, run_restore};
pub use stage::{clean_staging, release_staged, stage_online};

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

fn store_err(e: crate::store::StoreError) -> BackupError {
    BackupError::Store(e.to_string())
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
