//! Retention rules as a use case: each user's own rule and the site-wide `[retention]` rule
//! (the stricter of the two applies, part by part), the preview of what they will delete and
//! when, and `apply`, which housekeeping runs on the daemon's clock. Every deletion is checked
//! again and logged in the audit log inside its store transaction.

use serde::Serialize;

use crate::app::{AppState, blocking};
use crate::config::RetentionConfig;
use crate::error::{Error, Result};
use crate::services::audit::{self, Actor};
use crate::store::records::FileRecord;
use crate::store::retention::{RetentionAction, RetentionRule, may_act};

const DAY_SECS: u64 = 86_400;
/// The longest rule accepted (about 100 years).
pub const MAX_DAYS: u64 = 36_500;

/// The rule that applies to a user: per part, the stricter (fewer days) of the two; 0 and
/// `None` are off.
pub fn effective(site: &RetentionConfig, user: Option<&RetentionRule>) -> RetentionRule {
    let stricter = |site: u64, own: Option<u64>| {
        let site = (site > 0).then_some(site);
        let own = own.filter(|d| *d > 0);
        match (site, own) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let own = user.copied().unwrap_or_default();
    RetentionRule {
        media_days: stricter(site.media_days, own.media_days),
        transcript_days: stricter(site.transcript_days, own.transcript_days),
    }
}

/// The next thing the rule does to a file, and from when.
pub fn next_action(rule: &RetentionRule, file: &FileRecord) -> Option<(RetentionAction, u64)> {
    let due = |days: u64| {
        file.created_at
            .saturating_add(days.saturating_mul(DAY_SECS))
    };
    let file_due = rule.transcript_days.map(due);
    let media_due = rule
        .media_days
        .filter(|_| may_act(file, RetentionAction::DeleteMedia))
        .map(due);
    match (file_due, media_due) {
        (Some(file_at), Some(media_at)) if media_at < file_at => {
            Some((RetentionAction::DeleteMedia, media_at))
        }
        (Some(file_at), _) => Some((RetentionAction::DeleteFile, file_at)),
        (None, Some(media_at)) => Some((RetentionAction::DeleteMedia, media_at)),
        (None, None) => None,
    }
}

fn action_name(action: RetentionAction) -> &'static str {
    match action {
        RetentionAction::DeleteMedia => "delete-media",
        RetentionAction::DeleteFile => "delete-file",
    }
}

/// A user's own rule checked: each part from 1 to [`MAX_DAYS`] days, or absent.
pub fn check_rule(rule: &RetentionRule) -> Result<()> {
    for (name, days) in [
        ("media_days", rule.media_days),
        ("transcript_days", rule.transcript_days),
    ] {
        if days.is_some_and(|d| d == 0 || d > MAX_DAYS) {
            return Err(Error::bad_request(format!(
                "{name} must be between 1 and {MAX_DAYS} days, or null"
            )));
        }
    }
    Ok(())
}

/// The caller's rule, the site's and the one that applies.
#[derive(Debug, Serialize)]
pub struct RuleView {
    pub own: Option<RetentionRule>,
    pub site: RetentionRule,
    pub effective: RetentionRule,
}

fn site_rule(config: &RetentionConfig) -> RetentionRule {
    effective(config, None)
}

pub async fn rule(state: &AppState, user_id: &str) -> Result<RuleView> {
    let store = state.store.clone();
    let id = user_id.to_owned();
    let own = blocking(move || store.retention_rule(&id)).await?;
    Ok(RuleView {
        own,
        site: site_rule(&state.config.retention),
        effective: effective(&state.config.retention, own.as_ref()),
    })
}

/// Sets (or with `None` removes) the user's own rule; logged as `settings.change`.
pub async fn set_rule(
    state: &AppState,
    user_id: &str,
    rule: Option<RetentionRule>,
    actor: &Actor,
) -> Result<RuleView> {
    if let Some(rule) = &rule {
        check_rule(rule)?;
    }
    let store = state.store.clone();
    let id = user_id.to_owned();
    let before = blocking(move || store.set_retention_rule(&id, rule.as_ref())).await?;
    let describe = |rule: Option<RetentionRule>| match rule {
        None => "none".to_owned(),
        Some(r) => format!(
            "media_days={} transcript_days={}",
            r.media_days.map_or("-".to_owned(), |d| d.to_string()),
            r.transcript_days.map_or("-".to_owned(), |d| d.to_string())
        ),
    };
    audit::record(
        state,
        actor,
        "settings.change",
        Some("retention"),
        Some(format!("{} -> {}", describe(before), describe(rule))),
    )
    .await;
    Ok(RuleView {
        own: rule,
        site: site_rule(&state.config.retention),
        effective: effective(&state.config.retention, rule.as_ref()),
    })
}

/// One file the rules will act on.
#[derive(Debug, Serialize)]
pub struct Planned {
    pub file_id: String,
    pub filename: String,
    pub created_at: u64,
    /// `delete-media` or `delete-file`.
    pub action: &'static str,
    /// From when (seconds); housekeeping acts at its next run after this.
    pub due_at: u64,
    /// Already due: the next housekeeping run acts on it.
    pub due: bool,
}

/// What the rules will delete of the user's files and when, soonest first; exempt files and
/// files being processed are not listed (a queued file's media wait for its job).
pub async fn preview(state: &AppState, user_id: &str) -> Result<(RuleView, Vec<Planned>)> {
    let view = rule(state, user_id).await?;
    let store = state.store.clone();
    let id = user_id.to_owned();
    let files = blocking(move || store.retention_candidates(Some(&id))).await?;
    let now = state.clock.now_secs();
    let mut planned: Vec<Planned> = files
        .iter()
        .filter_map(|file| {
            let (action, due_at) = next_action(&view.effective, file)?;
            Some(Planned {
                file_id: file.id.clone(),
                filename: file.filename.clone(),
                created_at: file.created_at,
                action: action_name(action),
                due_at,
                due: due_at <= now,
            })
        })
        .collect();
    planned.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.file_id.cmp(&b.file_id)));
    Ok((view, planned))
}

/// Applies every user's rule once, on the clock: returns how many files were acted on.
pub async fn apply(state: &AppState) -> Result<usize> {
    let store = state.store.clone();
    let (rules, files) = blocking(move || {
        Ok::<_, Error>((store.retention_rules()?, store.retention_candidates(None)?))
    })
    .await?;
    let site = &state.config.retention;
    let now = state.clock.now_secs();
    let mut done = 0;
    for file in files {
        let rule = effective(site, rules.get(&file.owner_id));
        let Some((action, due_at)) = next_action(&rule, &file) else {
            continue;
        };
        if due_at > now {
            continue;
        }
        let days = match action {
            RetentionAction::DeleteMedia => rule.media_days,
            RetentionAction::DeleteFile => rule.transcript_days,
        }
        .unwrap_or(0);
        let cutoff = now.saturating_sub(days.saturating_mul(DAY_SECS));
        let entry = audit::entry(
            state,
            &Actor::system(),
            "retention.delete",
            Some(&file.id),
            Some(format!(
                "{} of {} (owner {}, {days} days)",
                action_name(action),
                file.filename,
                file.owner_id
            )),
        );
        let store = state.store.clone();
        let worker_state = state.clone();
        let file_id = file.id.clone();
        let outcome = blocking(move || {
            let outcome = store.apply_retention(&file_id, action, cutoff, now, &entry)?;
            if let Some((record, remaining)) = &outcome
                && record.media_deleted_at.is_none()
            {
                crate::services::files::remove_blob_if_unused(&worker_state, record, *remaining);
            }
            Ok::<_, Error>(outcome)
        })
        .await?;
        let Some((record, _)) = outcome else {
            continue;
        };
        done += 1;
        tracing::info!(file_id = %record.id, action = action_name(action), "retention");
        if action == RetentionAction::DeleteFile {
            state.jobs.publish(crate::jobs::FileEvent::deleted(&record));
        }
    }
    Ok(done)
}
