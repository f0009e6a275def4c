//! Hostile clients against the real server: oversized and deeply nested JSON, slow clients,
//! hostile file names (traversal, control and bidi characters, header injection), markup in
//! transcripts and speaker names in subtitle exports, login brute force from one address, and
//! TLS 1.0/1.1/SSL 3 ClientHellos. (Per-account lockout, CSRF on one route, tokens after logout
//! and idle sessions are in `accounts.rs`; CSRF and expired/revoked credentials on every route
//! are in `authz.rs`.)

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{TestServer, json as body_json, sine_wav};

#[tokio::test]
async fn oversized_and_deeply_nested_json_is_refused() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    // 2 MiB of JSON, over the 1 MiB limit, on a public route and on an authenticated one, with
    // and without a Content-Length.
    let big = format!(
        "{{\"username\":\"admin\",\"password\":\"{}\"}}",
        "x".repeat(2 << 20)
    );
    for path in ["/api/auth/login", "/api/collections"] {
        let sized = server
            .client
            .post(server.url(path))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(sized.status(), 413, "{path} with a Content-Length");
        assert_eq!(body_json(sized).await["code"], "payload-too-large");
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let chunked = server
            .client
            .post(server.url(path))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(chunked.status(), 413, "{path} chunked");
    }

    // 300 000 levels of nesting (600 kB, under the size limit): a clear 400, no stack overflow.
    let depth = 300_000;
    let nested = format!("{{\"name\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
    let started = Instant::now();
    let response = server
        .client
        .post(server.url("/api/collections"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(body_json(response).await["code"], "invalid-json");
    assert!(started.elapsed() < Duration::from_secs(5));
    let nested_object = format!("{}1{}", "{\"a\":".repeat(depth / 2), "}".repeat(depth / 2));
    let response = server
        .client
        .post(server.url("/api/auth/login"))
        .header("content-type", "application/json")
        .body(nested_object)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    // Still serving.
    let (status, _) = server.call(Method::GET, "/api/auth/me", &admin, None).await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn tls_connect(
    server: &TestServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let config = crate::support::client_tls(&server.running().cert_path, false);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.running().https_addr)
        .await
        .unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until the server closes the connection; returns what came and when it closed.
async fn read_until_closed(
    stream: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (got, None),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, Some(started.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_clients_are_dropped_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.server.header_timeout_secs = 2).await;
    // Headers started but never finished.
    let mut slow = tls_connect(&server).await;
    slow.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    slow.flush().await.unwrap();
    let (got, closed) = read_until_closed(&mut slow, Duration::from_secs(15)).await;
    let closed = closed.expect("a client that never finishes its headers is dropped");
    assert!(closed >= Duration::from_millis(1500), "{closed:?}");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));

    // Headers dribbled a byte at a time: the timeout counts from the start, not per byte.
    let mut dribble = tls_connect(&server).await;
    let started = Instant::now();
    let request = b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut dropped = false;
    for byte in request {
        if dribble.write_all(&[*byte]).await.is_err() || dribble.flush().await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        if started.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    if !dropped {
        let (got, closed) = read_until_closed(&mut dribble, Duration::from_secs(5)).await;
        assert!(
            closed.is_some() && !String::from_utf8_lossy(&got).contains("200 OK"),
            "a dribbling client finished its request: {}",
            String::from_utf8_lossy(&got)
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));

    // A TCP connection that never starts TLS is closed too.
    let mut silent = tokio::net::TcpStream::connect(server.running().https_addr)
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(30)).await;
    let closed = closed.expect("a connection that never sends a ClientHello is dropped");
    eprintln!("silent TCP connection closed after {closed:?}");

    // Meanwhile normal clients are served.
    let health = server
        .client
        .get(server.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    server.stop().await;
}

/// Sends the headers of a JSON POST at once, then `body` a byte every `gap` (stopping after
/// `stop_after` bytes, to stall mid-body), while reading what the server answers. Returns the
/// answer and when the server closed the connection (from the end of the headers).
async fn dribble_json_body(
    server: &TestServer,
    token: &str,
    body: &'static [u8],
    gap: Duration,
    stop_after: usize,
) -> (String, Option<Duration>) {
    let stream = tls_connect(server).await;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let head = format!(
        "POST /api/collections HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    writer.write_all(head.as_bytes()).await.unwrap();
    writer.flush().await.unwrap();
    let sender = tokio::spawn(async move {
        for byte in body.iter().take(stop_after) {
            tokio::time::sleep(gap).await;
            if writer.write_all(&[*byte]).await.is_err() || writer.flush().await.is_err() {
                return;
            }
        }
        // A stalled client keeps its write half open.
        std::future::pending::<()>().await;
    });
    let (got, closed) = read_until_closed(&mut reader, Duration::from_secs(20)).await;
    sender.abort();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn slow_json_bodies_are_cut_off_after_the_body_timeout() {
    const BODY_TIMEOUT: u64 = 2;
    let server = TestServer::start_with(|c| c.server.body_timeout_secs = BODY_TIMEOUT).await;
    let admin = server.admin().await;
    let body: &'static [u8] = br#"{"name":"dribbled collection","description":"sent one byte at a time, far slower than any real client would"}"#;

    // A byte every 250 ms: the whole body would take about 27 s.
    let dribbler = dribble_json_body(
        &server,
        &admin,
        body,
        Duration::from_millis(250),
        usize::MAX,
    );
    // Headers and half the body, then nothing.
    let staller = dribble_json_body(
        &server,
        &admin,
        body,
        Duration::from_millis(10),
        body.len() / 2,
    );
    // Meanwhile other clients are served promptly.
    let others = async {
        let mut slowest = Duration::ZERO;
        for round in 0..8 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let started = Instant::now();
            let health = server
                .client
                .get(server.url("/api/health"))
                .send()
                .await
                .unwrap();
            assert_eq!(health.status(), 200);
            let (status, created) = server
                .call(
                    Method::POST,
                    "/api/collections",
                    &admin,
                    Some(json!({"name": format!("prompt {round}")})),
                )
                .await;
            assert_eq!(status, 201, "{created}");
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let ((dribbled, dribble_closed), (stalled, stall_closed), slowest) =
        tokio::join!(dribbler, staller, others);

    for (name, answer, closed) in [
        ("dribbling", &dribbled, dribble_closed),
        ("stalled", &stalled, stall_closed),
    ] {
        let closed = closed.unwrap_or_else(|| panic!("{name} client was never cut off"));
        eprintln!("{name} JSON body: 408 and closed after {closed:?}");
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "{name}: expected a 408, got {answer:?}"
        );
        assert!(answer.contains("request-timeout"), "{name}: {answer}");
        assert!(
            closed >= Duration::from_millis(BODY_TIMEOUT * 1000 - 500)
                && closed < Duration::from_secs(BODY_TIMEOUT + 3),
            "{name}: closed after {closed:?}"
        );
    }
    eprintln!("slowest other request meanwhile: {slowest:?}");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    // Neither slow body created anything.
    let (status, listed) = server
        .call(Method::GET, "/api/collections", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert!(!listed.to_string().contains("dribbled"), "{listed}");
    server.stop().await;
}

/// Sends the request head, then the body in 16 KiB pieces a few milliseconds apart (as a client
/// on a real network does), then reads the answer: `Err` when the connection failed first.
async fn send_raw(server: &TestServer, head: &[u8], body: &[u8]) -> Result<String, String> {
    let mut stream = tls_connect(server).await;
    stream
        .write_all(head)
        .await
        .map_err(|e| format!("write: {e}"))?;
    for piece in body.chunks(16 * 1024) {
        tokio::time::sleep(Duration::from_millis(3)).await;
        stream
            .write_all(piece)
            .await
            .map_err(|e| format!("write: {e}"))?;
        stream.flush().await.map_err(|e| format!("flush: {e}"))?;
    }
    let (got, _) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&got).into_owned();
    if text.is_empty() {
        Err("no answer".to_owned())
    } else {
        Ok(text)
    }
}

#[tokio::test]
async fn refusals_before_the_body_is_read_still_reach_the_client() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    // 256 KiB bodies: more than the socket holds at once, under the 1 MiB limit. Refused for
    // a missing content type, a path segment that is not a number, or no credentials: each
    // refusal comes before a handler reads the body, which used to leave bytes unread and
    // close the connection under a client still sending (schemathesis saw "EOF in violation
    // of protocol" instead of the answer).
    let body = format!("{{\"text\":\"{}\"}}", "a".repeat(256 * 1024));
    let cases = [
        (
            format!("POST /api/files/x/reprocess HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\n"),
            "400",
            "invalid-json",
        ),
        (
            format!("PATCH /api/files/x/segments/not-a-number HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\n"),
            "400",
            "bad-request",
        ),
        (
            "POST /api/collections HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".to_owned(),
            "401",
            "unauthorized",
        ),
    ];
    for (head, status, code) in cases {
        for attempt in 0..5 {
            let request_head = format!(
                "{head}Connection: close\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let answer = send_raw(&server, request_head.as_bytes(), body.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{head:?} attempt {attempt}: {e}"));
            assert!(
                answer.starts_with(&format!("HTTP/1.1 {status}")) && answer.contains(code),
                "{head:?}: {answer}"
            );
        }
    }
    server.stop().await;
}

/// A multipart body built by hand, so the file name reaches the server byte for byte.
fn raw_multipart(filename: &str, content: &[u8]) -> (String, Vec<u8>) {
    let boundary = "----abuse-boundary-7d2f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: audio/wav\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(content);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn assert_safe_disposition(value: &str) {
    assert!(
        !value.contains('\r') && !value.contains('\n'),
        "CR/LF in Content-Disposition: {value:?}"
    );
    // Exactly the two quotes around the ASCII fallback name.
    assert_eq!(value.matches('"').count(), 2, "{value}");
    let fallback = value.split('"').nth(1).unwrap();
    assert!(
        fallback
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '\\' || c == ' '),
        "{value}"
    );
}

#[tokio::test]
async fn hostile_file_names_are_sanitised_and_cannot_inject_headers() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let wav = sine_wav(1.0, 16_000, 440.0);
    let cases = [
        // (name sent, name expected)
        ("../../../../etc/cron.d/evil.wav", "evil.wav"),
        ("..\\..\\windows\\system32\\evil.wav", "evil.wav"),
        ("/absolute/path/a.wav", "a.wav"),
        ("tab\there.wav", "tabhere.wav"),
        ("..", "upload"),
        // Bidi overrides make "evil\u{202E}vaw.exe" display as "evilexe.wav".
        ("evil\u{202E}vaw.exe", "evilvaw.exe"),
        (
            "<img src=x onerror=alert(1)>.wav",
            "<img src=x onerror=alert(1)>.wav",
        ),
    ];
    for (sent, expected) in cases {
        let (content_type, body) = raw_multipart(sent, &wav);
        let response = server
            .client
            .post(server.url("/api/files"))
            .bearer_auth(&admin)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{sent:?}");
        let id = body_json(response).await["id"].as_str().unwrap().to_owned();
        let (_, file) = server
            .call(Method::GET, &format!("/api/files/{id}"), &admin, None)
            .await;
        assert_eq!(file["filename"], expected, "{sent:?}");
        let media = server
            .client
            .get(server.url(&format!("/api/files/{id}/media")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(media.status(), 200);
        assert_safe_disposition(
            media
                .headers()
                .get("content-disposition")
                .unwrap()
                .to_str()
                .unwrap(),
        );
    }
    // Nothing was written outside the data dir's own layout.
    let root = server.data_dir.path();
    for path in crate::support::walk(root) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("evil") && !name.contains("img"),
            "{}",
            path.display()
        );
    }
    assert!(!root.parent().unwrap().join("etc").exists());

    // Renaming through JSON can carry any character: CR/LF, quotes, NUL, escapes.
    let (content_type, body) = raw_multipart("plain.wav", &wav);
    let created = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&admin)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let id = body_json(created).await["id"].as_str().unwrap().to_owned();
    let hostile =
        "a\"; filename=evil.sh\r\nX-Injected: yes\r\n\r\n<script>\u{0}\u{1b}[2J\u{2066}é.wav";
    let (status, renamed) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{id}"),
            &admin,
            Some(json!({"filename": hostile})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    let name = renamed["filename"].as_str().unwrap();
    assert!(
        !name
            .chars()
            .any(|c| c.is_control() || ('\u{2066}'..='\u{2069}').contains(&c)),
        "{name:?}"
    );
    for path in [
        format!("/api/files/{id}/media"),
        format!("/api/exports/zip?ids={id}&format=txt"),
    ] {
        let response = server
            .client
            .get(server.url(&path))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert!(response.headers().get("x-injected").is_none(), "{path}");
        if let Some(value) = response.headers().get("content-disposition") {
            assert_safe_disposition(value.to_str().unwrap());
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn markup_in_transcripts_and_speaker_names_is_escaped_in_subtitles() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let admin = server.admin().await;
    let (clip, _) = crate::asr::references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{}/{clip}.wav", crate::asr::LIBRIVOX)).unwrap();
    let created = body_json(server.upload(&admin, "<b>bold</b>\".wav", wav).await).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let done = server.wait_done(&admin, &id).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{id}/transcript"),
            &admin,
            None,
        )
        .await;
    let segment = transcript["segments"][0]["id"]
        .to_string()
        .trim_matches('"')
        .to_owned();
    let speaker = transcript["speakers"][0]["id"].as_str().unwrap().to_owned();
    let text = "<script>alert(1)</script> & <c.evil>x</c>\n\n99\n00:00:00,000 --> 00:09:00,000\nforged cue";
    let (status, edited) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{id}/segments/{segment}"),
            &admin,
            Some(json!({"text": text})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    let (status, named) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{id}/speakers/{speaker}"),
            &admin,
            Some(json!({"name": "Eve</v><b>&amp;"})),
        )
        .await;
    assert_eq!(status, 200, "{named}");
    let segments = transcript["segments"].as_array().unwrap().len();

    let export = |format: &'static str| {
        let url = server.url(&format!("/api/files/{id}/export?format={format}"));
        let client = server.client.clone();
        let admin = admin.clone();
        async move {
            let response = client.get(url).bearer_auth(admin).send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert_safe_disposition(
                response
                    .headers()
                    .get("content-disposition")
                    .unwrap()
                    .to_str()
                    .unwrap(),
            );
            response.text().await.unwrap()
        }
    };
    let vtt = export("vtt").await;
    assert!(
        !vtt.contains("<script>") && !vtt.contains("<b>") && !vtt.contains("<c.evil>"),
        "{vtt}"
    );
    assert!(
        vtt.contains("&lt;script&gt;alert(1)&lt;/script&gt; &amp;"),
        "{vtt}"
    );
    // The voice annotation cannot close the cue's voice span or open another tag.
    assert!(!vtt.contains("</v>"), "{vtt}");
    // An edit cannot forge cues: one timing line per segment in both formats.
    assert_eq!(vtt.matches("-->").count(), segments, "{vtt}");
    let srt = export("srt").await;
    assert_eq!(
        srt.lines().filter(|l| l.contains("-->")).count(),
        segments,
        "{srt}"
    );
    server.stop().await;
}

#[tokio::test]
async fn login_brute_force_from_one_address_is_throttled() {
    let server = TestServer::start_with(|c| {
        c.auth.login_ip_max_failures = 5;
        c.auth.login_lockout_secs = 60;
    })
    .await;
    server.admin().await;
    // A different (unknown) account each time: the per-account lockout never triggers.
    let mut throttled = None;
    for attempt in 0..8 {
        let response = server
            .login(&format!("guess{attempt}"), "wrong-password-1")
            .await;
        if response.status() == 429 {
            throttled = Some((attempt, response));
            break;
        }
        assert_eq!(response.status(), 401);
    }
    let (attempt, response) = throttled.expect("throttled after 5 failures");
    assert_eq!(attempt, 5);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Even the right password from that address waits.
    assert_eq!(server.login("admin", "admin-password").await.status(), 429);
    server.stop().await;
}

/// A ClientHello offering only `version` (no supported_versions extension) with the guide's
/// ECDHE AES-GCM suites and the extensions a TLS 1.2 server needs (SNI, groups, point formats,
/// signature algorithms): at `[3, 3]` it is a hello our server accepts.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut hello = Vec::new();
    hello.extend_from_slice(&version);
    hello.extend_from_slice(&[0x42; 32]);
    hello.push(0);
    let suites: [u16; 6] = [0xc02b, 0xc02c, 0xc02f, 0xc030, 0xc013, 0x002f];
    hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]);
    let host = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
    sni.extend_from_slice(host);
    let mut extensions = Vec::new();
    extension(&mut extensions, 0x0000, &sni);
    // supported_groups: x25519, secp256r1, secp384r1.
    extension(&mut extensions, 0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18]);
    // ec_point_formats: uncompressed.
    extension(&mut extensions, 0x000b, &[1, 0]);
    // signature_algorithms: ecdsa p256/p384 sha256/384, rsa-pss sha256, rsa pkcs1 sha256.
    extension(
        &mut extensions,
        0x000d,
        &[0, 10, 4, 3, 5, 3, 8, 4, 4, 1, 8, 9],
    );
    // extended_master_secret, renegotiation_info.
    extension(&mut extensions, 0x0017, &[]);
    extension(&mut extensions, 0xff01, &[0]);
    hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    hello.extend_from_slice(&extensions);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 3, 1];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test]
async fn tls_1_0_and_1_1_and_ssl3_client_hellos_are_refused() {
    let server = TestServer::start().await;
    for (name, version) in [
        ("SSL 3.0", [3, 0]),
        ("TLS 1.0", [3, 1]),
        ("TLS 1.1", [3, 2]),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(server.running().https_addr)
            .await
            .unwrap();
        tcp.write_all(&legacy_client_hello(version)).await.unwrap();
        let (got, closed) = read_until_closed(&mut tcp, Duration::from_secs(10)).await;
        assert!(closed.is_some(), "{name}: connection left open");
        // A fatal alert record, not a ServerHello (handshake record 0x16).
        assert!(got.len() >= 7, "{name}: {got:?}");
        assert_eq!(got[0], 0x15, "{name}: expected an alert, got {got:?}");
        assert_eq!(got[5], 2, "{name}: fatal");
        assert_eq!(got[6], 70, "{name}: protocol_version alert");
    }
    // The same hello at TLS 1.2 is answered with a ServerHello: the refusals above are about
    // the version alone.
    let mut tcp = tokio::net::TcpStream::connect(server.running().https_addr)
        .await
        .unwrap();
    tcp.write_all(&legacy_client_hello([3, 3])).await.unwrap();
    let mut head = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[0], 0x16, "a handshake record: {head:?}");
    assert_eq!(head[5], 2, "ServerHello: {head:?}");
    server.stop().await;
}
