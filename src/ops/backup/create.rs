//! CLI side of `backup`: from the running daemon's staging dir or an idle data dir, into a new
//! backup with its manifest; `--keep` rotation.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::files::{
    blob_candidates, copy_file, create_dir_mode, files_under, hash_in_place, is_empty_dir, slash,
    sync_dir, sync_tree, write_new_file,
};
use super::{
    BLOBS, BackupError, BackupOptions, BackupSummary, CONFIG_COPY, DB_FILE, Entry, MANIFEST_FILE,
    MANIFEST_FORMAT, MANIFEST_VERSION, Manifest, ROTATED_PREFIX, SECRET_DIRS, io, store_err,
};
use crate::config::Config;
use crate::ops::admin::{self, AdminError, Request};
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
pub(super) fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, BackupError> {
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
