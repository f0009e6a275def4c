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
use crate::auth::{API_TOKEN_PREFIX, new_token, token_hash};
use crate::error::{Error, Result};
use crate::services::accounts::{self, SignedIn};
use crate::services::second_factor;
use crate::store::records::{ApiTokenRecord, Role, SessionStage, UserRecord};

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
    /// A TOTP second factor is on.
    pub totp_enabled: bool,
    /// Where the account signs in: `local`, `ldap` or `oidc`.
    pub source: String,
}

impl From<&UserRecord> for UserView {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.clone(),
            username: user.username.clone(),
            role: user.role.as_str(),
            disabled: user.disabled,
            created_at: user.created_at,
            totp_enabled: user.totp_enabled(),
            source: user
                .directory
                .as_ref()
                .map_or_else(|| "local".to_owned(), |d| d.kind.clone()),
        }
    }
}

/// Tells the web UI whether to show first-run setup (no user exists yet).
async fn setup_needed(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    let store = state.store.clone();
    let empty = blocking(move || Ok::<_, Error>(store.list_users()?.is_empty())).await?;
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
    let user = accounts::register(&state, body.username, body.password).await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

#[derive(Debug, Serialize)]
struct LoginResponse {
    token: String,
    csrf_token: String,
    expires_in: u64,
    user: UserView,
    /// The session may only set up TOTP (`[auth] require_totp`); absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    totp_enrolment_required: bool,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiJson(body): ApiJson<Credentials>,
) -> Result<Response> {
    let signed_in = accounts::sign_in(&state, body.username, body.password, peer.ip()).await?;
    if signed_in.stage == SessionStage::SecondFactor {
        // No session yet: the challenge goes to `POST /api/auth/login/totp` with the code.
        return Ok(Json(serde_json::json!({
            "totp_required": true,
            "challenge": signed_in.token,
            "expires_in": second_factor::SECOND_FACTOR_SECS,
        }))
        .into_response());
    }
    session_response(&state, signed_in)
}

/// The answer to a completed sign-in: the session token in the body and in the cookie.
pub(super) fn session_response(state: &AppState, signed_in: SignedIn) -> Result<Response> {
    let max_age = state.config.auth.session_absolute_timeout_secs;
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict",
        signed_in.token
    );
    let body = LoginResponse {
        token: signed_in.token,
        csrf_token: signed_in.csrf_token,
        expires_in: max_age,
        user: UserView::from(&signed_in.user),
        totp_enrolment_required: signed_in.stage == SessionStage::Enrol,
    };
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::internal("internal", e))?,
    );
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
    accounts::sign_out_everywhere(&state, &user.user.id).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, clear_cookie());
    Ok(response)
}

#[derive(Debug, Serialize)]
struct MeResponse {
    #[serde(flatten)]
    user: UserView,
    /// For the web UI after a reload: the CSRF token of the cookie session.
    #[serde(skip_serializing_if = "Option::is_none")]
    csrf_token: Option<String>,
    /// This session may only set up TOTP.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    totp_enrolment_required: bool,
}

async fn me(user: AuthUser) -> Json<MeResponse> {
    let csrf_token = match user.credential {
        Credential::SessionCookie { .. } => user.csrf_token.clone(),
        _ => None,
    };
    Json(MeResponse {
        user: UserView::from(&user.user),
        csrf_token,
        totp_enrolment_required: user.enrolment_pending,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

/// Changes the caller's password (throttled like a sign-in; ends the other sessions and every
/// API token).
async fn change_password(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    user: AuthUser,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<StatusCode> {
    let keep = user.session_hash().map(str::to_owned);
    accounts::change_password(
        &state,
        &user.user,
        keep,
        body.current_password,
        body.new_password,
        peer.ip(),
    )
    .await?;
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
    let role = match body.role.as_deref() {
        None => Role::User,
        Some(text) => {
            Role::parse(text).ok_or_else(|| Error::bad_request("role must be `admin` or `user`"))?
        }
    };
    let user =
        accounts::create_user(&state, body.username, body.password, role, &admin.actor()).await?;
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
    let user = accounts::update_user(&state, id, role, body.disabled, &admin.actor()).await?;
    Ok(Json(UserView::from(&user)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminPasswordReset {
    password: String,
}

async fn admin_reset_password(
    State(state): State<AppState>,
    AdminUser(admin): AdminUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AdminPasswordReset>,
) -> Result<StatusCode> {
    accounts::reset_password(&state, id, body.password, &admin.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
