//! Application state: what every request handler, worker and service shares (config, store,
//! blobs, throttle, jobs, search), and `blocking()`, the one way async code runs blocking work.
//! Start-up and shutdown (the composition root) live in `daemon.rs`, which may import anything.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::throttle::LoginThrottle;
use crate::blobs::BlobStore;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::store::Store;

/// Everything a request handler needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub blobs: BlobStore,
    pub throttle: Arc<LoginThrottle>,
    pub jobs: crate::jobs::Jobs,
    pub started_at: Instant,
    /// The time every expiry, lockout, lease and retention rule reads (tests move it).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The search index (`None` only if it could not be opened; search then answers 503).
    pub search: Option<Arc<crate::search::SearchService>>,
    /// Where changed files are queued for reindexing, once the indexer runs.
    pub index_queue: Arc<std::sync::OnceLock<crate::indexer::IndexQueue>>,
    /// The site's language model (`[llm]`), `None` when it is not configured.
    pub llm: Option<Arc<crate::llm::Llm>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Runs blocking work (redb, hashing, file I/O) on the blocking pool, never on the executor.
/// The work's own error (a store or blob error) becomes the service's `Error` here.
pub async fn blocking<T, E, F>(work: F) -> Result<T>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    Error: From<E>,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal("internal", format!("blocking task failed: {e}")))?
        .map_err(Error::from)
}

use crate::fsutil::create_private_dir;

impl AppState {
    /// Files whose searchable content or readers changed (edits, tags, sharing). The search
    /// index re-reads them; until search lands this only logs.
    pub fn files_changed(&self, file_ids: Vec<String>) {
        if let Some(queue) = self.index_queue.get() {
            queue.push(file_ids);
        }
    }

    /// Opens the data directory: database (migrated), blob store (orphans swept).
    pub fn open(config: Config) -> Result<Self> {
        Self::open_with_clock(config, Arc::new(crate::clock::SystemClock))
    }

    /// [`Self::open`] with the clock given (tests pass a `ManualClock`).
    pub fn open_with_clock(config: Config, clock: Arc<dyn crate::clock::Clock>) -> Result<Self> {
        create_private_dir(&config.data_dir).map_err(|e| {
            Error::internal(
                "internal",
                format!("cannot create data dir {}: {e}", config.data_dir.display()),
            )
        })?;
        let store = Store::open(&config.db_path())?;
        let key_file: Option<PathBuf> = config
            .storage
            .encrypt_at_rest
            .then(|| config.secrets_dir().join("blob.key"));
        let blobs = BlobStore::open(&config.blob_dir(), key_file.as_deref())
            .map_err(|e| Error::internal(e.code(), e))?;
        let referenced = store.referenced_blobs()?;
        // At start-up no upload can be in flight (redb's lock keeps one daemon per data dir),
        // so every temp file is left over from a crash.
        let report = blobs
            .sweep(&referenced, Duration::from_secs(0))
            .map_err(|e| Error::internal(e.code(), e))?;
        tracing::info!(?report, "blob sweep done");
        let throttle = Arc::new(
            LoginThrottle::new(
                config.auth.login_max_failures,
                config.auth.login_ip_max_failures,
                Duration::from_secs(config.auth.login_lockout_secs),
            )
            .with_hash_concurrency(config.auth.password_hash_concurrency),
        );
        // A key file that is not 0600 stops the start, like the webhook secret.
        let llm = crate::llm::Llm::from_config(&config.llm)
            .map_err(|e| Error::new("llm-key-file", e))?
            .map(Arc::new);
        // Summary runs left `running` by the last shutdown start again (or end in `error`
        // without a model) once the daemon runs: `services::llm::spawn_follow_on`.
        if let Some(llm) = &llm {
            tracing::info!(base_url = %llm.config.base_url, model = %llm.config.model, "language model configured");
        }
        let search = match crate::indexer::open(&config) {
            Ok(search) => Some(Arc::new(search)),
            Err(e) => {
                tracing::error!(error = %e, "search index unavailable; search answers 503");
                None
            }
        };
        Ok(Self {
            config: Arc::new(config),
            store,
            blobs,
            throttle,
            jobs: crate::jobs::Jobs::new(),
            started_at: Instant::now(),
            clock,
            search,
            index_queue: Arc::new(std::sync::OnceLock::new()),
            llm,
        })
    }
}
