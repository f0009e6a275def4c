//! Extractors: the authenticated user (cookie with CSRF check, or bearer token) and JSON bodies
//! whose rejections use our error format; and the middleware that reads every request body
//! except uploads whole, within a time limit, before routing.

use std::time::Duration;

use axum::body::{Body, BodyDataStream, HttpBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::app::{AppState, blocking};
use crate::auth::{self, API_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, constant_time_eq, token_hash};
use crate::error::{Error, Result};
use crate::store::records::{Role, SessionStage, UserRecord};

/// The session cookie. `__Host-` makes browsers insist on Secure, Path=/ and no Domain.
pub const SESSION_COOKIE: &str = "__Host-ot_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the request proved who it is.
#[derive(Debug, Clone)]
pub enum Credential {
    /// The session cookie; unsafe methods were checked for CSRF.
    SessionCookie {
        token_hash: String,
    },
    /// A session token sent as a bearer token.
    SessionBearer {
        token_hash: String,
    },
    ApiToken {
        token_id: String,
    },
}

/// A signed-in, enabled user. A handler that takes this cannot be reached anonymously.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub user: UserRecord,
    pub credential: Credential,
    /// The session's CSRF token, when authenticated by a session.
    pub csrf_token: Option<String>,
    /// The client's address (for the audit log), when the connection is known.
    pub client_ip: Option<std::net::IpAddr>,
    /// The session may only set up TOTP (the site requires it and the user has none yet).
    pub enrolment_pending: bool,
}

impl AuthUser {
    /// This user as the audit log names them.
    pub fn actor(&self) -> crate::services::audit::Actor {
        crate::services::audit::Actor::user(&self.user, self.client_ip)
    }

    pub fn session_hash(&self) -> Option<&str> {
        match &self.credential {
            Credential::SessionCookie { token_hash } | Credential::SessionBearer { token_hash } => {
                Some(token_hash)
            }
            Credential::ApiToken { .. } => None,
        }
    }
}

/// An authenticated admin.
#[derive(Debug, Clone)]
pub struct AdminUser(pub AuthUser);

fn unauthorized() -> Error {
    Error::new("unauthorized", "sign in or send a valid bearer token")
}

fn bearer_token(parts: &Parts) -> Option<String> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

pub fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn is_safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A cross-site request from a browser carries an Origin that is not ours.
fn origin_matches_host(parts: &Parts) -> bool {
    let Some(origin) = parts
        .headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    match host {
        Some(host) => origin
            .strip_prefix("https://")
            .is_some_and(|rest| rest.eq_ignore_ascii_case(&host)),
        None => false,
    }
}

/// What a session waiting for TOTP enrolment may reach.
const ENROLMENT_PATHS: &[&str] = &[
    "/api/auth/me",
    "/api/auth/logout",
    "/api/account/totp/setup",
    "/api/account/totp/confirm",
];

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let mut user = authenticate(parts, state).await?;
        if user.enrolment_pending && !ENROLMENT_PATHS.contains(&parts.uri.path()) {
            return Err(Error::new(
                "totp-enrolment-required",
                "set up a second factor (an authenticator app) first",
            ));
        }
        user.client_ip = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(user)
    }
}

async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<AuthUser> {
    let now = state.clock.now_secs();
    let auth_config = state.config.auth.clone();
    if let Some(token) = bearer_token(parts) {
        let store = state.store.clone();
        return blocking(move || {
            let hash = token_hash(&token);
            if token.starts_with(API_TOKEN_PREFIX) {
                let record = store.get_api_token(&hash)?.ok_or_else(unauthorized)?;
                let user = enabled_user(&store, &record.user_id)?;
                if record
                    .last_used_at
                    .is_none_or(|t| now.saturating_sub(t) > 60)
                {
                    store.touch_api_token(&hash, now)?;
                }
                Ok(AuthUser {
                    user,
                    credential: Credential::ApiToken {
                        token_id: record.id,
                    },
                    csrf_token: None,
                    client_ip: None,
                    enrolment_pending: false,
                })
            } else if token.starts_with(SESSION_TOKEN_PREFIX) {
                let (user, csrf, stage) = live_session(&store, &hash, now, &auth_config)?;
                Ok(AuthUser {
                    user,
                    credential: Credential::SessionBearer { token_hash: hash },
                    csrf_token: Some(csrf),
                    client_ip: None,
                    enrolment_pending: stage == SessionStage::Enrol,
                })
            } else {
                Err(unauthorized())
            }
        })
        .await;
    }
    let Some(token) = cookie_value(parts, SESSION_COOKIE) else {
        return Err(unauthorized());
    };
    let store = state.store.clone();
    let hash = token_hash(&token);
    let (user, csrf, stage) = {
        let hash = hash.clone();
        blocking(move || live_session(&store, &hash, now, &auth_config)).await?
    };
    if !is_safe_method(&parts.method) {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) || !origin_matches_host(parts) {
            return Err(Error::new(
                "csrf-failed",
                "missing or wrong X-CSRF-Token header for a cookie-authenticated request",
            ));
        }
    }
    Ok(AuthUser {
        user,
        credential: Credential::SessionCookie { token_hash: hash },
        csrf_token: Some(csrf),
        client_ip: None,
        enrolment_pending: stage == SessionStage::Enrol,
    })
}

fn enabled_user(store: &crate::store::Store, user_id: &str) -> Result<UserRecord> {
    let user = store.get_user(user_id)?.ok_or_else(unauthorized)?;
    if user.disabled {
        return Err(Error::new("account-disabled", "this account is disabled"));
    }
    Ok(user)
}

/// Checks a session's expiry, refreshes its idle timer at most once a minute.
fn live_session(
    store: &crate::store::Store,
    hash: &str,
    now: u64,
    auth_config: &crate::config::AuthConfig,
) -> Result<(UserRecord, String, SessionStage)> {
    let session = store.get_session(hash)?.ok_or_else(unauthorized)?;
    // A password step waiting for its TOTP code is no credential.
    if session.stage == SessionStage::SecondFactor {
        return Err(unauthorized());
    }
    let idle = now.saturating_sub(session.last_seen_at);
    let age = now.saturating_sub(session.created_at);
    if idle > auth_config.session_idle_timeout_secs
        || age > auth_config.session_absolute_timeout_secs
    {
        store.delete_session(hash)?;
        return Err(Error::new(
            "session-expired",
            "your session has expired; sign in again",
        ));
    }
    let user = enabled_user(store, &session.user_id)?;
    if idle > 60 {
        store.touch_session(hash, now)?;
    }
    Ok((user, session.csrf_token, session.stage))
}

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let user = AuthUser::from_request_parts(parts, state).await?;
        if user.user.role != Role::Admin {
            return Err(Error::new("forbidden", "administrators only"));
        }
        Ok(AdminUser(user))
    }
}

/// Routes whose bodies are streamed by their handlers (uploads, up to 10 GiB, multipart with the
/// caps of `multipart_guard`); every other body is read whole by [`read_small_bodies`] before
/// routing.
pub const STREAMED_BODIES: [(Method, &str); 3] = [
    (Method::POST, "/api/files"),
    (Method::POST, "/v1/audio/transcriptions"),
    (Method::POST, "/v1/audio/translations"),
];

/// Reads a request body (at most `limit` bytes) into memory; `None` when it is larger.
async fn read_bounded(stream: &mut BodyDataStream, limit: usize) -> Result<Option<Bytes>> {
    let mut buffer = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Error::bad_request("the request body was cut off"))?;
        if buffer.len() + chunk.len() > limit {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(Some(buffer.freeze()))
}

/// Middleware: every body except the uploads' must arrive whole, at most `limit_bytes`, within
/// `server.body_timeout_secs` of the headers, or the answer is 408 (and the connection closed).
/// Reading it before routing also means a refusal that comes before the handler reads the body
/// (401, a wrong content type, a bad path parameter) never leaves unread bytes on the socket,
/// which would make the kernel reset the connection and lose the answer.
pub async fn read_small_bodies(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: Request,
    next: axum::middleware::Next,
    limit_bytes: usize,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let streamed = STREAMED_BODIES
        .iter()
        .any(|(method, path)| request.method() == method && request.uri().path() == *path)
        || super::uploads::is_chunk_request(request.method(), request.uri().path());
    // HTTP/2 needs neither header: a stream whose HEADERS frame did not end it has a body.
    let has_body = request.headers().contains_key(header::CONTENT_LENGTH)
        || request.headers().contains_key(header::TRANSFER_ENCODING)
        || !HttpBody::is_end_stream(request.body());
    if streamed {
        // Uploads stream, but the multipart framing around their parts is capped.
        return next
            .run(super::multipart_guard::guard_request(request))
            .await;
    }
    if !has_body {
        return next.run(request).await;
    }
    let limit_secs = state.config.server.body_timeout_secs;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(limit_secs);
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, body) = request.into_parts();
    if declared.is_some_and(|length| length > limit_bytes as u64) {
        return too_large(body.into_data_stream(), limit_bytes, deadline).await;
    }
    let mut stream = body.into_data_stream();
    let read = read_bounded(&mut stream, limit_bytes);
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) => Error::new(
            "request-timeout",
            format!("the request body did not arrive within {limit_secs} s"),
        )
        .into_response(),
        Ok(Err(error)) => error.into_response(),
        Ok(Ok(None)) => too_large(stream, limit_bytes, deadline).await,
        Ok(Ok(Some(bytes))) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
    }
}

/// Bytes of an over-limit body read and thrown away before the 413 goes out: a server that
/// closes with unread data on the socket makes the kernel reset the connection, and the client
/// sees the reset instead of the answer.
const DRAIN_LIMIT: u64 = 64 << 20;

/// The 413 for an over-limit body, after draining (at most [`DRAIN_LIMIT`] bytes, within the
/// body deadline) what the client is still sending; the connection is then closed.
async fn too_large(
    mut stream: BodyDataStream,
    limit_bytes: usize,
    deadline: tokio::time::Instant,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let drain = async {
        let mut drained = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, drain).await;
    let mut response = Error::new(
        "payload-too-large",
        format!(
            "the request body is over the {} KiB limit",
            limit_bytes / 1024
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// JSON body extractor whose rejections are `{"code":"invalid-json", ...}`.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            // An oversized body is 413, not a syntax error.
            Err(rejection) if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::new(
                    "payload-too-large",
                    "the JSON body is over the 1 MiB limit",
                ))
            }
            Err(rejection) => Err(Error::new("invalid-json", rejection.body_text())),
        }
    }
}

/// Re-exported so route modules need not know where hashing lives.
pub use auth::new_token;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_bodies_are_routes_of_the_table() {
        let table = crate::http::routes_table::route_table();
        for (method, path) in STREAMED_BODIES {
            assert!(
                table.iter().any(|(m, p, _)| *m == method && *p == path),
                "{method} {path} is not routed"
            );
        }
    }
}
