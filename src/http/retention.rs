//! `/api/account/retention` (the caller's own retention rule) and `/api/retention/preview`
//! (what the rules that apply to the caller will delete, and when).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, AuthUser};
use crate::app::AppState;
use crate::error::Result;
use crate::services::retention;
use crate::store::retention::RetentionRule;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/account/retention", get(get_rule).put(put_rule))
        .route("/api/retention/preview", get(preview))
}

/// The body of `PUT /api/account/retention`: days per part, `null` (or absent) for none;
/// `{"rule": null}` removes the own rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulePut {
    #[serde(default)]
    media_days: Option<u64>,
    #[serde(default)]
    transcript_days: Option<u64>,
}

async fn get_rule(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let view = retention::rule(&state, &user.user.id).await?;
    Ok(Json(json!(view)))
}

async fn put_rule(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<RulePut>,
) -> Result<Json<Value>> {
    let rule =
        (body.media_days.is_some() || body.transcript_days.is_some()).then_some(RetentionRule {
            media_days: body.media_days,
            transcript_days: body.transcript_days,
        });
    let view = retention::set_rule(&state, &user.user.id, rule, &user.actor()).await?;
    Ok(Json(json!(view)))
}

async fn preview(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let (rule, files) = retention::preview(&state, &user.user.id).await?;
    Ok(Json(json!({
        "rule": rule,
        "now": state.clock.now_secs(),
        "files": files,
    })))
}
