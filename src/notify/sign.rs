//! The webhook signature: `X-OpenTranscribe-Signature: t=<unix secs>,v1=<hex>`, where the hex
//! is HMAC-SHA256 with the webhook's secret over `"<t>.<body>"` (as Stripe signs its events).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const SIGNATURE_HEADER: &str = "X-OpenTranscribe-Signature";

/// The header value for `body` sent at `timestamp` (Unix seconds).
pub fn signature_header(secret: &str, timestamp: u64, body: &[u8]) -> String {
    let digest = signed_mac(secret, timestamp, body)
        .map(|mac| hex::encode(mac.finalize().into_bytes()))
        .unwrap_or_default();
    format!("t={timestamp},v1={digest}")
}

/// The MAC over `"<t>.<body>"`; `None` never happens in practice (HMAC takes keys of any
/// length), but is not a panic either.
fn signed_mac(secret: &str, timestamp: u64, body: &[u8]) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// Checks a header value against `body` (constant time), for tests and receivers in Rust.
pub fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return false;
    };
    let Some(mac) = signed_mac(secret, timestamp, body) else {
        return false;
    };
    signatures.iter().any(|hex_sig| {
        hex::decode(hex_sig).is_ok_and(|bytes| mac.clone().verify_slice(&bytes).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231's key "Jefe", over `"<t>.<body>"`.
    #[test]
    fn signs_as_hmac_sha256_over_timestamp_dot_body() {
        let header = signature_header("Jefe", 0, b"what do ya want for nothing?");
        // HMAC-SHA256("Jefe", "0.what do ya want for nothing?"), computed with Python's hmac.
        assert_eq!(
            header,
            "t=0,v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert!(verify("Jefe", &header, b"what do ya want for nothing?"));
        assert!(!verify("jefe", &header, b"what do ya want for nothing?"));
        assert!(!verify("Jefe", &header, b"what do ya want for nothing!"));
        assert!(!verify("Jefe", "v1=00", b""));
    }
}
