//! The daemon's composition root: start-up (directories, database, blob store, TLS, the
//! servers, workers, watch folder, indexer, admin socket, housekeeping) and shutdown (signals,
//! sd_notify, graceful stop). The only module besides `cli` that may import every layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppState, blocking};
use crate::config::Config;
use crate::error::{Error, Result};

/// A server started by [`start`]; tests hold it, `serve` waits on it.
#[derive(Debug)]
pub struct RunningServer {
    pub https_addr: SocketAddr,
    pub http_addr: Option<SocketAddr>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub fingerprint: String,
    /// The local admin socket (`status`, online `backup`), if its path fits a unix socket.
    pub admin_socket: Option<PathBuf>,
    pub state: AppState,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    tls: axum_server::tls_rustls::RustlsConfig,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Reloads the certificate and key from disk; connections already open keep theirs.
    pub fn reload_tls(&self) -> Result<()> {
        let config = crate::http::tls::load_server_config(&self.cert_path, &self.key_path)
            .map_err(|e| Error::internal(e.code(), e))?;
        self.tls.reload_from_config(config);
        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
        Ok(())
    }

    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Asks the servers to stop and waits until in-flight requests finished or the grace ended.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.wait().await;
    }

    /// Waits until something else cancelled the shutdown token and everything stopped.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.state.jobs.wake.notify();
        self.tracker.close();
        self.tracker.wait().await;
        if let Some(llm) = &self.state.llm {
            llm.stop_runs().await;
        }
        // Workers notice the token between chunks (at most seconds) and requeue their job.
        let workers = self.workers;
        let _ = tokio::task::spawn_blocking(move || {
            for worker in workers {
                let _ = worker.join();
            }
        })
        .await;
    }
}

/// Opens state, prepares TLS, binds the listeners and starts serving in the background.
pub async fn start(config: Config) -> Result<RunningServer> {
    start_with_clock(config, std::sync::Arc::new(crate::clock::SystemClock)).await
}

/// [`start`] on the clock given (tests pass a `ManualClock` to test expiry without sleeping).
pub async fn start_with_clock(
    config: Config,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
) -> Result<RunningServer> {
    crate::http::tls::install_crypto_provider();
    let state = blocking(move || {
        let state = AppState::open_with_clock(config, clock)?;
        crate::ops::backup::clean_staging(&state.config.data_dir).map_err(|e| {
            Error::internal("internal", format!("cannot remove old backup staging: {e}"))
        })?;
        Ok::<_, Error>(state)
    })
    .await?;
    let config = state.config.clone();
    let site_webhook = site_webhook(&config).await?;
    let webhook_client = crate::notify::client(&config.notify)
        .map_err(|e| Error::internal("internal", format!("webhook client: {e}")))?;
    let (cert_path, key_path) = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => {
            let data_dir = config.data_dir.clone();
            blocking(move || {
                crate::http::tls::ensure_self_signed(&data_dir)
                    .map_err(|e| Error::internal(e.code(), e))
            })
            .await?
        }
    };
    let server_config = crate::http::tls::load_server_config(&cert_path, &key_path)
        .map_err(|e| Error::new(e.code(), e.to_string()))?;
    let fingerprint = crate::http::tls::cert_fingerprint_sha256(&cert_path)
        .map_err(|e| Error::new(e.code(), e.to_string()))?;
    tracing::info!(cert = %cert_path.display(), sha256 = %fingerprint, "TLS certificate");
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(server_config);

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let https_listener = std::net::TcpListener::bind(config.server.listen).map_err(|e| {
        Error::internal(
            "internal",
            format!("cannot listen on {}: {e}", config.server.listen),
        )
    })?;
    let https_addr = https_listener
        .local_addr()
        .map_err(|e| Error::internal("internal", e))?;
    let http_listener = match config.server.http_listen.as_str() {
        "off" => None,
        addr => {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| Error::internal("internal", format!("http_listen {addr}: {e}")))?;
            Some(std::net::TcpListener::bind(addr).map_err(|e| {
                Error::internal("internal", format!("cannot listen on {addr}: {e}"))
            })?)
        }
    };
    let http_addr = match &http_listener {
        Some(listener) => Some(
            listener
                .local_addr()
                .map_err(|e| Error::internal("internal", e))?,
        ),
        None => None,
    };

    crate::http::server::spawn_servers(
        state.clone(),
        https_listener,
        http_listener,
        tls.clone(),
        shutdown.clone(),
        &tracker,
    )
    .map_err(|e| Error::internal("internal", e))?;
    spawn_housekeeping(state.clone(), shutdown.clone(), &tracker);
    crate::notify::spawn(
        crate::notify::Notifier {
            store: state.store.clone(),
            clock: state.clock.clone(),
            client: webhook_client,
            site: site_webhook,
            config: config.notify.clone(),
        },
        shutdown.clone(),
        &tracker,
    );
    crate::watch::spawn(state.clone(), shutdown.clone(), &tracker);
    crate::services::llm::spawn_follow_on(state.clone(), shutdown.clone(), &tracker);
    if let Some(search) = state.search.clone() {
        let queue = crate::indexer::spawn(
            state.store.clone(),
            search,
            state.jobs.events.clone(),
            shutdown.clone(),
            &tracker,
        );
        let _ = state.index_queue.set(queue);
    }
    let admin_socket = crate::ops::admin::spawn(state.clone(), shutdown.clone(), &tracker)
        .map_err(|e| Error::internal("internal", format!("admin socket: {e}")))?;
    let workers = crate::jobs::spawn_workers(
        state.config.clone(),
        state.store.clone(),
        state.blobs.clone(),
        state.jobs.clone(),
        state.clock.clone(),
        shutdown.clone(),
    );
    tracing::info!(%https_addr, ?http_addr, admin_socket = ?admin_socket, "listening");

    Ok(RunningServer {
        https_addr,
        http_addr,
        cert_path,
        key_path,
        fingerprint,
        admin_socket,
        state,
        shutdown,
        tracker,
        tls,
        workers,
    })
}

/// The site webhook of `[notify]`, its secret read from a file that must be mode 0600; a bad
/// file stops the start with the reason.
async fn site_webhook(config: &Config) -> Result<Option<crate::notify::SiteWebhook>> {
    if config.notify.webhook_url.is_empty() {
        return Ok(None);
    }
    let notify = config.notify.clone();
    let secret = blocking(move || {
        notify
            .read_secret()
            .map_err(|e| Error::new("notify-secret-file", e.to_string()))
    })
    .await?;
    Ok(Some(crate::notify::SiteWebhook {
        url: config.notify.webhook_url.clone(),
        secret,
    }))
}

/// Periodic work every few minutes: expired sessions, retention, the audit log's own
/// retention, finished job records, upload sessions (every 30 s).
fn spawn_housekeeping(state: AppState, shutdown: CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(300));
        let mut uploads_tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = uploads_tick.tick() => uploads_pass(&state).await,
                _ = tick.tick() => {
                    let store = state.store.clone();
                    let auth = state.config.auth.clone();
                    let now = state.clock.now_secs();
                    let purged = blocking(move || store.purge_sessions(
                        now,
                        auth.session_idle_timeout_secs,
                        auth.session_absolute_timeout_secs,
                    )).await;
                    if let Err(e) = purged {
                        tracing::warn!(error = %e, "session purge failed");
                    }
                    housekeeping_pass(&state).await;
                    let days = state.config.jobs.history_days;
                    if days > 0 {
                        let store = state.store.clone();
                        let cutoff = state.clock.now_secs().saturating_sub(days * 86_400);
                        match blocking(move || store.purge_job_history(cutoff)).await {
                            Ok(0) => {}
                            Ok(n) => tracing::info!(jobs = n, "finished job records past their history time removed"),
                            Err(e) => tracing::warn!(error = %e, "job history purge failed"),
                        }
                    }
                }
            }
        }
    });
}

/// The retention and audit part of housekeeping, on the daemon's clock: every user's retention
/// rule is applied (each deletion logged in the audit log), then audit entries past
/// `[audit] keep_days` are purged. Public so tests run a pass after moving a `ManualClock`.
pub async fn housekeeping_pass(state: &AppState) {
    match crate::services::retention::apply(state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "retention applied"),
        Err(e) => tracing::warn!(error = %e, "retention pass failed"),
    }
    match crate::services::audit::purge(state).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "audit entries past their retention removed"),
        Err(e) => tracing::warn!(error = %e, "audit purge failed"),
    }
    uploads_pass(state).await;
}

/// Upload sessions: idle recordings become files, expired sessions go. Runs every 30 s (a
/// closed tab's recording is a file about `[uploads] recording_idle_secs` later) and in every
/// housekeeping pass.
pub async fn uploads_pass(state: &AppState) {
    match crate::services::uploads::sweep(state).await {
        Ok(report) if report == Default::default() => {}
        Ok(report) => tracing::info!(?report, "upload sessions swept"),
        Err(e) => tracing::warn!(error = %e, "upload session sweep failed"),
    }
}

/// `opentranscribe serve`: runs until SIGTERM/SIGINT, reloads TLS on SIGHUP, talks to systemd.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let watchdog = watchdog_interval();
    let server = start(config).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let shutdown = server.shutdown_token();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = hangup.recv() => {
                if let Err(e) = server.reload_tls() {
                    tracing::error!(error = %e, "TLS reload failed; keeping the old certificate");
                }
            }
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = watchdog_tick.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        }
    }
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
    server.wait().await;
    tracing::info!("stopped");
    Ok(())
}

/// Half the watchdog period systemd asked for, if it asked.
fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|period| period / 2)
}
