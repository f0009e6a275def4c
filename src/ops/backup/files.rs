//! File helpers of backup and restore: blob names, listing, copying while hashing, and the
//! durable creation of files and directories.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BLOBS, BackupError, CONFIG_COPY, COPY_BUFFER, DB_FILE, Entry, io};
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
pub(super) fn blob_files(root: &Path) -> Result<Vec<(PathBuf, u64)>, BackupError> {
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
pub(super) fn files_under(root: &Path) -> Result<Vec<(PathBuf, u64)>, BackupError> {
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

pub(super) fn slash(relative: &Path) -> String {
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn is_safe_backup_path(path: &str) -> bool {
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
pub(super) fn copy_file(
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

pub(super) fn hash_in_place(root: &Path, relative: &str) -> Result<Entry, BackupError> {
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

pub(super) fn sha256_of(path: &Path) -> Result<String, BackupError> {
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

pub(super) fn write_new_file(path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
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

pub(super) fn create_dir_mode(dir: &Path, mode: u32) -> Result<(), BackupError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .map_err(io(format!("setting permissions on {}", dir.display())))
}

pub(super) fn is_empty_dir(dir: &Path) -> Result<bool, BackupError> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Syncs every directory of a tree (files were synced as they were written).
pub(super) fn sync_tree(root: &Path) -> Result<(), BackupError> {
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
