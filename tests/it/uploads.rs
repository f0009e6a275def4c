//! Resumable uploads (`/api/uploads`) over real TLS with real clients: a chunk cut off in the
//! middle of its body resumes from the offset the server kept and the file's hash equals the
//! source; wrong offsets are 409 with the real one; another user's session is 404; two clients
//! racing for one offset never both win nor mix their bytes; a daemon restart keeps the
//! session; an abandoned browser recording is completed by housekeeping (clock moved, not
//! slept) and transcribed.

use std::sync::Arc;
use std::time::Duration;

use opentranscribe::clock::ManualClock;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{TestServer, client_for, sine_wav};

fn iterations() -> usize {
    std::env::var("OT_RACE_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

async fn open(server: &TestServer, token: &str, body: Value) -> String {
    let (status, created) = server
        .call(Method::POST, "/api/uploads", token, Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["offset"], 0);
    created["id"].as_str().unwrap().to_owned()
}

/// One PATCH with a plain client: status, `Upload-Offset` header, JSON body.
async fn patch(
    client: &reqwest::Client,
    server: &TestServer,
    token: &str,
    id: &str,
    offset: u64,
    bytes: Vec<u8>,
) -> (u16, Option<u64>, Value) {
    let response = client
        .patch(server.url(&format!("/api/uploads/{id}")))
        .bearer_auth(token)
        .header("upload-offset", offset.to_string())
        .header("content-type", "application/offset+octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let header = response
        .headers()
        .get("upload-offset")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, header, body)
}

async fn offset(server: &TestServer, token: &str, id: &str) -> u64 {
    let response = server
        .client
        .head(server.url(&format!("/api/uploads/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["upload-offset"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// What a client does after a failure: ask the server where it is and send the rest from there,
/// again while the cut-off request is still being finished (409 busy). The offset resumed from.
async fn resume(server: &TestServer, token: &str, id: &str, data: &[u8]) -> u64 {
    for _ in 0..200 {
        let at = offset(server, token, id).await;
        let (status, header, body) = patch(
            &server.client,
            server,
            token,
            id,
            at,
            data[at as usize..].to_vec(),
        )
        .await;
        match status {
            200 => {
                assert_eq!(header, Some(data.len() as u64), "{body}");
                return at;
            }
            409 => tokio::time::sleep(Duration::from_millis(50)).await,
            _ => panic!("resume answered {status} {body}"),
        }
    }
    panic!("the upload never resumed");
}

async fn complete(server: &TestServer, token: &str, id: &str) -> (u16, Value) {
    server
        .call(
            Method::POST,
            &format!("/api/uploads/{id}/complete"),
            token,
            None,
        )
        .await
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn part_file(server: &TestServer, id: &str) -> std::path::PathBuf {
    server.data_dir.path().join(format!("uploads/{id}.part"))
}

#[tokio::test]
async fn a_chunk_cut_mid_body_resumes_from_the_servers_offset() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let data = sine_wav(60.0, 16_000, 440.0);
    let total = data.len() as u64;
    let id = open(
        &server,
        &alice,
        json!({"name": "tone.wav", "size": total, "options": {"language": "en"}}),
    )
    .await;

    // The whole file in one PATCH whose body stops after 60 % with an error: reqwest (hyper)
    // drops the connection in the middle of the declared Content-Length.
    let cut_at = data.len() * 6 / 10;
    let head: Vec<bytes::Bytes> = data[..cut_at]
        .chunks(64 * 1024)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let stream = futures_util::stream::iter(head.into_iter().map(Ok::<_, std::io::Error>)).chain(
        futures_util::stream::once(async {
            // Give the server time to read what was sent before the connection goes.
            tokio::time::sleep(Duration::from_millis(300)).await;
            Err(std::io::Error::other("connection dropped by the test"))
        }),
    );
    use futures_util::StreamExt;
    let cut = server
        .client
        .patch(server.url(&format!("/api/uploads/{id}")))
        .bearer_auth(&alice)
        .header("upload-offset", "0")
        .header("content-length", total.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(cut.is_err(), "the cut request must fail on the client");

    let resumed_from = resume(&server, &alice, &id, &data).await;
    assert!(
        resumed_from > 0 && resumed_from <= cut_at as u64,
        "resumed from {resumed_from}, sent {cut_at} of {total}"
    );
    let (status, file) = complete(&server, &alice, &id).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["sha256"], sha256_hex(&data));
    assert_eq!(file["size"], total);
    assert_eq!(file["filename"], "tone.wav");
    assert_eq!(file["options"]["language"], "en");
    assert!(!part_file(&server, &id).exists());
    // Completing again answers the same file (a lost answer can be asked for again).
    let (status, again) = complete(&server, &alice, &id).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], file["id"]);
    let (_, session) = server
        .call(Method::GET, &format!("/api/uploads/{id}"), &alice, None)
        .await;
    assert_eq!(session["state"], "completed");
    assert_eq!(session["file_id"], file["id"]);
    eprintln!("cut at {cut_at} of {total} bytes; the server had kept {resumed_from}");
    server.stop().await;
}

#[tokio::test]
async fn wrong_offsets_and_sizes_are_refused_with_the_real_offset() {
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        c.server.max_upload_bytes = 1000;
    })
    .await;
    let admin = server.admin().await;
    let (status, body) = server
        .call(
            Method::POST,
            "/api/uploads",
            &admin,
            Some(json!({"name": "big.wav", "size": 1001})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload-too-large"))
    );
    let (status, body) = server
        .call(
            Method::POST,
            "/api/uploads",
            &admin,
            Some(json!({"name": "x.wav", "kind": "tape"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let id = open(&server, &admin, json!({"name": "x.wav", "size": 300})).await;
    let client = &server.client;

    let (status, header, body) = patch(client, &server, &admin, &id, 5, vec![1; 10]).await;
    assert_eq!((status, header), (409, Some(0)), "{body}");
    assert_eq!(body["code"], "upload-offset-mismatch");
    assert_eq!(body["offset"], 0);
    let (status, header, body) = patch(client, &server, &admin, &id, 0, vec![1; 100]).await;
    assert_eq!((status, header), (200, Some(100)), "{body}");
    assert_eq!(body["offset"], 100);
    let (status, header, body) = patch(client, &server, &admin, &id, 0, vec![2; 100]).await;
    assert_eq!(
        (status, header, body["offset"].as_u64()),
        (409, Some(100), Some(100))
    );
    // Past the declared size: refused, nothing kept.
    let (status, header, _) = patch(client, &server, &admin, &id, 100, vec![3; 201]).await;
    assert_eq!((status, header), (400, Some(100)));
    assert_eq!(offset(&server, &admin, &id).await, 100);
    // Not all there yet.
    let (status, body) = complete(&server, &admin, &id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("upload-incomplete"))
    );
    // No offset header.
    let response = client
        .patch(server.url(&format!("/api/uploads/{id}")))
        .bearer_auth(&admin)
        .body(vec![0u8; 4])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Over the site's upload limit without a declared size: 413 in the middle of the body.
    let open_ended = open(&server, &admin, json!({"name": "y.wav"})).await;
    let (status, _, body) = patch(client, &server, &admin, &open_ended, 0, vec![0; 1001]).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload-too-large"))
    );
    assert_eq!(offset(&server, &admin, &open_ended).await, 0);
    // The rest, then the file is what was sent: not media, so 415 and the session ends.
    let (status, _, _) = patch(client, &server, &admin, &id, 100, vec![4; 200]).await;
    assert_eq!(status, 200);
    let (status, body) = complete(&server, &admin, &id).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (415, Some("unsupported-media"))
    );
    let (status, _) = server
        .call(Method::GET, &format!("/api/uploads/{id}"), &admin, None)
        .await;
    assert_eq!(status, 404);
    assert!(!part_file(&server, &id).exists());
    // Abort removes the session and its bytes.
    let (status, _, _) = patch(client, &server, &admin, &open_ended, 0, vec![5; 10]).await;
    assert_eq!(status, 200);
    assert!(part_file(&server, &open_ended).exists());
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/uploads/{open_ended}"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(!part_file(&server, &open_ended).exists());
    server.stop().await;
}

#[tokio::test]
async fn another_users_upload_is_not_found() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let bob = server.user(&admin, "bob").await;
    let id = open(&server, &alice, json!({"name": "a.wav"})).await;
    let (status, _, _) = patch(&server.client, &server, &alice, &id, 0, vec![7; 50]).await;
    assert_eq!(status, 200);
    for token in [&bob, &admin] {
        let (status, _, body) = patch(&server.client, &server, token, &id, 50, vec![8; 50]).await;
        assert_eq!(
            (status, body["message"].as_str()),
            (404, Some("upload not found"))
        );
        for (method, path) in [
            (Method::GET, format!("/api/uploads/{id}")),
            (Method::POST, format!("/api/uploads/{id}/complete")),
            (Method::DELETE, format!("/api/uploads/{id}")),
        ] {
            let (status, body) = server.call(method.clone(), &path, token, None).await;
            assert_eq!(status, 404, "{method} {path}: {body}");
            assert_eq!(body["message"], "upload not found");
        }
    }
    assert_eq!(offset(&server, &alice, &id).await, 50);
    assert_eq!(std::fs::read(part_file(&server, &id)).unwrap(), vec![7; 50]);
    server.stop().await;
}

#[tokio::test]
async fn two_clients_racing_for_one_offset_one_wins_and_bytes_never_mix() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let first = client_for(&server.running().cert_path);
    let second = client_for(&server.running().cert_path);
    let rounds = iterations();
    let mut wins = [0usize; 2];
    for round in 0..rounds {
        let id = open(&server, &admin, json!({"name": "race.bin"})).await;
        // A common first chunk, then both race from its end with different bytes and lengths.
        let (status, _, _) = patch(&first, &server, &admin, &id, 0, vec![9; 1000]).await;
        assert_eq!(status, 200);
        let a = vec![b'a'; 40_000 + round % 7];
        let b = vec![b'b'; 70_000 + round % 11];
        let (left, right) = tokio::join!(
            patch(&first, &server, &admin, &id, 1000, a.clone()),
            patch(&second, &server, &admin, &id, 1000, b.clone()),
        );
        let winners: Vec<_> = [&left, &right].iter().map(|r| r.0 == 200).collect();
        assert_eq!(
            winners.iter().filter(|w| **w).count(),
            1,
            "round {round}: exactly one chunk wins: {left:?} / {right:?}"
        );
        for loser in [&left, &right].iter().filter(|r| r.0 != 200) {
            assert_eq!(loser.0, 409, "round {round}: {loser:?}");
            let code = loser.2["code"].as_str().unwrap();
            assert!(
                ["upload-busy", "upload-offset-mismatch"].contains(&code),
                "{code}"
            );
        }
        let winner = if winners[0] { &a } else { &b };
        wins[usize::from(!winners[0])] += 1;
        let expected_offset = 1000 + winner.len() as u64;
        assert_eq!(offset(&server, &admin, &id).await, expected_offset);
        let mut expected = vec![9; 1000];
        expected.extend_from_slice(winner);
        let on_disk = std::fs::read(part_file(&server, &id)).unwrap();
        assert!(
            on_disk == expected,
            "round {round}: the session's bytes are not exactly the winner's"
        );
        let (status, _) = server
            .call(Method::DELETE, &format!("/api/uploads/{id}"), &admin, None)
            .await;
        assert_eq!(status, 204);
    }
    eprintln!(
        "{rounds} rounds: first client won {}, second {}",
        wins[0], wins[1]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_chunk_racing_the_completion_is_in_the_file_or_refused_never_half() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let other = client_for(&server.running().cert_path);
    let wav = sine_wav(0.5, 16_000, 500.0);
    let tail = vec![0u8; 30_000];
    let mut whole = wav.clone();
    whole.extend_from_slice(&tail);
    let rounds = iterations();
    let mut outcomes = std::collections::BTreeMap::<(u16, u16), usize>::new();
    for round in 0..rounds {
        let id = open(
            &server,
            &admin,
            json!({"name": "race.wav", "kind": "recording"}),
        )
        .await;
        let (status, _, _) = patch(&server.client, &server, &admin, &id, 0, wav.clone()).await;
        assert_eq!(status, 200);
        let at = wav.len() as u64;
        let (chunk, done) = tokio::join!(
            patch(&other, &server, &admin, &id, at, tail.clone()),
            complete(&server, &admin, &id),
        );
        *outcomes.entry((chunk.0, done.0)).or_default() += 1;
        let (_, session) = server
            .call(Method::GET, &format!("/api/uploads/{id}"), &admin, None)
            .await;
        match (chunk.0, done.0) {
            // The chunk first, then the completion: the file has it.
            (200, 200) => assert_eq!(done.1["sha256"], sha256_hex(&whole), "round {round}"),
            // The completion first (or under way): the chunk is refused, the file is the
            // first part.
            (409, 200) => {
                let code = chunk.2["code"].as_str().unwrap();
                assert!(
                    ["upload-finished", "upload-busy"].contains(&code),
                    "round {round}: {chunk:?}"
                );
                assert_eq!(done.1["sha256"], sha256_hex(&wav), "round {round}");
            }
            // The chunk was being written: the completion must wait; the session has it all.
            (200, 409) => {
                assert_eq!(done.1["code"], "upload-busy", "round {round}: {done:?}");
                assert_eq!(session["state"], "active");
                assert_eq!(session["offset"], whole.len());
            }
            other => panic!("round {round}: {other:?}: {chunk:?} / {done:?}"),
        }
        if session["state"] == "completed" {
            assert!(!part_file(&server, &id).exists());
        }
    }
    eprintln!("{rounds} rounds (chunk status, completion status): {outcomes:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_daemon_restart_in_the_middle_keeps_the_session() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let data = sine_wav(10.0, 16_000, 300.0);
    let id = open(
        &server,
        &admin,
        json!({"name": "restart.wav", "size": data.len()}),
    )
    .await;
    let half = data.len() / 2;
    let (status, _, _) = patch(
        &server.client,
        &server,
        &admin,
        &id,
        0,
        data[..half].to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let dir = server.stop_keep().await;
    let server = TestServer::start_in(dir, |c| c.jobs.workers = 0).await;
    let admin = server.token("admin", "admin-password").await;
    assert_eq!(offset(&server, &admin, &id).await, half as u64);
    assert_eq!(resume(&server, &admin, &id, &data).await, half as u64);
    let (status, file) = complete(&server, &admin, &id).await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["sha256"], sha256_hex(&data));

    // Partial bytes lost behind the server's back (a restore: backups copy no partial data):
    // the session goes back to what its file holds and says so.
    let other = open(&server, &admin, json!({"name": "lost.wav"})).await;
    let (status, _, _) = patch(&server.client, &server, &admin, &other, 0, vec![1; 500]).await;
    assert_eq!(status, 200);
    std::fs::write(part_file(&server, &other), vec![1; 200]).unwrap();
    let (status, header, body) =
        patch(&server.client, &server, &admin, &other, 500, vec![2; 10]).await;
    assert_eq!((status, header), (409, Some(200)), "{body}");
    assert_eq!(body["code"], "upload-offset-mismatch");
    let (status, header, _) =
        patch(&server.client, &server, &admin, &other, 200, vec![3; 300]).await;
    assert_eq!((status, header), (200, Some(500)));
    server.stop().await;
}

/// Two LibriVox clips as a live WebM/Opus stream (unknown sizes, 1 s clusters, as a browser's
/// MediaRecorder writes it), cut at 70 % as if the tab had been closed.
fn abandoned_recording() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("live.webm");
    let clip = |n: &str| {
        format!(
            "{}/sense_and_sensibility_01_austen_64kb-{n}.wav",
            crate::asr::LIBRIVOX
        )
    };
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-y",
            "-i",
            &clip("0870"),
            "-i",
            &clip("0880"),
        ])
        .args([
            "-filter_complex",
            "concat=n=2:v=0:a=1",
            "-c:a",
            "libopus",
            "-b:a",
            "32k",
        ])
        .args(["-f", "webm", "-live", "1", "-cluster_time_limit", "1000"])
        .arg(&out)
        .status()
        .expect("ffmpeg is installed by scripts/test");
    assert!(status.success());
    let whole = std::fs::read(&out).unwrap();
    whole[..whole.len() * 7 / 10].to_vec()
}

#[tokio::test]
async fn an_abandoned_recording_becomes_a_file_on_the_housekeeping_tick_and_is_transcribed() {
    let clock = Arc::new(ManualClock::new());
    let server = TestServer::start_on_clock(
        tempfile::tempdir().unwrap(),
        |c| {
            c.models_dir = crate::models::models_dir();
            c.jobs.model = "whisper-tiny.en".to_owned();
            crate::retention::long_sessions(c);
        },
        clock.clone(),
    )
    .await;
    let admin = server.admin().await;
    let recording = abandoned_recording();
    let id = open(
        &server,
        &admin,
        json!({"name": "Meeting.webm", "kind": "recording", "options": {"diarize": "false"}}),
    )
    .await;
    // About one chunk per second of audio, like MediaRecorder's timeslice; then nothing.
    let mut at = 0;
    for chunk in recording.chunks(recording.len() / 8 + 1) {
        let (status, header, body) =
            patch(&server.client, &server, &admin, &id, at, chunk.to_vec()).await;
        assert_eq!(status, 200, "{body}");
        at += chunk.len() as u64;
        assert_eq!(header, Some(at));
    }
    let state = &server.running().state;
    // Not idle long enough yet: housekeeping leaves it alone.
    clock.advance(60);
    opentranscribe::daemon::housekeeping_pass(state).await;
    let (_, session) = server
        .call(Method::GET, &format!("/api/uploads/{id}"), &admin, None)
        .await;
    assert_eq!(session["state"], "active", "{session}");
    // Past `recording_idle_secs` (120 s by default): the part received becomes a file.
    clock.advance(61);
    opentranscribe::daemon::housekeeping_pass(state).await;
    let (_, session) = server
        .call(Method::GET, &format!("/api/uploads/{id}"), &admin, None)
        .await;
    assert_eq!(session["state"], "completed", "{session}");
    let file_id = session["file_id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&admin, &file_id).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["sha256"], sha256_hex(&recording));
    assert_eq!(
        (done["media_type"].as_str(), done["codec"].as_str()),
        (Some("audio/webm"), Some("opus")),
        "{done}"
    );
    // The live WebM has no duration in its header: decoding found it.
    let duration = done["duration"].as_f64().unwrap();
    assert!((5.0..10.0).contains(&duration), "{done}");
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file_id}/transcript"),
            &admin,
            None,
        )
        .await;
    let text: String = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(text.contains("dashwood"), "{text}");
    assert!(!part_file(&server, &id).exists());
    eprintln!("abandoned recording of {} bytes → {text}", recording.len());

    // A file upload left unfinished is forgotten after `session_expiry_hours`, bytes and all.
    let stale = open(&server, &admin, json!({"name": "stale.wav"})).await;
    let (status, _, _) = patch(&server.client, &server, &admin, &stale, 0, vec![1; 10]).await;
    assert_eq!(status, 200);
    clock.advance(23 * 3600);
    opentranscribe::daemon::housekeeping_pass(state).await;
    assert!(part_file(&server, &stale).exists());
    clock.advance(3600);
    opentranscribe::daemon::housekeeping_pass(state).await;
    assert!(!part_file(&server, &stale).exists());
    let (status, _) = server
        .call(Method::GET, &format!("/api/uploads/{stale}"), &admin, None)
        .await;
    assert_eq!(status, 404);
    server.stop().await;
}
