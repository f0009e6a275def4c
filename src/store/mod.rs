//! redb storage: the only module that opens the database. All methods block; callers on the
//! async executor go through `spawn_blocking`.

pub mod migrate;
pub mod records;
pub mod tables;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use records::{ApiTokenRecord, FileRecord, Role, SessionRecord, UserRecord};
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

fn db_err(error: impl std::fmt::Display) -> Error {
    Error::internal("store", error)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(db_err)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(db_err)
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
    Ok(())
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
        match table.get(key).map_err(db_err)? {
            Some(value) => Ok(Some(decode(value.value())?)),
            None => Ok(None),
        }
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

    pub fn update_user(&self, record: &UserRecord) -> Result<()> {
        self.put_json(USERS, &record.id, record)
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

    pub fn touch_session(&self, token_hash: &str, now: u64) -> Result<()> {
        if let Some(mut record) = self.get_session(token_hash)? {
            record.last_seen_at = now;
            self.insert_session(token_hash, &record)?;
        }
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
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(SESSIONS).map_err(db_err)?;
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let record: SessionRecord = decode(value.value())?;
                if record.user_id == user_id && Some(key.value()) != keep {
                    doomed.push(key.value().to_owned());
                }
            }
            for key in &doomed {
                table.remove(key.as_str()).map_err(db_err)?;
            }
            doomed.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Removes sessions past their idle or absolute expiry.
    pub fn purge_sessions(&self, now: u64, idle_secs: u64, absolute_secs: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(SESSIONS).map_err(db_err)?;
            let mut doomed = Vec::new();
            for entry in table.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let record: SessionRecord = decode(value.value())?;
                if now.saturating_sub(record.last_seen_at) > idle_secs
                    || now.saturating_sub(record.created_at) > absolute_secs
                {
                    doomed.push(key.value().to_owned());
                }
            }
            for key in &doomed {
                table.remove(key.as_str()).map_err(db_err)?;
            }
            doomed.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    // ---- API tokens ----

    pub fn insert_api_token(&self, token_hash: &str, record: &ApiTokenRecord) -> Result<()> {
        self.put_json(API_TOKENS, token_hash, record)
    }

    pub fn get_api_token(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>> {
        self.get_json(API_TOKENS, token_hash)
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

    pub fn update_file(&self, record: &FileRecord) -> Result<()> {
        self.put_json(FILES, &record.id, record)
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
            let record: Option<FileRecord> = match files.get(file_id).map_err(db_err)? {
                Some(value) => Some(decode(value.value())?),
                None => None,
            };
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
