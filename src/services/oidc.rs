//! OpenID Connect sign-in, authorization code flow with PKCE (S256), `state` and `nonce`:
//! discovery from `{issuer}/.well-known/openid-configuration`, the code exchanged at the token
//! endpoint with the client secret, and the ID token's signature checked against the
//! provider's JWKS (RS256 or ES256, with `ring`), then its issuer, audience, expiry and nonce.
//! The flow's secrets (state, nonce, PKCE verifier) travel in a short-lived HttpOnly cookie of
//! the browser that started it, so a callback from another browser is refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::{constant_time_eq, new_token};
use crate::config::OidcConfig;
use crate::error::{Error, Result};
use crate::store::records::Role;

/// Seconds a started sign-in may take at the provider.
pub const FLOW_SECS: u64 = 600;

fn unavailable(message: String) -> Error {
    Error::new("directory-unavailable", message)
}

fn refused(message: impl Into<String>) -> Error {
    Error::new("oidc-failed", message)
}

#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

fn client(config: &OidcConfig) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(config.timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::internal("internal", e))
}

async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &str,
) -> Result<T> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| unavailable(format!("cannot reach the OIDC provider at {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(unavailable(format!(
            "the OIDC provider answered {} for {url}",
            response.status()
        )));
    }
    response.json().await.map_err(|e| {
        unavailable(format!(
            "the OIDC provider's answer from {url} is not valid: {e}"
        ))
    })
}

async fn discover(config: &OidcConfig, client: &reqwest::Client) -> Result<Discovery> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        config.issuer.trim_end_matches('/')
    );
    let found: Discovery = get_json(client, &url).await?;
    if found.issuer.trim_end_matches('/') != config.issuer.trim_end_matches('/') {
        return Err(unavailable(format!(
            "the provider calls itself {}, not [oidc] issuer {}",
            found.issuer, config.issuer
        )));
    }
    Ok(found)
}

/// For `doctor`: discovery answers for the configured issuer, the JWKS holds signing keys
/// and the client secret file is usable; says what was found, or why not.
pub async fn check(config: &OidcConfig) -> Result<String> {
    config
        .read_client_secret()
        .map_err(|e| unavailable(format!("[oidc] client_secret_file: {e}")))?;
    let client = client(config)?;
    let discovery = discover(config, &client).await?;
    let jwks: Value = get_json(&client, &discovery.jwks_uri).await?;
    let keys = jwks["keys"].as_array().map_or(0, Vec::len);
    if keys == 0 {
        return Err(unavailable(format!(
            "the OIDC provider's JWKS at {} holds no keys",
            discovery.jwks_uri
        )));
    }
    Ok(format!(
        "issuer {} answers discovery, {keys} signing key(s)",
        discovery.issuer
    ))
}

fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A started sign-in: where to send the browser, and the cookie value that must come back.
#[derive(Debug)]
pub struct Started {
    pub location: String,
    pub cookie: String,
}

pub async fn start(config: &OidcConfig) -> Result<Started> {
    let client = client(config)?;
    let discovery = discover(config, &client).await?;
    let state = new_token("");
    let nonce = new_token("");
    let verifier = new_token("");
    let scopes = config.scopes.join(" ");
    let separator = if discovery.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!(
        "{}{separator}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
        discovery.authorization_endpoint,
        query_escape(&config.client_id),
        query_escape(&config.redirect_url),
        query_escape(&scopes),
        pkce_challenge(&verifier),
    );
    Ok(Started {
        location,
        cookie: format!("{state}.{nonce}.{verifier}"),
    })
}

/// Who the provider says signed in.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `issuer#sub`
    pub subject: String,
    pub username: String,
    pub groups: Vec<String>,
    pub role: Role,
    pub allowed: bool,
}

/// Completes a sign-in: checks `state` against the cookie, exchanges the code, verifies the
/// ID token and maps its groups.
pub async fn finish(
    config: &OidcConfig,
    code: &str,
    state: &str,
    cookie: Option<&str>,
    now: u64,
) -> Result<Identity> {
    let cookie = cookie.ok_or_else(|| {
        refused("the sign-in was not started in this browser, or took too long; try again")
    })?;
    let mut parts = cookie.splitn(3, '.');
    let (Some(expected_state), Some(nonce), Some(verifier)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(refused("the sign-in cookie is malformed; try again"));
    };
    if !constant_time_eq(expected_state.as_bytes(), state.as_bytes()) {
        return Err(refused("the sign-in state does not match; try again"));
    }
    let client = client(config)?;
    let discovery = discover(config, &client).await?;
    let secret = config
        .read_client_secret()
        .map_err(|e| unavailable(format!("[oidc] client_secret_file: {e}")))?;
    let response = client
        .post(&discovery.token_endpoint)
        .basic_auth(&config.client_id, Some(&secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
            query_escape(code),
            query_escape(&config.redirect_url),
            query_escape(verifier)
        ))
        .send()
        .await
        .map_err(|e| unavailable(format!("cannot reach the OIDC token endpoint: {e}")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(refused(format!(
            "the provider refused the code ({status}: {})",
            body["error_description"]
                .as_str()
                .or(body["error"].as_str())
                .unwrap_or("no reason given")
        )));
    }
    let id_token = body["id_token"]
        .as_str()
        .ok_or_else(|| refused("the provider sent no id_token"))?;
    let jwks: Value = get_json(&client, &discovery.jwks_uri).await?;
    let claims = verify_id_token(id_token, &jwks)?;
    check_claims(&claims, &discovery.issuer, &config.client_id, nonce, now)?;
    let sub = claims["sub"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| refused("the ID token has no subject"))?;
    let username = claims[config.username_claim.as_str()]
        .as_str()
        .unwrap_or(sub)
        .to_owned();
    let groups: Vec<String> = match &claims[config.groups_claim.as_str()] {
        Value::Array(items) => items
            .iter()
            .filter_map(|g| g.as_str().map(str::to_owned))
            .collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    };
    let has = |wanted: &[String]| groups.iter().any(|g| wanted.iter().any(|w| w == g));
    let admin = has(&config.admin_groups);
    let allowed = admin || config.allowed_groups.is_empty() || has(&config.allowed_groups);
    Ok(Identity {
        subject: format!("{}#{sub}", discovery.issuer),
        username,
        groups,
        role: if admin { Role::Admin } else { Role::User },
        allowed,
    })
}

fn decode_part(part: &str) -> Result<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| refused("the ID token is not valid base64url"))
}

/// Checks the JWS signature with the JWKS key named by `kid` (or the only key of a fitting
/// type) and returns the claims.
fn verify_id_token(token: &str, jwks: &Value) -> Result<Value> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header_b64, payload_b64, signature_b64] = parts[..] else {
        return Err(refused("the ID token is not a signed JWT"));
    };
    let header: Value = serde_json::from_slice(&decode_part(header_b64)?)
        .map_err(|_| refused("the ID token's header is not JSON"))?;
    let alg = header["alg"].as_str().unwrap_or("");
    let (kty, algorithm): (&str, &dyn ring::signature::VerificationAlgorithm) = match alg {
        "RS256" => ("RSA", &ring::signature::RSA_PKCS1_2048_8192_SHA256),
        "ES256" => ("EC", &ring::signature::ECDSA_P256_SHA256_FIXED),
        other => {
            return Err(refused(format!(
                "the ID token's algorithm {other:?} is not accepted (RS256, ES256)"
            )));
        }
    };
    let kid = header["kid"].as_str();
    let keys = jwks["keys"].as_array().cloned().unwrap_or_default();
    let candidates: Vec<&Value> = keys
        .iter()
        .filter(|k| k["kty"] == kty)
        .filter(|k| kid.is_none_or(|kid| k["kid"] == kid))
        .filter(|k| k["use"].as_str().is_none_or(|u| u == "sig"))
        .collect();
    let [key] = candidates[..] else {
        return Err(refused(
            "no single signing key of the provider fits the ID token",
        ));
    };
    let signature = decode_part(signature_b64)?;
    let message = format!("{header_b64}.{payload_b64}");
    let ok = if kty == "RSA" {
        let n = decode_part(key["n"].as_str().unwrap_or(""))?;
        let e = decode_part(key["e"].as_str().unwrap_or(""))?;
        ring::signature::RsaPublicKeyComponents { n: &n, e: &e }
            .verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                message.as_bytes(),
                &signature,
            )
            .is_ok()
    } else {
        if key["crv"] != "P-256" {
            return Err(refused("the provider's EC key is not P-256"));
        }
        let mut point = vec![4u8];
        point.extend(decode_part(key["x"].as_str().unwrap_or(""))?);
        point.extend(decode_part(key["y"].as_str().unwrap_or(""))?);
        ring::signature::UnparsedPublicKey::new(algorithm, &point)
            .verify(message.as_bytes(), &signature)
            .is_ok()
    };
    if !ok {
        return Err(refused("the ID token's signature is not valid"));
    }
    serde_json::from_slice(&decode_part(payload_b64)?)
        .map_err(|_| refused("the ID token's claims are not JSON"))
}

fn check_claims(
    claims: &Value,
    issuer: &str,
    client_id: &str,
    nonce: &str,
    now: u64,
) -> Result<()> {
    if claims["iss"].as_str() != Some(issuer) {
        return Err(refused("the ID token comes from another issuer"));
    }
    let audience_ok = match &claims["aud"] {
        Value::String(aud) => aud == client_id,
        Value::Array(list) => list.iter().any(|a| a == client_id),
        _ => false,
    };
    if !audience_ok {
        return Err(refused("the ID token is not meant for this client"));
    }
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if exp + 60 < now {
        return Err(refused("the ID token has expired"));
    }
    let sent = claims["nonce"].as_str().unwrap_or("");
    if !constant_time_eq(sent.as_bytes(), nonce.as_bytes()) {
        return Err(refused("the ID token's nonce does not match this sign-in"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636() {
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn malformed_tokens_are_refused_without_panic() {
        let jwks = serde_json::json!({"keys": []});
        for token in ["", "a.b", "a.b.c", "e30.e30.", "eyJhbGciOiJub25lIn0.e30."] {
            assert!(verify_id_token(token, &jwks).is_err(), "{token}");
        }
    }

    #[test]
    fn claims_are_checked() {
        let claims = serde_json::json!({"iss": "https://i", "aud": ["c"], "exp": 100, "nonce": "n", "sub": "s"});
        assert!(check_claims(&claims, "https://i", "c", "n", 50).is_ok());
        assert!(check_claims(&claims, "https://x", "c", "n", 50).is_err());
        assert!(check_claims(&claims, "https://i", "d", "n", 50).is_err());
        assert!(check_claims(&claims, "https://i", "c", "m", 50).is_err());
        assert!(check_claims(&claims, "https://i", "c", "n", 500).is_err());
    }
}
