//! The TOTP second factor against the real daemon: enrolment, the two-step sign-in, replay
//! refusal, single-use recovery codes (raced), throttling, removal, the admin's reset and the
//! site-wide requirement. Codes are computed here with HMAC-SHA-1 directly (RFC 6238), not with
//! the daemon's own TOTP code.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use opentranscribe::clock::{Clock, ManualClock};
use serde_json::{Value, json};

use crate::support::{TestServer, json};

fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u64, 0, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = alphabet.iter().position(|&b| b == c).expect("base32") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// Draws the dark rectangles of an SVG QR code (`M{x} {y}h{w}v{h}H{x}V{y}` path parts, the
/// form the `qrcode` crate writes) into a bitmap and decodes it with `rqrr`.
fn read_qr_svg(svg: &str) -> String {
    let attr = |name: &str| -> usize {
        let at = svg.find(&format!(" {name}=\"")).expect(name) + name.len() + 3;
        svg[at..].split('"').next().unwrap().parse().unwrap()
    };
    let (width, height) = (attr("width"), attr("height"));
    assert!(width >= 240 && height >= 240, "{width}x{height}");
    let mut dark = vec![false; width * height];
    let path = svg
        .split(" d=\"")
        .nth(1)
        .expect("a path")
        .split('"')
        .next()
        .unwrap();
    let mut rects = 0;
    for part in path.split('M').filter(|p| !p.is_empty()) {
        let numbers: Vec<usize> = part
            .split(|c: char| !c.is_ascii_digit())
            .filter(|n| !n.is_empty())
            .map(|n| n.parse().unwrap())
            .collect();
        let [left, top, w, h, ..] = numbers[..] else {
            panic!("unexpected path part {part}");
        };
        for y in top..top + h {
            for x in left..left + w {
                dark[y * width + x] = true;
            }
        }
        rects += 1;
    }
    assert!(rects > 50, "{rects} dark modules");
    let mut image =
        rqrr::PreparedImage::prepare_from_bitmap(width, height, |x, y| dark[y * width + x]);
    let grids = image.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code");
    grids[0].decode().expect("the QR code decodes").1
}

/// RFC 6238 with SHA-1, 6 digits, 30 s.
pub fn totp(secret_b32: &str, unix_secs: u64) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&base32_decode(secret_b32)).unwrap();
    mac.update(&(unix_secs / 30).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value = u32::from_be_bytes(digest[offset..offset + 4].try_into().unwrap()) & 0x7fff_ffff;
    format!("{:06}", value % 1_000_000)
}

async fn post(server: &TestServer, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = server.client.post(server.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Sets up and confirms TOTP for the holder of `token`; returns the secret and recovery codes.
pub async fn enrol(server: &TestServer, token: &str, clock: &dyn Clock) -> (String, Vec<String>) {
    let (status, setup) = post(server, "/api/account/totp/setup", Some(token), json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_owned();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/OpenTranscribe:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    // The QR code a phone scans holds exactly that URI (read by a separate QR decoder).
    assert_eq!(
        read_qr_svg(setup["qr_svg"].as_str().expect("qr_svg")),
        uri,
        "{setup}"
    );
    let code = totp(&secret, clock.now_secs());
    let (status, confirmed) = post(
        server,
        "/api/account/totp/confirm",
        Some(token),
        json!({"code": code}),
    )
    .await;
    assert_eq!(status, 200, "{confirmed}");
    let codes: Vec<String> = confirmed["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    (secret, codes)
}

/// The password step for an account with TOTP on: the challenge (and no session).
pub async fn challenge(server: &TestServer, username: &str, password: &str) -> String {
    let response = server.login(username, password).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("set-cookie").is_none());
    let body = json(response).await;
    assert_eq!(body["totp_required"], true, "{body}");
    assert!(body.get("token").is_none());
    body["challenge"].as_str().unwrap().to_owned()
}

fn manual_server_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new())
}

#[tokio::test]
async fn enrol_then_sign_in_with_codes_replay_recovery_and_removal() {
    let clock = manual_server_clock();
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.auth.login_max_failures = 3;
            c.auth.login_lockout_secs = 60;
        },
        clock.clone(),
    )
    .await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;

    // Wrong code while enrolling: refused, TOTP stays off.
    let (status, _) = post(&server, "/api/account/totp/setup", Some(&alice), json!({})).await;
    assert_eq!(status, 200);
    let (status, body) = post(
        &server,
        "/api/account/totp/confirm",
        Some(&alice),
        json!({"code": "000000x"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid-totp-code"))
    );
    let response = server.login("alice", "user-password").await;
    assert!(json(response).await["token"].is_string(), "still one step");

    let (secret, recovery) = enrol(&server, &alice, clock.as_ref()).await;
    assert_eq!(recovery.len(), 10);
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(json(me).await["totp_enabled"], true);
    let (status, body) = post(&server, "/api/account/totp/setup", Some(&alice), json!({})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("totp-already-enabled"))
    );

    // The password step gives a challenge that is no credential.
    let first = challenge(&server, "alice", "user-password").await;
    let as_bearer = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&first)
        .send()
        .await
        .unwrap();
    assert_eq!(as_bearer.status(), 401);
    // The code used for enrolment is spent: the same step is refused.
    let spent = totp(&secret, clock.now_secs());
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": first, "code": spent}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid-totp-code"))
    );
    // The next step's code opens the session (cookie and token).
    clock.advance(30);
    let fresh = totp(&secret, clock.now_secs());
    let response = server
        .client
        .post(server.url("/api/auth/login/totp"))
        .json(&json!({"challenge": first, "code": fresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .starts_with("__Host-ot_session=ots_")
    );
    let session = json(response).await;
    let token = session["token"].as_str().unwrap().to_owned();
    assert_eq!(session["user"]["username"], "alice");
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A redeemed challenge is gone; the same code on a new challenge is a replay.
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": first, "code": fresh}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("totp-challenge-invalid"))
    );
    let second = challenge(&server, "alice", "user-password").await;
    let (status, _) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": second, "code": fresh}),
    )
    .await;
    assert_eq!(status, 401);

    // A recovery code works once (typed in capitals without the dash, too).
    let typed = recovery[0].to_uppercase().replace('-', "");
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": second, "recovery_code": typed}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let third = challenge(&server, "alice", "user-password").await;
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": third, "recovery_code": recovery[0]}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid-totp-code"))
    );

    // Failed codes are throttled like failed passwords (3 failures with the one above).
    for _ in 0..2 {
        let (status, _) = post(
            &server,
            "/api/auth/login/totp",
            None,
            json!({"challenge": third, "code": "123456"}),
        )
        .await;
        assert!(status == 401 || status == 429);
    }
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": third, "code": totp(&secret, clock.now_secs() + 30)}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("too-many-attempts"))
    );
    clock.advance(61);

    // A challenge expires after five minutes.
    let late = challenge(&server, "alice", "user-password").await;
    clock.advance(301);
    let (status, body) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": late, "code": totp(&secret, clock.now_secs())}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("totp-challenge-invalid"))
    );

    // The audit log names enrolment and failed codes.
    let audit = server
        .client
        .get(server.url("/api/admin/audit?action=auth.totp"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let audit = json(audit).await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for wanted in ["auth.totp-setup", "auth.totp-enable", "auth.totp-failed"] {
        assert!(actions.contains(&wanted), "{wanted} in {actions:?}");
    }

    // Removal needs the password (or a code); then sign-in is one step again.
    let request = |body: Value| {
        server
            .client
            .delete(server.url("/api/account/totp"))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let wrong = request(json!({"password": "not-the-password"}))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let removed = request(json!({"password": "user-password"})).await.unwrap();
    assert_eq!(removed.status(), 204);
    let response = server.login("alice", "user-password").await;
    assert!(json(response).await["token"].is_string());

    // The admin's reset (a lost phone) removes it and ends the user's sessions.
    let (secret, _) = enrol(&server, &token, clock.as_ref()).await;
    assert!(!secret.is_empty());
    let users = server
        .client
        .get(server.url("/api/admin/users"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    let users = json(users).await;
    let alice_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "alice")
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .unwrap();
    let reset = server
        .client
        .delete(server.url(&format!("/api/admin/users/{alice_id}/totp")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 204);
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);
    let response = server.login("alice", "user-password").await;
    assert!(json(response).await["token"].is_string());
    server.stop().await;
}

#[tokio::test]
async fn required_totp_limits_the_session_until_enrolment() {
    let clock = manual_server_clock();
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| c.auth.require_totp = true,
        clock.clone(),
    )
    .await;
    assert_eq!(
        server.register("admin", "admin-password").await.status(),
        201
    );
    let response = server.login("admin", "admin-password").await;
    assert_eq!(response.status(), 200);
    let body = json(response).await;
    assert_eq!(body["totp_enrolment_required"], true);
    let token = body["token"].as_str().unwrap().to_owned();
    let files = server
        .client
        .get(server.url("/api/files"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(files.status(), 403);
    assert_eq!(json(files).await["code"], "totp-enrolment-required");
    let me = server
        .client
        .get(server.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(json(me).await["totp_enrolment_required"], true);
    let (secret, _) = enrol(&server, &token, clock.as_ref()).await;
    let files = server
        .client
        .get(server.url("/api/files"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        files.status(),
        200,
        "the same session is full after enrolment"
    );
    // From now on the password step asks for the code.
    let challenge = challenge(&server, "admin", "admin-password").await;
    clock.advance(30);
    let (status, _) = post(
        &server,
        "/api/auth/login/totp",
        None,
        json!({"challenge": challenge, "code": totp(&secret, clock.now_secs())}),
    )
    .await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// Many concurrent second steps (each on its own challenge) with one recovery code, or with
/// one TOTP code: exactly one succeeds, every time.
#[tokio::test]
async fn the_same_code_raced_succeeds_exactly_once() {
    let iterations = (crate::races::iterations() / 4).max(8);
    let clock = manual_server_clock();
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.auth.login_max_failures = 1_000_000;
            c.auth.login_ip_max_failures = 1_000_000;
        },
        clock.clone(),
    )
    .await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let (secret, recovery) = enrol(&server, &alice, clock.as_ref()).await;
    let server = Arc::new(server);
    for round in 0..2 {
        let mut challenges = Vec::new();
        for _ in 0..iterations {
            challenges.push(challenge(&server, "alice", "user-password").await);
        }
        clock.advance(30);
        let body = |challenge: String| {
            if round == 0 {
                json!({"challenge": challenge, "recovery_code": recovery[1]})
            } else {
                json!({"challenge": challenge, "code": totp(&secret, clock.now_secs())})
            }
        };
        let tasks: Vec<_> = challenges
            .into_iter()
            .map(|c| {
                let server = server.clone();
                let body = body(c);
                tokio::spawn(async move { post(&server, "/api/auth/login/totp", None, body).await })
            })
            .collect();
        let mut successes = 0;
        for task in tasks {
            let (status, body) = task.await.unwrap();
            match status {
                200 => successes += 1,
                401 => assert_eq!(body["code"], "invalid-totp-code"),
                429 => assert_eq!(body["code"], "too-many-attempts"),
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(successes, 1, "round {round}: {iterations} racers");
    }
}
