//! End to end: upload real speech over HTTPS, follow the job over the WebSocket, read the
//! transcript, export subtitles and parse them with ffmpeg; cancel and retry.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;

use crate::asr::{LIBRIVOX, normalize, references, wer};
use crate::support::{TestServer, json};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A real WebSocket over TLS, authenticated with the bearer token.
pub(crate) async fn connect_events(server: &TestServer, token: &str) -> Socket {
    let port = server.running().https_addr.port();
    let tls = crate::support::client_tls(&server.running().cert_path, false);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let request = http::Request::builder()
        .uri(format!("wss://localhost:{port}/api/ws"))
        .header("host", format!("localhost:{port}"))
        .header("authorization", format!("Bearer {token}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header(
            "sec-websocket-key",
            tokio_tungstenite::tungstenite::handshake::client::generate_key(),
        )
        .body(())
        .unwrap();
    let (socket, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    socket
}

pub(crate) async fn next_event(socket: &mut Socket, deadline: tokio::time::Instant) -> Value {
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("timed out waiting for an event")
            .expect("socket closed")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

fn transcription_server_config(c: &mut opentranscribe::config::Config) {
    c.models_dir = crate::models::models_dir();
    c.jobs.model = "whisper-tiny.en".to_owned();
}

/// Runs ffmpeg over a subtitle file and returns the cues it parsed (re-rendered as SRT).
fn ffmpeg_parse(path: &std::path::Path) -> String {
    let output = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(path)
        .args(["-f", "srt", "-"])
        .output()
        .expect("ffmpeg is installed by scripts/test");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test]
async fn upload_follow_events_read_and_export() {
    let server = TestServer::start_with(transcription_server_config).await;
    let token = server.admin().await;
    let mut socket = connect_events(&server, &token).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    assert_eq!(next_event(&mut socket, deadline).await["type"], "hello");

    let (id, reference) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let created = json(server.upload(&token, "clip.wav", wav).await).await;
    let file_id = created["id"].as_str().unwrap().to_owned();

    let mut kinds = Vec::new();
    let mut progress = Vec::new();
    loop {
        let event = next_event(&mut socket, deadline).await;
        assert_eq!(event["file_id"], file_id.as_str());
        let kind = event["type"].as_str().unwrap().to_owned();
        if kind == "file.status" && event["status"] == "processing" {
            progress.push(event["progress"].as_f64().unwrap());
        }
        kinds.push(kind.clone());
        if kind == "file.completed" || kind == "file.error" {
            assert_eq!(event["status"], "completed", "{event}");
            break;
        }
    }
    assert_eq!(kinds.first().map(String::as_str), Some("file.created"));
    assert!(kinds.iter().any(|k| k == "file.status"));
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "progress went back: {progress:?}"
    );
    let _ = socket.close(None).await;

    let file: Value = json(
        server
            .client
            .get(server.url(&format!("/api/files/{file_id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(file["status"], "completed");
    assert_eq!(file["progress"], 1.0);
    // Each stage was recorded with its duration.
    let (_, queue) = server
        .call(reqwest::Method::GET, "/api/admin/jobs", &token, None)
        .await;
    let job = queue["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["file_id"] == file_id.as_str())
        .unwrap();
    let stages: Vec<&str> = job["stage_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[0].as_str().unwrap())
        .collect();
    assert_eq!(stages.first(), Some(&"decode"), "{job}");
    assert!(stages.contains(&"transcribe"), "{job}");
    assert!(
        job["stage_seconds"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s[1].as_f64().unwrap() >= 0.0)
    );

    let transcript: Value = json(
        server
            .client
            .get(server.url(&format!("/api/files/{file_id}/transcript")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(transcript["language"], "en");
    let segments = transcript["segments"].as_array().unwrap();
    let text: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let error = wer(&normalize(&reference), &normalize(&text.join(" ")));
    assert!(error < 0.2, "WER {error}: {text:?}");
    for segment in segments {
        for key in ["id", "start", "end", "speaker", "text", "words"] {
            assert!(segment.get(key).is_some(), "segment lacks {key}");
        }
        assert!(!segment["words"].as_array().unwrap().is_empty());
    }

    let dir = tempfile::tempdir().unwrap();
    for format in ["srt", "vtt"] {
        let response = server
            .client
            .get(server.url(&format!("/api/files/{file_id}/export?format={format}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            disposition.starts_with("attachment")
                && disposition.contains(&format!("clip.{format}"))
        );
        let body = response.text().await.unwrap();
        let path = dir.path().join(format!("clip.{format}"));
        std::fs::write(&path, &body).unwrap();
        let parsed = ffmpeg_parse(&path);
        let cues = parsed.matches(" --> ").count();
        assert_eq!(
            cues,
            segments.len(),
            "{format}: ffmpeg read {cues} cues:\n{parsed}"
        );
    }
    let not_ready = server
        .client
        .get(server.url("/api/files/nope/transcript"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(not_ready.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn cancel_then_retry() {
    let server = TestServer::start_with(|c| {
        transcription_server_config(c);
        // No worker: the job stays queued so it can be cancelled deterministically.
        c.jobs.workers = 0;
    })
    .await;
    let token = server.admin().await;
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let created = json(server.upload(&token, "clip.wav", wav).await).await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    let post = |path: String| {
        server
            .client
            .post(server.url(&path))
            .bearer_auth(&token)
            .send()
    };
    let early = post(format!("/api/files/{file_id}/retry")).await.unwrap();
    assert_eq!(early.status(), 409);
    let cancelled = json(post(format!("/api/files/{file_id}/cancel")).await.unwrap()).await;
    assert_eq!(cancelled["status"], "cancelled");
    let again = post(format!("/api/files/{file_id}/cancel")).await.unwrap();
    assert_eq!(again.status(), 409);
    let transcript = server
        .client
        .get(server.url(&format!("/api/files/{file_id}/transcript")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(transcript.status(), 409);
    assert_eq!(json(transcript).await["code"], "transcript-not-ready");
    let retried = json(post(format!("/api/files/{file_id}/retry")).await.unwrap()).await;
    assert_eq!(retried["status"], "queued");
    let jobs: Value = json(
        server
            .client
            .get(server.url("/api/admin/jobs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jobs["counts"]["queued"], 1);
    server.stop().await;
}

/// Starts the real binary on `data_dir` and returns it with its HTTPS port.
fn start_daemon(data_dir: &std::path::Path) -> (std::process::Child, u16) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_opentranscribe"))
        .env_remove("OPENTRANSCRIBE_CONFIG")
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "off",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--models-dir")
        .arg(crate::models::models_dir())
        .env("OPENTRANSCRIBE_JOBS_MODEL", "whisper-tiny.en")
        .env("OPENTRANSCRIBE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (port, lines) = crate::cli::wait_for_listen_line(child.stderr.take().unwrap());
    // Keep draining the log so the daemon never blocks on a full pipe.
    std::thread::spawn(move || while lines.recv().is_ok() {});
    (child, port)
}

#[tokio::test]
async fn a_job_killed_mid_transcription_completes_exactly_once_after_restart() {
    let data_dir = tempfile::tempdir().unwrap();
    // About 100 s of real speech: long enough to be killed in the middle.
    let mut samples = Vec::new();
    for _ in 0..4 {
        for (id, _) in references() {
            samples.extend(crate::asr::read_pcm16_wav(std::path::Path::new(&format!(
                "{LIBRIVOX}/{id}.wav"
            ))));
            samples.extend(std::iter::repeat_n(0.0f32, 8_000));
        }
    }
    let wav = crate::asr::wav_bytes(&samples);
    let expected_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&wav))
    };

    let (mut daemon, port) = start_daemon(data_dir.path());
    let client = crate::support::client_for(&data_dir.path().join("tls/cert.pem"));
    let base = format!("https://localhost:{port}");
    let credentials = serde_json::json!({"username": "admin", "password": "admin-password"});
    let register = client
        .post(format!("{base}/api/auth/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), 201);
    let login: Value = json(
        client
            .post(format!("{base}/api/auth/login"))
            .json(&credentials)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_owned();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(wav.clone()).file_name("long.wav"),
    );
    let created: Value = json(
        client
            .post(format!("{base}/api/files"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["sha256"], expected_sha.as_str());

    // Wait until transcription is under way, then kill without any chance to clean up.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let file: Value = json(
            client
                .get(format!("{base}/api/files/{file_id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let progress = file["progress"].as_f64().unwrap_or(0.0);
        if file["status"] == "processing" && progress > 0.15 {
            assert!(progress < 0.9, "too late to kill: {progress}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never started: {file}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let (mut daemon, port) = start_daemon(data_dir.path());
    let base = format!("https://localhost:{port}");
    let token = {
        let login: Value = json(
            client
                .post(format!("{base}/api/auth/login"))
                .json(&credentials)
                .send()
                .await
                .unwrap(),
        )
        .await;
        login["token"].as_str().unwrap().to_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let file: Value = json(
            client
                .get(format!("{base}/api/files/{file_id}"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap(),
        )
        .await;
        if file["status"] == "completed" {
            break;
        }
        assert_ne!(file["status"], "error", "{file}");
        assert!(
            std::time::Instant::now() < deadline,
            "not completed: {file}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let jobs: Value = json(
        client
            .get(format!("{base}/api/admin/jobs"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(jobs["items"][0]["attempts"], 2, "{jobs}");
    let transcript: Value = json(
        client
            .get(format!("{base}/api/files/{file_id}/transcript"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let segments = transcript["segments"].as_array().unwrap();
    // Exactly once: ids run 0..n and times never go back (no second copy appended).
    for (index, segment) in segments.iter().enumerate() {
        assert_eq!(segment["id"], index);
    }
    let starts: Vec<f64> = segments
        .iter()
        .map(|s| s["start"].as_f64().unwrap())
        .collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{starts:?}");
    let text: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    let all_text = normalize(&text.join(" ")).join(" ");
    assert_eq!(all_text.matches("dashwood").count(), 4, "{all_text}");
    // The acknowledged upload is intact.
    let media = client
        .get(format!("{base}/api/files/{file_id}/media"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let bytes = media.bytes().await.unwrap();
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), expected_sha);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

#[tokio::test]
async fn the_event_socket_closes_when_its_session_ends() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let token = server.admin().await;
    let mut socket = connect_events(&server, &token).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    assert_eq!(next_event(&mut socket, deadline).await["type"], "hello");
    let logout = server
        .client
        .post(server.url("/api/auth/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    // Re-validated every 10 s: the socket must close, not keep delivering events.
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap_or(false);
    assert!(closed, "the socket outlived its session");
    server.stop().await;
}
