//! Server-wide behaviour: TLS policy and reload, security headers, health, redirects, migration.

use std::sync::Arc;

use opentranscribe::http::headers::SECURITY_HEADERS;
use opentranscribe::store::records::{FileRecord, Role, UploadOptions, UserRecord};
use serde_json::Value;

use crate::support::{TestServer, client_for, client_tls, json};

fn assert_security_headers(response: &reqwest::Response) {
    let expected = [
        (
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        ),
        ("x-frame-options", "SAMEORIGIN"),
        ("x-content-type-options", "nosniff"),
        ("x-xss-protection", "0"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' ws: wss:; media-src 'self' blob:; worker-src 'self' blob:; frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'",
        ),
    ];
    for (name, value) in expected {
        assert_eq!(
            response.headers().get(name).map(|v| v.to_str().unwrap()),
            Some(value),
            "{name} on {}",
            response.url()
        );
    }
    let permissions = response.headers()["permissions-policy"].to_str().unwrap();
    assert!(permissions.starts_with("camera=(), microphone=(self)"));
    assert_eq!(SECURITY_HEADERS.len(), 7);
}

#[tokio::test]
async fn health_ready_and_headers_on_every_kind_of_response() {
    let server = TestServer::start().await;
    let health = server
        .client
        .get(server.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_security_headers(&health);
    assert!(health.headers().contains_key("x-request-id"));
    assert_eq!(json(health).await, serde_json::json!({"status": "ok"}));

    let ready = server
        .client
        .get(server.url("/api/ready"))
        .send()
        .await
        .unwrap();
    // No model cache in this data dir: not ready, and the failing check says why.
    assert_eq!(ready.status(), 503);
    assert_security_headers(&ready);
    let body = json(ready).await;
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["database", "blob_dir_writable", "disk_free", "models"]
    );
    assert_eq!(body["failing"], serde_json::json!(["models"]));

    let missing = server
        .client
        .get(server.url("/api/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_security_headers(&missing);
    assert_eq!(json(missing).await["code"], "not-found");

    let unauthorized = server
        .client
        .get(server.url("/api/files"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status(), 401);
    assert_security_headers(&unauthorized);
    assert_eq!(json(unauthorized).await["code"], "unauthorized");

    let page = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_security_headers(&page);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    server.stop().await;
}

#[tokio::test]
async fn ready_names_the_failing_check() {
    let server = TestServer::start_with(|c| c.storage.min_free_disk_mb = u64::MAX / 2).await;
    let ready = server
        .client
        .get(server.url("/api/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = json(ready).await;
    assert_eq!(body["code"], "not-ready");
    assert_eq!(body["failing"], serde_json::json!(["disk_free", "models"]));
    assert!(body["message"].as_str().unwrap().contains("disk_free"));
    server.stop().await;
}

#[tokio::test]
async fn ready_with_the_model_cache_in_place() {
    let server = TestServer::start_with(|c| c.models_dir = crate::models::models_dir()).await;
    let ready = server
        .client
        .get(server.url("/api/ready"))
        .send()
        .await
        .unwrap();
    let status = ready.status();
    let body = json(ready).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    server.stop().await;
}

#[tokio::test]
async fn plain_http_only_redirects_except_health() {
    let server = TestServer::start_with(|c| c.server.http_listen = "127.0.0.1:0".into()).await;
    let http_port = server.running().http_addr.unwrap().port();
    let https_port = server.running().https_addr.port();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = plain
        .get(format!("http://127.0.0.1:{http_port}/api/files?page=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 308);
    assert_eq!(
        response.headers()["location"],
        format!("https://127.0.0.1:{https_port}/api/files?page=2").as_str()
    );
    assert_security_headers(&response);
    let health = plain
        .get(format!("http://127.0.0.1:{http_port}/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Credentials sent over plain HTTP are never processed.
    let login = plain
        .post(format!("http://127.0.0.1:{http_port}/api/auth/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 308);
    server.stop().await;
}

#[tokio::test]
async fn tls12_with_the_guides_suites_and_certificate_reload() {
    let server = TestServer::start().await;
    let running = server.running();
    // The self-signed certificate and its key live in the data dir with tight modes.
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(&running.key_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o600);
    assert_eq!(running.fingerprint.len(), 32 * 3 - 1);

    let tls12 = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(&running.cert_path, true))
        .build()
        .unwrap();
    let response = tls12.get(server.url("/api/health")).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A TLS 1.2 client offering only a suite outside the guide's list is refused.
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    };
    let roots = {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&running.cert_path).unwrap();
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    };
    let chacha_only = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let refused = reqwest::Client::builder()
        .tls_backend_preconfigured(chacha_only)
        .build()
        .unwrap()
        .get(server.url("/api/health"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a TLS 1.2 ChaCha20-only client must be refused"
    );

    // Reload: a new certificate replaces the old one for new connections.
    let other_dir = tempfile::tempdir().unwrap();
    let (new_cert, new_key) =
        opentranscribe::http::tls::ensure_self_signed(other_dir.path()).unwrap();
    let new_client = client_for(&new_cert);
    assert!(
        new_client
            .get(server.url("/api/health"))
            .send()
            .await
            .is_err()
    );
    std::fs::copy(&new_cert, &running.cert_path).unwrap();
    std::fs::copy(&new_key, &running.key_path).unwrap();
    running.reload_tls().unwrap();
    let after = new_client
        .get(server.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
    // A broken certificate file is refused and the current one stays in force.
    std::fs::write(&running.cert_path, b"garbage").unwrap();
    assert!(running.reload_tls().is_err());
    let still = new_client
        .get(server.url("/api/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(still.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn version_1_database_is_migrated_and_served() {
    let data_dir = tempfile::tempdir().unwrap();
    let hash = opentranscribe::auth::password::hash_password("old-password").unwrap();
    let user = UserRecord {
        id: "u1".into(),
        username: "veteran".into(),
        password_hash: hash,
        role: Role::Admin,
        disabled: false,
        created_at: 1_700_000_000,
        totp: None,
        directory: None,
    };
    let file = |id: &str| FileRecord {
        id: id.into(),
        owner_id: "u1".into(),
        filename: format!("{id}.wav"),
        size: 3,
        sha256: "ab".repeat(32),
        media_type: "audio/wav".into(),
        status: opentranscribe::store::records::FileStatus::Completed,
        progress: 1.0,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
        options: UploadOptions::default(),
        error: None,
        duration_secs: Some(1.0),
        container: None,
        codec: None,
        tags: Vec::new(),
        media_deleted_at: None,
    };
    let db_path = data_dir.path().join("opentranscribe.redb");
    let mut waiting = file("f2");
    waiting.status = opentranscribe::store::records::FileStatus::Queued;
    opentranscribe::store::write_v1_fixture(&db_path, &[user], &[file("f1"), waiting]).unwrap();

    let server = TestServer::start_in(data_dir, |c| c.jobs.workers = 0).await;
    let store = &server.running().state.store;
    assert_eq!(store.schema_version().unwrap(), 4);
    // v4 indexed both by name: the store pages them in name order without a sort.
    let (page, total) = store
        .page_own_files(
            "u1",
            opentranscribe::store::file_order::FileOrder::Name,
            true,
            0,
            10,
        )
        .unwrap();
    assert_eq!(total, 2);
    let names: Vec<_> = page.iter().map(|f| f.filename.as_str()).collect();
    assert_eq!(names, ["f2.wav", "f1.wav"]);
    // v3 gave the file that was still waiting a queued job, and none to the finished one.
    assert_eq!(
        store.get_job("f2").unwrap().unwrap().state.as_str(),
        "queued"
    );
    assert!(store.get_job("f1").unwrap().is_none());
    // The derived reference count makes both files keep the shared blob.
    assert_eq!(
        server
            .running()
            .state
            .store
            .blob_ref_count(&"ab".repeat(32))
            .unwrap(),
        2
    );
    let token = server.token("veteran", "old-password").await;
    let list: Value = json(
        server
            .client
            .get(server.url("/api/files?sort=name"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["filename"], "f1.wav");
    assert_eq!(list["items"][0]["status"], "completed");
    assert_eq!(list["items"][1]["status"], "queued");
    server.stop().await;
}

#[tokio::test]
async fn orphan_blobs_and_temp_files_are_swept_at_start() {
    let data_dir = tempfile::tempdir().unwrap();
    let blobs =
        opentranscribe::blobs::BlobStore::open(&data_dir.path().join("blobs"), None).unwrap();
    let mut writer = blobs.begin_write().unwrap();
    std::io::Write::write_all(&mut writer, b"orphaned by a crash").unwrap();
    let orphan = writer.finish().unwrap();
    std::fs::write(data_dir.path().join("blobs/tmp/left.tmp"), b"partial").unwrap();
    assert!(blobs.exists(&orphan.sha256));
    let server = TestServer::start_in(data_dir, |_| {}).await;
    assert!(!server.running().state.blobs.exists(&orphan.sha256));
    assert!(server.temp_files().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn metrics_for_localhost_by_default_and_only_admins_when_configured() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    // A request for a concrete file id is counted under its route pattern.
    let (status, _) = server
        .call(
            reqwest::Method::GET,
            "/api/files/no-such-file",
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 404);
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "localhost reads without signing in");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("route=\"/api/files/{id}\",status=\"404\""),
        "{text}"
    );
    assert!(
        !text.contains("no-such-file"),
        "paths with ids never become labels"
    );
    assert!(text.contains("opentranscribe_queue_depth 0"), "{text}");
    assert!(
        text.contains("opentranscribe_jobs{state=\"queued\"} 0"),
        "{text}"
    );
    server.stop().await;

    let server = TestServer::start_with(|c| c.metrics.allow = "admins".to_owned()).await;
    let admin = server.admin().await;
    let user = server.user(&admin, "someone").await;
    let anonymous = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 404);
    let (status, _) = server
        .call(reqwest::Method::GET, "/metrics", &user, None)
        .await;
    assert_eq!(status, 404, "a normal user does not see metrics");
    let response = server
        .client
        .get(server.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn admin_status_reports_for_admins_only() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let user = server.user(&admin, "someone").await;
    let (status, report) = server
        .call(reqwest::Method::GET, "/api/admin/status", &admin, None)
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["version"], env!("CARGO_PKG_VERSION"));
    assert!(report["uptime_secs"].is_u64());
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "database")
    );
    assert!(report["disk"]["free_bytes"].as_u64().unwrap() > 0);
    let (status, _) = server
        .call(reqwest::Method::GET, "/api/admin/status", &user, None)
        .await;
    assert_eq!(status, 403);
    server.stop().await;
}

#[tokio::test]
async fn admins_cancel_and_retry_anyones_job_from_the_queue() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let admin = server.admin().await;
    let user = server.user(&admin, "someone").await;
    let wav = crate::support::sine_wav(1.0, 16_000, 440.0);
    let created = crate::support::json(server.upload(&user, "tone.wav", wav).await).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, queue) = server
        .call(reqwest::Method::GET, "/api/admin/jobs", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(queue["items"][0]["filename"], "tone.wav");
    assert_eq!(queue["items"][0]["owner_username"], "someone");
    let path = format!("/api/admin/jobs/{id}/cancel");
    assert_eq!(
        server
            .call(reqwest::Method::POST, &path, &user, None)
            .await
            .0,
        403
    );
    let (status, body) = server
        .call(reqwest::Method::POST, &path, &admin, None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, body) = server
        .call(
            reqwest::Method::POST,
            &format!("/api/admin/jobs/{id}/retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(
        server
            .call(
                reqwest::Method::POST,
                "/api/admin/jobs/no-such-file/retry",
                &admin,
                None
            )
            .await
            .0,
        404
    );
    server.stop().await;
}
