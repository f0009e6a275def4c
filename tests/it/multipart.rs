//! Hostile multipart framing on the two upload routes (`http::multipart_guard`): a part header
//! that never ends, a body without its boundary, too many parts. Each is refused after a few
//! KiB, without the parser buffering the rest, and leaves nothing behind; normal uploads are
//! covered by `files.rs` and `openai.rs`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

use crate::support::{TestServer, json, sine_wav};

const BOUNDARY: &str = "guard-test-boundary-5f1c";
const ROUTES: [&str; 2] = ["/api/files", "/v1/audio/transcriptions"];
/// What each hostile body would send in all; the guard stops the client long before.
const HOSTILE_BYTES: usize = 64 << 20;
const CHUNK: usize = 64 * 1024;

/// `prefix`, then `fill` up to `total` bytes, made lazily in 64 KiB chunks (one shared buffer),
/// counting what the client was asked for into `sent`.
fn lazy_body(prefix: &str, fill: u8, total: usize, sent: Arc<AtomicUsize>) -> reqwest::Body {
    let chunk = Bytes::from(vec![fill; CHUNK]);
    let head = Bytes::copy_from_slice(prefix.as_bytes());
    let counted = sent.clone();
    counted.fetch_add(head.len(), Ordering::SeqCst);
    let rest =
        futures_util::stream::iter(0..total.saturating_sub(prefix.len()) / CHUNK).map(move |_| {
            sent.fetch_add(CHUNK, Ordering::SeqCst);
            Ok::<_, std::io::Error>(chunk.clone())
        });
    use futures_util::StreamExt;
    reqwest::Body::wrap_stream(futures_util::stream::once(async { Ok(head) }).chain(rest))
}

/// The error code in our shape or OpenAI's.
fn code(body: &Value) -> &str {
    body["code"]
        .as_str()
        .or_else(|| body["error"]["code"].as_str())
        .unwrap_or("")
}

struct Outcome {
    /// The answer, when it reached the client before the server closed the connection.
    answer: Option<(u16, Value)>,
    sent: usize,
    elapsed: Duration,
}

/// Sends a hostile body chunked (no Content-Length) to `path`.
async fn send_hostile(
    server: &TestServer,
    token: &str,
    path: &str,
    prefix: &str,
    fill: u8,
) -> Outcome {
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let request = server
        .client
        .post(server.url(path))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(lazy_body(prefix, fill, HOSTILE_BYTES, sent.clone()))
        .send();
    let result = tokio::time::timeout(Duration::from_secs(60), request)
        .await
        .expect("an answer or a closed connection within 60 s");
    let answer = match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let bytes = response.bytes().await.unwrap_or_default();
            Some((
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            ))
        }
        // The server may answer and close before the client finished sending.
        Err(e) => {
            eprintln!("{path}: connection ended before the answer was read: {e}");
            None
        }
    };
    Outcome {
        answer,
        sent: sent.load(Ordering::SeqCst),
        elapsed: started.elapsed(),
    }
}

fn never_ending_header() -> String {
    format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a")
}

async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

async fn assert_nothing_left(server: &TestServer, token: &str) {
    assert!(
        wait_until(|| server.temp_files().is_empty()).await,
        "temp files left: {:?}",
        server.temp_files()
    );
    assert!(
        wait_until(|| server.blob_files().is_empty()).await,
        "{:?}",
        server.blob_files()
    );
    let (status, list) = server
        .call(reqwest::Method::GET, "/api/files", token, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["total"], 0, "{list}");
}

fn assert_stopped_early(outcome: &Outcome, path: &str) {
    eprintln!(
        "{path}: client sent {} KiB in {:?}, answer {:?}",
        outcome.sent / 1024,
        outcome.elapsed,
        outcome.answer
    );
    // Socket buffers hold a few MiB; the old parser read all 64 MiB.
    assert!(
        outcome.sent < HOSTILE_BYTES / 4,
        "{path}: the server read on: the client sent {} MiB",
        outcome.sent >> 20
    );
    assert!(
        outcome.elapsed < Duration::from_secs(20),
        "{path}: {:?}",
        outcome.elapsed
    );
}

#[tokio::test]
async fn a_part_header_that_never_ends_is_refused_at_once() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    for path in ROUTES {
        let outcome = send_hostile(&server, &token, path, &never_ending_header(), b'a').await;
        assert_stopped_early(&outcome, path);
        if let Some((status, body)) = &outcome.answer {
            assert_eq!(*status, 413, "{path}: {body}");
            assert_eq!(code(body), "payload-too-large", "{path}: {body}");
        }
    }
    assert_nothing_left(&server, &token).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_without_its_boundary_is_refused_at_once() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    for path in ROUTES {
        let outcome = send_hostile(&server, &token, path, "", 0).await;
        assert_stopped_early(&outcome, path);
        if let Some((status, body)) = &outcome.answer {
            assert_eq!(*status, 400, "{path}: {body}");
            assert_eq!(code(body), "invalid-multipart", "{path}: {body}");
        }
    }
    // No boundary in the Content-Type at all: refused before the body is read.
    for path in ROUTES {
        let response = server
            .client
            .post(server.url(path))
            .bearer_auth(&token)
            .header("content-type", "multipart/form-data")
            .body("--x\r\n")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(code(&json(response).await), "invalid-multipart", "{path}");
    }
    assert_nothing_left(&server, &token).await;
    server.stop().await;
}

#[tokio::test]
async fn too_many_parts_are_refused_and_leave_nothing() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    // 100 tiny parts each route accepts one by one (the old code read them all and answered
    // 400 for the missing file).
    for (path, name) in [
        ("/api/files", "language"),
        ("/v1/audio/transcriptions", "prompt"),
    ] {
        let mut form = reqwest::multipart::Form::new();
        for _ in 0..100 {
            form = form.text(name, "en");
        }
        let response = server
            .client
            .post(server.url(path))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = json(response).await;
        assert_eq!(status, 413, "{path}: {body}");
        assert_eq!(code(&body), "payload-too-large", "{path}: {body}");
    }
    // A real file, then too many parts: the stored part is dropped, no file is created (the
    // old code stored it and answered 201).
    let wav = sine_wav(1.0, 16_000, 440.0);
    let mut form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(wav.clone()).file_name("tone.wav"),
    );
    for _ in 0..20 {
        form = form.text("language", "en");
    }
    let response = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = json(response).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(code(&body), "payload-too-large", "{body}");
    assert_nothing_left(&server, &token).await;
    // Within the caps, an upload with every option part still works.
    let form = reqwest::multipart::Form::new()
        .text("language", "en")
        .text("num_speakers", "2")
        .text("min_speakers", "1")
        .text("max_speakers", "3")
        .text("diarize", "true")
        .text("priority", "high")
        .part(
            "file",
            reqwest::multipart::Part::bytes(wav).file_name("tone.wav"),
        );
    let response = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

const MEMORY_CHILD_ENV: &str = "OPENTRANSCRIBE_MULTIPART_MEMORY_CHILD";

fn vm_kb(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The measuring half of `hostile_multipart_bodies_do_not_grow_memory`, in a process of its
/// own so other tests running in parallel do not move the peak (the server runs in-process).
#[tokio::test]
#[ignore = "run by hostile_multipart_bodies_do_not_grow_memory in a separate process"]
async fn hostile_multipart_memory_child() {
    if std::env::var_os(MEMORY_CHILD_ENV).is_none() {
        return;
    }
    let server = TestServer::start().await;
    let token = server.admin().await;
    // Warm up: a normal upload through the same routes and allocator paths.
    assert_eq!(
        server
            .upload(&token, "warm.wav", sine_wav(1.0, 16_000, 440.0))
            .await
            .status(),
        201
    );
    let before = vm_kb("VmHWM:");
    let mut sent = 0;
    for path in ROUTES {
        sent += send_hostile(&server, &token, path, &never_ending_header(), b'a')
            .await
            .sent;
        sent += send_hostile(&server, &token, path, "", 0).await.sent;
    }
    let after = vm_kb("VmHWM:");
    println!(
        "MEMORY_RESULT before_kb={before} after_kb={after} sent_kb={}",
        sent / 1024
    );
    server.stop().await;
}

#[test]
fn hostile_multipart_bodies_do_not_grow_memory() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "multipart::hostile_multipart_memory_child"])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env(MEMORY_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.find("MEMORY_RESULT ").map(|at| &l[at..]))
        .unwrap_or_else(|| {
            panic!(
                "child printed no result: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("{line}");
    let field = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    let growth_mb = (field("after_kb") - field("before_kb")) / 1024.0;
    println!("4 hostile 64 MiB bodies: peak RSS grew {growth_mb:.1} MiB");
    assert!(out.status.success(), "child failed: {stdout}");
    assert!(growth_mb < 32.0, "peak memory grew by {growth_mb:.1} MiB");
}
