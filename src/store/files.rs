//! File records: insert with the owner index and blob reference, per-user reads, field
//! updates on the current record, delete, blob reference counts, stored transcripts.

use std::collections::HashSet;

use redb::{ReadableDatabase, ReadableTable};

use super::error::Result;
use super::records::{FileRecord, JobRecord};
use super::tables::*;
use super::{Store, db_err, decode, encode, read_record, user_file_key};
use super::{file_order, library, new_job, profiles};

impl Store {
    // ---- files ----

    /// Adds a file record, its owner index entry and a blob reference in one transaction.
    pub fn insert_file(&self, record: &FileRecord) -> Result<()> {
        let bytes = encode(record)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            files
                .insert(record.id.as_str(), bytes.as_slice())
                .map_err(db_err)?;
            let mut user_files = txn.open_table(USER_FILES).map_err(db_err)?;
            user_files
                .insert(
                    user_file_key(&record.owner_id, &record.id).as_str(),
                    record.created_at,
                )
                .map_err(db_err)?;
            file_order::index_file(&txn, record)?;
            let mut refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
            let count = refs
                .get(record.sha256.as_str())
                .map_err(db_err)?
                .map(|v| v.value())
                .unwrap_or(0);
            refs.insert(record.sha256.as_str(), count + 1)
                .map_err(db_err)?;
            // The job is created in the same transaction: no file without its job.
            let job = new_job(record, record.options.priority);
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            jobs.insert(record.id.as_str(), encode(&job)?.as_slice())
                .map_err(db_err)?;
            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
            queue
                .insert(job.queue_key.as_str(), record.id.as_str())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// The file if it exists and belongs to `owner_id`; another user's file is `None`.
    pub fn get_user_file(&self, owner_id: &str, file_id: &str) -> Result<Option<FileRecord>> {
        let record: Option<FileRecord> = self.get_json(FILES, file_id)?;
        Ok(record.filter(|r| r.owner_id == owner_id))
    }

    pub fn list_user_files(&self, owner_id: &str) -> Result<Vec<FileRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let user_files = txn.open_table(USER_FILES).map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let start = format!("{owner_id}/");
        let end = format!("{owner_id}0"); // '0' sorts right after '/'
        let mut out = Vec::new();
        for entry in user_files
            .range(start.as_str()..end.as_str())
            .map_err(db_err)?
        {
            let (key, _) = entry.map_err(db_err)?;
            let Some(file_id) = key.value().split('/').nth(1).map(str::to_owned) else {
                continue;
            };
            if let Some(value) = files.get(file_id.as_str()).map_err(db_err)? {
                out.push(decode(value.value())?);
            }
        }
        Ok(out)
    }

    /// Changes the fields of a user's file that `change` owns, in one transaction over the
    /// current record (so a concurrent status change by a worker is never overwritten).
    /// `Ok(None)` when the file is gone or not the user's.
    pub fn update_user_file(
        &self,
        owner_id: &str,
        file_id: &str,
        change: impl FnOnce(&mut FileRecord),
    ) -> Result<Option<FileRecord>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let updated = {
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let record: Option<FileRecord> = read_record(&files, file_id)?;
            match record.filter(|r| r.owner_id == owner_id) {
                None => None,
                Some(before) => {
                    let mut after = before.clone();
                    change(&mut after);
                    files
                        .insert(file_id, encode(&after)?.as_slice())
                        .map_err(db_err)?;
                    drop(files);
                    // A rename moves the file in the name order, in the same transaction.
                    if after.filename != before.filename || after.size != before.size {
                        file_order::unindex_file(&txn, &before)?;
                        file_order::index_file(&txn, &after)?;
                    }
                    Some(after)
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(updated)
    }

    /// Deletes a user's file. Returns the record and how many files still use its blob, so
    /// the caller removes the blob when that reaches zero.
    pub fn delete_user_file(
        &self,
        owner_id: &str,
        file_id: &str,
    ) -> Result<Option<(FileRecord, u64)>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let files = txn.open_table(FILES).map_err(db_err)?;
            let record: Option<FileRecord> = read_record(&files, file_id)?;
            drop(files);
            match record.filter(|r| r.owner_id == owner_id) {
                None => None,
                Some(record) => {
                    let remaining = remove_file_in(&txn, &record)?;
                    Some((record, remaining))
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(outcome)
    }

    pub fn blob_ref_count(&self, sha256: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
        Ok(refs
            .get(sha256)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// The stored transcript JSON of a user's completed file.
    pub fn get_transcript(&self, owner_id: &str, file_id: &str) -> Result<Option<Vec<u8>>> {
        if self.get_user_file(owner_id, file_id)?.is_none() {
            return Ok(None);
        }
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
        Ok(table
            .get(file_id)
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Every blob some file refers to; the blob sweep keeps these.
    pub fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
        let mut out = HashSet::new();
        for entry in refs.iter().map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            out.insert(key.value().to_owned());
        }
        Ok(out)
    }
}

/// Removes a file and everything hanging off it (owner and order indexes, blob reference, job,
/// queue entry, transcript, collections, comments, profile links, waveform) inside `txn`.
/// Returns how many files still use its blob; a file whose media retention deleted holds no
/// reference any more, so nothing is dropped for it.
pub(crate) fn remove_file_in(txn: &redb::WriteTransaction, record: &FileRecord) -> Result<u64> {
    let file_id = record.id.as_str();
    let mut files = txn.open_table(FILES).map_err(db_err)?;
    files.remove(file_id).map_err(db_err)?;
    drop(files);
    let mut user_files = txn.open_table(USER_FILES).map_err(db_err)?;
    user_files
        .remove(user_file_key(&record.owner_id, file_id).as_str())
        .map_err(db_err)?;
    drop(user_files);
    file_order::unindex_file(txn, record)?;
    let remaining = if record.media_deleted_at.is_some() {
        blob_ref_in(txn, &record.sha256)?
    } else {
        drop_blob_ref_in(txn, &record.sha256)?
    };
    let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
    let job: Option<JobRecord> = match jobs.remove(file_id).map_err(db_err)? {
        Some(value) => Some(decode(value.value())?),
        None => None,
    };
    if let Some(job) = job {
        let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
        queue.remove(job.queue_key.as_str()).map_err(db_err)?;
    }
    let mut transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
    let old: Option<crate::transcript::Transcript> =
        match transcripts.remove(file_id).map_err(db_err)? {
            Some(value) => decode(value.value()).ok(),
            None => None,
        };
    drop(transcripts);
    library::forget_file(txn, file_id)?;
    profiles::forget_file(txn, file_id, old.as_ref())?;
    let mut waveforms = txn.open_table(WAVEFORMS).map_err(db_err)?;
    waveforms.remove(file_id).map_err(db_err)?;
    drop(waveforms);
    super::summaries::forget_file(txn, file_id)?;
    Ok(remaining)
}

fn blob_ref_in(txn: &redb::WriteTransaction, sha256: &str) -> Result<u64> {
    let refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
    Ok(refs
        .get(sha256)
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(0))
}

/// Drops one reference to a blob; returns how many remain.
pub(crate) fn drop_blob_ref_in(txn: &redb::WriteTransaction, sha256: &str) -> Result<u64> {
    let mut refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
    let count = refs
        .get(sha256)
        .map_err(db_err)?
        .map(|v| v.value())
        .unwrap_or(0);
    let remaining = count.saturating_sub(1);
    if remaining == 0 {
        refs.remove(sha256).map_err(db_err)?;
    } else {
        refs.insert(sha256, remaining).map_err(db_err)?;
    }
    Ok(remaining)
}
