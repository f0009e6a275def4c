//! The TOTP second factor: `/api/account/totp*` (the own account), the second sign-in step
//! `POST /api/auth/login/totp`, and the administrator's reset.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::auth_routes::session_response;
use super::extract::{AdminUser, ApiJson, AuthUser};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::services::second_factor;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/login/totp", post(login_totp))
        .route("/api/account/totp", delete(disable))
        .route("/api/account/totp/setup", post(setup))
        .route("/api/account/totp/confirm", post(confirm))
        .route("/api/admin/users/{id}/totp", delete(admin_reset))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecondStep {
    challenge: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

async fn login_totp(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<SecondStep>,
) -> Result<Response> {
    if body.code.is_some() == body.recovery_code.is_some() {
        return Err(Error::bad_request(
            "send exactly one of `code` and `recovery_code`",
        ));
    }
    let signed_in = second_factor::redeem(
        &state,
        body.challenge,
        body.code,
        body.recovery_code,
        peer.ip(),
    )
    .await?;
    session_response(&state, signed_in)
}

async fn setup(State(state): State<AppState>, user: AuthUser) -> Result<Json<serde_json::Value>> {
    let setup = second_factor::setup(&state, &user.user, user.client_ip).await?;
    Ok(Json(serde_json::json!({
        "secret": setup.secret,
        "otpauth_uri": setup.otpauth_uri,
        "qr_svg": setup.qr_svg,
        "algorithm": "SHA1",
        "digits": crate::auth::totp::DIGITS,
        "period": crate::auth::totp::STEP_SECS,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    code: String,
}

async fn confirm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: AuthUser,
    ApiJson(body): ApiJson<Confirm>,
) -> Result<Json<serde_json::Value>> {
    let session = user.session_hash().map(str::to_owned);
    let codes = second_factor::confirm(&state, &user.user, session, body.code, peer.ip()).await?;
    Ok(Json(serde_json::json!({
        "enabled": true,
        "recovery_codes": codes,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

async fn disable(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: AuthUser,
    ApiJson(body): ApiJson<Disable>,
) -> Result<StatusCode> {
    second_factor::disable(&state, &user.user, body.password, body.code, peer.ip()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn admin_reset(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    second_factor::admin_reset(&state, id, &admin.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
