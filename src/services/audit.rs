//! The audit log as a use case: `record` stamps an entry with the daemon's clock and appends it
//! right after the action it describes (a failure to write it is logged, never undoes the
//! action); `list` and `csv` read it for administrators; `purge` keeps `[audit] keep_days`.

use std::fmt::Write as _;
use std::net::IpAddr;

use crate::app::{AppState, blocking};
use crate::error::Result;
use crate::store::audit::{AuditFilter, AuditRecord};
use crate::store::records::UserRecord;

/// The most rows one CSV export holds (newest first); narrow the filters for older entries.
pub const CSV_MAX_ROWS: usize = 100_000;

/// Who did something, as far as it is known.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    pub id: Option<String>,
    pub name: Option<String>,
    pub ip: Option<IpAddr>,
}

impl Actor {
    pub fn user(user: &UserRecord, ip: Option<IpAddr>) -> Self {
        Self {
            id: Some(user.id.clone()),
            name: Some(user.username.clone()),
            ip,
        }
    }

    /// The daemon itself (retention, housekeeping).
    pub fn system() -> Self {
        Self {
            id: None,
            name: Some("system".to_owned()),
            ip: None,
        }
    }
}

/// A new entry stamped with the daemon's clock.
pub fn entry(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<String>,
) -> AuditRecord {
    AuditRecord {
        id: uuid::Uuid::now_v7().to_string(),
        time: state.clock.now_secs(),
        actor_id: actor.id.clone(),
        actor_name: actor.name.clone(),
        action: action.to_owned(),
        target: target.map(str::to_owned),
        ip: actor.ip.map(|ip| ip.to_string()),
        detail,
    }
}

/// Appends an entry for an action that has just happened.
pub async fn record(
    state: &AppState,
    actor: &Actor,
    action: &str,
    target: Option<&str>,
    detail: Option<String>,
) {
    let record = entry(state, actor, action, target, detail);
    let store = state.store.clone();
    if let Err(e) = blocking(move || store.append_audit(&record)).await {
        tracing::error!(error = %e.message_for_log(), action, "audit entry not written");
    }
}

/// One page of entries, newest first, and whether more follow.
pub async fn list(
    state: &AppState,
    filter: AuditFilter,
    page: usize,
    per_page: usize,
) -> Result<(Vec<AuditRecord>, bool)> {
    let store = state.store.clone();
    let skip = page.saturating_sub(1).saturating_mul(per_page);
    blocking(move || store.list_audit(&filter, skip, per_page)).await
}

/// The matching entries as CSV (newest first, at most [`CSV_MAX_ROWS`]); the flag says
/// whether older matching entries were left out.
pub async fn csv(state: &AppState, filter: AuditFilter) -> Result<(String, bool)> {
    let store = state.store.clone();
    let (records, more) = blocking(move || store.list_audit(&filter, 0, CSV_MAX_ROWS)).await?;
    let field = |text: &str| crate::transcript::export::csv_field(text);
    let mut out = String::from("time,actor_id,actor_name,action,target,ip,detail\n");
    for record in &records {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{}",
            record.time,
            field(record.actor_id.as_deref().unwrap_or("")),
            field(record.actor_name.as_deref().unwrap_or("")),
            field(&record.action),
            field(record.target.as_deref().unwrap_or("")),
            field(record.ip.as_deref().unwrap_or("")),
            field(record.detail.as_deref().unwrap_or("")),
        );
    }
    Ok((out, more))
}

/// Removes entries older than `[audit] keep_days` of the clock (0 keeps them for ever).
pub async fn purge(state: &AppState) -> Result<usize> {
    let days = state.config.audit.keep_days;
    if days == 0 {
        return Ok(0);
    }
    let cutoff = state
        .clock
        .now_secs()
        .saturating_sub(days.saturating_mul(86_400));
    let store = state.store.clone();
    blocking(move || store.purge_audit(cutoff)).await
}
