//! Users, sessions and API tokens: accounts and the credentials that end together.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::error::{Result, StoreError};
use super::records::{
    ApiTokenRecord, DirectoryLink, Role, SessionRecord, SessionStage, UserRecord,
};
use super::tables::*;
use super::{RegistrationPolicy, Store, db_err, decode, encode, now_secs, read_record, remove_in};

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

impl Store {
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
                return Err(StoreError::RegistrationClosed);
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
    pub fn update_user<E: From<StoreError>>(
        &self,
        user_id: &str,
        keep_session: Option<&str>,
        change: impl FnOnce(&mut UserRecord) -> Result<Revoke, E>,
    ) -> Result<Option<UserRecord>, E> {
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

    /// Changes a user and, when the change succeeds, lifts `session` (the caller's, waiting for
    /// TOTP enrolment) to a full session, in one transaction. `Ok(None)` when the user is gone.
    pub fn update_user_and_promote<E: From<StoreError>>(
        &self,
        user_id: &str,
        session: Option<&str>,
        change: impl FnOnce(&mut UserRecord) -> Result<(), E>,
    ) -> Result<Option<UserRecord>, E> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let mut users = txn.open_table(USERS).map_err(db_err)?;
            let Some(mut record) = read_record::<UserRecord>(&users, user_id)? else {
                return Ok(None);
            };
            change(&mut record)?;
            users
                .insert(user_id, encode(&record)?.as_slice())
                .map_err(db_err)?;
            if let Some(hash) = session {
                let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
                if let Some(mut current) = read_record::<SessionRecord>(&sessions, hash)?
                    && current.user_id == user_id
                    && current.stage == SessionStage::Enrol
                {
                    current.stage = SessionStage::Full;
                    sessions
                        .insert(hash, encode(&current)?.as_slice())
                        .map_err(db_err)?;
                }
            }
            record
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    /// The second sign-in step, in one transaction: the challenge session (stage
    /// `SecondFactor`, younger than `max_age_secs`) is removed, `check` runs on the current user
    /// record (it consumes the code: a TOTP step or a recovery code hash) and, when it accepts,
    /// the changed user is stored and `new_session` inserted under `new_hash`. Nothing changes
    /// when the challenge is gone or `check` refuses (`Ok(Err(..))` carries the refusal).
    pub fn redeem_second_factor<E: From<StoreError>>(
        &self,
        challenge_hash: &str,
        max_age_secs: u64,
        now: u64,
        new_hash: &str,
        new_session: impl FnOnce(&UserRecord) -> SessionRecord,
        check: impl FnOnce(&mut UserRecord) -> Result<(), E>,
    ) -> Result<Option<Result<UserRecord, E>>, E> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
            let Some(challenge) = read_record::<SessionRecord>(&sessions, challenge_hash)? else {
                return Ok(None);
            };
            if challenge.stage != SessionStage::SecondFactor
                || now.saturating_sub(challenge.created_at) > max_age_secs
            {
                return Ok(None);
            }
            let mut users = txn.open_table(USERS).map_err(db_err)?;
            let Some(mut user) = read_record::<UserRecord>(&users, &challenge.user_id)? else {
                return Ok(None);
            };
            if let Err(refused) = check(&mut user) {
                // Dropping the transaction leaves everything as it was.
                return Ok(Some(Err(refused)));
            }
            users
                .insert(user.id.as_str(), encode(&user)?.as_slice())
                .map_err(db_err)?;
            sessions.remove(challenge_hash).map_err(db_err)?;
            let session = new_session(&user);
            sessions
                .insert(new_hash, encode(&session)?.as_slice())
                .map_err(db_err)?;
            user
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(Ok(outcome)))
    }

    /// The local record of a directory account, in one transaction: created on its first
    /// sign-in (with `new_id` and an unusable password hash), its role refreshed from the
    /// directory each time, disabled while the directory's groups do not allow it (its sessions
    /// and API tokens end with that). A local account of the same name is never taken over.
    pub fn upsert_directory_user(
        &self,
        new_id: &str,
        username: &str,
        kind: &str,
        subject: &str,
        role: Role,
        allowed: bool,
    ) -> Result<UserRecord> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let existing = {
                let names = txn.open_table(USERNAMES).map_err(db_err)?;
                names
                    .get(username.to_lowercase().as_str())
                    .map_err(db_err)?
                    .map(|v| v.value().to_owned())
            };
            match existing {
                None => {
                    let mut record = insert_user(&txn, new_id, username, "!directory", role)?;
                    record.directory = Some(DirectoryLink {
                        kind: kind.to_owned(),
                        subject: subject.to_owned(),
                        disabled_by_directory: !allowed,
                    });
                    record.disabled = !allowed;
                    let mut users = txn.open_table(USERS).map_err(db_err)?;
                    users
                        .insert(new_id, encode(&record)?.as_slice())
                        .map_err(db_err)?;
                    record
                }
                Some(id) => {
                    let mut users = txn.open_table(USERS).map_err(db_err)?;
                    let Some(mut record) = read_record::<UserRecord>(&users, &id)? else {
                        return Err(StoreError::UsernameTaken(username.to_owned()));
                    };
                    let Some(link) = record.directory.as_mut().filter(|l| l.kind == kind) else {
                        return Err(StoreError::UsernameTaken(username.to_owned()));
                    };
                    link.subject = subject.to_owned();
                    let was_disabled = record.disabled;
                    if !allowed {
                        if !record.disabled {
                            link.disabled_by_directory = true;
                        }
                        record.disabled = true;
                    } else if link.disabled_by_directory {
                        link.disabled_by_directory = false;
                        record.disabled = false;
                    }
                    record.role = role;
                    users
                        .insert(id.as_str(), encode(&record)?.as_slice())
                        .map_err(db_err)?;
                    drop(users);
                    if record.disabled && !was_disabled {
                        revoke_credentials(&txn, &id, None)?;
                    }
                    record
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(record)
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
        return Err(StoreError::UsernameTaken(username.to_owned()));
    }
    let record = UserRecord {
        id: id.to_owned(),
        username: username.to_owned(),
        password_hash: password_hash.to_owned(),
        role,
        disabled: false,
        created_at: now_secs(),
        totp: None,
        directory: None,
    };
    names.insert(key.as_str(), id).map_err(db_err)?;
    let mut users = txn.open_table(USERS).map_err(db_err)?;
    users
        .insert(id, encode(&record)?.as_slice())
        .map_err(db_err)?;
    Ok(record)
}
