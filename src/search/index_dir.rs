//! The index directory: opening (schema version, checksums), creating, wiping an unusable one,
//! and its size on disk.

use std::path::Path;

use tantivy::{Index, IndexReader, ReloadPolicy};

use super::SearchError;
use super::schema::{self, register_analyzers};
const VERSION_FILE: &str = "opentranscribe-search.version";

/// `Ok(None)` when `dir` holds no index; `Err(reason)` when it holds one we cannot use.
pub(super) fn try_open(
    dir: &Path,
    schema: &tantivy::schema::Schema,
) -> Result<Option<(Index, IndexReader)>, String> {
    let has_meta = dir.join("meta.json").exists();
    if !has_meta {
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        return if empty {
            Ok(None)
        } else {
            Err("meta.json is missing".to_owned())
        };
    }
    let version = std::fs::read_to_string(dir.join(VERSION_FILE)).unwrap_or_default();
    if version.trim() != schema::SCHEMA_VERSION.to_string() {
        return Err(format!(
            "schema version {:?}, expected {}",
            version.trim(),
            schema::SCHEMA_VERSION
        ));
    }
    let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
    if index.schema() != *schema {
        return Err("the index has another schema".to_owned());
    }
    let corrupt = index.validate_checksum().map_err(|e| e.to_string())?;
    if !corrupt.is_empty() {
        let names: Vec<String> = corrupt.iter().map(|p| p.display().to_string()).collect();
        return Err(format!("checksum mismatch in {}", names.join(", ")));
    }
    register_analyzers(&index);
    let reader = reader_for(&index).map_err(|e| e.to_string())?;
    Ok(Some((index, reader)))
}

pub(super) fn create(
    dir: &Path,
    schema: &tantivy::schema::Schema,
) -> Result<(Index, IndexReader), SearchError> {
    let index = Index::create_in_dir(dir, schema.clone()).map_err(SearchError::index)?;
    register_analyzers(&index);
    std::fs::write(dir.join(VERSION_FILE), schema::SCHEMA_VERSION.to_string())
        .map_err(|e| SearchError::Index(format!("cannot write {VERSION_FILE}: {e}")))?;
    let reader = reader_for(&index).map_err(SearchError::index)?;
    Ok((index, reader))
}

fn reader_for(index: &Index) -> tantivy::Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// Empties an unusable index directory, refusing if it holds anything tantivy or we would
/// not have written (a misconfigured path must never cost someone their files).
pub(super) fn wipe(dir: &Path) -> Result<(), SearchError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SearchError::Index(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = path.is_file()
            && (name == "meta.json"
                || name == ".managed.json"
                || name == VERSION_FILE
                || name.starts_with(".tantivy")
                || name.ends_with(".lock")
                || [
                    ".idx",
                    ".pos",
                    ".term",
                    ".store",
                    ".fast",
                    ".fieldnorm",
                    ".del",
                    ".tmp",
                ]
                .iter()
                .any(|ext| name.ends_with(ext)));
        if !ours {
            return Err(SearchError::Index(format!(
                "{} is unusable and holds {name}, which is not part of a search index; not deleting it",
                dir.display()
            )));
        }
        paths.push(path);
    }
    for path in paths {
        std::fs::remove_file(&path)
            .map_err(|e| SearchError::Index(format!("cannot remove {}: {e}", path.display())))?;
    }
    Ok(())
}

pub(super) fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
