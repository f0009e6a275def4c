//! The authorisation matrix: every route of `http::routes_table::route_table()` × {anonymous,
//! owner, other user, admin, revoked API token, session token after logout, expired session,
//! cookie without CSRF token,
//! cookie from a foreign origin}, against a real server holding real resources (a transcribed,
//! diarized file, a comment, a collection, a voice profile). The table is checked against the
//! source (every `.route("…"` under `src/`) and against the router (every listed method is served,
//! every other method is 405), so a new route cannot be left out of the matrix.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentranscribe::http::routes_table::{Access, route_table};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, json as body_json};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// Every path given to `.route(` anywhere under `src/`, and the files where routers are nested
/// (which would hide routes from this list).
fn routes_in_source() -> (BTreeSet<String>, Vec<String>) {
    let mut paths = BTreeSet::new();
    let mut nested = Vec::new();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for file in crate::support::walk(&src) {
        if file.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in [".nest(", ".nest_service(", ".route_service("] {
            if text.contains(needle) {
                nested.push(format!("{} uses {needle}", file.display()));
            }
        }
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            let literal = rest.trim_start();
            let Some(literal) = literal.strip_prefix('"') else {
                panic!(
                    "{}: a .route( whose path is not a string literal cannot be checked",
                    file.display()
                );
            };
            let end = literal.find('"').unwrap();
            paths.insert(literal[..end].to_owned());
        }
    }
    (paths, nested)
}

#[test]
fn every_route_in_the_source_is_in_the_table() {
    let (in_source, nested) = routes_in_source();
    assert!(nested.is_empty(), "nested routers hide routes: {nested:?}");
    let in_table: BTreeSet<String> = route_table()
        .into_iter()
        .map(|(_, p, _)| p.to_owned())
        .collect();
    let missing: Vec<_> = in_source.difference(&in_table).collect();
    assert!(
        missing.is_empty(),
        "routes missing from http::routes_table::route_table(): {missing:?}"
    );
    let stale: Vec<_> = in_table.difference(&in_source).collect();
    assert!(
        stale.is_empty(),
        "routes in the table that no .route( serves: {stale:?}"
    );
    let mut seen = BTreeSet::new();
    for (method, path, _) in route_table() {
        assert!(
            seen.insert((method.to_string(), path)),
            "{method} {path} listed twice"
        );
    }
}

/// How a request authenticates.
#[derive(Clone)]
enum Who {
    Anonymous,
    Bearer(String),
    Cookie {
        cookie: String,
        csrf: Option<String>,
        origin: Option<String>,
    },
}

/// Ids of real resources, owned by alice, to put into paths.
struct Ids {
    file: String,
    segment: String,
    speaker: String,
    comment: String,
    collection: String,
    profile: String,
    spare_token: String,
    carol: String,
    upload: String,
}

fn fill(path: &str, ids: &Ids) -> String {
    let id = if path.starts_with("/api/auth/tokens/") {
        &ids.spare_token
    } else if path.starts_with("/api/admin/users/") {
        &ids.carol
    } else if path.starts_with("/api/uploads/") {
        &ids.upload
    } else {
        &ids.file
    };
    let filled = path
        .replace("{id}", id)
        .replace("{segment}", &ids.segment)
        .replace("{speaker}", &ids.speaker)
        .replace("{word}", "0")
        .replace("{comment}", &ids.comment)
        .replace("{cid}", &ids.collection)
        .replace("{user}", &ids.carol)
        .replace("{pid}", &ids.profile)
        .replace("{*rest}", "no-such-route");
    let query = match path {
        "/api/files/{id}/export" => "?format=srt".to_owned(),
        "/api/exports/zip" => format!("?ids={}&format=srt", ids.file),
        "/api/search" => "?q=the".to_owned(),
        _ => String::new(),
    };
    format!("{filled}{query}")
}

/// The resource whose absence a 404 names when the caller may not see it.
fn scope(path: &str) -> &'static str {
    if path.starts_with("/api/auth/tokens/") {
        "token not found"
    } else if path.starts_with("/api/collections/") {
        "collection not found"
    } else if path.starts_with("/api/profiles/") {
        "profile not found"
    } else if path.starts_with("/api/uploads/") {
        "upload not found"
    } else {
        "file not found"
    }
}

/// A valid body for each JSON route, so that a refusal cannot hide behind a 400.
fn body(method: &Method, path: &str, ids: &Ids) -> Option<Value> {
    let value = match (method.as_str(), path) {
        ("POST", "/api/auth/register") => {
            json!({"username": "zed", "password": "zed-password-1"})
        }
        ("POST", "/api/auth/login") => json!({"username": "alice", "password": "user-password"}),
        ("POST", "/api/auth/password") => {
            json!({"current_password": "user-password", "new_password": "user-password-2"})
        }
        ("POST", "/api/auth/tokens") => json!({"name": "matrix"}),
        ("POST", "/api/auth/login/totp") => json!({"challenge": "ots_unknown", "code": "123456"}),
        ("POST", "/api/account/totp/confirm") => json!({"code": "123456"}),
        ("DELETE", "/api/account/totp") => json!({"code": "123456"}),
        ("POST", "/api/admin/users") => {
            json!({"username": "dave", "password": "dave-password", "role": "user"})
        }
        ("PATCH", "/api/admin/users/{id}") => json!({"role": "user"}),
        ("POST", "/api/admin/users/{id}/password") => json!({"password": "carol-password-2"}),
        ("PATCH", "/api/files/{id}") => json!({"filename": "renamed.wav"}),
        ("PATCH", "/api/files/{id}/segments/{segment}") => json!({"text": "edited text"}),
        ("PATCH", "/api/files/{id}/speakers/{speaker}") => json!({"name": "Someone"}),
        ("PATCH", "/api/files/{id}/segments/{segment}/words/{word}") => {
            json!({"speaker": ids.speaker})
        }
        ("PUT", "/api/files/{id}/tags") => json!({"tags": ["matrix"]}),
        ("POST", "/api/files/{id}/comments") => json!({"time": 1.0, "text": "a comment"}),
        ("POST", "/api/collections") => json!({"name": "another"}),
        ("PATCH", "/api/collections/{cid}") => json!({"description": "changed"}),
        ("PUT", "/api/collections/{cid}/shares") => json!({"username": "carol", "role": "viewer"}),
        ("POST", "/api/files/{id}/speakers/merge") => {
            json!({"from": ids.speaker, "into": ids.speaker})
        }
        ("POST", "/api/files/{id}/speakers/{speaker}/profile") => json!({"name": "Second"}),
        ("PUT", "/api/files/{id}/speakers/{speaker}/profile") => {
            json!({"profile_id": ids.profile})
        }
        ("POST", "/api/files/{id}/speakers/{speaker}/suggestion") => json!({"accept": true}),
        ("PATCH", "/api/profiles/{pid}") => json!({"name": "Renamed"}),
        ("POST", "/api/files/{id}/reprocess") => json!({"stages": ["diarize"], "num_speakers": 1}),
        ("PUT", "/api/account/retention") => json!({"media_days": 30}),
        ("POST", "/api/uploads") => json!({"name": "matrix.wav"}),
        ("PUT", "/api/account/webhook") => {
            json!({"url": "http://127.0.0.1:9/hook", "secret": "matrix-secret-0123"})
        }
        ("POST", "/api/files/{id}/ask") => json!({"question": "what was said?"}),
        ("PUT", "/api/account/llm-prompts") => json!({"map": null, "reduce": null}),
        _ => return None,
    };
    Some(value)
}

async fn send(
    server: &TestServer,
    method: &Method,
    path: &str,
    who: &Who,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.client.request(method.clone(), server.url(path));
    match who {
        Who::Anonymous => {}
        Who::Bearer(token) => request = request.bearer_auth(token),
        Who::Cookie {
            cookie,
            csrf,
            origin,
        } => {
            request = request.header("cookie", cookie);
            if let Some(csrf) = csrf {
                request = request.header("x-csrf-token", csrf);
            }
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
        }
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An API token (these do not expire with the short session timeout this test uses).
async fn api_token(server: &TestServer, session: &str, name: &str) -> (String, String) {
    let (status, created) = server
        .call(
            Method::POST,
            "/api/auth/tokens",
            session,
            Some(json!({"name": name})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    (
        created["token"].as_str().unwrap().to_owned(),
        created["id"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn every_route_for_every_kind_of_caller() {
    const IDLE: u64 = 12;
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        c.metrics.allow = "admins".to_owned();
        c.auth.session_idle_timeout_secs = IDLE;
    })
    .await;
    let admin_session = server.admin().await;
    let (admin, _) = api_token(&server, &admin_session, "admin").await;
    let alice_session = server.user(&admin, "alice").await;
    let (alice, _) = api_token(&server, &alice_session, "alice").await;
    let bob_session = server.user(&admin, "bob").await;
    let (bob, _) = api_token(&server, &bob_session, "bob").await;
    let carol_session = server.user(&admin, "carol").await;
    // Carol's session is left idle until it expires.
    let expired_since = Instant::now();
    let (revoked, revoked_id) = api_token(&server, &alice, "revoked").await;
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/auth/tokens/{revoked_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (_, spare_token) = api_token(&server, &alice, "spare").await;
    let logged_out = server.token("alice", "user-password").await;
    let (status, _) = server
        .call(Method::POST, "/api/auth/logout", &logged_out, None)
        .await;
    assert_eq!(status, 204);

    // Real resources owned by alice.
    let (clip, _) = crate::asr::references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{}/{clip}.wav", crate::asr::LIBRIVOX)).unwrap();
    let created = body_json(server.upload(&alice, "talk.wav", wav).await).await;
    let file = created["id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&alice, &file).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let segment = transcript["segments"][0]["id"]
        .to_string()
        .trim_matches('"')
        .to_owned();
    let speaker = transcript["speakers"][0]["id"]
        .as_str()
        .expect("a diarized speaker")
        .to_owned();
    let (status, comment) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/comments"),
            &alice,
            Some(json!({"time": 0.5, "text": "first"})),
        )
        .await;
    assert_eq!(status, 201, "{comment}");
    let (status, collection) = server
        .call(
            Method::POST,
            "/api/collections",
            &alice,
            Some(json!({"name": "mine"})),
        )
        .await;
    assert_eq!(status, 201, "{collection}");
    let collection = collection["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/collections/{collection}/files/{file}"),
            &alice,
            None,
        )
        .await;
    assert!(status < 300, "{status}");
    let (status, made) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/speakers/{speaker}/profile"),
            &alice,
            Some(json!({"name": "Reader"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    let (_, profiles) = server
        .call(Method::GET, "/api/profiles", &alice, None)
        .await;
    let profile = profiles["profiles"][0]["id"].as_str().unwrap().to_owned();
    let (_, users) = server
        .call(Method::GET, "/api/admin/users", &admin, None)
        .await;
    let carol = users["users"]
        .as_array()
        .or(users.as_array())
        .unwrap()
        .iter()
        .find(|u| u["username"] == "carol")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, upload) = server
        .call(
            Method::POST,
            "/api/uploads",
            &alice,
            Some(json!({"name": "pending.wav"})),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    let mut ids = Ids {
        upload: upload["id"].as_str().unwrap().to_owned(),
        file,
        segment,
        speaker,
        comment: comment["id"].as_str().unwrap().to_owned(),
        collection,
        profile,
        spare_token,
        carol,
    };

    let mut failures = Vec::new();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut check = |who: &'static str,
                     method: &Method,
                     path: &str,
                     got: (u16, &Value),
                     ok: bool,
                     expected: &str| {
        *counts.entry(who).or_default() += 1;
        // Without `[llm]` the model routes answer 409 `llm-not-configured` to whoever may use
        // them (after the access checks, which are what this test is about).
        if got.0 >= 500 && path != "/api/ready" {
            failures.push(format!("{who}: {method} {path} → {} {}", got.0, got.1));
        } else if !ok {
            failures.push(format!(
                "{who}: {method} {path} → {} {} (expected {expected})",
                got.0, got.1
            ));
        }
    };
    let table = route_table();

    // Cookie sessions on unsafe methods: no CSRF token, or a foreign Origin, is 403 before
    // anything else happens.
    let login = server.login("alice", "user-password").await;
    let cookie = login
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = body_json(login).await["csrf_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for (method, path, access) in &table {
        if *access == Access::Public || *method == Method::GET {
            continue;
        }
        let url = fill(path, &ids);
        for (who, caller) in [
            (
                "cookie without CSRF token",
                Who::Cookie {
                    cookie: cookie.clone(),
                    csrf: None,
                    origin: None,
                },
            ),
            (
                "cookie from a foreign origin",
                Who::Cookie {
                    cookie: cookie.clone(),
                    csrf: Some(csrf.clone()),
                    origin: Some("https://evil.example".to_owned()),
                },
            ),
        ] {
            let (status, got) =
                send(&server, method, &url, &caller, body(method, path, &ids)).await;
            // The OpenAI routes answer in OpenAI's error shape.
            let ok = status == 403 && (got["code"] == "csrf-failed" || path.starts_with("/v1/"));
            check(who, method, path, (status, &got), ok, "403 csrf-failed");
        }
    }

    // Callers that must be refused, on every route.
    let wait = Duration::from_secs(IDLE + 2).saturating_sub(expired_since.elapsed());
    tokio::time::sleep(wait).await;
    let mut first_expired = true;
    for (method, path, access) in &table {
        let url = fill(path, &ids);
        let body = || body(method, path, &ids);
        let anonymous = send(&server, method, &url, &Who::Anonymous, body()).await;
        let (ok, expected) = match access {
            // The second sign-in step answers 401 to an unknown challenge: its own code.
            Access::Public => (
                anonymous.0 != 401 || anonymous.1["code"] == "totp-challenge-invalid",
                "not 401 (but a refused challenge)",
            ),
            Access::Metrics => (anonymous.0 == 404, "404"),
            _ => (anonymous.0 == 401, "401"),
        };
        check(
            "anonymous",
            method,
            path,
            (anonymous.0, &anonymous.1),
            ok,
            expected,
        );
        if *access == Access::Public {
            continue;
        }
        let refused = if *access == Access::Metrics { 404 } else { 401 };
        let got = send(&server, method, &url, &Who::Bearer(revoked.clone()), body()).await;
        check(
            "revoked API token",
            method,
            path,
            (got.0, &got.1),
            got.0 == refused,
            "401",
        );
        let got = send(
            &server,
            method,
            &url,
            &Who::Bearer(logged_out.clone()),
            body(),
        )
        .await;
        check(
            "session token after logout",
            method,
            path,
            (got.0, &got.1),
            got.0 == refused,
            "401",
        );
        let got = send(
            &server,
            method,
            &url,
            &Who::Bearer(carol_session.clone()),
            body(),
        )
        .await;
        let ok = got.0 == refused
            && (!first_expired || *access == Access::Metrics || got.1["code"] == "session-expired");
        first_expired = false;
        check("expired session", method, path, (got.0, &got.1), ok, "401");
        match access {
            Access::Owner => {
                for (who, token) in [("other user", &bob), ("admin", &admin)] {
                    let got =
                        send(&server, method, &url, &Who::Bearer(token.clone()), body()).await;
                    let ok = got.0 == 404 && got.1["message"] == scope(path);
                    check(who, method, path, (got.0, &got.1), ok, scope(path));
                }
            }
            Access::Admin | Access::Metrics => {
                for (who, token) in [("owner (a user)", &alice), ("other user", &bob)] {
                    let got =
                        send(&server, method, &url, &Who::Bearer(token.clone()), body()).await;
                    let want = if *access == Access::Admin { 403 } else { 404 };
                    check(who, method, path, (got.0, &got.1), got.0 == want, "403/404");
                }
            }
            _ => {}
        }
    }

    // Allowed callers last, deletions at the very end (children before parents, the file last).
    let delete_rank = |path: &str| match path {
        "/api/files/{id}" => 9,
        "/api/collections/{cid}" => 8,
        "/api/profiles/{pid}" => 7,
        _ => 1,
    };
    let mut allowed: Vec<_> = table
        .iter()
        .filter(|(_, _, a)| *a != Access::Public)
        .collect();
    allowed.sort_by_key(|(m, p, _)| {
        if *m == Method::DELETE {
            delete_rank(p)
        } else if p.starts_with("/api/auth/") {
            // Password change and logouts after the others.
            1
        } else {
            0
        }
    });
    // A password change and "sign out everywhere" end the caller's API tokens too: the owner
    // signs in again and mints new ones after them.
    let mut alice = alice.clone();
    let mut alice_password = "user-password";
    for (method, path, access) in allowed {
        let url = fill(path, &ids);
        let (who, token) = match access {
            Access::Admin | Access::Metrics => ("admin", &admin),
            _ => ("owner", &alice),
        };
        let got = send(
            &server,
            method,
            &url,
            &Who::Bearer(token.clone()),
            body(method, path, &ids),
        )
        .await;
        // A wrong second-factor code or challenge is a 401 of its own, not a refusal of access.
        let code_refused = got.0 == 401
            && matches!(
                got.1["code"].as_str(),
                Some("invalid-totp-code" | "totp-challenge-invalid")
            );
        let ok = (got.0 != 401 || code_refused)
            && got.0 != 403
            && got.0 != 405
            && !(got.0 == 404
                && (*access == Access::Owner && got.1["message"] == scope(path)
                    || got.1["message"] == "route not found"));
        check(
            who,
            method,
            path,
            (got.0, &got.1),
            ok,
            "served (not 401/403/405, not hidden)",
        );
        if *method == Method::POST && ["/api/auth/password", "/api/auth/logout-all"].contains(path)
        {
            if *path == "/api/auth/password" && got.0 == 204 {
                alice_password = "user-password-2";
            }
            let session = server.token("alice", alice_password).await;
            alice = api_token(&server, &session, "alice again").await.0;
            ids.spare_token = api_token(&server, &session, "spare again").await.1;
        }
    }

    // Methods not in the table are not served (anonymously, 405 comes before authentication).
    let mut methods_by_path: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (method, path, _) in &table {
        methods_by_path
            .entry(path)
            .or_default()
            .insert(method.to_string());
    }
    for (path, methods) in &methods_by_path {
        if path.contains("{*") {
            continue;
        }
        for method in METHODS.iter().filter(|m| !methods.contains(m.as_str())) {
            let got = send(&server, method, &fill(path, &ids), &Who::Anonymous, None).await;
            check(
                "unlisted method",
                method,
                path,
                (got.0, &got.1),
                got.0 == 405,
                "405 (or list the method in route_table)",
            );
        }
    }

    // The UI is public.
    let index = send(&server, &Method::GET, "/", &Who::Anonymous, None).await;
    check(
        "anonymous",
        &Method::GET,
        "/",
        (index.0, &index.1),
        index.0 == 200,
        "200",
    );

    eprintln!("authorisation matrix: {counts:?}");
    assert!(
        failures.is_empty(),
        "{} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    server.stop().await;
}
