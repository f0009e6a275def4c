//! `/api/auth/*` and `/api/admin/users*`: registration, login, sessions, API tokens, admin.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{AdminUser, ApiJson, AuthUser, Credential, SESSION_COOKIE};
use crate::app::{AppState, blocking};
use crate::auth::{self, API_TOKEN_PREFIX, SESSION_TOKEN_PREFIX, new_token, password, token_hash};
use crate::error::{Error, Result};
use crate::store::records::{ApiTokenRecord, Role, SessionRecord, UserRecord};
use crate::store::{RegistrationPolicy, Revoke};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/auth/setup-needed", get(setup_needed))
        .route("/api/auth/register", post(register))
        .route("/api/auth/login", post(login))
        .route("/api/auth/logout", post(logout))
        .route("/api/auth/logout-all", post(logout_all))
        .route("/api/auth/me", get(me))
        .route("/api/auth/password", post(change_password))
        .route("/api/auth/tokens", get(list_tokens).post(create_token))
        .route("/api/auth/tokens/{id}", delete(revoke_token))
        .route(
            "/api/admin/users",
            get(admin_list_users).post(admin_create_user),
        )
        .route("/api/admin/users/{id}", patch(admin_update_user))
        .route("/api/admin/users/{id}/password", post(admin_reset_password))
}

/// A user as the API shows it; never the password hash.
#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub role: &'static str,
    pub disabled: bool,
    pub created_at: u64,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role.as_str(),
            disabled: user.disabled,
            created_at: user.created_at,
        }
    }
}

/// Tells the web UI whether to show first-run setup (no user exists yet).
async fn setup_needed(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    let store = state.store.clone();
    let empty = blocking(move || Ok(store.list_users()?.is_empty())).await?;
    Ok(Json(serde_json::json!({ "setup_needed": empty })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    username: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<(StatusCode, Json<UserView>)> {
    auth::validate_username(&body.username)?;
    auth::validate_password(&body.password, state.config.auth.min_password_length)?;
    let policy = if state.config.auth.registration == "open" {
        RegistrationPolicy::Open
    } else {
        RegistrationPolicy::Closed
    };
    let store = state.store.clone();
    let permit = hash_slot(&state).await?;
    let user = blocking(move || {
        let _permit = permit;
        // Refuse early, before spending a hash, when registration is closed.
        if policy == RegistrationPolicy::Closed && !store.list_users()?.is_empty() {
            return Err(Error::new(
                "registration-closed",
                "registration is closed; ask an administrator for an account",
            ));
        }
        let hash = password::hash_password(&body.password)?;
        let id = uuid::Uuid::now_v7().to_string();
        store.register_user(&id, &body.username, &hash, policy)
    })
    .await?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user registered");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

#[derive(Debug, Serialize)]
struct LoginResponse {
    token: String,
    csrf_token: String,
    expires_in: u64,
    user: UserView,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response> {
    let address = peer.ip();
    // The slot is taken before hashing: concurrent attempts count like failures.
    let attempt = state
        .throttle
        .begin(&body.username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let permit = hash_slot(&state).await?;
    let store = state.store.clone();
    let username = body.username.clone();
    let candidate = body.password.clone();
    let checked = blocking(move || {
        let _permit = permit;
        let user = store.get_user_by_name(&username)?;
        // Verify against a dummy hash for unknown names so timing does not reveal them.
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let ok = password::verify_password(&candidate, &phc);
        Ok(user.filter(|_| ok))
    })
    .await?;
    let Some(user) = checked else {
        attempt.failed(state.clock.now());
        tracing::info!(%address, "failed sign-in");
        return Err(Error::new(
            "invalid-credentials",
            "wrong username or password",
        ));
    };
    attempt.succeeded(state.clock.now());
    if user.disabled {
        return Err(Error::new("account-disabled", "this account is disabled"));
    }
    let token = new_token(SESSION_TOKEN_PREFIX);
    let csrf_token = new_token("");
    let now = state.clock.now_secs();
    let record = SessionRecord {
        user_id: user.id.clone(),
        created_at: now,
        last_seen_at: now,
        csrf_token: csrf_token.clone(),
    };
    let store = state.store.clone();
    let hash = token_hash(&token);
    blocking(move || store.insert_session(&hash, &record)).await?;
    let max_age = state.config.auth.session_absolute_timeout_secs;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
    );
    let body = LoginResponse {
        token,
        csrf_token,
        expires_in: max_age,
        user: UserView::from(&user),
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::internal("internal", e))?,
    );
    tracing::info!(user_id = %user.id, "signed in");
    Ok(response)
}

fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-ot_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
    )
}

async fn logout(State(state): State<AppState>, user: AuthUser) -> Result<Response> {
    if let Some(hash) = user.session_hash().map(str::to_owned) {
        let store = state.store.clone();
        blocking(move || store.delete_session(&hash)).await?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

/// Ends every session and every API token of the caller (one transaction).
async fn logout_all(State(state): State<AppState>, user: AuthUser) -> Result<Response> {
    let store = state.store.clone();
    let user_id = user.user.id.clone();
    let (sessions, tokens) = blocking(move || store.end_user_credentials(&user_id)).await?;
    tracing::info!(user_id = %user.user.id, sessions, tokens, "signed out everywhere; API tokens revoked");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

fn too_many_attempts(wait: u64) -> Error {
    Error::new(
        "too-many-attempts",
        format!("too many sign-in attempts; try again in {wait} s"),
    )
    .with_retry_after(wait)
}

/// A password-hashing slot (bounded, so a flood cannot run one 19 MiB argon2 hash per request).
async fn hash_slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit> {
    state.throttle.hash_slot().await.map_err(|wait| {
        Error::new(
            "too-many-attempts",
            format!("the server is busy checking passwords; try again in {wait} s"),
        )
        .with_retry_after(wait)
    })
}

#[derive(Debug, Serialize)]
struct MeResponse {
    #[serde(flatten)]
    user: UserView,
    /// For the web UI after a reload: the CSRF token of the cookie session.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
}

async fn me(user: AuthUser) -> Json<MeResponse> {
    let csrf_token = match user.credential {
        Credential::SessionCookie { .. } => user.csrf_token.clone(),
        _ => None,
    };
    Json(MeResponse {
        user: UserView::from(&user.user),
        csrf_token,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password. Throttled like a sign-in (per account and address); the
/// caller's other sessions and all its API tokens end in the same transaction.
async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: AuthUser,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode> {
    auth::validate_password(&body.new_password, state.config.auth.min_password_length)?;
    let attempt = state
        .throttle
        .begin(&user.user.username, peer.ip(), state.clock.now())
        .map_err(too_many_attempts)?;
    let permit = hash_slot(&state).await?;
    let store = state.store.clone();
    let keep = user.session_hash().map(str::to_owned);
    let user_id = user.user.id.clone();
    let outcome = blocking(move || {
        let _permit = permit;
        let current = store
            .get_user(&user_id)?
            .ok_or_else(|| Error::not_found("user"))?;
        if !password::verify_password(&body.current_password, &current.password_hash) {
            return Ok(false);
        }
        let new_hash = password::hash_password(&body.new_password)?;
        // Only the hash changes, and only if nobody changed it since it was checked; a
        // concurrent disable or role change is kept.
        store
            .update_user(&user_id, keep.as_deref(), |record| {
                if record.password_hash != current.password_hash {
                    return Err(Error::new(
                        "conflict",
                        "the password was changed meanwhile; try again",
                    ));
                }
                record.password_hash = new_hash;
                Ok(Revoke::Credentials)
            })?
            .ok_or_else(|| Error::not_found("user"))?;
        Ok(true)
    })
    .await?;
    if !outcome {
        attempt.failed(state.clock.now());
        return Err(Error::new(
            "invalid-credentials",
            "current password is wrong",
        ));
    }
    attempt.succeeded(state.clock.now());
    tracing::info!(user_id = %user.user.id, "password changed; other sessions and API tokens revoked");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

#[derive(Debug, Serialize)]
struct TokenView {
    id: String,
    name: String,
    created_at: u64,
    last_used_at: Option<u64>,
    /// Only in the response that created it; it is stored hashed and cannot be shown again.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<&ApiTokenRecord> for TokenView {
    fn from(record: &ApiTokenRecord) -> Self {
        Self {
            id: record.id.clone(),
            name: record.name.clone(),
            created_at: record.created_at,
            last_used_at: record.last_used_at,
            token: None,
        }
    }
}

async fn create_token(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewToken>,
) -> Result<(StatusCode, Json<TokenView>)> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "token name must be 1 to 100 printable characters",
        ));
    }
    let token = new_token(API_TOKEN_PREFIX);
    let record = ApiTokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        user_id: user.user.id.clone(),
        name,
        created_at: state.clock.now_secs(),
        last_used_at: None,
    };
    let store = state.store.clone();
    let hash = token_hash(&token);
    let stored = record.clone();
    blocking(move || store.insert_api_token(&hash, &stored)).await?;
    let mut view = TokenView::from(&record);
    view.token = Some(token);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_tokens(
    State(state): State<AppState>,
    user: AuthUser,
) -> Result<Json<Vec<TokenView>>> {
    let store = state.store.clone();
    let records = blocking(move || store.list_api_tokens(&user.user.id)).await?;
    Ok(Json(records.iter().map(TokenView::from).collect()))
}

async fn revoke_token(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let store = state.store.clone();
    let removed = blocking(move || store.delete_api_token(&user.user.id, &id)).await?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::not_found("token"))
    }
}

async fn admin_list_users(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<Vec<UserView>>> {
    let store = state.store.clone();
    let users = blocking(move || store.list_users()).await?;
    Ok(Json(users.iter().map(UserView::from).collect()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminNewUser {
    username: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
}

async fn admin_create_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    ApiJson(body): ApiJson<AdminNewUser>,
) -> Result<(StatusCode, Json<UserView>)> {
    auth::validate_username(&body.username)?;
    auth::validate_password(&body.password, state.config.auth.min_password_length)?;
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(text) => {
            Role::parse(text).ok_or_else(|| Error::bad_request("role must be `admin` or `user`"))?
        }
    };
    let store = state.store.clone();
    let permit = hash_slot(&state).await?;
    let user = blocking(move || {
        let _permit = permit;
        let hash = password::hash_password(&body.password)?;
        store.create_user(
            &uuid::Uuid::now_v7().to_string(),
            &body.username,
            &hash,
            role,
        )
    })
    .await?;
    tracing::info!(admin = %admin.user.id, user_id = %user.id, "user created by admin");
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminUserUpdate {
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    disabled: Option<bool>,
}

async fn admin_update_user(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminUserUpdate>,
) -> Result<Json<UserView>> {
    if id == admin.user.id {
        return Err(Error::bad_request(
            "administrators cannot change their own role or disable themselves",
        ));
    }
    let role = body
        .role
        .as_deref()
        .map(|text| {
            Role::parse(text).ok_or_else(|| Error::bad_request("role must be `admin` or `user`"))
        })
        .transpose()?;
    let store = state.store.clone();
    // One transaction: the fields asked for change on the current record, and disabling
    // ends every session and API token at once.
    let user = blocking(move || {
        store.update_user(&id, None, |user| {
            if let Some(role) = role {
                user.role = role;
            }
            if let Some(disabled) = body.disabled {
                user.disabled = disabled;
            }
            Ok(if user.disabled {
                Revoke::Credentials
            } else {
                Revoke::Nothing
            })
        })
    })
    .await?
    .ok_or_else(|| Error::not_found("user"))?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPasswordReset {
    password: String,
}

async fn admin_reset_password(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminPasswordReset>,
) -> Result<StatusCode> {
    auth::validate_password(&body.password, state.config.auth.min_password_length)?;
    let store = state.store.clone();
    let permit = hash_slot(&state).await?;
    // The new hash, every session and every API token of the user change in one transaction.
    blocking(move || {
        let _permit = permit;
        let hash = password::hash_password(&body.password)?;
        store
            .update_user(&id, None, |user| {
                user.password_hash = hash;
                Ok(Revoke::Credentials)
            })?
            .ok_or_else(|| Error::not_found("user"))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
