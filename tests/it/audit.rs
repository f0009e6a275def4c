//! The audit log against a real server: an entry for every listed action (with actor, target
//! and client address), filters, newest-first paging, the CSV export, refusal for non-admins,
//! and its own retention on the daemon's clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use opentranscribe::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, json as body_json, sine_wav};

const DAY: u64 = 86_400;

async fn entries(server: &TestServer, admin: &str, query: &str) -> (Vec<Value>, bool) {
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/api/admin/audit?{query}"),
            admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{query}: {page}");
    (
        page["entries"].as_array().unwrap().clone(),
        page["has_more"].as_bool().unwrap(),
    )
}

fn user_id(users: &Value, name: &str) -> String {
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_listed_action_is_logged_and_admins_read_filter_and_export_it() {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.jobs.workers = 0;
            crate::retention::long_sessions(c);
        },
        clock.clone(),
    )
    .await;
    let session = server.admin().await;
    // An API token outlives the sessions while the clock jumps ahead.
    let (_, created) = server
        .call(
            Method::POST,
            "/api/auth/tokens",
            &session,
            Some(json!({"name": "audit"})),
        )
        .await;
    let admin = created["token"].as_str().unwrap().to_owned();
    assert_eq!(server.login("admin", "wrong-password").await.status(), 401);
    assert_eq!(server.login("nobody", "wrong-password").await.status(), 401);
    let alice = server.user(&admin, "alice").await;
    let bob = server.user(&admin, "bob").await;
    server.user(&admin, "carol").await;
    let (_, users) = server
        .call(Method::GET, "/api/admin/users", &admin, None)
        .await;
    let (alice_id, bob_id, carol_id) = (
        user_id(&users, "alice"),
        user_id(&users, "bob"),
        user_id(&users, "carol"),
    );
    let started = opentranscribe::clock::Clock::now_secs(clock.as_ref());

    // Roles and disabling.
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{carol_id}"),
            &admin,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{carol_id}"),
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);

    // Files, sharing, settings.
    let created = body_json(
        server
            .upload(&alice, "meeting.wav", sine_wav(0.25, 16_000, 440.0))
            .await,
    )
    .await;
    let file = created["id"].as_str().unwrap().to_owned();
    let (status, collection) = server
        .call(
            Method::POST,
            "/api/collections",
            &alice,
            Some(json!({"name": "team"})),
        )
        .await;
    assert_eq!(status, 201);
    let cid = collection["id"].as_str().unwrap().to_owned();
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/collections/{cid}/shares"),
            &alice,
            Some(json!({"username": "bob", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/collections/{cid}/shares/{bob_id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(Method::DELETE, &format!("/api/files/{file}"), &alice, None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = server
        .call(
            Method::PUT,
            "/api/account/retention",
            &alice,
            Some(json!({"transcript_days": 7})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            Method::POST,
            "/api/auth/password",
            &alice,
            Some(json!({"current_password": "user-password", "new_password": "user-password-2"})),
        )
        .await;
    assert_eq!(status, 204);
    let alice = server.token("alice", "user-password-2").await;
    let doomed = body_json(
        server
            .upload(&alice, "old.wav", sine_wav(0.25, 16_000, 550.0))
            .await,
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    clock.advance(8 * DAY);
    opentranscribe::daemon::housekeeping_pass(&server.running().state).await;

    let (all, more) = entries(&server, &admin, "per_page=500").await;
    assert!(!more);
    let actions: BTreeSet<&str> = all.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for wanted in [
        "auth.sign-in",
        "auth.sign-in-failed",
        "user.create",
        "user.role-change",
        "user.disable",
        "file.create",
        "file.delete",
        "collection.share",
        "collection.unshare",
        "settings.change",
        "retention.delete",
    ] {
        assert!(actions.contains(wanted), "no {wanted} in {actions:?}");
    }
    // Newest first, times from the daemon's clock.
    let times: Vec<u64> = all.iter().map(|e| e["time"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    assert!(
        times[0] >= started + 8 * DAY,
        "retention's entry is on the moved clock"
    );
    let find = |action: &str, target: &str| {
        all.iter()
            .find(|e| e["action"] == action && e["target"] == target)
            .unwrap_or_else(|| panic!("no {action} on {target}"))
            .clone()
    };
    let sign_in = all.iter().find(|e| e["action"] == "auth.sign-in").unwrap();
    assert_eq!(sign_in["ip"], "127.0.0.1");
    let failed = find("auth.sign-in-failed", "nobody");
    assert_eq!(failed["actor_id"], Value::Null);
    assert_eq!(failed["ip"], "127.0.0.1");
    let role = find("user.role-change", &carol_id);
    assert_eq!(role["actor_name"], "admin");
    assert!(
        role["detail"].as_str().unwrap().contains("user -> admin"),
        "{role}"
    );
    find("user.disable", &carol_id);
    find("user.create", &alice_id);
    let created = find("file.create", &file);
    assert_eq!(created["actor_name"], "alice");
    let deleted = find("file.delete", &file);
    assert_eq!(deleted["actor_id"], alice_id.as_str());
    assert_eq!(deleted["ip"], "127.0.0.1");
    assert!(
        find("collection.share", &cid)["detail"]
            .as_str()
            .unwrap()
            .contains("bob")
    );
    find("collection.unshare", &cid);
    find("settings.change", "password");
    assert!(
        find("settings.change", "retention")["detail"]
            .as_str()
            .unwrap()
            .contains("transcript_days=7")
    );
    let retention = find("retention.delete", &doomed);
    assert_eq!(retention["actor_name"], "system");

    // Filters: action prefix, user (id or name), time window; paging.
    let (auth, _) = entries(&server, &admin, "action=auth.&per_page=500").await;
    assert!(!auth.is_empty());
    assert!(
        auth.iter()
            .all(|e| e["action"].as_str().unwrap().starts_with("auth."))
    );
    let (by_name, _) = entries(&server, &admin, "user=alice&per_page=500").await;
    let (by_id, _) = entries(&server, &admin, &format!("user={alice_id}&per_page=500")).await;
    assert_eq!(by_name, by_id);
    assert!(by_name.iter().all(|e| e["actor_id"] == alice_id.as_str()));
    let since = started + DAY;
    let (late, _) = entries(&server, &admin, &format!("since={since}&per_page=500")).await;
    assert_eq!(
        late.len(),
        1,
        "only retention's entry is after the jump: {late:?}"
    );
    let (early, _) = entries(&server, &admin, &format!("until={since}&per_page=500")).await;
    assert_eq!(early.len() + late.len(), all.len());
    let (first, more) = entries(&server, &admin, "per_page=2&page=1").await;
    assert!(more);
    let (second, _) = entries(&server, &admin, "per_page=2&page=2").await;
    assert_eq!(first, all[..2].to_vec());
    assert_eq!(second, all[2..4].to_vec());
    let (status, _) = server
        .call(
            Method::GET,
            "/api/admin/audit?since=yesterday",
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 400);

    // CSV: a header and one row per entry, the same filters.
    let csv = server
        .client
        .get(server.url("/api/admin/audit.csv?action=user."))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status(), 200);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("time,actor_id,actor_name,action,target,ip,detail")
    );
    let (users_only, _) = entries(&server, &admin, "action=user.&per_page=500").await;
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), users_only.len());
    assert!(rows.iter().all(|r| r.contains(",\"user.")), "{text}");

    // Only administrators read it.
    for path in ["/api/admin/audit", "/api/admin/audit.csv"] {
        for token in [&alice, &bob] {
            let (status, body) = server.call(Method::GET, path, token, None).await;
            assert_eq!(status, 403, "{path}: {body}");
        }
        let anonymous = server.client.get(server.url(path)).send().await.unwrap();
        assert_eq!(anonymous.status(), 401);
    }

    // Its own retention: past `keep_days` (365) the old entries go, the recent one stays.
    clock.advance(365 * DAY - DAY);
    opentranscribe::daemon::housekeeping_pass(&server.running().state).await;
    let (kept, _) = entries(&server, &admin, "per_page=500").await;
    let expected = all.len() - late.len() + 1;
    assert!(kept.len() >= late.len(), "{kept:?}");
    assert!(kept.iter().any(|e| e["action"] == "retention.delete"));
    assert!(
        kept.iter().all(|e| e["time"].as_u64().unwrap() >= since),
        "entries older than 365 days are purged ({expected} before)"
    );
    server.stop().await;
}
