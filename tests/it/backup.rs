//! Online backup of a real server while an upload streams in and a job runs, restored into a
//! new data dir: identical media (checksums) and transcripts. Damaged backups are refused.

use std::time::Duration;

use serde_json::Value;
use sha2::Digest;

use crate::asr::{LIBRIVOX, references};
use crate::support::{TestServer, json};
use opentranscribe::ops::backup::{BackupOptions, run_backup, run_restore};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

async fn get(server: &TestServer, token: &str, path: &str) -> reqwest::Response {
    server
        .client
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn wait_for_status(server: &TestServer, token: &str, file_id: &str, wanted: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let file = json(get(server, token, &format!("/api/files/{file_id}")).await).await;
        if file["status"] == wanted {
            return file;
        }
        assert_ne!(file["status"], "error", "{file}");
        assert!(
            std::time::Instant::now() < deadline,
            "never {wanted}: {file}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every file's record, media checksum and transcript (if completed), by id.
async fn snapshot_of(server: &TestServer, token: &str) -> Vec<(String, String, String, Value)> {
    let list = json(get(server, token, "/api/files?per_page=100").await).await;
    let mut out = Vec::new();
    for file in list["items"].as_array().expect("items") {
        let id = file["id"].as_str().unwrap().to_owned();
        let media = get(server, token, &format!("/api/files/{id}/media"))
            .await
            .bytes()
            .await
            .unwrap();
        let transcript = get(server, token, &format!("/api/files/{id}/transcript")).await;
        let transcript = if transcript.status() == 200 {
            transcript.json().await.unwrap()
        } else {
            Value::Null
        };
        out.push((
            id,
            file["sha256"].as_str().unwrap().to_owned(),
            sha256_hex(&media),
            transcript,
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_backup_during_an_upload_and_a_job_restores_identically() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        c.jobs.beam_size = 1;
    })
    .await;
    let config = server.running().state.config.as_ref().clone();
    let socket = server.running().admin_socket.clone().expect("admin socket");
    assert!(socket.exists());
    let token = server.admin().await;

    // A completed file with its transcript.
    let (first_id, _) = references().into_iter().next().unwrap();
    let short = std::fs::read(format!("{LIBRIVOX}/{first_id}.wav")).unwrap();
    let created = json(server.upload(&token, "short.wav", short.clone()).await).await;
    let done_id = created["id"].as_str().unwrap().to_owned();
    wait_for_status(&server, &token, &done_id, "completed").await;

    // A long file whose job is running during the backup.
    let mut samples = Vec::new();
    for _ in 0..3 {
        for (id, _) in references() {
            samples.extend(crate::asr::read_pcm16_wav(std::path::Path::new(&format!(
                "{LIBRIVOX}/{id}.wav"
            ))));
        }
    }
    let long = crate::asr::wav_bytes(&samples);
    let created = json(server.upload(&token, "long.wav", long.clone()).await).await;
    let running_id = created["id"].as_str().unwrap().to_owned();
    wait_for_status(&server, &token, &running_id, "processing").await;

    // An upload streaming in slowly while the backup runs.
    let streaming = crate::support::sine_wav(20.0, 16_000, 440.0);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = streaming
        .chunks(32 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let slow = futures_util::StreamExt::then(futures_util::stream::iter(chunks), |chunk| async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        chunk
    });
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(slow))
        .file_name("streaming.wav");
    let upload = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send();
    let upload = tokio::spawn(upload);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let dest_root = tempfile::tempdir().unwrap();
    let dest = dest_root.path().join("backup");
    let options = BackupOptions {
        dest: dest.clone(),
        include_secrets: false,
        keep: None,
        config_file: None,
    };
    let backup_config = config.clone();
    let summary = tokio::task::spawn_blocking(move || run_backup(&backup_config, &options))
        .await
        .unwrap()
        .expect("online backup");
    assert!(summary.manifest.online, "the daemon should have taken it");
    assert!(!upload.is_finished(), "the upload ended before the backup");
    let in_flight = json(get(&server, &token, &format!("/api/files/{running_id}")).await).await;
    assert_eq!(
        in_flight["status"], "processing",
        "the job ended before the backup"
    );
    // The snapshot holds both stored files; the streaming upload had no record yet.
    assert_eq!(summary.manifest.file_records, 2, "{:?}", summary.manifest);
    assert_eq!(summary.manifest.blobs, 2);
    assert!(!summary.manifest.includes_secrets);
    assert!(
        summary
            .manifest
            .entries
            .iter()
            .all(|e| !e.path.starts_with("secrets/") && !e.path.starts_with("tls/")),
        "secrets copied without --include-secrets"
    );
    assert!(
        !config.data_dir.join("backup-staging").exists()
            || std::fs::read_dir(config.data_dir.join("backup-staging"))
                .unwrap()
                .next()
                .is_none(),
        "staging left behind"
    );
    let created = upload.await.unwrap().unwrap();
    assert_eq!(created.status(), 201);
    let before = snapshot_of(&server, &token).await;
    server.stop().await;

    // Restore into a new, empty data dir and serve it.
    let restored_dir = tempfile::tempdir().unwrap();
    let mut restore_config = config.clone();
    restore_config.data_dir = restored_dir.path().to_path_buf();
    let source = dest.clone();
    let restored = tokio::task::spawn_blocking(move || run_restore(&restore_config, &source))
        .await
        .unwrap()
        .expect("restore");
    assert_eq!(restored.users, 1);
    let server = TestServer::start_in(restored_dir, |c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.workers = 0;
    })
    .await;
    let token = server.token("admin", "admin-password").await;
    let after = snapshot_of(&server, &token).await;
    let expected: Vec<_> = before
        .iter()
        .filter(|(id, ..)| *id == done_id || *id == running_id)
        .cloned()
        .collect();
    assert_eq!(expected.len(), 2);
    assert_eq!(after.len(), 2, "restored files: {after:?}");
    for ((id, sha, media_sha, transcript), (rid, rsha, rmedia_sha, rtranscript)) in
        expected.iter().zip(&after)
    {
        assert_eq!(id, rid);
        assert_eq!(sha, rsha);
        assert_eq!(media_sha, rmedia_sha, "media of {id} differs");
        assert_eq!(media_sha, sha, "served media does not hash to its record");
        if *id == done_id {
            assert!(transcript.is_object());
            assert_eq!(transcript, rtranscript, "transcript of {id} differs");
        }
    }
    assert_eq!(after[0].2.len(), 64);
    let originals = [sha256_hex(&short), sha256_hex(&long)];
    for (_, sha, ..) in &after {
        assert!(originals.contains(sha));
    }
    // The job interrupted by the backup's server stopping is queued again, not lost.
    let running = json(get(&server, &token, &format!("/api/files/{running_id}")).await).await;
    assert_eq!(running["status"], "queued", "{running}");
    server.stop().await;

    // A restore never goes into a data dir that holds something.
    let busy = tempfile::tempdir().unwrap();
    std::fs::write(busy.path().join("keep-me"), b"x").unwrap();
    let mut busy_config = config.clone();
    busy_config.data_dir = busy.path().to_path_buf();
    let error = run_restore(&busy_config, &dest).unwrap_err().to_string();
    assert!(error.contains("not empty"), "{error}");
    assert_eq!(std::fs::read(busy.path().join("keep-me")).unwrap(), b"x");

    // One flipped byte in a blob: refused, and nothing is left in the target.
    let blob = summary
        .manifest
        .entries
        .iter()
        .find(|e| e.path.starts_with("blobs/"))
        .unwrap();
    let blob_path = dest.join(&blob.path);
    let mut bytes = std::fs::read(&blob_path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&blob_path, &bytes).unwrap();
    let target = tempfile::tempdir().unwrap();
    let mut corrupt_config = config.clone();
    corrupt_config.data_dir = target.path().join("data");
    let error = run_restore(&corrupt_config, &dest).unwrap_err().to_string();
    assert!(error.contains("checksum mismatch"), "{error}");
    assert!(error.contains(&blob.path), "{error}");
    assert!(
        !corrupt_config.data_dir.exists(),
        "a refused restore left files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_backup_with_secrets_and_rotation() {
    let mut server = TestServer::start().await;
    let token = server.admin().await;
    let wav = crate::support::sine_wav(1.0, 16_000, 440.0);
    assert_eq!(server.upload(&token, "tone.wav", wav).await.status(), 201);
    let config = server.running().state.config.as_ref().clone();
    // Stop the daemon but keep its data dir (held by `server`).
    server.server.take().unwrap().shutdown().await;
    // No daemon now: status says so, backup reads the idle data dir.
    let error = opentranscribe::ops::admin::request(
        &config.data_dir,
        &opentranscribe::ops::admin::Request::Status,
        Duration::from_secs(5),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no opentranscribe daemon is running"),
        "{error}"
    );

    let root = tempfile::tempdir().unwrap();
    let config_file = root.path().join("opentranscribe.toml");
    std::fs::write(&config_file, "[jobs]\nworkers = 0\n").unwrap();
    let mut paths = Vec::new();
    for _ in 0..3 {
        let options = BackupOptions {
            dest: root.path().join("rotated"),
            include_secrets: true,
            keep: Some(2),
            config_file: Some(config_file.clone()),
        };
        let summary = run_backup(&config, &options).expect("offline backup");
        assert!(!summary.manifest.online);
        assert!(summary.manifest.includes_secrets);
        let paths_in: Vec<&str> = summary
            .manifest
            .entries
            .iter()
            .map(|e| e.path.as_str())
            .collect();
        assert!(paths_in.contains(&"tls/key.pem"), "{paths_in:?}");
        assert!(paths_in.contains(&"config/opentranscribe.toml"));
        paths.push(summary.path);
        // Names are per second.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let left: Vec<_> = std::fs::read_dir(root.path().join("rotated"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(!paths[0].exists() && paths[1].exists() && paths[2].exists());

    let target = tempfile::tempdir().unwrap();
    let mut restore_config = config.clone();
    restore_config.data_dir = target.path().join("data");
    let summary = run_restore(&restore_config, &paths[2]).expect("restore");
    assert_eq!(summary.users, 1);
    assert!(summary.notes.iter().any(|n| n.contains("config")));
    assert_eq!(
        std::fs::read(restore_config.data_dir.join("tls/key.pem")).unwrap(),
        std::fs::read(config.data_dir.join("tls/key.pem")).unwrap()
    );
    assert!(!restore_config.data_dir.join("config").exists());
}
