//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP): HMAC-SHA-1, 6 digits, 30 s
//! steps, one step of clock drift either way; base32 secrets (RFC 4648, no padding) and the
//! `otpauth://` URI authenticator apps read; recovery codes.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Secret length in bytes (160 bits, RFC 4226's recommendation).
pub const SECRET_BYTES: usize = 20;
/// Recovery codes handed out at enrolment.
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes base32 (case-insensitive; spaces, dashes and `=` padding ignored). `None` when a
/// character is not base32.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.chars() {
        if matches!(c, ' ' | '-' | '=') {
            continue;
        }
        let upper = c.to_ascii_uppercase() as u8;
        let value = BASE32.iter().position(|&b| b == upper)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    Some(out)
}

/// A fresh random secret, base32-encoded.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    base32_encode(&bytes)
}

/// RFC 4226 HOTP value for `counter` (6 digits).
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        return u32::MAX;
    };
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = (u32::from(digest[offset]) & 0x7f) << 24
        | u32::from(digest[offset + 1]) << 16
        | u32::from(digest[offset + 2]) << 8
        | u32::from(digest[offset + 3]);
    binary % 10u32.pow(DIGITS)
}

/// The code for the step that holds `unix_secs`, zero-padded.
pub fn code_at(secret: &[u8], unix_secs: u64) -> String {
    format!(
        "{:0width$}",
        hotp(secret, unix_secs / STEP_SECS),
        width = DIGITS as usize
    )
}

/// Normalises what a person typed: digits only, spaces removed. `None` unless 6 digits.
pub fn normalise_code(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS as usize && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(digits)
}

/// The step (counter) whose code matches `code` within one step of `unix_secs` and is later
/// than `last_used_step` (a code once accepted is never accepted again), or `None`.
pub fn matching_step(
    secret_b32: &str,
    code: &str,
    unix_secs: u64,
    last_used_step: Option<u64>,
) -> Option<u64> {
    let secret = base32_decode(secret_b32)?;
    let code = normalise_code(code)?;
    let now_step = unix_secs / STEP_SECS;
    let mut found = None;
    // Check every candidate (no early exit), so timing does not say which step matched.
    for step in [now_step.saturating_sub(1), now_step, now_step + 1] {
        let candidate = format!("{:0width$}", hotp(&secret, step), width = DIGITS as usize);
        if super::constant_time_eq(candidate.as_bytes(), code.as_bytes())
            && last_used_step.is_none_or(|last| step > last)
            && found.is_none()
        {
            found = Some(step);
        }
    }
    found
}

/// The otpauth URI as a QR code in SVG (black on white, quiet zone, at least 240 px), for
/// authenticator apps to scan; `None` only if the URI is too long for any QR code.
pub fn qr_svg(uri: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(uri, qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(240, 240)
            .quiet_zone(true)
            .build(),
    )
}

/// `otpauth://totp/Issuer:account?secret=…&issuer=…&algorithm=SHA1&digits=6&period=30`.
pub fn otpauth_uri(issuer: &str, account: &str, secret_b32: &str) -> String {
    let issuer_enc = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer_enc}:{}?secret={secret_b32}&issuer={issuer_enc}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        percent_encode(account)
    )
}

fn percent_encode(text: &str) -> String {
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

/// Fresh recovery codes: 10 random base32 characters each (50 bits), shown as `xxxxx-xxxxx`.
pub fn new_recovery_codes() -> Vec<String> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let mut bytes = [0u8; 7];
            rand::rng().fill_bytes(&mut bytes);
            let text = base32_encode(&bytes).to_lowercase();
            format!("{}-{}", &text[..5], &text[5..10])
        })
        .collect()
}

/// A recovery code as typed, in the form it was hashed in (lower case, one dash).
pub fn normalise_recovery_code(code: &str) -> Option<String> {
    let letters: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (letters.len() == 10 && base32_decode(&letters).is_some())
        .then(|| format!("{}-{}", &letters[..5], &letters[5..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 digits are the 6-digit code).
    #[test]
    fn rfc_6238_vectors() {
        let secret = b"12345678901234567890";
        for (time, expected) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(code_at(secret, time), expected[2..], "at {time}");
        }
    }

    /// RFC 4226 appendix D.
    #[test]
    fn rfc_4226_vectors() {
        let secret = b"12345678901234567890";
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, value) in expected.iter().enumerate() {
            assert_eq!(hotp(secret, counter as u64), *value);
        }
    }

    #[test]
    fn base32_round_trip_and_rfc_4648() {
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32_decode("MZXW6YTBOI======").unwrap(), b"foobar");
        assert_eq!(base32_decode("mzxw 6ytb-oi").unwrap(), b"foobar");
        assert!(base32_decode("MZX1").is_none());
        let secret = new_secret();
        assert_eq!(secret.len(), 32);
        assert_eq!(base32_decode(&secret).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn window_and_replay() {
        let secret = new_secret();
        let raw = base32_decode(&secret).unwrap();
        let now = 1_700_000_000;
        let step = now / STEP_SECS;
        let code = code_at(&raw, now);
        assert_eq!(matching_step(&secret, &code, now, None), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 30, None), Some(step));
        assert_eq!(matching_step(&secret, &code, now - 30, None), Some(step));
        assert_eq!(matching_step(&secret, &code, now + 60, None), None);
        assert_eq!(matching_step(&secret, &code, now, Some(step)), None);
        assert_eq!(
            matching_step(&secret, &code, now, Some(step - 1)),
            Some(step)
        );
        assert_eq!(matching_step(&secret, "12345", now, None), None);
        assert_eq!(matching_step(&secret, "abcdef", now, None), None);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(matching_step(&secret, &spaced, now, None), Some(step));
    }

    #[test]
    fn uri_and_recovery_codes() {
        let uri = otpauth_uri("Open Transcribe", "alice@x", "ABC");
        assert_eq!(
            uri,
            "otpauth://totp/Open%20Transcribe:alice%40x?secret=ABC&issuer=Open%20Transcribe&algorithm=SHA1&digits=6&period=30"
        );
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        for code in &codes {
            assert_eq!(
                normalise_recovery_code(code).as_deref(),
                Some(code.as_str())
            );
            assert_eq!(
                normalise_recovery_code(&code.to_uppercase().replace('-', " ")).as_deref(),
                Some(code.as_str())
            );
        }
        assert!(normalise_recovery_code("short").is_none());
    }
}
