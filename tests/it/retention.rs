//! Retention on the daemon's clock (a `ManualClock`, no sleeping): files older than the rule are
//! deleted and younger ones kept, exempt collections keep theirs, a media-only rule keeps the
//! transcript and media answers 410, the preview says what will happen before it does, and a
//! retention pass raced against edits of the same file never revives it or leaves it stuck.

use std::sync::Arc;

use opentranscribe::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, json as body_json, sine_wav};

const DAY: u64 = 86_400;

/// Sessions that outlive the days the clock jumps.
pub fn long_sessions(config: &mut opentranscribe::config::Config) {
    config.auth.session_idle_timeout_secs = 3650 * DAY;
    config.auth.session_absolute_timeout_secs = 3650 * DAY;
}

fn iterations() -> usize {
    std::env::var("OT_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

async fn clocked(
    customize: impl FnOnce(&mut opentranscribe::config::Config),
) -> (TestServer, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.jobs.workers = 0;
            long_sessions(c);
            customize(c);
        },
        clock.clone(),
    )
    .await;
    (server, clock)
}

async fn housekeeping(server: &TestServer) {
    opentranscribe::daemon::housekeeping_pass(&server.running().state).await;
}

async fn upload(server: &TestServer, token: &str, name: &str, tone: f32) -> String {
    let response = server
        .upload(token, name, sine_wav(0.25, 16_000, tone))
        .await;
    assert_eq!(response.status(), 201);
    body_json(response).await["id"].as_str().unwrap().to_owned()
}

async fn tag(server: &TestServer, token: &str, id: &str, round: usize) -> (u16, Value) {
    server
        .call(
            Method::PUT,
            &format!("/api/files/{id}/tags"),
            token,
            Some(json!({"tags": [format!("round-{round}")]})),
        )
        .await
}

async fn status_of(server: &TestServer, token: &str, id: &str) -> u16 {
    server
        .call(Method::GET, &format!("/api/files/{id}"), token, None)
        .await
        .0
}

async fn audit_actions(server: &TestServer, admin: &str, prefix: &str) -> Vec<Value> {
    let (status, page) = server
        .call(
            Method::GET,
            &format!("/api/admin/audit?action={prefix}&per_page=500"),
            admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn whole_file_rule_deletes_old_files_keeps_young_and_exempt_ones() {
    let (server, clock) = clocked(|_| {}).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let bob = server.user(&admin, "bob").await;

    let (status, rule) = server
        .call(
            Method::PUT,
            "/api/account/retention",
            &alice,
            Some(json!({"transcript_days": 10})),
        )
        .await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["effective"]["transcript_days"], 10);
    assert_eq!(rule["effective"]["media_days"], Value::Null);

    let old = upload(&server, &alice, "old.wav", 300.0).await;
    let exempt = upload(&server, &alice, "exempt.wav", 310.0).await;
    let bobs = upload(&server, &bob, "bob.wav", 320.0).await;
    let (status, collection) = server
        .call(
            Method::POST,
            "/api/collections",
            &alice,
            Some(json!({"name": "keep"})),
        )
        .await;
    assert_eq!(status, 201);
    let cid = collection["id"].as_str().unwrap().to_owned();
    let (status, patched) = server
        .call(
            Method::PATCH,
            &format!("/api/collections/{cid}"),
            &alice,
            Some(json!({"retention_exempt": true})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/collections/{cid}/files/{exempt}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 204);

    clock.advance(6 * DAY);
    let young = upload(&server, &alice, "young.wav", 330.0).await;

    // The preview names what will go and when, and nothing has gone yet.
    let (status, preview) = server
        .call(Method::GET, "/api/retention/preview", &alice, None)
        .await;
    assert_eq!(status, 200, "{preview}");
    let planned = preview["files"].as_array().unwrap();
    let ids: Vec<&str> = planned
        .iter()
        .map(|p| p["file_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![old.as_str(), young.as_str()], "{preview}");
    assert!(planned.iter().all(|p| p["action"] == "delete-file"));
    assert!(planned.iter().all(|p| p["due"] == false));
    housekeeping(&server).await;
    assert_eq!(status_of(&server, &alice, &old).await, 200);

    // Eleven days after the first uploads: the old file is due, the young one (5 days) not.
    clock.advance(5 * DAY);
    let (_, preview) = server
        .call(Method::GET, "/api/retention/preview", &alice, None)
        .await;
    assert_eq!(preview["files"][0]["file_id"], old.as_str());
    assert_eq!(preview["files"][0]["due"], true);
    assert_eq!(preview["files"][1]["due"], false);
    housekeeping(&server).await;
    assert_eq!(
        status_of(&server, &alice, &old).await,
        404,
        "old file deleted"
    );
    assert_eq!(
        status_of(&server, &alice, &young).await,
        200,
        "young file kept"
    );
    assert_eq!(
        status_of(&server, &alice, &exempt).await,
        200,
        "exempt file kept"
    );
    assert_eq!(
        status_of(&server, &bob, &bobs).await,
        200,
        "no rule for bob"
    );
    assert_eq!(server.blob_files().len(), 3, "the deleted file's blob went");

    let logged = audit_actions(&server, &admin, "retention.").await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["action"], "retention.delete");
    assert_eq!(logged[0]["target"], old.as_str());

    // A second pass changes nothing more; the young file goes once it is due.
    housekeeping(&server).await;
    assert_eq!(audit_actions(&server, &admin, "retention.").await.len(), 1);
    clock.advance(5 * DAY);
    housekeeping(&server).await;
    assert_eq!(status_of(&server, &alice, &young).await, 404);
    assert_eq!(status_of(&server, &alice, &exempt).await, 200);

    // Taking the exemption away lets the rule act on the next pass.
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/collections/{cid}"),
            &alice,
            Some(json!({"retention_exempt": false})),
        )
        .await;
    assert_eq!(status, 200);
    housekeeping(&server).await;
    assert_eq!(status_of(&server, &alice, &exempt).await, 404);
    assert_eq!(status_of(&server, &bob, &bobs).await, 200);
    server.stop().await;
}

#[tokio::test]
async fn site_rule_applies_and_the_stricter_rule_wins() {
    let (server, clock) = clocked(|c| c.retention.transcript_days = 30).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let (_, rule) = server
        .call(Method::GET, "/api/account/retention", &alice, None)
        .await;
    assert_eq!(rule["site"]["transcript_days"], 30, "{rule}");
    assert_eq!(rule["own"], Value::Null);
    // A longer own rule cannot escape the site's; a shorter one applies.
    let (_, rule) = server
        .call(
            Method::PUT,
            "/api/account/retention",
            &alice,
            Some(json!({"transcript_days": 90})),
        )
        .await;
    assert_eq!(rule["effective"]["transcript_days"], 30, "{rule}");
    let file = upload(&server, &alice, "a.wav", 400.0).await;
    let admins = upload(&server, &admin, "b.wav", 410.0).await;
    clock.advance(29 * DAY);
    housekeeping(&server).await;
    assert_eq!(status_of(&server, &alice, &file).await, 200);
    clock.advance(2 * DAY);
    housekeeping(&server).await;
    assert_eq!(status_of(&server, &alice, &file).await, 404);
    assert_eq!(
        status_of(&server, &admin, &admins).await,
        404,
        "the site rule is for everyone"
    );

    // Bad rules are refused and change nothing.
    for bad in [
        json!({"media_days": 0}),
        json!({"transcript_days": 100_000}),
        json!({"media_days": -1}),
        json!({"days": 3}),
        json!({"media_days": "3"}),
    ] {
        let (status, body) = server
            .call(
                Method::PUT,
                "/api/account/retention",
                &alice,
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 400, "{bad} → {body}");
    }
    let (_, rule) = server
        .call(Method::GET, "/api/account/retention", &alice, None)
        .await;
    assert_eq!(rule["own"]["transcript_days"], 90);
    // Both parts null removes the own rule.
    let (status, rule) = server
        .call(
            Method::PUT,
            "/api/account/retention",
            &alice,
            Some(json!({"media_days": null, "transcript_days": null})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(rule["own"], Value::Null);
    server.stop().await;
}

/// A real transcription, then a media-only rule: the blob goes, the record and transcript stay,
/// media answers 410 `media-deleted`, retry and reprocess refuse, and deleting the file later
/// still works.
#[tokio::test]
async fn media_only_rule_keeps_the_transcript_and_answers_410_for_media() {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.models_dir = crate::models::models_dir();
            c.jobs.model = "whisper-tiny.en".to_owned();
            c.retention.media_days = 3;
            long_sessions(c);
        },
        clock.clone(),
    )
    .await;
    let admin = server.admin().await;
    let (clip, _) = crate::asr::references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{}/{clip}.wav", crate::asr::LIBRIVOX)).unwrap();
    let created = body_json(server.upload(&admin, "talk.wav", wav).await).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&admin, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, before) = server
        .call(
            Method::GET,
            &format!("/api/files/{id}/transcript"),
            &admin,
            None,
        )
        .await;
    assert!(!before["segments"].as_array().unwrap().is_empty());
    let (_, preview) = server
        .call(Method::GET, "/api/retention/preview", &admin, None)
        .await;
    assert_eq!(preview["files"][0]["action"], "delete-media", "{preview}");

    clock.advance(2 * DAY);
    housekeeping(&server).await;
    let media = server
        .client
        .get(server.url(&format!("/api/files/{id}/media")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(media.status(), 200, "not due yet");
    drop(media);

    clock.advance(2 * DAY);
    housekeeping(&server).await;
    let (status, file) = server
        .call(Method::GET, &format!("/api/files/{id}"), &admin, None)
        .await;
    assert_eq!(status, 200);
    assert!(file["media_deleted_at"].as_u64().is_some(), "{file}");
    assert_eq!(file["status"], "completed");
    let (status, error) = server
        .call(Method::GET, &format!("/api/files/{id}/media"), &admin, None)
        .await;
    assert_eq!(status, 410, "{error}");
    assert_eq!(error["code"], "media-deleted");
    let (status, after) = server
        .call(
            Method::GET,
            &format!("/api/files/{id}/transcript"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        after["segments"], before["segments"],
        "the transcript is kept"
    );
    let export = server
        .client
        .get(server.url(&format!("/api/files/{id}/export?format=srt")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let (status, error) = server
        .call(
            Method::POST,
            &format!("/api/files/{id}/reprocess"),
            &admin,
            Some(json!({"stages": ["diarize"], "num_speakers": 1})),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (410, Some("media-deleted")),
        "{error}"
    );
    assert!(
        server.blob_files().is_empty(),
        "the blob went: {:?}",
        server.blob_files()
    );
    let logged = audit_actions(&server, &admin, "retention.delete").await;
    assert_eq!(logged.len(), 1);
    assert!(
        logged[0]["detail"]
            .as_str()
            .unwrap()
            .contains("delete-media")
    );

    // Nothing is due any more, and the file can still be deleted by its owner.
    let (_, preview) = server
        .call(Method::GET, "/api/retention/preview", &admin, None)
        .await;
    assert_eq!(preview["files"], json!([]), "{preview}");
    housekeeping(&server).await;
    assert_eq!(audit_actions(&server, &admin, "retention.").await.len(), 1);
    let (status, _) = server
        .call(Method::DELETE, &format!("/api/files/{id}"), &admin, None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(status_of(&server, &admin, &id).await, 404);
    server.stop().await;
}

/// Retention raced against the owner's tag edit of the same file, many times: a file due for
/// deletion is gone afterwards whatever the order (the edit never revives it), its blob is gone
/// and nothing of it stays listed; a file due for media deletion keeps its record (with the
/// tags if the edit won) and answers 410 for media, never half-deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_racing_tag_edits_never_revives_or_sticks() {
    let (server, clock) = clocked(|c| c.audit.keep_days = 0).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let bob = server.user(&admin, "bob").await;
    for (token, rule) in [
        (&alice, json!({"transcript_days": 1})),
        (&bob, json!({"media_days": 1})),
    ] {
        let (status, _) = server
            .call(Method::PUT, "/api/account/retention", token, Some(rule))
            .await;
        assert_eq!(status, 200);
    }
    let rounds = iterations();
    let started = std::time::Instant::now();
    let (mut edit_first, mut media_tagged) = (0, 0);
    for round in 0..rounds {
        let doomed = upload(&server, &alice, "doomed.wav", 200.0 + round as f32).await;
        let stripped = upload(&server, &bob, "stripped.wav", 5000.0 + round as f32).await;
        // Bob's file must have settled for its media to go: cancel its queued job.
        let (status, _) = server
            .call(
                Method::POST,
                &format!("/api/files/{stripped}/cancel"),
                &bob,
                None,
            )
            .await;
        assert_eq!(status, 200);
        clock.advance(2 * DAY);
        let (_, (tagged, _), (bob_tagged, _)) = tokio::join!(
            housekeeping(&server),
            tag(&server, &alice, &doomed, round),
            tag(&server, &bob, &stripped, round)
        );
        assert!([200, 404].contains(&tagged), "round {round}: {tagged}");
        assert_eq!(bob_tagged, 200, "round {round}: the record stays");
        if tagged == 200 {
            edit_first += 1;
        }
        // Alice's file is gone for good: not revived by the edit, no trace left.
        assert_eq!(
            status_of(&server, &alice, &doomed).await,
            404,
            "round {round}"
        );
        let (again, _) = tag(&server, &alice, &doomed, round).await;
        assert_eq!(
            again, 404,
            "round {round}: an edit after the deletion revives nothing"
        );
        // Bob's file keeps its record and transcript side; its media are gone.
        let (status, file) = server
            .call(Method::GET, &format!("/api/files/{stripped}"), &bob, None)
            .await;
        assert_eq!(status, 200, "round {round}");
        assert!(file["media_deleted_at"].is_u64(), "round {round}: {file}");
        if file["tags"] == json!([format!("round-{round}")]) {
            media_tagged += 1;
        }
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/api/files/{stripped}/media"),
                &bob,
                None,
            )
            .await;
        assert_eq!(status, 410, "round {round}");
        assert!(
            server.blob_files().is_empty(),
            "round {round}: a blob stayed behind"
        );
    }
    let (_, listed) = server.call(Method::GET, "/api/files", &alice, None).await;
    assert_eq!(listed["total"], 0, "{listed}");
    let (_, listed) = server.call(Method::GET, "/api/files", &bob, None).await;
    assert_eq!(listed["total"], rounds, "{listed}");
    let logged = audit_actions(&server, &admin, "retention.delete").await;
    assert_eq!(logged.len(), (2 * rounds).min(500));
    eprintln!(
        "retention race: {rounds} rounds in {:.1} s; the tag edit came first in {edit_first}, \
         bob's tag kept in {media_tagged}",
        started.elapsed().as_secs_f64()
    );
    server.stop().await;
}
