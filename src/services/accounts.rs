//! Accounts: registration, sign-in (throttled, the attempt reserved before the hash), sign-out
//! everywhere, password change and reset, and the admin's user changes. Every password hash
//! takes a slot of the bounded hashing pool; every change to a user happens in one store
//! transaction, and a change of credentials ends the user's sessions and API tokens with it.

use std::net::IpAddr;

use crate::app::{AppState, blocking};
use crate::auth::{self, SESSION_TOKEN_PREFIX, new_token, password, token_hash};
use crate::error::{Error, Result};
use crate::services::audit::{self, Actor};
use crate::store::records::{Role, SessionRecord, SessionStage, UserRecord};
use crate::store::{RegistrationPolicy, Revoke};

/// A new session: the bearer token (also the cookie's value) and its CSRF token.
#[derive(Debug)]
pub struct SignedIn {
    pub token: String,
    pub csrf_token: String,
    pub user: UserRecord,
    /// `SecondFactor`: `token` is only the challenge for the TOTP step; `Enrol`: the session
    /// may only set up TOTP.
    pub stage: SessionStage,
}

pub(crate) fn too_many_attempts(wait: u64) -> Error {
    Error::new(
        "too-many-attempts",
        format!("too many sign-in attempts; try again in {wait} s"),
    )
    .with_retry_after(wait)
}

/// A password-hashing slot (bounded, so a flood cannot run one 19 MiB argon2 hash per request).
pub(crate) async fn hash_slot(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit> {
    state.throttle.hash_slot().await.map_err(|wait| {
        Error::new(
            "too-many-attempts",
            format!("the server is busy checking passwords; try again in {wait} s"),
        )
        .with_retry_after(wait)
    })
}

/// Self-registration: the first user becomes admin; later ones only when it is open.
pub async fn register(state: &AppState, username: String, secret: String) -> Result<UserRecord> {
    auth::validate_username(&username)?;
    auth::validate_password(&secret, state.config.auth.min_password_length)?;
    let policy = if state.config.auth.registration == "open" {
        RegistrationPolicy::Open
    } else {
        RegistrationPolicy::Closed
    };
    let store = state.store.clone();
    let permit = hash_slot(state).await?;
    let user = blocking(move || {
        let _permit = permit;
        // Refuse early, before spending a hash, when registration is closed.
        if policy == RegistrationPolicy::Closed && !store.list_users()?.is_empty() {
            return Err(Error::new(
                "registration-closed",
                "registration is closed; ask an administrator for an account",
            ));
        }
        let hash = password::hash_password(&secret)?;
        let id = uuid::Uuid::now_v7().to_string();
        Ok(store.register_user(&id, &username, &hash, policy)?)
    })
    .await?;
    tracing::info!(user_id = %user.id, role = user.role.as_str(), "user registered");
    audit::record(
        state,
        &Actor::user(&user, None),
        "user.create",
        Some(&user.id),
        Some(format!(
            "registered {} as {}",
            user.username,
            user.role.as_str()
        )),
    )
    .await;
    Ok(user)
}

/// Checks a password and opens a session. The throttle slot is taken before hashing, so
/// concurrent attempts count like failures.
pub async fn sign_in(
    state: &AppState,
    username: String,
    secret: String,
    address: IpAddr,
) -> Result<SignedIn> {
    let attempt = state
        .throttle
        .begin(&username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let permit = hash_slot(state).await?;
    let store = state.store.clone();
    let attempted = username.clone();
    let typed = secret.clone();
    let (found, ok) = blocking(move || {
        let _permit = permit;
        let user = store.get_user_by_name(&username)?;
        // Verify against a dummy hash for unknown names so timing does not reveal them.
        let phc = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| password::dummy_hash().to_owned());
        let ok = password::verify_password(&secret, &phc);
        Ok::<_, Error>((user, ok))
    })
    .await?;
    // Local accounts first; a name without one (or an LDAP account's record) goes to LDAP.
    let local = found.as_ref().is_some_and(|u| u.directory.is_none());
    let checked = if local {
        found.filter(|_| ok)
    } else if state.config.ldap.enabled
        && found
            .as_ref()
            .is_none_or(|u| u.directory.as_ref().is_some_and(|d| d.kind == "ldap"))
        && auth::validate_username(&attempted).is_ok()
    {
        match ldap_sign_in(state, &attempted, &typed, address).await {
            Ok(user) => user,
            Err(error) => {
                attempt.succeeded(state.clock.now());
                return Err(error);
            }
        }
    } else {
        None
    };
    let Some(user) = checked else {
        attempt.failed(state.clock.now());
        tracing::info!(%address, "failed sign-in");
        let actor = Actor {
            id: None,
            name: Some(attempted.clone()),
            ip: Some(address),
        };
        audit::record(state, &actor, "auth.sign-in-failed", Some(&attempted), None).await;
        return Err(Error::new(
            "invalid-credentials",
            "wrong username or password",
        ));
    };
    attempt.succeeded(state.clock.now());
    if user.disabled {
        audit::record(
            state,
            &Actor::user(&user, Some(address)),
            "auth.sign-in-failed",
            Some(&user.id),
            Some("account disabled".to_owned()),
        )
        .await;
        return Err(Error::new("account-disabled", "this account is disabled"));
    }
    let stage = if user.totp_enabled() {
        SessionStage::SecondFactor
    } else if state.config.auth.require_totp && user.directory.is_none() {
        SessionStage::Enrol
    } else {
        SessionStage::Full
    };
    if stage == SessionStage::SecondFactor {
        // The password was right; the session opens after the code (second_factor::redeem).
        let challenge = new_token(SESSION_TOKEN_PREFIX);
        let now = state.clock.now_secs();
        let record = SessionRecord {
            user_id: user.id.clone(),
            created_at: now,
            last_seen_at: now,
            csrf_token: String::new(),
            stage,
        };
        let store = state.store.clone();
        let hash = token_hash(&challenge);
        blocking(move || store.insert_session(&hash, &record)).await?;
        return Ok(SignedIn {
            token: challenge,
            csrf_token: String::new(),
            user,
            stage,
        });
    }
    open_session(state, user, stage, address).await
}

/// Opens a session for a user whose sign-in is complete (or, with `Enrol`, complete but for
/// the TOTP enrolment the site requires).
pub async fn open_session(
    state: &AppState,
    user: UserRecord,
    stage: SessionStage,
    address: IpAddr,
) -> Result<SignedIn> {
    let token = new_token(SESSION_TOKEN_PREFIX);
    let csrf_token = new_token("");
    let now = state.clock.now_secs();
    let record = SessionRecord {
        user_id: user.id.clone(),
        created_at: now,
        last_seen_at: now,
        csrf_token: csrf_token.clone(),
        stage,
    };
    let store = state.store.clone();
    let hash = token_hash(&token);
    blocking(move || store.insert_session(&hash, &record)).await?;
    tracing::info!(user_id = %user.id, "signed in");
    audit::record(
        state,
        &Actor::user(&user, Some(address)),
        "auth.sign-in",
        Some(&user.id),
        None,
    )
    .await;
    Ok(SignedIn {
        token,
        csrf_token,
        user,
        stage,
    })
}

/// The LDAP half of a sign-in: `Ok(None)` for a wrong name or password; the account's local
/// record (created, role refreshed, disabled or enabled by its groups) otherwise.
async fn ldap_sign_in(
    state: &AppState,
    username: &str,
    secret: &str,
    address: IpAddr,
) -> Result<Option<UserRecord>> {
    let identity =
        match crate::services::ldap::authenticate(&state.config.ldap, username, secret).await {
            Ok(Some(identity)) => identity,
            Ok(None) => return Ok(None),
            Err(error) => {
                tracing::warn!(%address, error = %error.message_for_log(), "LDAP sign-in failed");
                return Err(error);
            }
        };
    let store = state.store.clone();
    let name = username.to_owned();
    let found = identity.clone();
    let user = blocking(move || {
        store.upsert_directory_user(
            &uuid::Uuid::now_v7().to_string(),
            &name,
            "ldap",
            &found.dn,
            found.role,
            found.allowed,
        )
    })
    .await?;
    if !identity.allowed {
        audit::record(
            state,
            &Actor::user(&user, Some(address)),
            "auth.sign-in-failed",
            Some(&user.id),
            Some("LDAP: in no allowed group; disabled locally".to_owned()),
        )
        .await;
        return Err(Error::new(
            "directory-access-denied",
            "your directory account is not in a group allowed to sign in here",
        ));
    }
    tracing::info!(user_id = %user.id, role = user.role.as_str(), groups = identity.groups.len(), "LDAP sign-in");
    Ok(Some(user))
}

/// Ends every session and every API token of the user (one transaction).
pub async fn sign_out_everywhere(state: &AppState, user_id: &str) -> Result<()> {
    let store = state.store.clone();
    let id = user_id.to_owned();
    let (sessions, tokens) = blocking(move || store.end_user_credentials(&id)).await?;
    tracing::info!(
        user_id,
        sessions,
        tokens,
        "signed out everywhere; API tokens revoked"
    );
    Ok(())
}

/// Changes a user's own password. Throttled like a sign-in (per account and address); the
/// other sessions (all but `keep_session`) and every API token end in the same transaction.
pub async fn change_password(
    state: &AppState,
    user: &UserRecord,
    keep_session: Option<String>,
    current_password: String,
    new_password: String,
    address: IpAddr,
) -> Result<()> {
    auth::validate_password(&new_password, state.config.auth.min_password_length)?;
    let attempt = state
        .throttle
        .begin(&user.username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let permit = hash_slot(state).await?;
    let store = state.store.clone();
    let user_id = user.id.clone();
    let outcome = blocking(move || -> Result<bool> {
        let _permit = permit;
        let current = store
            .get_user(&user_id)?
            .ok_or_else(|| Error::not_found("user"))?;
        if !password::verify_password(&current_password, &current.password_hash) {
            return Ok(false);
        }
        let new_hash = password::hash_password(&new_password)?;
        // Only the hash changes, and only if nobody changed it since it was checked; a
        // concurrent disable or role change is kept.
        store
            .update_user(&user_id, keep_session.as_deref(), |record| {
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
    tracing::info!(user_id = %user.id, "password changed; other sessions and API tokens revoked");
    audit::record(
        state,
        &Actor::user(user, Some(address)),
        "settings.change",
        Some("password"),
        Some("password changed; other sessions and API tokens revoked".to_owned()),
    )
    .await;
    Ok(())
}

/// An account created by an administrator.
pub async fn create_user(
    state: &AppState,
    username: String,
    secret: String,
    role: Role,
    actor: &Actor,
) -> Result<UserRecord> {
    auth::validate_username(&username)?;
    auth::validate_password(&secret, state.config.auth.min_password_length)?;
    let store = state.store.clone();
    let permit = hash_slot(state).await?;
    let user = blocking(move || {
        let _permit = permit;
        let hash = password::hash_password(&secret)?;
        Ok::<_, Error>(store.create_user(
            &uuid::Uuid::now_v7().to_string(),
            &username,
            &hash,
            role,
        )?)
    })
    .await?;
    audit::record(
        state,
        actor,
        "user.create",
        Some(&user.id),
        Some(format!("{} as {}", user.username, user.role.as_str())),
    )
    .await;
    Ok(user)
}

/// An administrator's change of role and/or disabled flag, on the current record in one
/// transaction; disabling ends every session and API token at once.
pub async fn update_user(
    state: &AppState,
    user_id: String,
    role: Option<Role>,
    disabled: Option<bool>,
    actor: &Actor,
) -> Result<UserRecord> {
    let store = state.store.clone();
    let (updated, before) = blocking(move || {
        let mut before = None;
        let updated = store.update_user(&user_id, None, |user| {
            before = Some((user.role, user.disabled));
            if let Some(role) = role {
                user.role = role;
            }
            if let Some(disabled) = disabled {
                user.disabled = disabled;
            }
            Ok::<_, Error>(if user.disabled {
                Revoke::Credentials
            } else {
                Revoke::Nothing
            })
        })?;
        Ok::<_, Error>((updated, before))
    })
    .await?;
    let user = updated.ok_or_else(|| Error::not_found("user"))?;
    if let Some((role_before, disabled_before)) = before {
        if role_before != user.role {
            let detail = format!(
                "{}: {} -> {}",
                user.username,
                role_before.as_str(),
                user.role.as_str()
            );
            audit::record(
                state,
                actor,
                "user.role-change",
                Some(&user.id),
                Some(detail),
            )
            .await;
        }
        if disabled_before != user.disabled {
            let action = if user.disabled {
                "user.disable"
            } else {
                "user.enable"
            };
            let detail = Some(user.username.clone());
            audit::record(state, actor, action, Some(&user.id), detail).await;
        }
    }
    Ok(user)
}

/// An administrator's password reset: the new hash, every session and every API token of the
/// user change in one transaction.
pub async fn reset_password(
    state: &AppState,
    user_id: String,
    secret: String,
    actor: &Actor,
) -> Result<()> {
    auth::validate_password(&secret, state.config.auth.min_password_length)?;
    let store = state.store.clone();
    let permit = hash_slot(state).await?;
    let target = user_id.clone();
    blocking(move || {
        let _permit = permit;
        let hash = password::hash_password(&secret)?;
        store
            .update_user(&user_id, None, |user| {
                user.password_hash = hash;
                Ok::<_, Error>(Revoke::Credentials)
            })?
            .ok_or_else(|| Error::not_found("user"))
    })
    .await?;
    audit::record(state, actor, "user.password-reset", Some(&target), None).await;
    Ok(())
}
