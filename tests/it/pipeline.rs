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
async fn connect_events(server: &TestServer, token: &str) -> Socket {
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

async fn next_event(socket: &mut Socket, deadline: tokio::time::Instant) -> Value {
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
