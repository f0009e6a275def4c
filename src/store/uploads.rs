//! Resumable upload sessions (`/api/uploads`): who uploads what, and how many bytes of it the
//! server holds durably. The bytes themselves live in a partial file under the data dir
//! (`services::uploads`); the offset here only moves forward after they were fsynced, in one
//! write transaction that checks the offset the writer started from.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::records::UploadOptions;
use super::tables::UPLOADS;
use super::{Store, db_err, decode, encode, read_record};

/// What a session uploads: a file chosen by the user, or a browser recording, which the
/// daemon completes by itself when its chunks stop coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    File,
    Recording,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadState {
    /// Receiving chunks.
    Active,
    /// Turned into a file (`file_id`); kept a while so a repeated `complete` answers the same.
    Completed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub id: String,
    pub owner_id: String,
    pub filename: String,
    pub kind: UploadKind,
    /// The size the client announced, if it did; chunks may not go past it.
    pub total: Option<u64>,
    /// Bytes received and fsynced.
    pub offset: u64,
    pub options: UploadOptions,
    pub state: UploadState,
    #[serde(default)]
    pub file_id: Option<String>,
    pub created_at: u64,
    /// The last chunk (or the completion).
    pub updated_at: u64,
}

/// Why [`Store::advance_upload`] did not move the offset.
#[derive(Debug, Clone, PartialEq)]
pub enum AdvanceRefused {
    /// The session's offset is not the one the writer started from.
    Mismatch(u64),
    /// The session was completed meanwhile.
    Finished(u64),
}

impl Store {
    pub fn create_upload(&self, record: &UploadRecord) -> Result<()> {
        self.put_json(UPLOADS, &record.id, record)
    }

    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRecord>> {
        self.get_json(UPLOADS, id)
    }

    /// Moves an active session's offset from `from` to `to` in one write transaction, only if
    /// it still is at `from`; `NotFound` when the session is gone.
    pub fn advance_upload(
        &self,
        id: &str,
        from: u64,
        to: u64,
        now: u64,
    ) -> Result<std::result::Result<UploadRecord, AdvanceRefused>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut table = txn.open_table(UPLOADS).map_err(db_err)?;
            let mut record: UploadRecord =
                read_record(&table, id)?.ok_or(StoreError::NotFound("upload"))?;
            if record.state != UploadState::Active {
                return Ok(Err(AdvanceRefused::Finished(record.offset)));
            }
            if record.offset != from {
                return Ok(Err(AdvanceRefused::Mismatch(record.offset)));
            }
            record.offset = to;
            record.updated_at = now;
            table
                .insert(id, encode(&record)?.as_slice())
                .map_err(db_err)?;
            record
        };
        txn.commit().map_err(db_err)?;
        Ok(Ok(record))
    }

    /// Marks an active session completed with the file it became (one write transaction).
    pub fn finish_upload(&self, id: &str, file_id: &str, now: u64) -> Result<UploadRecord> {
        self.update_json(UPLOADS, id, |record: &mut UploadRecord| {
            if record.state != UploadState::Active {
                return Err(StoreError::Invalid("the upload was already completed"));
            }
            record.state = UploadState::Completed;
            record.file_id = Some(file_id.to_owned());
            record.updated_at = now;
            Ok(true)
        })?
        .ok_or(StoreError::NotFound("upload"))
    }

    /// Removes a session record; whether there was one.
    pub fn remove_upload(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(UPLOADS).map_err(db_err)?;
            table.remove(id).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Every session (housekeeping; there are few: they end within a day).
    pub fn list_uploads(&self) -> Result<Vec<UploadRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(UPLOADS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }
}
