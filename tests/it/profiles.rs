//! Voice profiles through the API on real diarized uploads: a profile made from a speaker of
//! one file recognises the same voice in another file (true cosine shown), other voices are
//! not matched; renaming the profile renames it in every file; detach, reassign, merge, delete.

use reqwest::Method;
use serde_json::Value;

use crate::diarize::corpus;
use crate::support::{TestServer, json as body_json};

async fn upload_and_wait(server: &TestServer, token: &str, name: &str) -> String {
    let wav = std::fs::read(corpus().join(format!("{name}.wav"))).unwrap();
    let created = body_json(server.upload(token, &format!("{name}.wav"), wav).await).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let file = server.wait_done(token, &id).await;
    assert_eq!(file["status"], "completed", "{file}");
    id
}

async fn speakers(server: &TestServer, token: &str, file: &str) -> Vec<Value> {
    let (status, body) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/speakers"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["speakers"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_profile_recognises_its_voice_in_another_file_and_renames_everywhere() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let alice = server.admin().await;
    let first = upload_and_wait(&server, &alice, "conv2a").await;
    let found = speakers(&server, &alice, &first).await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|s| s["profile_id"].is_null()),
        "no profiles yet"
    );

    // Profiles from both voices of the first file.
    let mut profile_of = std::collections::HashMap::new();
    for (speaker, name) in [("SPEAKER_00", "Vera"), ("SPEAKER_01", "Otto")] {
        let (status, body) = server
            .call(
                Method::POST,
                &format!("/api/files/{first}/speakers/{speaker}/profile"),
                &alice,
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let s = body["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == speaker)
            .unwrap()
            .clone();
        assert_eq!(s["name"], name);
        assert!(
            s["similarity"].as_f64().unwrap() > 0.99,
            "a profile of one voice is that voice"
        );
        profile_of.insert(name, s["profile_id"].as_str().unwrap().to_owned());
    }
    let (_, profiles) = server
        .call(Method::GET, "/api/profiles", &alice, None)
        .await;
    assert_eq!(
        profiles["profiles"].as_array().unwrap().len(),
        2,
        "{profiles}"
    );

    // conv3 holds the same two voices and a third: the two are recognised, the third is not.
    let second = upload_and_wait(&server, &alice, "conv3").await;
    let found = speakers(&server, &alice, &second).await;
    let assigned: Vec<&Value> = found
        .iter()
        .filter(|s| !s["profile_id"].is_null())
        .collect();
    assert_eq!(assigned.len(), 2, "{found:?}");
    for s in &assigned {
        let similarity = s["similarity"].as_f64().unwrap();
        assert!(
            (0.75..=1.0001).contains(&similarity),
            "true cosine shown: {s}"
        );
    }
    let names: std::collections::BTreeSet<&str> = assigned
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Otto", "Vera"].into_iter().collect());
    assert!(
        found
            .iter()
            .filter(|s| s["profile_id"].is_null())
            .all(|s| s["name"].is_null()),
        "the third voice stays unnamed: {found:?}"
    );
    // The transcript carries the names on its segments' speakers.
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{second}/transcript"),
            &alice,
            None,
        )
        .await;
    assert!(
        transcript["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "Vera")
    );

    // Renaming the profile renames it in both files.
    let vera = &profile_of["Vera"];
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/profiles/{vera}"),
            &alice,
            Some(serde_json::json!({"name": "Vera Lynn"})),
        )
        .await;
    assert_eq!(status, 200);
    for file in [&first, &second] {
        let found = speakers(&server, &alice, file).await;
        assert!(
            found
                .iter()
                .any(|s| s["profile_id"] == vera.as_str() && s["name"] == "Vera Lynn"),
            "{found:?}"
        );
        assert!(!found.iter().any(|s| s["name"] == "Vera"));
    }
    // Renaming a profiled speaker renames its profile too.
    let otto_speaker = assigned.iter().find(|s| s["name"] == "Otto").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{second}/speakers/{otto_speaker}"),
            &alice,
            Some(serde_json::json!({"name": "Otto K"})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        speakers(&server, &alice, &first)
            .await
            .iter()
            .any(|s| s["name"] == "Otto K")
    );

    // Detach, then assign again by hand.
    let path = format!("/api/files/{second}/speakers/{otto_speaker}/profile");
    let (status, body) = server.call(Method::DELETE, &path, &alice, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["speakers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == otto_speaker.as_str() && s["profile_id"].is_null())
    );
    let otto = &profile_of["Otto"];
    let (status, body) = server
        .call(
            Method::PUT,
            &path,
            &alice,
            Some(serde_json::json!({"profile_id": otto})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Another user sees neither the profiles nor the file.
    let bob = server.user(&alice, "bob").await;
    let (_, theirs) = server.call(Method::GET, "/api/profiles", &bob, None).await;
    assert!(theirs["profiles"].as_array().unwrap().is_empty());
    assert_eq!(
        server
            .call(
                Method::GET,
                &format!("/api/files/{second}/speakers"),
                &bob,
                None
            )
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .call(
                Method::PUT,
                &path,
                &bob,
                Some(serde_json::json!({"profile_id": otto}))
            )
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .call(
                Method::PATCH,
                &format!("/api/profiles/{vera}"),
                &bob,
                Some(serde_json::json!({"name": "x"}))
            )
            .await
            .0,
        404
    );

    // Merge the unknown third speaker into Otto's: its segments move, it leaves the list.
    let third = found.iter().find(|s| s["profile_id"].is_null()).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = server
        .call(
            Method::POST,
            &format!("/api/files/{second}/speakers/merge"),
            &alice,
            Some(serde_json::json!({"from": third, "into": otto_speaker})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["speakers"].as_array().unwrap().len(), 2);
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{second}/transcript"),
            &alice,
            None,
        )
        .await;
    assert!(
        transcript["segments"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["speaker"] != third.as_str())
    );

    // Deleting a profile unlinks its speakers everywhere; names stay as they were.
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/profiles/{vera}"),
                &alice,
                None
            )
            .await
            .0,
        204
    );
    for file in [&first, &second] {
        let found = speakers(&server, &alice, file).await;
        assert!(
            found.iter().all(|s| s["profile_id"] != vera.as_str()),
            "{found:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn rediarizing_with_another_speaker_count_keeps_the_transcribed_text() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let alice = server.admin().await;
    let file = upload_and_wait(&server, &alice, "conv2a").await;
    assert_eq!(speakers(&server, &alice, &file).await.len(), 2);
    // A correction that a new transcription would lose.
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let seg = transcript["segments"][0]["id"].as_u64().unwrap();
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{file}/segments/{seg}"),
            &alice,
            Some(serde_json::json!({"text": "A corrected opening line."})),
        )
        .await;
    assert_eq!(status, 200);
    let words_before: usize = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["words"].as_array().unwrap().len())
        .sum();

    let path = format!("/api/files/{file}/reprocess");
    let (status, body) = server
        .call(
            Method::POST,
            &path,
            &alice,
            Some(serde_json::json!({"stages": ["transcribe"]})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = server
        .call(
            Method::POST,
            &path,
            &alice,
            Some(serde_json::json!({"stages": ["diarize"], "num_speakers": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let done = server.wait_done(&alice, &file).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["options"]["num_speakers"], 1);
    let (_, after) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        after["speakers"].as_array().unwrap().len(),
        1,
        "{}",
        after["speakers"]
    );
    let segments = after["segments"].as_array().unwrap();
    assert!(
        segments
            .iter()
            .any(|s| s["text"] == "A corrected opening line."),
        "the edit survives: nothing was transcribed again"
    );
    let words_after: usize = segments
        .iter()
        .map(|s| s["words"].as_array().unwrap().len())
        .sum();
    assert_eq!(words_before, words_after);
    assert!(
        segments
            .iter()
            .all(|s| s["speaker"] == after["speakers"][0]["id"])
    );
    server.stop().await;
}
