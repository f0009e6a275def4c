//! redb storage: the only module that opens the database. All methods block; callers on the
//! async executor go through `spawn_blocking`.

pub mod backup;
pub mod library;
pub mod migrate;
pub mod profiles;
pub mod records;
pub mod tables;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use records::{ApiTokenRecord, FileRecord, JobRecord, Role, SessionRecord, UserRecord};
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

pub(crate) fn db_err(error: impl std::fmt::Display) -> Error {
    Error::internal("store", error)
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
    Ok(())
}

/// A fresh queued job for a file. The queue key orders by priority, then creation time.
pub(crate) fn new_job(file: &FileRecord, priority: u8) -> JobRecord {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    JobRecord {
        file_id: file.id.clone(),
        owner_id: file.owner_id.clone(),
        state: "queued".to_owned(),
        attempts: 0,
        lease_until: 0,
        not_before: 0,
        stage: "queued".to_owned(),
        progress: 0.0,
        created_at: file.created_at,
        updated_at: file.created_at,
        error: None,
        cancel_requested: false,
        queue_key: format!("{priority:03}/{now_ms:020}/{}", file.id),
        priority,
        reprocess: Vec::new(),
        stage_seconds: Vec::new(),
    }
}

/// Queues a new job for a file that ended (retry, reprocess) at the file's own priority, and
/// marks the file queued; inside the caller's transaction.
fn requeue(
    txn: &WriteTransaction,
    jobs: &mut redb::Table<&str, &[u8]>,
    files: &mut redb::Table<&str, &[u8]>,
    file: &mut FileRecord,
    reprocess: Vec<String>,
    now: u64,
) -> Result<()> {
    let mut job = new_job(file, file.options.priority);
    job.reprocess = reprocess;
    job.created_at = now;
    job.updated_at = now;
    let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
    queue
        .insert(job.queue_key.as_str(), file.id.as_str())
        .map_err(db_err)?;
    jobs.insert(file.id.as_str(), encode(&job)?.as_slice())
        .map_err(db_err)?;
    file.status = "queued".to_owned();
    file.progress = 0.0;
    file.error = None;
    file.updated_at = now;
    files
        .insert(file.id.as_str(), encode(&*file)?.as_slice())
        .map_err(db_err)?;
    Ok(())
}

/// What a running job's worker learns when it reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    Continue,
    /// Cancelled by the user, or the file was deleted: stop now.
    Stop,
}

/// How a job ended, for [`Store::finish_job`].
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Completed {
        transcript_json: Vec<u8>,
        /// JSON speaker id → embedding, when the file was diarized.
        speaker_embeddings: Option<Vec<u8>>,
        /// JSON waveform peaks.
        waveform: Option<Vec<u8>>,
        /// Seconds per stage, kept on the job record.
        stage_seconds: Vec<(String, f64)>,
    },
    /// A failure that will not go away by retrying (bad media): the file ends in `error`.
    Failed {
        message: String,
    },
    /// A failure worth another attempt after `backoff_secs` (up to `max_attempts`).
    Retry {
        message: String,
        backoff_secs: u64,
        max_attempts: u32,
    },
    Cancelled,
}

/// What a user change means for the user's sign-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoke {
    /// Sessions and API tokens stay.
    Nothing,
    /// The password changed or the account was disabled: sessions (but the caller's own, when
    /// it changes its own password) and every API token end in the same transaction.
    Credentials,
}

/// Deletes a user's sessions (but `keep`) and API tokens inside `txn`.
fn revoke_credentials(
    txn: &WriteTransaction,
    user_id: &str,
    keep: Option<&str>,
) -> Result<(usize, usize)> {
    let sessions = remove_in(txn, SESSIONS, |key, record: &SessionRecord| {
        record.user_id == user_id && Some(key) != keep
    })?;
    let tokens = remove_in(txn, API_TOKENS, |_, record: &ApiTokenRecord| {
        record.user_id == user_id
    })?;
    Ok((sessions, tokens))
}

/// Removes, inside `txn`, every record of `table` that `doomed` picks; returns how many went.
fn remove_in<T: DeserializeOwned>(
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
            .map_err(|e| Error::new("database-too-new", format!("{}: {e}", path.display())))?;
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

    // ---- users ----

    /// Creates a self-registered user in one transaction: the first user becomes admin;
    /// later ones only when registration is open.
    pub fn register_user(
        &self,
        id: &str,
        username: &str,
        password_hash: &str,
        policy: RegistrationPolicy,
    ) -> Result<UserRecord> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let users = txn.open_table(USERS).map_err(db_err)?;
            let is_first = users.first().map_err(db_err)?.is_none();
            if !is_first && policy == RegistrationPolicy::Closed {
                return Err(Error::new(
                    "registration-closed",
                    "registration is closed; ask an administrator for an account",
                ));
            }
            drop(users);
            let role = if is_first { Role::Admin } else { Role::User };
            insert_user(&txn, id, username, password_hash, role)?
        };
        txn.commit().map_err(db_err)?;
        Ok(record)
    }

    pub fn create_user(
        &self,
        id: &str,
        username: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<UserRecord> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = insert_user(&txn, id, username, password_hash, role)?;
        txn.commit().map_err(db_err)?;
        Ok(record)
    }

    pub fn get_user(&self, id: &str) -> Result<Option<UserRecord>> {
        self.get_json(USERS, id)
    }

    pub fn get_user_by_name(&self, username: &str) -> Result<Option<UserRecord>> {
        let id = {
            let txn = self.db.begin_read().map_err(db_err)?;
            let names = txn.open_table(USERNAMES).map_err(db_err)?;
            names
                .get(username.to_lowercase().as_str())
                .map_err(db_err)?
                .map(|v| v.value().to_owned())
        };
        match id {
            Some(id) => self.get_user(&id),
            None => Ok(None),
        }
    }

    /// Changes a user in one transaction; when `change` reports that the user's credentials
    /// changed (password, disabled), every session (but `keep`) and every API token of the user
    /// ends in the same transaction. `Ok(None)` when the user is gone.
    pub fn update_user(
        &self,
        user_id: &str,
        keep_session: Option<&str>,
        change: impl FnOnce(&mut UserRecord) -> Result<Revoke>,
    ) -> Result<Option<UserRecord>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut users = txn.open_table(USERS).map_err(db_err)?;
            let Some(mut record) = read_record::<UserRecord>(&users, user_id)? else {
                return Ok(None);
            };
            let revoke = change(&mut record)?;
            users
                .insert(user_id, encode(&record)?.as_slice())
                .map_err(db_err)?;
            drop(users);
            if revoke == Revoke::Credentials {
                revoke_credentials(&txn, user_id, keep_session)?;
            }
            record
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    /// Ends every session and API token of a user in one transaction ("sign out everywhere").
    /// Returns how many sessions and tokens ended.
    pub fn end_user_credentials(&self, user_id: &str) -> Result<(usize, usize)> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let ended = revoke_credentials(&txn, user_id, None)?;
        txn.commit().map_err(db_err)?;
        Ok(ended)
    }

    pub fn list_users(&self) -> Result<Vec<UserRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let users = txn.open_table(USERS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in users.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }

    // ---- sessions ----

    pub fn insert_session(&self, token_hash: &str, record: &SessionRecord) -> Result<()> {
        self.put_json(SESSIONS, token_hash, record)
    }

    pub fn get_session(&self, token_hash: &str) -> Result<Option<SessionRecord>> {
        self.get_json(SESSIONS, token_hash)
    }

    /// Refreshes a session's idle timer in one transaction; a session deleted meanwhile stays
    /// deleted.
    pub fn touch_session(&self, token_hash: &str, now: u64) -> Result<()> {
        self.update_json(SESSIONS, token_hash, |record: &mut SessionRecord| {
            record.last_seen_at = record.last_seen_at.max(now);
            Ok(true)
        })?;
        Ok(())
    }

    pub fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(SESSIONS).map_err(db_err)?;
            table.remove(token_hash).map_err(db_err)?.is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Ends every session of a user except `keep` (the caller's own, when changing a password).
    pub fn delete_user_sessions(&self, user_id: &str, keep: Option<&str>) -> Result<usize> {
        self.remove_where(SESSIONS, |key, record: &SessionRecord| {
            record.user_id == user_id && Some(key) != keep
        })
    }

    /// Removes sessions past their idle or absolute expiry.
    pub fn purge_sessions(&self, now: u64, idle_secs: u64, absolute_secs: u64) -> Result<usize> {
        self.remove_where(SESSIONS, |_, record: &SessionRecord| {
            now.saturating_sub(record.last_seen_at) > idle_secs
                || now.saturating_sub(record.created_at) > absolute_secs
        })
    }

    // ---- API tokens ----

    pub fn insert_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<()> {
        self.put_json(API_TOKENS, token_hash, record)
    }

    pub fn get_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        self.get_json(API_TOKENS, token_hash)
    }

    /// Records a token's use (at most once a minute) in one transaction; a token revoked
    /// meanwhile stays revoked.
    pub fn touch_api_token(&self, token_hash: &str, now: u64) -> Result<()> {
        self.update_json(API_TOKENS, token_hash, |record: &mut ApiTokenRecord| {
            let stale = record
                .last_used_at
                .is_none_or(|t| now.saturating_sub(t) > 60);
            if stale {
                record.last_used_at = Some(now);
            }
            Ok(stale)
        })?;
        Ok(())
    }

    pub fn list_api_tokens(&self, user_id: &str) -> Result<Vec<ApiTokenRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(API_TOKENS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let record: ApiTokenRecord = decode(value.value())?;
            if record.user_id == user_id {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn delete_api_token(&self, user_id: &str, token_id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(API_TOKENS).map_err(db_err)?;
            let mut doomed = None;
            for entry in table.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let record: ApiTokenRecord = decode(value.value())?;
                if record.user_id == user_id && record.id == token_id {
                    doomed = Some(key.value().to_owned());
                    break;
                }
            }
            match doomed {
                Some(key) => table.remove(key.as_str()).map_err(db_err)?.is_some(),
                None => false,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

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
        let updated = self.update_json(FILES, file_id, |record: &mut FileRecord| {
            let owned = record.owner_id == owner_id;
            if owned {
                change(record);
            }
            Ok(owned)
        })?;
        Ok(updated.filter(|record| record.owner_id == owner_id))
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
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let record: Option<FileRecord> = read_record(&files, file_id)?;
            match record.filter(|r| r.owner_id == owner_id) {
                None => None,
                Some(record) => {
                    files.remove(file_id).map_err(db_err)?;
                    let mut user_files = txn.open_table(USER_FILES).map_err(db_err)?;
                    user_files
                        .remove(user_file_key(owner_id, file_id).as_str())
                        .map_err(db_err)?;
                    let mut refs = txn.open_table(BLOB_REFS).map_err(db_err)?;
                    let count = refs
                        .get(record.sha256.as_str())
                        .map_err(db_err)?
                        .map(|v| v.value())
                        .unwrap_or(0);
                    let remaining = count.saturating_sub(1);
                    if remaining == 0 {
                        refs.remove(record.sha256.as_str()).map_err(db_err)?;
                    } else {
                        refs.insert(record.sha256.as_str(), remaining)
                            .map_err(db_err)?;
                    }
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
                    library::forget_file(&txn, file_id)?;
                    profiles::forget_file(&txn, file_id, old.as_ref())?;
                    let mut waveforms = txn.open_table(WAVEFORMS).map_err(db_err)?;
                    waveforms.remove(file_id).map_err(db_err)?;
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

    // ---- jobs ----

    /// Takes the next queued job that may run now: it becomes `running` under a lease, and its
    /// file `processing`, in one transaction.
    pub fn claim_job(&self, now: u64, lease_secs: u64) -> Result<Option<(JobRecord, FileRecord)>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let claimed = {
            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let mut found: Option<(String, JobRecord)> = None;
            let mut stale = Vec::new();
            for entry in queue.iter().map_err(db_err)? {
                let (key, file_id) = entry.map_err(db_err)?;
                let job: Option<JobRecord> = read_record(&jobs, file_id.value())?;
                match job {
                    Some(job) if job.state == "queued" => {
                        if job.not_before <= now {
                            found = Some((key.value().to_owned(), job));
                            break;
                        }
                    }
                    _ => stale.push(key.value().to_owned()),
                }
            }
            for key in &stale {
                queue.remove(key.as_str()).map_err(db_err)?;
            }
            match found {
                None => None,
                Some((key, mut job)) => {
                    queue.remove(key.as_str()).map_err(db_err)?;
                    let file: Option<FileRecord> = read_record(&files, job.file_id.as_str())?;
                    match file {
                        None => {
                            jobs.remove(job.file_id.as_str()).map_err(db_err)?;
                            None
                        }
                        Some(mut file) => {
                            job.state = "running".to_owned();
                            job.attempts += 1;
                            job.lease_until = now + lease_secs;
                            job.stage = "starting".to_owned();
                            job.progress = 0.0;
                            job.updated_at = now;
                            jobs.insert(job.file_id.as_str(), encode(&job)?.as_slice())
                                .map_err(db_err)?;
                            file.status = "processing".to_owned();
                            file.progress = 0.0;
                            file.error = None;
                            file.updated_at = now;
                            files
                                .insert(file.id.as_str(), encode(&file)?.as_slice())
                                .map_err(db_err)?;
                            Some((job, file))
                        }
                    }
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(claimed)
    }

    /// Records progress and renews the lease; tells the worker whether to go on.
    pub fn heartbeat(
        &self,
        file_id: &str,
        stage: &str,
        progress: f32,
        now: u64,
        lease_secs: u64,
    ) -> Result<JobControl> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let control = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            match job {
                Some(mut job) if job.state == "running" && !job.cancel_requested => {
                    job.stage = stage.to_owned();
                    job.progress = progress;
                    job.lease_until = now + lease_secs;
                    job.updated_at = now;
                    jobs.insert(file_id, encode(&job)?.as_slice())
                        .map_err(db_err)?;
                    let mut files = txn.open_table(FILES).map_err(db_err)?;
                    let file: Option<FileRecord> = read_record(&files, file_id)?;
                    if let Some(mut file) = file {
                        file.progress = progress;
                        file.updated_at = now;
                        files
                            .insert(file_id, encode(&file)?.as_slice())
                            .map_err(db_err)?;
                    }
                    JobControl::Continue
                }
                _ => JobControl::Stop,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(control)
    }

    /// Ends a running job and updates its file in one transaction. A job that is no longer
    /// running (deleted, or already finished by another attempt) is left alone, so a result is
    /// saved at most once.
    pub fn finish_job(
        &self,
        file_id: &str,
        outcome: JobOutcome,
        now: u64,
    ) -> Result<Option<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            match (job, file) {
                (Some(mut job), Some(mut file)) if job.state == "running" => {
                    let outcome = if job.cancel_requested {
                        JobOutcome::Cancelled
                    } else {
                        outcome
                    };
                    match outcome {
                        JobOutcome::Completed {
                            transcript_json,
                            speaker_embeddings,
                            waveform,
                            stage_seconds,
                        } => {
                            job.stage_seconds = stage_seconds;
                            if let Some(waveform) = &waveform {
                                let mut table = txn.open_table(WAVEFORMS).map_err(db_err)?;
                                table.insert(file_id, waveform.as_slice()).map_err(db_err)?;
                            }
                            let mut transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
                            transcripts
                                .insert(file_id, transcript_json.as_slice())
                                .map_err(db_err)?;
                            profiles::save_speaker_data(
                                &txn,
                                file_id,
                                &transcript_json,
                                speaker_embeddings.as_deref(),
                            )?;
                            job.state = "done".to_owned();
                            job.stage = "done".to_owned();
                            job.progress = 1.0;
                            file.status = "completed".to_owned();
                            file.progress = 1.0;
                            file.error = None;
                        }
                        JobOutcome::Failed { message } => {
                            job.state = "failed".to_owned();
                            job.error = Some(message.clone());
                            file.status = "error".to_owned();
                            file.error = Some(message);
                        }
                        JobOutcome::Retry {
                            message,
                            backoff_secs,
                            max_attempts,
                        } => {
                            if job.attempts >= max_attempts {
                                job.state = "failed".to_owned();
                                job.error = Some(message.clone());
                                file.status = "error".to_owned();
                                file.error = Some(message);
                            } else {
                                job.state = "queued".to_owned();
                                job.error = Some(message);
                                job.not_before = now + backoff_secs;
                                job.stage = "queued".to_owned();
                                let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
                                queue
                                    .insert(job.queue_key.as_str(), file_id)
                                    .map_err(db_err)?;
                                file.status = "queued".to_owned();
                                file.progress = 0.0;
                            }
                        }
                        JobOutcome::Cancelled => {
                            job.state = "cancelled".to_owned();
                            job.cancel_requested = false;
                            file.status = "cancelled".to_owned();
                        }
                    }
                    job.updated_at = now;
                    file.updated_at = now;
                    jobs.insert(file_id, encode(&job)?.as_slice())
                        .map_err(db_err)?;
                    files
                        .insert(file_id, encode(&file)?.as_slice())
                        .map_err(db_err)?;
                    Some(file.status)
                }
                _ => None,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(status)
    }

    /// Puts running jobs whose lease ran out (their worker died) back in the queue.
    pub fn recover_jobs(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let recovered = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let mut expired = Vec::new();
            for entry in jobs.iter().map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                let job: JobRecord = decode(value.value())?;
                if job.state == "running" && job.lease_until <= now {
                    expired.push(job);
                }
            }
            for mut job in expired.iter().cloned() {
                job.state = if job.cancel_requested {
                    "cancelled"
                } else {
                    "queued"
                }
                .to_owned();
                job.stage = job.state.clone();
                job.progress = 0.0;
                job.updated_at = now;
                if job.state == "queued" {
                    queue
                        .insert(job.queue_key.as_str(), job.file_id.as_str())
                        .map_err(db_err)?;
                }
                jobs.insert(job.file_id.as_str(), encode(&job)?.as_slice())
                    .map_err(db_err)?;
                let file: Option<FileRecord> = read_record(&files, job.file_id.as_str())?;
                if let Some(mut file) = file {
                    file.status = job.state.clone();
                    file.progress = 0.0;
                    files
                        .insert(file.id.as_str(), encode(&file)?.as_slice())
                        .map_err(db_err)?;
                }
            }
            expired.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(recovered)
    }

    /// Cancels a user's queued or running job. Returns the file's new status, `None` if the
    /// file is not the user's, and an error if there is nothing to cancel.
    pub fn cancel_job(&self, owner_id: &str, file_id: &str, now: u64) -> Result<Option<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            let Some(mut job) = job else {
                return Err(Error::new(
                    "not-cancellable",
                    "this file has no job to cancel",
                ));
            };
            match job.state.as_str() {
                "queued" => {
                    let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
                    queue.remove(job.queue_key.as_str()).map_err(db_err)?;
                    job.state = "cancelled".to_owned();
                    file.status = "cancelled".to_owned();
                }
                "running" => {
                    // The worker sees this at its next progress report and stops.
                    job.cancel_requested = true;
                }
                _ => {
                    return Err(Error::new(
                        "not-cancellable",
                        format!("the file is {}, not queued or processing", file.status),
                    ));
                }
            }
            job.updated_at = now;
            file.updated_at = now;
            jobs.insert(file_id, encode(&job)?.as_slice())
                .map_err(db_err)?;
            files
                .insert(file_id, encode(&file)?.as_slice())
                .map_err(db_err)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    /// Queues a failed or cancelled file again.
    /// Queues chosen stages of a finished file again with new options (e.g. another speaker
    /// count). `stages` empty runs everything; `["diarize"]` keeps the transcript's text.
    pub fn reprocess_job(
        &self,
        owner_id: &str,
        file_id: &str,
        stages: Vec<String>,
        options: records::UploadOptions,
        now: u64,
    ) -> Result<Option<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            if matches!(file.status.as_str(), "queued" | "processing") {
                return Err(Error::new(
                    "not-retryable",
                    format!("the file is {}; wait until it ends", file.status),
                ));
            }
            if !stages.is_empty() {
                let transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
                if transcripts.get(file_id).map_err(db_err)?.is_none() {
                    return Err(Error::new(
                        "transcript-not-ready",
                        "the file has no transcript to relabel; reprocess everything instead",
                    ));
                }
            }
            file.options = options;
            requeue(&txn, &mut jobs, &mut files, &mut file, stages, now)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    pub fn retry_job(&self, owner_id: &str, file_id: &str, now: u64) -> Result<Option<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            if !matches!(file.status.as_str(), "error" | "cancelled") {
                return Err(Error::new(
                    "not-retryable",
                    format!(
                        "the file is {}; only failed or cancelled files can be retried",
                        file.status
                    ),
                ));
            }
            requeue(&txn, &mut jobs, &mut files, &mut file, Vec::new(), now)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    /// Removes the records of jobs that ended (`done`, `failed`, `cancelled`) before `cutoff`;
    /// their files keep their status and transcript. Returns how many went.
    pub fn purge_job_history(&self, cutoff: u64) -> Result<usize> {
        self.remove_where(JOBS, |_, job: &JobRecord| {
            matches!(job.state.as_str(), "done" | "failed" | "cancelled") && job.updated_at < cutoff
        })
    }

    pub fn get_job(&self, file_id: &str) -> Result<Option<JobRecord>> {
        self.get_json(JOBS, file_id)
    }

    pub fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let jobs = txn.open_table(JOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in jobs.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
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

fn insert_user(
    txn: &WriteTransaction,
    id: &str,
    username: &str,
    password_hash: &str,
    role: Role,
) -> Result<UserRecord> {
    let mut names = txn.open_table(USERNAMES).map_err(db_err)?;
    let key = username.to_lowercase();
    if names.get(key.as_str()).map_err(db_err)?.is_some() {
        return Err(Error::new(
            "username-taken",
            format!("username `{username}` is taken"),
        ));
    }
    let record = UserRecord {
        id: id.to_owned(),
        username: username.to_owned(),
        password_hash: password_hash.to_owned(),
        role,
        disabled: false,
        created_at: now_secs(),
    };
    names.insert(key.as_str(), id).map_err(db_err)?;
    let mut users = txn.open_table(USERS).map_err(db_err)?;
    users
        .insert(id, encode(&record)?.as_slice())
        .map_err(db_err)?;
    Ok(record)
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
