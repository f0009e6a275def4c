//! `/api/account/webhook*`: the caller's signed webhook (set, read without its secret, remove)
//! and its recent deliveries. Every route acts on the caller's own account only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, AuthUser};
use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::store::webhooks::{DeliveryRecord, DeliveryState, WebhookRecord};

/// Deliveries listed by `GET /api/account/webhook/deliveries`, newest first.
const DELIVERIES_LISTED: usize = 50;
const MAX_URL_BYTES: usize = 2048;
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=256;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/account/webhook",
            get(get_webhook).put(put_webhook).delete(delete_webhook),
        )
        .route("/api/account/webhook/deliveries", get(list_deliveries))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookBody {
    url: String,
    /// Optional: without it a new webhook gets a generated secret (returned once), and an
    /// existing one keeps its own.
    #[serde(default)]
    secret: Option<String>,
}

/// A user's webhook as the API shows it. Without one, `url` is `null` (a setting that is not
/// set, not a missing resource: the account page asks on every visit).
#[derive(Debug, Serialize)]
struct WebhookView {
    url: Option<String>,
    /// The secret appears only in the answer to the PUT that generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<u64>,
}

impl WebhookView {
    fn from(record: Option<&WebhookRecord>) -> Self {
        Self {
            url: record.map(|r| r.url.clone()),
            secret: None,
            created_at: record.map(|r| r.created_at),
            updated_at: record.map(|r| r.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
struct AttemptView {
    at: u64,
    status: Option<u16>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DeliveryView {
    id: String,
    event: String,
    file_id: String,
    filename: String,
    status: String,
    state: DeliveryState,
    occurred_at: u64,
    /// When the next attempt is due, while the delivery is pending.
    next_attempt_at: Option<u64>,
    attempts: Vec<AttemptView>,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(record: DeliveryRecord) -> Self {
        Self {
            next_attempt_at: (record.state == DeliveryState::Pending)
                .then_some(record.next_attempt_at),
            id: record.id,
            event: record.event,
            file_id: record.file_id,
            filename: record.filename,
            status: record.status,
            state: record.state,
            occurred_at: record.occurred_at,
            attempts: record
                .attempts
                .into_iter()
                .map(|a| AttemptView {
                    at: a.at,
                    status: a.status,
                    error: a.error,
                })
                .collect(),
        }
    }
}

/// A webhook URL must be absolute http(s) with a host, and short.
fn check_url(url: &str) -> Result<String> {
    let invalid = |why: &str| Error::new("invalid-webhook", format!("url: {why}"));
    let url = url.trim();
    if url.len() > MAX_URL_BYTES {
        return Err(invalid("must be at most 2048 bytes"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err(invalid("must start with https:// or http://"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("must name a host"));
    }
    Ok(parsed.to_string())
}

/// A given secret: 16 to 256 visible ASCII characters.
fn check_secret(secret: &str) -> Result<()> {
    if !SECRET_BYTES.contains(&secret.len()) || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::new(
            "invalid-webhook",
            "secret: must be 16 to 256 visible ASCII characters (no spaces)",
        ));
    }
    Ok(())
}

async fn get_webhook(State(state): State<AppState>, user: AuthUser) -> Result<Json<WebhookView>> {
    let store = state.store.clone();
    let record = blocking(move || store.get_webhook(&user.user.id)).await?;
    Ok(Json(WebhookView::from(record.as_ref())))
}

async fn put_webhook(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<WebhookBody>,
) -> Result<Json<WebhookView>> {
    let url = check_url(&body.url)?;
    if let Some(secret) = &body.secret {
        check_secret(secret)?;
    }
    let new_secret = crate::auth::new_token("whsec_");
    let (store, now) = (state.store.clone(), state.clock.now_secs());
    let (record, generated) = blocking(move || {
        store.put_webhook(
            &user.user.id,
            &url,
            body.secret.as_deref(),
            &new_secret,
            now,
        )
    })
    .await?;
    let mut view = WebhookView::from(Some(&record));
    // Shown once: only a secret this request generated goes back.
    if generated {
        view.secret = Some(record.secret.clone());
    }
    Ok(Json(view))
}

async fn delete_webhook(State(state): State<AppState>, user: AuthUser) -> Result<StatusCode> {
    let (store, now) = (state.store.clone(), state.clock.now_secs());
    let removed = blocking(move || store.delete_webhook(&user.user.id, now)).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("webhook"))
    }
}

async fn list_deliveries(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<DeliveryView>>> {
    let store = state.store.clone();
    let records = blocking(move || store.list_deliveries(&user.user.id, DELIVERIES_LISTED)).await?;
    Ok(Json(records.into_iter().map(DeliveryView::from).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_secrets_are_checked() {
        assert!(check_url("https://hooks.example/x?a=1").is_ok());
        assert!(check_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "ftp://x/",
            "hooks.example",
            "https://",
            "javascript:alert(1)",
            "",
        ] {
            assert_eq!(check_url(bad).unwrap_err().code, "invalid-webhook", "{bad}");
        }
        assert!(check_secret("0123456789abcdef").is_ok());
        assert!(check_secret("short").is_err());
        assert!(check_secret("has a space in it!!").is_err());
    }
}
