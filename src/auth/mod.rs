//! Accounts: argon2id passwords, random session and API tokens stored hashed, login throttling.

pub mod password;
pub mod throttle;
pub mod totp;

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Prefix of personal API tokens, so they are recognisable in logs-to-be-scrubbed and configs.
pub const API_TOKEN_PREFIX: &str = "otk_";
/// Prefix of session tokens (the cookie value and the login response's bearer token).
pub const SESSION_TOKEN_PREFIX: &str = "ots_";

/// A fresh random token: prefix + 32 random bytes in URL-safe base64.
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Tokens are stored only as their SHA-256; a leaked database does not leak sessions.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Usernames: 1 to 64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_username(username: &str) -> Result<()> {
    let ok_length = (1..=64).contains(&username.chars().count());
    let ok_chars = username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok_length && ok_chars {
        Ok(())
    } else {
        Err(Error::new(
            "invalid-username",
            "username must be 1 to 64 letters, digits, '.', '_', '-' or '@'",
        ))
    }
}

pub fn validate_password(password: &str, min_length: usize) -> Result<()> {
    let length = password.chars().count();
    if length < min_length {
        return Err(Error::new(
            "weak-password",
            format!("password must be at least {min_length} characters"),
        ));
    }
    if length > 1024 {
        return Err(Error::new(
            "weak-password",
            "password must be at most 1024 characters",
        ));
    }
    Ok(())
}

/// Compares secrets without an early exit, so timing does not reveal a prefix match.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hashed() {
        let a = new_token(SESSION_TOKEN_PREFIX);
        let b = new_token(SESSION_TOKEN_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("ots_"));
        assert_eq!(a.len(), 4 + 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn usernames_and_passwords() {
        assert!(validate_username("alice.b-c_d@x").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("a b").is_err());
        assert!(validate_username("../x").is_err());
        assert!(validate_password("short", 8).is_err());
        assert!(validate_password("long enough", 8).is_ok());
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
