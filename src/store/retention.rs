//! Retention: each user's own rule, the collections that exempt their files, and the two
//! deletions housekeeping makes (the media only, or the whole file). Each deletion checks again,
//! inside its write transaction, that the file is still due and not exempt, and appends its
//! audit entry in that same transaction, so a concurrent edit, tag or collection change can
//! neither be undone nor revive a deleted file.

use std::collections::{HashMap, HashSet};

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::audit::{AuditRecord, append_in};
use super::error::Result;
use super::files::{drop_blob_ref_in, remove_file_in};
use super::records::{CollectionRecord, FileRecord, FileStatus};
use super::tables::*;
use super::{Store, db_err, decode, encode, read_record};

/// A user's own rule: days after upload; `None` leaves that part to the site rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionRule {
    #[serde(default)]
    pub media_days: Option<u64>,
    #[serde(default)]
    pub transcript_days: Option<u64>,
}

/// What retention may do to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionAction {
    /// Delete the media blob; the record, transcript and comments stay.
    DeleteMedia,
    /// Delete the whole file, as `DELETE /api/files/{id}` does.
    DeleteFile,
}

/// Whether retention may take this action on the file now: never while a worker processes
/// it, and its media only once no job waits for them (a queued file is deleted whole or not at
/// all).
pub fn may_act(record: &FileRecord, action: RetentionAction) -> bool {
    match action {
        RetentionAction::DeleteFile => record.status != FileStatus::Processing,
        RetentionAction::DeleteMedia => {
            !matches!(record.status, FileStatus::Queued | FileStatus::Processing)
                && record.media_deleted_at.is_none()
        }
    }
}

/// Whether a collection holding the file is marked `retention_exempt` (inside `txn`).
fn is_exempt_in(txn: &WriteTransaction, file_id: &str) -> Result<bool> {
    let file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
    let collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
    let start = format!("{file_id}/");
    let end = format!("{file_id}0");
    for entry in file_collections
        .range(start.as_str()..end.as_str())
        .map_err(db_err)?
    {
        let (key, _) = entry.map_err(db_err)?;
        let Some(collection_id) = key.value().split('/').nth(1) else {
            continue;
        };
        if read_record::<CollectionRecord>(&collections, collection_id)?
            .is_some_and(|c| c.retention_exempt)
        {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Store {
    pub fn retention_rule(&self, user_id: &str) -> Result<Option<RetentionRule>> {
        self.get_json(RETENTION_RULES, user_id)
    }

    /// Sets (or with `None` removes) a user's rule; returns the rule it replaced.
    pub fn set_retention_rule(
        &self,
        user_id: &str,
        rule: Option<&RetentionRule>,
    ) -> Result<Option<RetentionRule>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let before = {
            let mut table = txn.open_table(RETENTION_RULES).map_err(db_err)?;
            let before: Option<RetentionRule> = read_record(&table, user_id)?;
            match rule {
                Some(rule) => {
                    table
                        .insert(user_id, encode(rule)?.as_slice())
                        .map_err(db_err)?;
                }
                None => {
                    table.remove(user_id).map_err(db_err)?;
                }
            }
            before
        };
        txn.commit().map_err(db_err)?;
        Ok(before)
    }

    /// Every user's own rule.
    pub fn retention_rules(&self) -> Result<HashMap<String, RetentionRule>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(RETENTION_RULES).map_err(db_err)?;
        let mut out = HashMap::new();
        for entry in table.iter().map_err(db_err)? {
            let (key, value) = entry.map_err(db_err)?;
            out.insert(key.value().to_owned(), decode(value.value())?);
        }
        Ok(out)
    }

    /// Files retention may consider (not being processed, not in an exempt collection):
    /// `owner_id = None` for everyone's.
    pub fn retention_candidates(&self, owner_id: Option<&str>) -> Result<Vec<FileRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
        let collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
        let mut exempt = HashSet::new();
        for entry in collections.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let collection: CollectionRecord = decode(value.value())?;
            if !collection.retention_exempt {
                continue;
            }
            let start = format!("{}/", collection.id);
            let end = format!("{}0", collection.id);
            for entry in collection_files
                .range(start.as_str()..end.as_str())
                .map_err(db_err)?
            {
                let (key, _) = entry.map_err(db_err)?;
                if let Some(file_id) = key.value().split('/').nth(1) {
                    exempt.insert(file_id.to_owned());
                }
            }
        }
        let files = txn.open_table(FILES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in files.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let record: FileRecord = decode(value.value())?;
            if owner_id.is_some_and(|owner| owner != record.owner_id)
                || record.status == FileStatus::Processing
                || exempt.contains(&record.id)
            {
                continue;
            }
            out.push(record);
        }
        Ok(out)
    }

    /// Carries out one retention action on a file uploaded at or before `cutoff`, if it still
    /// qualifies inside the transaction (exists, [`may_act`], not exempt),
    /// and appends `audit` with it. Returns the record as it was and how many files still use
    /// its blob (the caller removes the blob at zero); `None` when nothing was done.
    pub fn apply_retention(
        &self,
        file_id: &str,
        action: RetentionAction,
        cutoff: u64,
        now: u64,
        audit: &AuditRecord,
    ) -> Result<Option<(FileRecord, u64)>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record: Option<FileRecord> = {
            let files = txn.open_table(FILES).map_err(db_err)?;
            read_record(&files, file_id)?
        };
        let Some(record) = record else {
            return Ok(None);
        };
        if record.created_at > cutoff || !may_act(&record, action) || is_exempt_in(&txn, file_id)? {
            return Ok(None);
        }
        let remaining = match action {
            RetentionAction::DeleteFile => remove_file_in(&txn, &record)?,
            RetentionAction::DeleteMedia => {
                let mut changed = record.clone();
                changed.media_deleted_at = Some(now);
                changed.updated_at = now;
                let mut files = txn.open_table(FILES).map_err(db_err)?;
                files
                    .insert(file_id, encode(&changed)?.as_slice())
                    .map_err(db_err)?;
                drop(files);
                drop_blob_ref_in(&txn, &record.sha256)?
            }
        };
        append_in(&txn, audit)?;
        txn.commit().map_err(db_err)?;
        Ok(Some((record, remaining)))
    }
}
