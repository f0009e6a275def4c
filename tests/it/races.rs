//! Concurrency is input too: for every record two requests can touch, the two requests are
//! raced against the real daemon, many times, and the outcome must be one of the serial ones:
//! nothing lost, revived or stuck. `OT_RACE_ITERATIONS` sets the loop size (default 200; the
//! slow races that hash passwords run a quarter of it). docs/reliability.md lists the figures.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, json as body_json, sine_wav};

pub fn iterations() -> usize {
    std::env::var("OT_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// A server whose workers are off: files stay `queued`, so only the raced requests change them.
async fn idle_server() -> TestServer {
    TestServer::start_with(|c| c.jobs.workers = 0).await
}

/// A different small WAV per round (dedup then joins exactly the two uploads of one round).
fn round_wav(round: usize) -> Vec<u8> {
    sine_wav(0.25, 16_000, 200.0 + round as f32)
}

/// Finding 1: a delete of the last file with some content raced with an upload of the same
/// bytes. The upload, when acknowledged, must always have its media; it never gets a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upload_racing_delete_of_identical_bytes_never_loses_the_blob() {
    let server = idle_server().await;
    let token = server.admin().await;
    let rounds = iterations();
    let mut deleted_first = 0;
    for round in 0..rounds {
        let wav = round_wav(round);
        let first = body_json(server.upload(&token, "first.wav", wav.clone()).await).await;
        let first_id = first["id"].as_str().unwrap().to_owned();
        let jitter = Duration::from_micros((round % 10) as u64 * 300);
        let delete = async {
            tokio::time::sleep(jitter).await;
            server
                .call(
                    Method::DELETE,
                    &format!("/api/files/{first_id}"),
                    &token,
                    None,
                )
                .await
        };
        let upload = server.upload(&token, "second.wav", wav.clone());
        let ((deleted, _), uploaded) = tokio::join!(delete, upload);
        assert_eq!(deleted, 204, "round {round}: delete");
        let status = uploaded.status().as_u16();
        let created = body_json(uploaded).await;
        assert_eq!(status, 201, "round {round}: upload answered {created}");
        let second_id = created["id"].as_str().unwrap();
        let media = server
            .client
            .get(server.url(&format!("/api/files/{second_id}/media")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            media.status(),
            200,
            "round {round}: acknowledged upload lost its media"
        );
        assert_eq!(media.bytes().await.unwrap().as_ref(), wav.as_slice());
        if round % 2 == 0 {
            // Leave some behind for the backup below; delete the rest.
            let (status, _) = server
                .call(
                    Method::DELETE,
                    &format!("/api/files/{second_id}"),
                    &token,
                    None,
                )
                .await;
            assert_eq!(status, 204);
            deleted_first += 1;
        }
    }
    assert!(server.temp_files().is_empty(), "{:?}", server.temp_files());
    // Every blob on disk is referenced, every referenced blob is on disk.
    let state = &server.running().state;
    let referenced = state.store.referenced_blobs().unwrap();
    let stored: std::collections::HashSet<String> =
        state.blobs.list().unwrap().into_iter().collect();
    assert_eq!(referenced, stored);
    assert_eq!(referenced.len(), rounds - deleted_first);

    // An online backup after the loop finds every blob of every file.
    let config = state.config.as_ref().clone();
    let dest = tempfile::tempdir().unwrap();
    let options = opentranscribe::ops::backup::BackupOptions {
        dest: dest.path().join("backup"),
        include_secrets: false,
        keep: None,
        config_file: None,
    };
    let summary = tokio::task::spawn_blocking(move || {
        opentranscribe::ops::backup::run_backup(&config, &options)
    })
    .await
    .unwrap()
    .expect("online backup after the race loop");
    assert!(summary.manifest.online);
    assert_eq!(summary.manifest.blobs as usize, referenced.len());
}

/// Finding 5: a request with an API token (which records its use) raced with the token's
/// revocation. A revoked token stays revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_use_racing_revocation_never_revives_the_token() {
    let server = idle_server().await;
    let admin = server.admin().await;
    for round in 0..iterations() {
        let (status, created) = server
            .call(
                Method::POST,
                "/api/auth/tokens",
                &admin,
                Some(json!({"name": format!("t{round}")})),
            )
            .await;
        assert_eq!(status, 201);
        let token = created["token"].as_str().unwrap().to_owned();
        let id = created["id"].as_str().unwrap().to_owned();
        // Several uses at once (each reads the token and records its use), the revocation
        // landing among them at a varying moment.
        let uses = futures_util::future::join_all(
            (0..6).map(|_| server.call(Method::GET, "/api/auth/me", &token, None)),
        );
        let path = format!("/api/auth/tokens/{id}");
        let revoke = async {
            tokio::time::sleep(Duration::from_micros((round % 12) as u64 * 150)).await;
            server.call(Method::DELETE, &path, &admin, None).await
        };
        let (used, (revoked, _)) = tokio::join!(uses, revoke);
        assert!(
            used.iter().all(|(s, _)| *s == 200 || *s == 401),
            "round {round}"
        );
        assert_eq!(revoked, 204, "round {round}");
        let (after, _) = server.call(Method::GET, "/api/auth/me", &token, None).await;
        assert_eq!(after, 401, "round {round}: the revoked token works again");
    }
    let (_, tokens) = server
        .call(Method::GET, "/api/auth/tokens", &admin, None)
        .await;
    assert_eq!(tokens, json!([]), "revoked tokens came back");
}

/// Finding 5 for sessions: a session's use (which refreshes its idle timer) raced with
/// signing out. The session stays ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn session_use_racing_logout_never_revives_the_session() {
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        // Refresh the idle timer on every use, so every round writes.
        c.auth.session_idle_timeout_secs = 3600;
    })
    .await;
    let _admin = server.admin().await;
    let rounds = iterations() / 2;
    for round in 0..rounds {
        let session = server.token("admin", "admin-password").await;
        // Backdate it so the next use refreshes it (a write racing the delete).
        let hash = opentranscribe::auth::token_hash(&session);
        let store = &server.running().state.store;
        let mut record = store.get_session(&hash).unwrap().unwrap();
        record.last_seen_at = opentranscribe::store::now_secs() - 120;
        store.insert_session(&hash, &record).unwrap();
        let uses = futures_util::future::join_all(
            (0..6).map(|_| server.call(Method::GET, "/api/auth/me", &session, None)),
        );
        let end = async {
            tokio::time::sleep(Duration::from_micros((round % 12) as u64 * 150)).await;
            server
                .call(Method::POST, "/api/auth/logout", &session, None)
                .await
        };
        let (used, (ended, _)) = tokio::join!(uses, end);
        assert!(
            used.iter().all(|(s, _)| *s == 200 || *s == 401),
            "round {round}"
        );
        assert!(ended == 204 || ended == 401, "round {round}: {ended}");
        assert!(
            store.get_session(&hash).unwrap().is_none(),
            "round {round}: session revived"
        );
    }
}

/// Finding 7: renaming a file raced with cancelling its job. The rename changes only the name:
/// the file ends `cancelled` (never stuck in `queued` with a cancelled job) with the new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rename_racing_a_status_change_never_undoes_it() {
    let server = idle_server().await;
    let token = server.admin().await;
    let wav = round_wav(0);
    for round in 0..iterations() {
        let created = body_json(server.upload(&token, "a.wav", wav.clone()).await).await;
        let id = created["id"].as_str().unwrap().to_owned();
        let name = format!("renamed-{round}.wav");
        let (file_path, cancel_path) = (
            format!("/api/files/{id}"),
            format!("/api/files/{id}/cancel"),
        );
        let rename = server.call(
            Method::PATCH,
            &file_path,
            &token,
            Some(json!({"filename": name})),
        );
        let cancel = server.call(Method::POST, &cancel_path, &token, None);
        let ((renamed, _), (cancelled, _)) = tokio::join!(rename, cancel);
        assert_eq!(renamed, 200, "round {round}");
        assert_eq!(cancelled, 200, "round {round}");
        let (_, file) = server
            .call(Method::GET, &format!("/api/files/{id}"), &token, None)
            .await;
        assert_eq!(file["status"], "cancelled", "round {round}: {file}");
        assert_eq!(file["filename"], name.as_str(), "round {round}");
        // And it is not stuck: retry takes it back to the queue.
        let (retried, body) = server
            .call(
                Method::POST,
                &format!("/api/files/{id}/retry"),
                &token,
                None,
            )
            .await;
        assert_eq!(retried, 200, "round {round}: {body}");
    }
}

/// Finding 7 for users: changing one's own password raced with an admin disabling the account.
/// The account ends disabled, and nothing the user held still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_change_racing_disable_never_re_enables_the_user() {
    let server = idle_server().await;
    let admin = server.admin().await;
    let _ = server.user(&admin, "mallory").await;
    let (_, users) = server
        .call(Method::GET, "/api/admin/users", &admin, None)
        .await;
    let id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "mallory")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let passwords = ["user-password", "other-password"];
    let rounds = iterations() / 4;
    for round in 0..rounds {
        let (old, new) = (passwords[round % 2], passwords[(round + 1) % 2]);
        let (status, _) = server
            .call(
                Method::PATCH,
                &format!("/api/admin/users/{id}"),
                &admin,
                Some(json!({"disabled": false})),
            )
            .await;
        assert_eq!(status, 200);
        let session = server.token("mallory", old).await;
        let change = server.call(
            Method::POST,
            "/api/auth/password",
            &session,
            Some(json!({"current_password": old, "new_password": new})),
        );
        let user_path = format!("/api/admin/users/{id}");
        let disable = server.call(
            Method::PATCH,
            &user_path,
            &admin,
            Some(json!({"disabled": true})),
        );
        let ((changed, _), (disabled, _)) = tokio::join!(change, disable);
        assert!(
            changed == 204 || changed == 403 || changed == 401,
            "round {round}: {changed}"
        );
        assert_eq!(disabled, 200, "round {round}");
        let (_, users) = server
            .call(Method::GET, "/api/admin/users", &admin, None)
            .await;
        let user = users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(
            user["disabled"], true,
            "round {round}: re-enabled by a stale write"
        );
        let (me, _) = server
            .call(Method::GET, "/api/auth/me", &session, None)
            .await;
        assert_ne!(
            me, 200,
            "round {round}: a disabled user's session still works"
        );
        if changed != 204 {
            // The change lost the race: put the password where the next round expects it.
            let (status, _) = server
                .call(
                    Method::POST,
                    &format!("/api/admin/users/{id}/password"),
                    &admin,
                    Some(json!({"password": new})),
                )
                .await;
            assert_eq!(status, 204);
        }
    }
}

/// Finding 2: a flood of concurrent wrong sign-ins for one account over one HTTP/2 connection.
/// At most the account's limit of passwords is hashed; the rest get 429 with Retry-After.
#[tokio::test]
async fn concurrent_wrong_logins_hash_at_most_the_limit() {
    let server = idle_server().await;
    let _admin = server.admin().await;
    let client = crate::support::h2_client(&server.running().cert_path);
    let before = rss_kib();
    let attempts = 100;
    let requests = (0..attempts).map(|_| {
        client
            .post(server.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": "wrong-password"}))
            .send()
    });
    let responses = futures_util::future::join_all(requests).await;
    let mut hashed = 0;
    let mut refused = 0;
    for response in responses {
        let response = response.unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        match response.status().as_u16() {
            401 => hashed += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                let body: Value = response.json().await.unwrap();
                assert_eq!(body["code"], "too-many-attempts");
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    let grown = rss_kib().saturating_sub(before);
    println!(
        "login flood: {attempts} concurrent wrong logins over HTTP/2: {hashed} hashed (401), {refused} refused (429); RSS growth {} MiB",
        grown / 1024
    );
    let limit = server.running().state.config.auth.login_max_failures as usize;
    assert!(hashed <= limit, "{hashed} passwords hashed, limit {limit}");
    assert_eq!(hashed + refused, attempts);
    // The account is now locked out, even for the right password.
    let locked = server.login("admin", "admin-password").await;
    assert_eq!(locked.status(), 429);
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Collections: two shares and a rename of one collection at once (each rewrote the whole
/// record it had read before). Every change is kept; then two removals at once leave none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_shares_and_edits_of_a_collection_are_all_kept() {
    let server = idle_server().await;
    let admin = server.admin().await;
    let _ = server.user(&admin, "bob").await;
    let _ = server.user(&admin, "carol").await;
    let (status, created) = server
        .call(
            Method::POST,
            "/api/collections",
            &admin,
            Some(json!({"name": "shared"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let cid = created["id"].as_str().unwrap().to_owned();
    let (shares, path) = (
        format!("/api/collections/{cid}/shares"),
        format!("/api/collections/{cid}"),
    );
    for round in 0..iterations() / 4 {
        let name = format!("shared {round}");
        let share = |user: &'static str| {
            server.call(
                Method::PUT,
                &shares,
                &admin,
                Some(json!({"username": user, "role": "viewer"})),
            )
        };
        let rename = server.call(Method::PATCH, &path, &admin, Some(json!({"name": name})));
        let ((b, _), (c, _), (r, _)) = tokio::join!(share("bob"), share("carol"), rename);
        assert_eq!((b, c, r), (200, 200, 200), "round {round}");
        let (_, collection) = server.call(Method::GET, &path, &admin, None).await;
        let members: Vec<&str> = collection["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["username"].as_str().unwrap())
            .collect();
        assert!(
            members.contains(&"bob") && members.contains(&"carol"),
            "round {round}: a share was lost: {members:?}"
        );
        assert_eq!(
            collection["name"],
            name.as_str(),
            "round {round}: rename lost"
        );
        let ids: Vec<String> = collection["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect();
        let (srv, adm) = (&server, &admin);
        let unshare = |id: &String| {
            let path = format!("{shares}/{id}");
            async move { srv.call(Method::DELETE, &path, adm, None).await }
        };
        let ((u1, _), (u2, _)) = tokio::join!(unshare(&ids[0]), unshare(&ids[1]));
        assert_eq!((u1, u2), (204, 204), "round {round}");
        let (_, collection) = server.call(Method::GET, &path, &admin, None).await;
        assert_eq!(
            collection["members"],
            json!([]),
            "round {round}: a removed member came back"
        );
    }
}
