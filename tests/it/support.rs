//! Starting a real server on a temporary data dir and talking to it over TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use opentranscribe::config::Config;
use opentranscribe::daemon::{RunningServer, start_with_clock};
use serde_json::{Value, json};

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub data_dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
}

/// A rustls client config that trusts exactly the certificate in `cert_path`.
pub fn client_tls(cert_path: &Path, tls12_only: bool) -> rustls::ClientConfig {
    opentranscribe::http::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(cert_path).unwrap();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

pub fn client_for(cert_path: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(cert_path, false))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A client that speaks HTTP/2 only (ALPN `h2`): every request multiplexed on one connection.
pub fn h2_client(cert_path: &Path) -> reqwest::Client {
    let mut tls = client_tls(cert_path, false);
    tls.alpn_protocols = vec![b"h2".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        Self::start_in(data_dir, customize).await
    }

    pub async fn start_in(
        data_dir: tempfile::TempDir,
        customize: impl FnOnce(&mut Config),
    ) -> Self {
        Self::start_on_clock(
            data_dir,
            customize,
            Arc::new(opentranscribe::clock::SystemClock),
        )
        .await
    }

    /// A server whose time the test controls (`ManualClock::advance`), so expiry and
    /// lockouts are tested without sleeping.
    pub async fn start_on_clock(
        data_dir: tempfile::TempDir,
        customize: impl FnOnce(&mut Config),
        clock: Arc<dyn opentranscribe::clock::Clock>,
    ) -> Self {
        let mut config = Config {
            data_dir: data_dir.path().to_path_buf(),
            models_dir: data_dir.path().join("models"),
            ..Config::default()
        };
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.storage.min_free_disk_mb = 1;
        customize(&mut config);
        let server = start_with_clock(config, clock)
            .await
            .expect("server starts");
        let base = format!("https://localhost:{}", server.https_addr.port());
        let client = client_for(&server.cert_path);
        Self {
            server: Some(server),
            data_dir,
            base,
            client,
        }
    }

    pub fn running(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.path().join("blobs")
    }

    /// Blob files (not temp files) currently on disk.
    pub fn blob_files(&self) -> Vec<PathBuf> {
        walk(&self.blob_dir())
            .into_iter()
            .filter(|p| !p.starts_with(self.blob_dir().join("tmp")))
            .collect()
    }

    pub fn temp_files(&self) -> Vec<PathBuf> {
        walk(&self.blob_dir().join("tmp"))
    }

    pub async fn register(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/auth/register"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    pub async fn login(&self, username: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap()
    }

    /// Logs in and returns the bearer token.
    pub async fn token(&self, username: &str, password: &str) -> String {
        let response = self.login(username, password).await;
        assert_eq!(response.status(), 200, "login of {username}");
        let body: Value = response.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Registers the first user (admin) and returns its bearer token.
    pub async fn admin(&self) -> String {
        assert_eq!(self.register("admin", "admin-password").await.status(), 201);
        self.token("admin", "admin-password").await
    }

    /// Creates a normal user through the admin API and returns its bearer token.
    pub async fn user(&self, admin_token: &str, username: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/admin/users"))
            .bearer_auth(admin_token)
            .json(&json!({"username": username, "password": "user-password", "role": "user"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        self.token(username, "user-password").await
    }

    pub async fn upload(&self, token: &str, filename: &str, bytes: Vec<u8>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(filename.to_owned());
        let form = reqwest::multipart::Form::new()
            .text("language", "en")
            .part("file", part);
        self.client
            .post(self.url("/api/files"))
            .bearer_auth(token)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    /// One JSON API call with a bearer token: the status and the body (`null` when empty or
    /// not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Polls a file until its status is one of the final ones and returns the file.
    pub async fn wait_done(&self, token: &str, file_id: &str) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let (status, file) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/files/{file_id}"),
                    token,
                    None,
                )
                .await;
            assert_eq!(status, 200, "{file}");
            if ["completed", "error", "cancelled"].contains(&file["status"].as_str().unwrap()) {
                return file;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "file never finished: {file}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
    }

    /// Stops the server and hands back its data dir, to start another server on it.
    pub async fn stop_keep(mut self) -> tempfile::TempDir {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let placeholder = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.data_dir, placeholder)
    }
}

pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A 16-bit mono PCM WAV of a sine tone.
pub fn sine_wav(seconds: f32, sample_rate: u32, frequency: f32) -> Vec<u8> {
    let n_samples = (seconds * sample_rate as f32) as u32;
    let data_len = n_samples * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..n_samples {
        let t = i as f32 / sample_rate as f32;
        let value = (t * frequency * std::f32::consts::TAU).sin() * 0.5 * i16::MAX as f32;
        out.extend_from_slice(&(value as i16).to_le_bytes());
    }
    out
}

pub async fn json(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}
