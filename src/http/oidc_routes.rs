//! OpenID Connect sign-in for browsers: `GET /api/auth/oidc/start` sends the browser to the
//! provider, `GET /api/auth/oidc/callback` comes back with the code and ends in a session
//! cookie; `GET /api/auth/providers` tells the login page which sign-ins the site offers.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::{SESSION_COOKIE, cookie_value};
use crate::app::{AppState, blocking};
use crate::auth::validate_username;
use crate::error::{Error, Result};
use crate::services::accounts;
use crate::services::audit::{self, Actor};
use crate::services::oidc;
use crate::store::records::SessionStage;

const FLOW_COOKIE: &str = "__Host-ot_oidc";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/providers", get(providers))
        .route("/api/auth/oidc/start", get(start))
        .route("/api/auth/oidc/callback", get(callback))
}

async fn providers(State(state): State<AppState>) -> Json<serde_json::Value> {
    let oidc = &state.config.oidc;
    Json(serde_json::json!({
        "oidc": oidc.enabled.then(|| serde_json::json!({"display_name": oidc.display_name})),
        "ldap": state.config.ldap.enabled,
    }))
}

fn header_value(text: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(text).map_err(|e| Error::internal("internal", e))
}

async fn start(State(state): State<AppState>) -> Result<Response> {
    if !state.config.oidc.enabled {
        return Err(Error::not_found("route"));
    }
    let started = oidc::start(&state.config.oidc).await?;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&started.location)?);
    // Lax: the provider's redirect back is a cross-site top-level navigation.
    headers.insert(
        header::SET_COOKIE,
        header_value(&format!(
            "{FLOW_COOKIE}={}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Lax",
            started.cookie,
            oidc::FLOW_SECS
        ))?,
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    parts: Parts,
) -> Result<Response> {
    if !state.config.oidc.enabled {
        return Err(Error::not_found("route"));
    }
    let Query(query) = Query::<CallbackQuery>::try_from_uri(&parts.uri)
        .map_err(|e| Error::bad_request(e.body_text()))?;
    if let Some(error) = query.error {
        return Err(Error::new(
            "oidc-failed",
            format!(
                "the provider ended the sign-in: {error}{}",
                query
                    .error_description
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let (Some(code), Some(flow_state)) = (query.code, query.state) else {
        return Err(Error::bad_request("`code` and `state` are required"));
    };
    let cookie = cookie_value(&parts, FLOW_COOKIE);
    let config = &state.config.oidc;
    let identity = oidc::finish(
        config,
        &code,
        &flow_state,
        cookie.as_deref(),
        state.clock.now_secs(),
    )
    .await?;
    validate_username(&identity.username).map_err(|_| {
        Error::new(
            "oidc-failed",
            format!(
                "the provider's username {:?} (claim {}) is not usable here",
                identity.username, config.username_claim
            ),
        )
    })?;
    let store = state.store.clone();
    let found = identity.clone();
    let user = blocking(move || {
        store.upsert_directory_user(
            &uuid::Uuid::now_v7().to_string(),
            &found.username,
            "oidc",
            &found.subject,
            found.role,
            found.allowed,
        )
    })
    .await?;
    if !identity.allowed {
        audit::record(
            &state,
            &Actor::user(&user, Some(peer.ip())),
            "auth.sign-in-failed",
            Some(&user.id),
            Some("OIDC: in no allowed group; disabled locally".to_owned()),
        )
        .await;
        return Err(Error::new(
            "directory-access-denied",
            "your account is not in a group allowed to sign in here",
        ));
    }
    if user.disabled {
        return Err(Error::new("account-disabled", "this account is disabled"));
    }
    let signed_in = accounts::open_session(&state, user, SessionStage::Full, peer.ip()).await?;
    let max_age = state.config.auth.session_absolute_timeout_secs;
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static("/"));
    headers.append(
        header::SET_COOKIE,
        header_value(&format!(
            "{SESSION_COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
            signed_in.token
        ))?,
    );
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-ot_oidc=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
        ),
    );
    Ok(response)
}
