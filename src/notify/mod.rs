//! Webhook delivery: a task that takes due deliveries from the store's outbox, POSTs each
//! signed payload (bounded concurrency, a timeout per attempt) and records the answer, which
//! schedules the next retry. Job processing never waits on it: the outbox entry is written
//! with the job's end, and this task only reads and updates it.

pub mod sign;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::NotifyConfig;
use crate::store::Store;
use crate::store::webhooks::{AttemptResult, DeliveryRecord, DueDelivery};

/// Deliveries in flight at once, across all targets.
const MAX_IN_FLIGHT: usize = 4;
/// How often the outbox is looked at; retries are due on the [`Clock`], so a moved test
/// clock is noticed within this.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often delivery history past `webhook_history_days` is purged.
const PURGE_EVERY_SECS: u64 = 3600;
/// Most bytes of a receiver's error answer kept in the delivery record.
const MAX_ERROR_CHARS: usize = 200;

/// The site webhook (`[notify]`), with its secret read from the 0600 file.
#[derive(Clone)]
pub struct SiteWebhook {
    pub url: String,
    pub secret: String,
}

impl std::fmt::Debug for SiteWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteWebhook")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// The JSON body POSTed for one delivery.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub event: &'a str,
    pub delivery_id: &'a str,
    pub file_id: &'a str,
    pub filename: &'a str,
    pub status: &'a str,
    pub error: Option<&'a str>,
    pub occurred_at: u64,
    /// 1 for the first try; a receiver sees the same `delivery_id` again on a retry.
    pub attempt: usize,
}

impl<'a> Payload<'a> {
    pub fn of(delivery: &'a DeliveryRecord) -> Self {
        Self {
            event: &delivery.event,
            delivery_id: &delivery.id,
            file_id: &delivery.file_id,
            filename: &delivery.filename,
            status: &delivery.status,
            error: delivery.error.as_deref(),
            occurred_at: delivery.occurred_at,
            attempt: delivery.attempts.len() + 1,
        }
    }
}

/// Everything the delivery task needs.
#[derive(Clone)]
pub struct Notifier {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub client: reqwest::Client,
    pub site: Option<SiteWebhook>,
    pub config: NotifyConfig,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("site", &self.site)
            .finish_non_exhaustive()
    }
}

/// A client for webhooks: rustls with the system's roots, no redirects followed (a redirect
/// is an answer, recorded as such), the configured timeout per attempt.
pub fn client(config: &NotifyConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(config.webhook_timeout_secs))
        .connect_timeout(Duration::from_secs(config.webhook_timeout_secs))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("OpenTranscribe/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Starts the delivery task on `tracker`; it stops with `shutdown` (an attempt in flight is
/// dropped and, leased in the store, tried again after a restart).
pub fn spawn(notifier: Notifier, shutdown: CancellationToken, tracker: &TaskTracker) {
    let inner = tracker.clone();
    tracker.spawn(async move { notifier.run(shutdown, inner).await });
}

impl Notifier {
    async fn run(self, shutdown: CancellationToken, tracker: TaskTracker) {
        let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut last_purge = 0u64;
        // A claimed delivery is not claimed again until its attempt can no longer be running.
        let lease_secs = self.config.webhook_timeout_secs * 2 + 30;
        loop {
            let now = self.clock.now_secs();
            if now >= last_purge + PURGE_EVERY_SECS {
                last_purge = now;
                self.purge(now).await;
            }
            let free = slots.available_permits();
            if free > 0 {
                let store = self.store.clone();
                let claimed = tokio::task::spawn_blocking(move || {
                    store.claim_due_deliveries(now, lease_secs, free)
                })
                .await;
                match claimed {
                    Ok(Ok(due)) => {
                        for item in due {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let notifier = self.clone();
                            let stop = shutdown.clone();
                            tracker.spawn(async move {
                                tokio::select! {
                                    _ = stop.cancelled() => {}
                                    _ = notifier.attempt(item) => {}
                                }
                                drop(permit);
                            });
                        }
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "cannot read the webhook outbox"),
                    Err(e) => tracing::error!(error = %e, "webhook outbox task failed"),
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }

    /// One POST, and its result recorded (which schedules the retry, if any).
    async fn attempt(&self, item: DueDelivery) {
        let delivery = item.delivery;
        let (url, secret) = match (&item.webhook, &self.site) {
            (Some(webhook), _) => (webhook.url.clone(), webhook.secret.clone()),
            (None, Some(site)) => (site.url.clone(), site.secret.clone()),
            (None, None) => {
                // A site delivery written while the site webhook was configured; it is gone now.
                (String::new(), String::new())
            }
        };
        let result = if url.is_empty() {
            AttemptResult {
                at: self.clock.now_secs(),
                status: None,
                error: Some("the site webhook is no longer configured".to_owned()),
            }
        } else {
            self.post(&url, &secret, &delivery).await
        };
        let ok = result.status.is_some_and(|s| (200..300).contains(&s));
        tracing::info!(
            delivery_id = %delivery.id,
            file_id = %delivery.file_id,
            status = ?result.status,
            error = ?result.error,
            ok,
            "webhook attempt"
        );
        let store = self.store.clone();
        // Without a URL there is nothing to retry: the delivery fails now.
        let max_attempts = if url.is_empty() {
            1
        } else {
            self.config.webhook_max_attempts
        };
        let id = delivery.id.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            store.record_delivery_attempt(&id, result, max_attempts)
        })
        .await;
        match recorded {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(delivery_id = %delivery.id, error = %e, "cannot record a webhook attempt")
            }
            Err(e) => {
                tracing::error!(delivery_id = %delivery.id, error = %e, "webhook record task failed")
            }
        }
    }

    async fn post(&self, url: &str, secret: &str, delivery: &DeliveryRecord) -> AttemptResult {
        let body = match serde_json::to_vec(&Payload::of(delivery)) {
            Ok(body) => body,
            Err(e) => {
                return AttemptResult {
                    at: self.clock.now_secs(),
                    status: None,
                    error: Some(format!("cannot encode the payload: {e}")),
                };
            }
        };
        let timestamp = self.clock.now_secs();
        let signature = sign::signature_header(secret, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(sign::SIGNATURE_HEADER, signature)
            .header("X-OpenTranscribe-Delivery", delivery.id.as_str())
            .body(body)
            .send()
            .await;
        let at = timestamp;
        match sent {
            Ok(response) => {
                let status = response.status();
                let error = (!status.is_success()).then(|| {
                    format!("the receiver answered {}", status.as_u16())
                        .chars()
                        .take(MAX_ERROR_CHARS)
                        .collect()
                });
                AttemptResult {
                    at,
                    status: Some(status.as_u16()),
                    error,
                }
            }
            Err(e) => AttemptResult {
                at,
                status: None,
                error: Some(describe(e)),
            },
        }
    }

    async fn purge(&self, now: u64) {
        if self.config.webhook_history_days == 0 {
            return;
        }
        let cutoff = now.saturating_sub(self.config.webhook_history_days * 86_400);
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.purge_deliveries(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "old webhook deliveries purged"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot purge webhook deliveries"),
            Err(e) => tracing::warn!(error = %e, "webhook purge task failed"),
        }
    }
}

/// A short reason for a failed request, without the URL (it may carry a token).
fn describe(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_redirect() {
        "redirected"
    } else {
        "request failed"
    };
    let error = error.without_url();
    format!("{kind}: {error}")
        .chars()
        .take(MAX_ERROR_CHARS)
        .collect()
}
