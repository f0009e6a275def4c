//! The TOTP second factor of local accounts: setup, confirmation (which hands out recovery
//! codes, stored only as argon2id hashes), removal, and the second sign-in step.
//!
//! Every code check that consumes something happens in one store transaction: a TOTP code
//! moves the account's `last_step` forward (the same code, or an older one, is refused
//! afterwards) and a recovery code's hash is removed, so two concurrent requests with the same
//! code cannot both succeed. Failed codes count against the sign-in throttle like wrong
//! passwords.

use std::net::IpAddr;

use crate::app::{AppState, blocking};
use crate::auth::{new_token, password, token_hash, totp};
use crate::error::{Error, Result};
use crate::services::accounts::{SignedIn, hash_slot, too_many_attempts};
use crate::services::audit::{self, Actor};
use crate::store::Revoke;
use crate::store::records::{SessionRecord, SessionStage, TotpRecord, UserRecord};

/// How long the challenge of the password step stays redeemable.
pub const SECOND_FACTOR_SECS: u64 = 300;

fn invalid_code() -> Error {
    Error::new(
        "invalid-totp-code",
        "the code is wrong, expired or already used",
    )
}

fn not_available() -> Error {
    Error::new(
        "totp-not-available",
        "this account signs in through a directory; its second factor is the directory's",
    )
}

/// What the authenticator app needs.
#[derive(Debug)]
pub struct Setup {
    pub secret: String,
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG) to scan.
    pub qr_svg: Option<String>,
}

/// Starts (or restarts) enrolment: a fresh secret, not yet in force.
pub async fn setup(state: &AppState, user: &UserRecord, ip: Option<IpAddr>) -> Result<Setup> {
    if user.directory.is_some() {
        return Err(not_available());
    }
    let secret = totp::new_secret();
    let now = state.clock.now_secs();
    let store = state.store.clone();
    let id = user.id.clone();
    let pending = secret.clone();
    blocking(move || {
        store.update_user(&id, None, |record| {
            if record.totp_enabled() {
                return Err(Error::new(
                    "totp-already-enabled",
                    "a second factor is already set up; remove it first",
                ));
            }
            record.totp = Some(TotpRecord {
                secret: pending,
                enabled: false,
                last_step: None,
                recovery_hashes: Vec::new(),
                created_at: now,
            });
            Ok(Revoke::Nothing)
        })
    })
    .await?
    .ok_or_else(|| Error::not_found("user"))?;
    audit::record(
        state,
        &Actor::user(user, ip),
        "auth.totp-setup",
        Some(&user.id),
        None,
    )
    .await;
    let otpauth_uri = totp::otpauth_uri(&state.config.auth.totp_issuer, &user.username, &secret);
    Ok(Setup {
        qr_svg: totp::qr_svg(&otpauth_uri),
        otpauth_uri,
        secret,
    })
}

/// Confirms enrolment with a code from the app: TOTP is on from now, the caller's session (if
/// it was waiting for enrolment) becomes a full one, and 10 recovery codes come back once.
pub async fn confirm(
    state: &AppState,
    user: &UserRecord,
    session: Option<String>,
    code: String,
    address: IpAddr,
) -> Result<Vec<String>> {
    let attempt = state
        .throttle
        .begin(&user.username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let now = state.clock.now_secs();
    // A read-only check first, so a wrong code costs no recovery-code hashing.
    let pending = user
        .totp
        .as_ref()
        .filter(|t| !t.enabled)
        .map(|t| t.secret.clone());
    let Some(secret) = pending else {
        attempt.succeeded(state.clock.now());
        return Err(Error::new(
            "totp-not-set-up",
            "start the setup first (POST /api/account/totp/setup)",
        ));
    };
    if totp::matching_step(&secret, &code, now, None).is_none() {
        attempt.failed(state.clock.now());
        audit::record(
            state,
            &Actor::user(user, Some(address)),
            "auth.totp-failed",
            Some(&user.id),
            Some("wrong code while enrolling".to_owned()),
        )
        .await;
        return Err(invalid_code());
    }
    let codes = totp::new_recovery_codes();
    let permit = hash_slot(state).await?;
    let store = state.store.clone();
    let id = user.id.clone();
    let plain = codes.clone();
    let outcome = blocking(move || {
        let _permit = permit;
        let hashes = plain
            .iter()
            .map(|c| password::hash_password(c))
            .collect::<Result<Vec<_>>>()?;
        store.update_user_and_promote(&id, session.as_deref(), |record| {
            let Some(current) = record.totp.as_mut().filter(|t| !t.enabled) else {
                return Err(Error::new("conflict", "the setup changed meanwhile"));
            };
            // The secret may have been replaced by a second setup meanwhile: check again.
            let step =
                totp::matching_step(&current.secret, &code, now, None).ok_or_else(invalid_code)?;
            current.enabled = true;
            current.last_step = Some(step);
            current.recovery_hashes = hashes;
            Ok(())
        })
    })
    .await;
    match outcome {
        Ok(Some(_)) => {}
        Ok(None) => return Err(Error::not_found("user")),
        Err(error) => {
            if error.code == "invalid-totp-code" {
                attempt.failed(state.clock.now());
            }
            return Err(error);
        }
    }
    attempt.succeeded(state.clock.now());
    tracing::info!(user_id = %user.id, "TOTP enabled");
    audit::record(
        state,
        &Actor::user(user, Some(address)),
        "auth.totp-enable",
        Some(&user.id),
        None,
    )
    .await;
    Ok(codes)
}

/// Removes the second factor after proving it is the owner: the password, or a current code.
pub async fn disable(
    state: &AppState,
    user: &UserRecord,
    password_given: Option<String>,
    code: Option<String>,
    address: IpAddr,
) -> Result<()> {
    if password_given.is_none() && code.is_none() {
        return Err(Error::bad_request("send `password` or `code`"));
    }
    if user.totp.is_none() {
        return Err(Error::new("totp-not-set-up", "no second factor is set up"));
    }
    let attempt = state
        .throttle
        .begin(&user.username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let now = state.clock.now_secs();
    let store = state.store.clone();
    let id = user.id.clone();
    let permit = match password_given {
        Some(_) => Some(hash_slot(state).await?),
        None => None,
    };
    let outcome = blocking(move || {
        let _permit = permit;
        let current = store
            .get_user(&id)?
            .ok_or_else(|| Error::not_found("user"))?;
        if let Some(secret) = &password_given
            && !password::verify_password(secret, &current.password_hash)
        {
            return Err(Error::new("invalid-credentials", "the password is wrong"));
        }
        store
            .update_user(&id, None, |record| {
                if password_given.is_none() {
                    let Some(t) = record.totp.as_ref() else {
                        return Err(invalid_code());
                    };
                    let code = code.as_deref().unwrap_or("");
                    totp::matching_step(&t.secret, code, now, t.last_step)
                        .ok_or_else(invalid_code)?;
                }
                record.totp = None;
                Ok(Revoke::Nothing)
            })?
            .ok_or_else(|| Error::not_found("user"))
    })
    .await;
    if let Err(error) = outcome {
        if matches!(error.code, "invalid-totp-code" | "invalid-credentials") {
            attempt.failed(state.clock.now());
            audit::record(
                state,
                &Actor::user(user, Some(address)),
                "auth.totp-failed",
                Some(&user.id),
                Some("wrong proof while removing the second factor".to_owned()),
            )
            .await;
        }
        return Err(error);
    }
    attempt.succeeded(state.clock.now());
    tracing::info!(user_id = %user.id, "TOTP removed");
    audit::record(
        state,
        &Actor::user(user, Some(address)),
        "auth.totp-disable",
        Some(&user.id),
        None,
    )
    .await;
    Ok(())
}

/// An administrator removes a user's second factor (a lost phone); the user's sessions end.
pub async fn admin_reset(state: &AppState, user_id: String, actor: &Actor) -> Result<()> {
    let store = state.store.clone();
    let id = user_id.clone();
    blocking(move || {
        store.update_user(&id, None, |record| {
            record.totp = None;
            Ok::<_, Error>(Revoke::Credentials)
        })
    })
    .await?
    .ok_or_else(|| Error::not_found("user"))?;
    audit::record(state, actor, "auth.totp-reset", Some(&user_id), None).await;
    Ok(())
}

/// The second sign-in step: the challenge from the password step and a TOTP code or a
/// recovery code. Opens the session in the same transaction that consumes the code.
pub async fn redeem(
    state: &AppState,
    challenge: String,
    code: Option<String>,
    recovery_code: Option<String>,
    address: IpAddr,
) -> Result<SignedIn> {
    let invalid_challenge = || {
        Error::new(
            "totp-challenge-invalid",
            "the sign-in expired or was already completed; sign in again",
        )
    };
    let challenge_hash = token_hash(&challenge);
    let store = state.store.clone();
    let hash = challenge_hash.clone();
    let user = blocking(move || {
        let Some(session) = store.get_session(&hash)? else {
            return Ok::<_, Error>(None);
        };
        if session.stage != SessionStage::SecondFactor {
            return Ok(None);
        }
        store.get_user(&session.user_id).map_err(Error::from)
    })
    .await?
    .ok_or_else(invalid_challenge)?;
    let Some(secret) = user.totp.as_ref().filter(|t| t.enabled) else {
        return Err(invalid_challenge());
    };
    let attempt = state
        .throttle
        .begin(&user.username, address, state.clock.now())
        .map_err(too_many_attempts)?;
    let now = state.clock.now_secs();

    // A recovery code: find the hash it matches (outside the transaction: argon2 is slow),
    // then remove exactly that hash in the transaction; whoever removes it first wins.
    let mut recovery_hash = None;
    let using_recovery = code.is_none();
    if let Some(typed) = recovery_code.as_deref() {
        let normalised = totp::normalise_recovery_code(typed);
        let hashes = secret.recovery_hashes.clone();
        let permit = hash_slot(state).await?;
        recovery_hash = blocking(move || {
            let _permit = permit;
            Ok::<_, Error>(normalised.and_then(|plain| {
                hashes
                    .into_iter()
                    .find(|phc| password::verify_password(&plain, phc))
            }))
        })
        .await?;
    } else if code.is_none() {
        return Err(Error::bad_request("send `code` or `recovery_code`"));
    }

    let token = new_token(crate::auth::SESSION_TOKEN_PREFIX);
    let csrf_token = new_token("");
    let new_hash = token_hash(&token);
    let store = state.store.clone();
    let csrf = csrf_token.clone();
    let outcome = blocking(move || {
        store.redeem_second_factor(
            &challenge_hash,
            SECOND_FACTOR_SECS,
            now,
            &new_hash,
            |user| SessionRecord {
                user_id: user.id.clone(),
                created_at: now,
                last_seen_at: now,
                csrf_token: csrf,
                stage: SessionStage::Full,
            },
            |record: &mut UserRecord| {
                if record.disabled {
                    return Err(Error::new("account-disabled", "this account is disabled"));
                }
                let Some(t) = record.totp.as_mut().filter(|t| t.enabled) else {
                    return Err(invalid_code());
                };
                if let Some(typed) = code.as_deref() {
                    let step = totp::matching_step(&t.secret, typed, now, t.last_step)
                        .ok_or_else(invalid_code)?;
                    t.last_step = Some(step);
                } else {
                    let wanted = recovery_hash.as_deref().ok_or_else(invalid_code)?;
                    let before = t.recovery_hashes.len();
                    t.recovery_hashes.retain(|phc| phc != wanted);
                    if t.recovery_hashes.len() == before {
                        return Err(invalid_code());
                    }
                }
                Ok::<_, Error>(())
            },
        )
    })
    .await?;
    let user_after = match outcome {
        None => {
            attempt.succeeded(state.clock.now());
            return Err(invalid_challenge());
        }
        Some(Err(error)) if error.code != "invalid-totp-code" => {
            attempt.succeeded(state.clock.now());
            return Err(error);
        }
        Some(Err(error)) => {
            attempt.failed(state.clock.now());
            tracing::info!(%address, user_id = %user.id, "failed second factor");
            audit::record(
                state,
                &Actor::user(&user, Some(address)),
                "auth.totp-failed",
                Some(&user.id),
                Some(if using_recovery {
                    "wrong or used recovery code".to_owned()
                } else {
                    "wrong or reused code".to_owned()
                }),
            )
            .await;
            return Err(error);
        }
        Some(Ok(user)) => user,
    };
    attempt.succeeded(state.clock.now());
    let left = user_after
        .totp
        .as_ref()
        .map_or(0, |t| t.recovery_hashes.len());
    tracing::info!(user_id = %user_after.id, "signed in with a second factor");
    audit::record(
        state,
        &Actor::user(&user_after, Some(address)),
        "auth.sign-in",
        Some(&user_after.id),
        Some(if using_recovery {
            format!("with a recovery code ({left} left)")
        } else {
            "with TOTP".to_owned()
        }),
    )
    .await;
    Ok(SignedIn {
        token,
        csrf_token,
        user: user_after,
        stage: SessionStage::Full,
    })
}
