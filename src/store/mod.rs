//! redb storage: the only module that opens the database. All methods block; callers on the
//! async executor go through `spawn_blocking`.

mod accounts;
pub mod audit;
pub mod backup;
pub mod error;
pub mod file_order;
mod files;
pub mod library;
pub mod migrate;
pub mod profiles;
mod queue;
pub mod records;
pub mod retention;
pub mod summaries;
pub mod tables;
pub mod uploads;
pub mod webhooks;

pub use accounts::Revoke;
pub(crate) use queue::new_job;
pub use queue::{Decision, JobControl, JobOutcome, RetryPolicy, decide};

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use error::Result;
pub use error::StoreError;
use records::{FileRecord, UserRecord};
use tables::*;

/// Cheap to clone: one shared database handle.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// What `register_user` decided about a new account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationPolicy {
    Open,
    Closed,
}

pub(crate) fn db_err(error: impl std::fmt::Display) -> StoreError {
    StoreError::Db(error.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(db_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(db_err)
}

/// Reads and decodes one JSON record from an open table (inside a read or write transaction).
fn read_record<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<T>> {
    match table.get(key).map_err(db_err)? {
        Some(value) => Ok(Some(decode(value.value())?)),
        None => Ok(None),
    }
}

pub(crate) fn user_file_key(owner_id: &str, file_id: &str) -> String {
    format!("{owner_id}/{file_id}")
}

pub(crate) fn create_all_tables(txn: &WriteTransaction) -> std::result::Result<(), redb::Error> {
    txn.open_table(META)?;
    txn.open_table(USERS)?;
    txn.open_table(USERNAMES)?;
    txn.open_table(SESSIONS)?;
    txn.open_table(API_TOKENS)?;
    txn.open_table(FILES)?;
    txn.open_table(USER_FILES)?;
    txn.open_table(USER_FILE_ORDER)?;
    txn.open_table(BLOB_REFS)?;
    txn.open_table(JOBS)?;
    txn.open_table(QUEUE)?;
    txn.open_table(TRANSCRIPTS)?;
    txn.open_table(COLLECTIONS)?;
    txn.open_table(COLLECTION_FILES)?;
    txn.open_table(FILE_COLLECTIONS)?;
    txn.open_table(USER_COLLECTIONS)?;
    txn.open_table(COMMENTS)?;
    txn.open_table(PROFILES)?;
    txn.open_table(USER_PROFILES)?;
    txn.open_table(PROFILE_FILES)?;
    txn.open_table(SPEAKER_EMBEDDINGS)?;
    txn.open_table(WAVEFORMS)?;
    txn.open_table(AUDIT)?;
    txn.open_table(RETENTION_RULES)?;
    txn.open_table(WEBHOOKS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERY_DUE)?;
    txn.open_table(USER_DELIVERIES)?;
    txn.open_table(UPLOADS)?;
    txn.open_table(SUMMARIES)?;
    txn.open_table(LLM_PROMPTS)?;
    Ok(())
}

/// Removes, inside `txn`, every record of `table` that `doomed` picks; returns how many went.
pub(crate) fn remove_in<T: DeserializeOwned>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &[u8]>,
    doomed: impl Fn(&str, &T) -> bool,
) -> Result<usize> {
    let mut table = txn.open_table(table).map_err(db_err)?;
    let mut keys = Vec::new();
    for entry in table.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        let record: T = decode(value.value())?;
        if doomed(key.value(), &record) {
            keys.push(key.value().to_owned());
        }
    }
    for key in &keys {
        table.remove(key.as_str()).map_err(db_err)?;
    }
    Ok(keys.len())
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the database and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(db_err)?;
        }
        let db = Database::create(path)
            .map_err(|e| db_err(format!("cannot open database {}: {e}", path.display())))?;
        // Refuse a newer schema before writing anything; copy the file before migrating it.
        let pending = migrate::pending(&db)
            .map_err(|e| StoreError::DatabaseTooNew(format!("{}: {e}", path.display())))?;
        if let Some(from_version) = pending {
            let copy = backup::copy_before_migration(&db, path, from_version).map_err(|e| {
                db_err(format!(
                    "not migrating {}: the pre-migration backup failed: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(backup = %copy.display(), from = from_version, "database copied before migration");
        }
        let txn = db.begin_write().map_err(db_err)?;
        migrate::run(&txn).map_err(|e| db_err(format!("{}: {e}", path.display())))?;
        txn.commit().map_err(db_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta
            .get(SCHEMA_VERSION_KEY)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// A cheap liveness check for `/api/ready`.
    pub fn check(&self) -> Result<()> {
        let txn = self.db.begin_read().map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?;
        Ok(())
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(table).map_err(db_err)?;
        read_record(&table, key)
    }

    /// Removes, in one transaction, every record of `table` that `doomed` picks (by key and
    /// decoded value); returns how many went.
    fn remove_where<T: DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        doomed: impl Fn(&str, &T) -> bool,
    ) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = remove_in(&txn, table, doomed)?;
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Read-modify-write of one record in one write transaction: `change` sees the current
    /// record and says whether to save it. `None` when the record is gone (nothing is revived).
    fn update_json<T: Serialize + DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        change: impl FnOnce(&mut T) -> Result<bool>,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut table = txn.open_table(table).map_err(db_err)?;
            let Some(mut record) = read_record::<T>(&table, key)? else {
                return Ok(None);
            };
            if !change(&mut record)? {
                return Ok(Some(record));
            }
            table
                .insert(key, encode(&record)?.as_slice())
                .map_err(db_err)?;
            record
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(table).map_err(db_err)?;
            table.insert(key, bytes.as_slice()).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }
}

/// Writes a database in the version-1 layout (files only, no derived indexes), as released
/// code of that version did. Tests use it to prove that current code migrates old data.
#[doc(hidden)]
pub fn write_v1_fixture(path: &Path, users: &[UserRecord], files: &[FileRecord]) -> Result<()> {
    let db = Database::create(path).map_err(db_err)?;
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut meta = txn.open_table(META).map_err(db_err)?;
        meta.insert(SCHEMA_VERSION_KEY, 1).map_err(db_err)?;
        let mut user_table = txn.open_table(USERS).map_err(db_err)?;
        let mut names = txn.open_table(USERNAMES).map_err(db_err)?;
        for user in users {
            user_table
                .insert(user.id.as_str(), encode(user)?.as_slice())
                .map_err(db_err)?;
            names
                .insert(user.username.to_lowercase().as_str(), user.id.as_str())
                .map_err(db_err)?;
        }
        txn.open_table(SESSIONS).map_err(db_err)?;
        txn.open_table(API_TOKENS).map_err(db_err)?;
        let mut file_table = txn.open_table(FILES).map_err(db_err)?;
        for file in files {
            file_table
                .insert(file.id.as_str(), encode(file)?.as_slice())
                .map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)
}
