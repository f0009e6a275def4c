//! The audit log: entries appended in time order (key `<time, 20 digits>/<id>`), read newest
//! first with filters, and purged past their retention. Nothing here changes an entry.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::tables::AUDIT;
use super::{Store, db_err, decode, encode};

/// One thing someone (or the daemon) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    /// Seconds since the Unix epoch, from the daemon's clock.
    pub time: u64,
    /// Who acted; `None` for the daemon itself (retention) or an unknown account.
    #[serde(default)]
    pub actor_id: Option<String>,
    #[serde(default)]
    pub actor_name: Option<String>,
    /// A dotted, kebab-case name such as `auth.sign-in` or `retention.delete`.
    pub action: String,
    /// What was acted on (a user, file or collection id, or a setting's name).
    #[serde(default)]
    pub target: Option<String>,
    /// The client's address, where the action came over the network.
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Which entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The actor's id or name (exact).
    pub user: Option<String>,
    /// Entries whose action starts with this (`auth.` or `file.delete`).
    pub action_prefix: Option<String>,
    /// From this time (seconds, inclusive).
    pub since: Option<u64>,
    /// Up to this time (seconds, inclusive).
    pub until: Option<u64>,
}

impl AuditFilter {
    fn matches(&self, record: &AuditRecord) -> bool {
        let user_ok = self.user.as_deref().is_none_or(|user| {
            record.actor_id.as_deref() == Some(user) || record.actor_name.as_deref() == Some(user)
        });
        let action_ok = self
            .action_prefix
            .as_deref()
            .is_none_or(|prefix| record.action.starts_with(prefix));
        user_ok && action_ok
    }
}

fn time_key(time: u64) -> String {
    format!("{time:020}")
}

/// Appends an entry inside `txn`, so it commits (or not) with the change it describes.
pub(crate) fn append_in(txn: &WriteTransaction, record: &AuditRecord) -> Result<()> {
    let mut table = txn.open_table(AUDIT).map_err(db_err)?;
    let key = format!("{}/{}", time_key(record.time), record.id);
    table
        .insert(key.as_str(), encode(record)?.as_slice())
        .map_err(db_err)?;
    Ok(())
}

impl Store {
    /// Appends one entry in its own transaction.
    pub fn append_audit(&self, record: &AuditRecord) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_err)?;
        append_in(&txn, record)?;
        txn.commit().map_err(db_err)
    }

    /// Entries matching `filter`, newest first: `skip` matching entries are passed over and at
    /// most `limit` returned; the flag says whether more match after them.
    pub fn list_audit(
        &self,
        filter: &AuditFilter,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, bool)> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(AUDIT).map_err(db_err)?;
        let start = time_key(filter.since.unwrap_or(0));
        let end = time_key(filter.until.map_or(u64::MAX, |t| t.saturating_add(1)));
        let mut out = Vec::new();
        let mut skipped = 0;
        for entry in table
            .range(start.as_str()..end.as_str())
            .map_err(db_err)?
            .rev()
        {
            let (_, value) = entry.map_err(db_err)?;
            let record: AuditRecord = decode(value.value())?;
            if !filter.matches(&record) {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(record);
        }
        Ok((out, false))
    }

    /// Removes the entries older than `cutoff` (seconds); returns how many went.
    pub fn purge_audit(&self, cutoff: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut table = txn.open_table(AUDIT).map_err(db_err)?;
            let end = time_key(cutoff);
            let mut keys = Vec::new();
            for entry in table.range(..end.as_str()).map_err(db_err)? {
                let (key, _) = entry.map_err(db_err)?;
                keys.push(key.value().to_owned());
            }
            for key in &keys {
                table.remove(key.as_str()).map_err(db_err)?;
            }
            keys.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}
