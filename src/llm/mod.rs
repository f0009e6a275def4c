//! The site's own language model, reached over its OpenAI-compatible API
//! (`POST {base_url}/chat/completions`, `GET {base_url}/models`): a client with a timeout per
//! request, a bounded answer size and errors that say what went wrong. `text` holds the pure
//! parts: transcript chunking by speaker turns, prompts and the parsing of model output.

pub mod text;

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::config::LlmConfig;

/// Most bytes read from one answer of the model server.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Requests to the model server in flight at once, across all users.
const MAX_IN_FLIGHT: usize = 2;
/// How long a readiness probe's answer is reused.
const PROBE_CACHE: Duration = Duration::from_secs(10);
/// Seconds a readiness probe may take (it never holds `/api/ready` for the full timeout).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request to the model server failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LlmError {
    #[error("the language model server did not answer within {0} s (llm.timeout_secs)")]
    Timeout(u64),
    #[error("cannot reach the language model server at {url}: {detail}")]
    Connect { url: String, detail: String },
    #[error("the language model server answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the language model server's answer is not usable: {0}")]
    BadAnswer(String),
}

impl LlmError {
    /// The error code the API answers with.
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Timeout(_) => "llm-timeout",
            LlmError::Connect { .. } | LlmError::Status { .. } => "llm-unavailable",
            LlmError::BadAnswer(_) => "llm-bad-output",
        }
    }
}

/// What `/api/ready` and `doctor` say about the model server.
#[derive(Debug, Clone, Serialize)]
pub struct LlmStatus {
    pub configured: bool,
    pub reachable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    pub detail: String,
}

impl LlmStatus {
    pub fn not_configured() -> Self {
        Self {
            configured: false,
            reachable: false,
            model: None,
            base_url: None,
            detail: "no language model configured ([llm] enabled = false)".to_owned(),
        }
    }
}

/// The client for one configured model server.
pub struct Llm {
    client: reqwest::Client,
    pub config: LlmConfig,
    key: Option<String>,
    permits: Semaphore,
    in_flight: AtomicUsize,
    probe: Mutex<Option<(Instant, LlmStatus)>>,
    /// Summary runs in the background; the daemon's shutdown stops them (a run cut so stays
    /// `running` in the store and starts again at the next start).
    runs: tokio_util::task::TaskTracker,
    stopping: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Llm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llm")
            .field("base_url", &self.config.base_url)
            .field("model", &self.config.model)
            .finish_non_exhaustive()
    }
}

/// A message of a chat request.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub role: &'static str,
    pub content: String,
}

impl Llm {
    /// The client for `[llm]`, or `None` when it is off. A key file that is not 0600 (or
    /// unreadable) is an error: the daemon refuses to start.
    pub fn from_config(config: &LlmConfig) -> Result<Option<Self>, String> {
        if !config.enabled {
            return Ok(None);
        }
        let key = config.read_key().map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            .connect_timeout(Duration::from_secs(config.timeout_secs.min(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("OpenTranscribe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("language model client: {e}"))?;
        Ok(Some(Self {
            client,
            config: config.clone(),
            key,
            permits: Semaphore::new(MAX_IN_FLIGHT),
            in_flight: AtomicUsize::new(0),
            probe: Mutex::new(None),
            runs: tokio_util::task::TaskTracker::new(),
            stopping: tokio_util::sync::CancellationToken::new(),
        }))
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    /// Runs `run` in the background until it ends or the daemon stops ([`Self::stop_runs`]).
    pub fn spawn_run(&self, run: impl std::future::Future<Output = ()> + Send + 'static) {
        let stopping = self.stopping.clone();
        self.runs.spawn(async move {
            tokio::select! {
                _ = stopping.cancelled() => {}
                _ = run => {}
            }
        });
    }

    /// Stops the background runs and waits until they have let go of everything they held.
    pub async fn stop_runs(&self) {
        self.stopping.cancel();
        self.runs.close();
        self.runs.wait().await;
    }

    /// Summary runs and questions under way (tests wait for zero).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Counts a piece of work as under way until the guard drops.
    pub fn track(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    /// One chat completion: the model's text. At most [`MAX_IN_FLIGHT`] requests run at once;
    /// each is bounded by `llm.timeout_secs`.
    pub async fn chat(&self, messages: &[Message], max_tokens: usize) -> Result<String, LlmError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| LlmError::Connect {
                url: self.config.base_url.clone(),
                detail: "shutting down".to_owned(),
            })?;
        let body = json!({
            "model": self.config.model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.2,
            "stream": false,
        });
        let mut request = self.client.post(self.url("chat/completions")).json(&body);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let timeout = self.config.timeout_secs;
        // The client's own timeout covers the whole exchange; this one also bounds a server
        // that sends headers and then dribbles its body.
        let exchange = async {
            let response = request.send().await.map_err(|e| self.describe(e))?;
            let status = response.status();
            let bytes = read_bounded(response).await.map_err(|e| self.describe(e))?;
            Ok::<_, LlmError>((status, bytes))
        };
        let (status, bytes) =
            match tokio::time::timeout(Duration::from_secs(timeout), exchange).await {
                Ok(result) => result?,
                Err(_) => return Err(LlmError::Timeout(timeout)),
            };
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: text.chars().take(200).collect(),
            });
        }
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| LlmError::BadAnswer(format!("not a chat completion (JSON: {e})")))?;
        value["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                LlmError::BadAnswer("no choices[0].message.content in the answer".to_owned())
            })
    }

    fn describe(&self, error: reqwest::Error) -> LlmError {
        if error.is_timeout() {
            LlmError::Timeout(self.config.timeout_secs)
        } else {
            LlmError::Connect {
                url: self.config.base_url.clone(),
                detail: error.to_string(),
            }
        }
    }

    /// Whether the server answers `GET {base_url}/models` (cached for a few seconds).
    pub async fn status(&self) -> LlmStatus {
        if let Some((at, status)) = self.probe.lock().unwrap_or_else(|e| e.into_inner()).clone()
            && at.elapsed() < PROBE_CACHE
        {
            return status;
        }
        let mut request = self.client.get(self.url("models")).timeout(PROBE_TIMEOUT);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let (reachable, detail) = match request.send().await {
            Ok(response) if response.status().is_success() => (true, "ok".to_owned()),
            Ok(response) => (false, format!("GET /models answered {}", response.status())),
            Err(e) if e.is_timeout() => (false, "GET /models timed out".to_owned()),
            Err(e) => (false, format!("cannot connect: {e}")),
        };
        let status = LlmStatus {
            configured: true,
            reachable,
            model: Some(self.config.model.clone()),
            base_url: Some(self.config.base_url.clone()),
            detail,
        };
        *self.probe.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), status.clone()));
        status
    }
}

/// Decrements the in-flight count when dropped.
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    Ok(out)
}
