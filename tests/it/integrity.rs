//! The direct (non-race) findings of the integrity and security review: credentials that must
//! end together, throttled password changes, over-limit bodies that still get an answer,
//! HTTP/2 held to the same timeouts as HTTP/1.1, and ZIP exports of repeated ids.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestServer, json as body_json};

async fn new_api_token(server: &TestServer, auth: &str) -> String {
    let (status, created) = server
        .call(
            Method::POST,
            "/api/auth/tokens",
            auth,
            Some(json!({"name": "script"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    created["token"].as_str().unwrap().to_owned()
}

async fn user_id(server: &TestServer, admin: &str, name: &str) -> String {
    let (_, users) = server
        .call(Method::GET, "/api/admin/users", admin, None)
        .await;
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

async fn works(server: &TestServer, credential: &str) -> bool {
    server
        .call(Method::GET, "/api/auth/me", credential, None)
        .await
        .0
        == 200
}

/// Finding 6: API tokens end with a password change, a password reset, "sign out everywhere",
/// and when the account is disabled.
#[tokio::test]
async fn api_tokens_end_with_password_change_reset_logout_everywhere_and_disable() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let session = server.user(&admin, "erin").await;
    let id = user_id(&server, &admin, "erin").await;

    // Password change: the caller's own session stays, other sessions and every token end.
    let token = new_api_token(&server, &session).await;
    let other_session = server.token("erin", "user-password").await;
    assert!(works(&server, &token).await);
    let (status, _) = server
        .call(
            Method::POST,
            "/api/auth/password",
            &session,
            Some(json!({"current_password": "user-password", "new_password": "second-password"})),
        )
        .await;
    assert_eq!(status, 204);
    assert!(
        !works(&server, &token).await,
        "token survived a password change"
    );
    assert!(!works(&server, &other_session).await);
    assert!(
        works(&server, &session).await,
        "the caller's own session stays"
    );
    let (_, tokens) = server
        .call(Method::GET, "/api/auth/tokens", &session, None)
        .await;
    assert_eq!(tokens, json!([]));

    // Admin reset: everything ends.
    let token = new_api_token(&server, &session).await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/admin/users/{id}/password"),
            &admin,
            Some(json!({"password": "third-password"})),
        )
        .await;
    assert_eq!(status, 204);
    assert!(
        !works(&server, &token).await,
        "token survived a password reset"
    );
    assert!(!works(&server, &session).await);

    // Sign out everywhere: sessions and tokens.
    let session = server.token("erin", "third-password").await;
    let token = new_api_token(&server, &session).await;
    let (status, _) = server
        .call(Method::POST, "/api/auth/logout-all", &token, None)
        .await;
    assert_eq!(status, 204);
    assert!(!works(&server, &token).await, "token survived logout-all");
    assert!(!works(&server, &session).await);

    // Disable: all at once, and re-enabling brings none of it back.
    let session = server.token("erin", "third-password").await;
    let token = new_api_token(&server, &session).await;
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!works(&server, &token).await, "token survived a disable");
    assert!(
        !works(&server, &session).await,
        "session survived a disable"
    );
}

/// Finding 10: wrong current passwords on `POST /api/auth/password` are throttled like
/// sign-ins, with a token as well as a session; after the limit even the right one waits.
#[tokio::test]
async fn password_change_is_throttled() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let session = server.user(&admin, "frank").await;
    let token = new_api_token(&server, &session).await;
    let limit = server.running().state.config.auth.login_max_failures as usize;
    let mut statuses = Vec::new();
    for _ in 0..limit + 3 {
        let (status, body) = server
            .call(
                Method::POST,
                "/api/auth/password",
                &token,
                Some(json!({"current_password": "guess", "new_password": "whatever-password"})),
            )
            .await;
        if status == 429 {
            assert_eq!(body["code"], "too-many-attempts");
        }
        statuses.push(status);
    }
    assert_eq!(
        &statuses[..limit],
        vec![401; limit].as_slice(),
        "{statuses:?}"
    );
    assert!(statuses[limit..].iter().all(|s| *s == 429), "{statuses:?}");
    let (status, _) = server
        .call(
            Method::POST,
            "/api/auth/password",
            &session,
            Some(json!({"current_password": "user-password", "new_password": "whatever-password"})),
        )
        .await;
    assert_eq!(status, 429, "the right password during the lockout");
}

/// Finding 11: an over-limit JSON body gets its 413 with the JSON error, not a cut connection,
/// however large (within the drain limit) and however often.
#[tokio::test]
async fn over_limit_json_bodies_get_a_413_answer() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let _admin = server.admin().await;
    let h2 = crate::support::h2_client(&server.running().cert_path);
    for (client, size) in [
        (&server.client, 2usize << 20),
        (&server.client, 20 << 20),
        (&h2, 2 << 20),
        (&h2, 20 << 20),
    ] {
        let body = format!(
            "{{\"username\":\"admin\",\"password\":\"{}\"}}",
            "x".repeat(size)
        );
        for round in 0..5 {
            let response = client
                .post(server.url("/api/auth/login"))
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{size} bytes, round {round}: no answer: {e:?}"));
            assert_eq!(response.status(), 413, "{size} bytes, round {round}");
            assert_eq!(body_json(response).await["code"], "payload-too-large");
        }
    }
}

/// Finding 8: over HTTP/2, a JSON body is held to `server.body_timeout_secs` as over HTTP/1.1
/// (a stream with no Content-Length used to skip the limit and be answered 201).
#[tokio::test]
async fn http2_bodies_are_held_to_the_body_timeout() {
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        c.server.body_timeout_secs = 2;
    })
    .await;
    let admin = server.admin().await;
    let client = crate::support::h2_client(&server.running().cert_path);
    let pieces: Vec<&'static [u8]> = vec![b"{\"name\":", b"\"slow", b" collection\"", b"}"];
    let slow =
        futures_util::StreamExt::then(futures_util::stream::iter(pieces), |piece| async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            Ok::<_, std::io::Error>(piece.to_vec())
        });
    let started = Instant::now();
    let response = client
        .post(server.url("/api/collections"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 408, "after {:?}", started.elapsed());
    assert_eq!(body_json(response).await["code"], "request-timeout");
    let (_, collections) = server
        .call(Method::GET, "/api/collections", &admin, None)
        .await;
    assert_eq!(
        collections["collections"],
        json!([]),
        "the slow body was acted on"
    );

    // A quick body over HTTP/2 still works.
    let response = client
        .post(server.url("/api/collections"))
        .bearer_auth(&admin)
        .json(&json!({"name": "quick"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(response.status(), 201);
}

/// Finding 9: a ZIP export names each file once however often it is repeated, and refuses
/// more than 500 files with 413.
#[tokio::test]
async fn zip_export_takes_each_file_once_and_caps_the_count() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        c.jobs.beam_size = 1;
    })
    .await;
    let admin = server.admin().await;
    let (id, _) = crate::asr::references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{}/{id}.wav", crate::asr::LIBRIVOX)).unwrap();
    let created = body_json(server.upload(&admin, "talk.wav", wav).await).await;
    let file = created["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&admin, &file).await["status"], "completed");

    let repeated = vec![file.as_str(); 500].join(",");
    let response = server
        .client
        .get(server.url(&format!("/api/exports/zip?ids={repeated}&format=txt")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.bytes().await.unwrap();
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert_eq!(archive.len(), 1, "one entry per distinct file");

    let many: Vec<String> = (0..501).map(|n| format!("{n:08}")).collect();
    let (status, body): (u16, Value) = server
        .call(
            Method::GET,
            &format!("/api/exports/zip?ids={}&format=txt", many.join(",")),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload-too-large");
}

/// Finding 8, headers: an HTTP/2 connection that starts no request (or never finishes a header
/// block) is closed after `server.header_timeout_secs`, as an HTTP/1.1 one is; a connection
/// in use is not.
#[tokio::test]
async fn http2_connections_are_held_to_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        c.server.header_timeout_secs = 2;
    })
    .await;
    let connect = || async {
        let mut config = crate::support::client_tls(&server.running().cert_path, false);
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.running().https_addr)
            .await
            .unwrap();
        let tls = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls
    };
    // The connection preface and an empty SETTINGS frame, then: nothing, or the start of a
    // HEADERS frame (stream 1, no END_HEADERS) whose block never completes.
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    let partial_headers: &[u8] = b"\x00\x00\x10\x01\x00\x00\x00\x00\x01\x82\x87";
    for (what, extra) in [
        ("idle", &b""[..]),
        ("unfinished header block", partial_headers),
    ] {
        let mut stream = connect().await;
        stream.write_all(preface).await.unwrap();
        stream.write_all(extra).await.unwrap();
        stream.flush().await.unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Err(_) => break None,
                Ok(Ok(0)) | Ok(Err(_)) => break Some(started.elapsed()),
                Ok(Ok(_)) => {}
            }
        };
        let closed =
            closed.unwrap_or_else(|| panic!("{what} HTTP/2 connection still open after 10 s"));
        assert!(closed >= Duration::from_millis(1500), "{what}: {closed:?}");
    }

    // A connection busy with a slow request is not cut at the header timeout; it is closed
    // once it has been idle for that long after the answer.
    let admin = server.admin().await;
    let client = crate::support::h2_client(&server.running().cert_path);
    let pieces: Vec<&'static [u8]> = vec![b"{\"name\":", b"\"kept\"", b"}"];
    let slow =
        futures_util::StreamExt::then(futures_util::stream::iter(pieces), |piece| async move {
            tokio::time::sleep(Duration::from_millis(900)).await;
            Ok::<_, std::io::Error>(piece.to_vec())
        });
    let response = client
        .post(server.url("/api/collections"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(slow))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 201);
}

/// Finding 11 as a plain client sees it (curl's order): the whole over-limit body is sent, then
/// the answer is read. The server must still answer 413, not reset the connection.
#[tokio::test]
async fn over_limit_body_sent_whole_before_reading_still_gets_its_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    for size in [2usize << 20, 20 << 20] {
        let config = crate::support::client_tls(&server.running().cert_path, false);
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(server.running().https_addr)
            .await
            .unwrap();
        let mut stream = connector
            .connect("localhost".try_into().unwrap(), tcp)
            .await
            .unwrap();
        let head = format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < size {
            let n = chunk.len().min(size - sent);
            if stream.write_all(&chunk[..n]).await.is_err() {
                break;
            }
            sent += n;
        }
        let _ = stream.flush().await;
        let mut answer = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with("HTTP/1.1 413"),
            "{size} bytes ({sent} sent): read {read:?}, answer {text:?}"
        );
        assert!(text.contains("payload-too-large"), "{text}");
    }
}

/// Finding 11 with the client that found it: curl over HTTP/2 (and HTTP/1.1) sending a 2 MB
/// and a 20 MB JSON body. Before the fix, curl reported no answer at all over HTTP/2 ("000"):
/// the stream was reset before the 413 was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_gets_the_413_for_an_over_limit_json_body() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let dir = tempfile::tempdir().unwrap();
    for size in [2usize << 20, 20 << 20] {
        let body = dir.path().join(format!("{size}.json"));
        std::fs::write(
            &body,
            format!(
                "{{\"username\":\"a\",\"password\":\"{}\"}}",
                "x".repeat(size)
            ),
        )
        .unwrap();
        for version in ["--http2", "--http1.1"] {
            let output = tokio::process::Command::new("curl")
                .args(["-s", version, "--cacert"])
                .arg(&server.running().cert_path)
                .args(["-H", "content-type: application/json", "--data-binary"])
                .arg(format!("@{}", body.display()))
                .args(["-w", "\n%{http_code} %{http_version}"])
                .arg(server.url("/api/auth/login"))
                .output()
                .await
                .expect("curl runs (scripts/test installs it)");
            let text = String::from_utf8_lossy(&output.stdout);
            let last = text.lines().last().unwrap_or_default().to_owned();
            assert!(
                last.starts_with("413 "),
                "{size} bytes, curl {version}: {last:?} (stderr {})",
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(text.contains("payload-too-large"), "{text}");
        }
    }
}
