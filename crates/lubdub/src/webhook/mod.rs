//! Webhooks: every change of presence (as `GET /events` shows it) POSTed
//! in batches of JSON to each `--webhook` URL, signed ([`signature`]),
//! retried with exponential backoff and full jitter while the receiver is
//! down or failing.
//!
//! Each URL has its own reader of the presence hub, on the admin runtime:
//! never on a loop thread, so a slow or dead receiver never delays a
//! verdict. The hub's ring is the queue: bounded (`--event-history`), it
//! drops the oldest changes when a receiver has been down that long, and
//! the next batch then opens with a `resync` marker saying how many were
//! lost (and `lubdub_webhook_events_dropped_total` counts them), so that
//! the receiver knows to rebuild its state from `GET /sessions`.
//!
//! Body: `{"events":[CHANGE, ...]}`, each change as in the event stream,
//! in order, at most `batch` of them.

pub mod signature;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::client::backoff::Backoff;
use crate::server::{FeedItem, PresenceFeed, PresenceHub};

/// Most changes in one POST, by default.
pub const DEFAULT_BATCH: usize = 100;

/// Where and how changes are POSTed.
#[derive(Clone)]
pub struct WebhookConfig {
    /// The receivers; each gets every change.
    pub urls: Vec<String>,
    /// The HMAC key of [`signature`].
    pub secret: Arc<[u8]>,
    /// Most changes in one POST.
    pub batch: usize,
    /// Longest a POST may take (connect, send, answer).
    pub timeout: Duration,
    /// Pauses between failed attempts.
    pub backoff: Backoff,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("urls", &self.urls)
            .field("batch", &self.batch)
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// Why the webhook secret file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It cannot be read.
    #[error("cannot read the webhook secret file {path}: {error}")]
    Unreadable {
        /// The file.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// It is too short.
    #[error(
        "the webhook secret file {path} holds fewer than 16 characters; \
         e.g. `openssl rand -hex 32 > {path}`"
    )]
    TooShort {
        /// The file.
        path: String,
    },
}

/// The secret in `path` (surrounding whitespace is not part of it).
///
/// # Errors
/// The file cannot be read or holds fewer than 16 characters.
pub fn read_secret(path: &Path) -> Result<Arc<[u8]>, SecretFileError> {
    crate::auth::private_file::warn_if_exposed(path, "--webhook-secret-file");
    let text = std::fs::read_to_string(path).map_err(|error| SecretFileError::Unreadable {
        path: path.display().to_string(),
        error,
    })?;
    let secret = text.trim();
    if secret.len() < 16 {
        return Err(SecretFileError::TooShort {
            path: path.display().to_string(),
        });
    }
    Ok(Arc::from(secret.as_bytes()))
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The webhooks' counters, summed over their URLs.
#[derive(Debug, Clone, Default)]
pub struct WebhookMetrics {
    posts: Family<OutcomeLabel, Counter>,
    delivered: Counter,
    dropped: Counter,
}

impl WebhookMetrics {
    /// Registers the counters in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "webhook_posts",
            "Webhook POSTs by outcome (delivered: a 2xx answer; failed: anything else, retried)",
            metrics.posts.clone(),
        );
        registry.register(
            "webhook_events_delivered",
            "Presence changes delivered to webhook receivers",
            metrics.delivered.clone(),
        );
        registry.register(
            "webhook_events_dropped",
            "Presence changes a webhook receiver lost while it was down (the next batch says resync)",
            metrics.dropped.clone(),
        );
        metrics
    }

    fn posted(&self, outcome: &'static str) {
        self.posts.get_or_create(&OutcomeLabel { outcome }).inc();
    }
}

/// One reader of `hub` per URL of `config`: taken before the server
/// starts, so that no change is missed by a receiver.
pub fn feeds(config: &WebhookConfig, hub: &PresenceHub) -> Vec<PresenceFeed> {
    config.urls.iter().map(|_| hub.subscribe()).collect()
}

/// Starts one delivery task per URL on the current tokio runtime, each
/// reading its feed (see [`feeds`]); each ends when `stopped` turns true,
/// after one last attempt at what it holds.
pub fn spawn(
    config: &WebhookConfig,
    feeds: Vec<PresenceFeed>,
    metrics: WebhookMetrics,
    stopped: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    config
        .urls
        .iter()
        .zip(feeds)
        .map(|(url, feed)| {
            let delivery = Delivery {
                url: url.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                // One agent per receiver, so that its connection is kept.
                agent: ureq::Agent::config_builder()
                    .timeout_global(Some(config.timeout))
                    .http_status_as_error(false)
                    .build()
                    .into(),
            };
            tokio::spawn(delivery.run(feed, stopped.clone()))
        })
        .collect()
}

/// One receiver's deliveries.
struct Delivery {
    url: String,
    config: WebhookConfig,
    metrics: WebhookMetrics,
    agent: ureq::Agent,
}

impl Delivery {
    async fn run(self, mut feed: PresenceFeed, mut stopped: watch::Receiver<bool>) {
        let mut batch: Vec<String> = Vec::new();
        loop {
            // Wait for the first change of a batch, then take what else is
            // there, up to the batch's size.
            let next = tokio::select! {
                item = feed.recv() => Some(item),
                _ = stopped.wait_for(|stopped| *stopped) => None,
            };
            match next {
                Some(Some(item)) => self.add(&mut batch, item),
                Some(None) => return,
                None => {
                    self.last_attempt(&mut feed, batch).await;
                    return;
                }
            }
            self.fill(&mut feed, &mut batch);
            if batch.is_empty() {
                continue;
            }
            if !self.deliver(&batch, &mut stopped).await {
                self.last_attempt(&mut feed, batch).await;
                return;
            }
            batch.clear();
        }
    }

    /// Adds what is waiting, without waiting, up to the batch's size.
    fn fill(&self, feed: &mut PresenceFeed, batch: &mut Vec<String>) {
        while batch.len() < self.config.batch {
            match feed.try_recv() {
                Some(item) => self.add(batch, item),
                None => break,
            }
        }
    }

    fn add(&self, batch: &mut Vec<String>, item: FeedItem) {
        match item {
            FeedItem::Event(event) => {
                if let Some(json) = event.change_json() {
                    batch.push(json.to_owned());
                }
            }
            FeedItem::Gap { missed } => {
                self.metrics.dropped.inc_by(missed);
                warn!(url = %self.url, missed, "webhook receiver fell behind: {missed} changes lost; it is sent a resync");
                batch.push(format!(r#"{{"kind":"resync","missed":{missed}}}"#));
            }
        }
    }

    /// POSTs `batch` until a receiver takes it; `false` if the server
    /// stopped first.
    async fn deliver(&self, batch: &[String], stopped: &mut watch::Receiver<bool>) -> bool {
        let body = body(batch);
        let mut attempt = 0;
        loop {
            match self.post(body.clone()).await {
                Ok(()) => {
                    self.metrics.posted("delivered");
                    self.metrics.delivered.inc_by(batch.len() as u64);
                    if attempt > 0 {
                        info!(url = %self.url, failed = attempt, "webhook receiver takes changes again");
                    }
                    return true;
                }
                Err(error) => {
                    self.metrics.posted("failed");
                    // One warning per outage, not one per retry.
                    if attempt == 0 {
                        warn!(url = %self.url, %error, "webhook POST failed; retrying with backoff");
                    }
                    let pause = self.config.backoff.delay(attempt, rand::random::<f64>());
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        _ = stopped.wait_for(|stopped| *stopped) => return false,
                    }
                }
            }
        }
    }

    /// At shutdown: one attempt at what is held and waiting (the last
    /// changes, `offline` … `shutdown`, among them), without retries.
    async fn last_attempt(&self, feed: &mut PresenceFeed, mut batch: Vec<String>) {
        loop {
            self.fill(feed, &mut batch);
            if batch.is_empty() {
                return;
            }
            if self.post(body(&batch)).await.is_err() {
                self.metrics.posted("failed");
                return;
            }
            self.metrics.posted("delivered");
            self.metrics.delivered.inc_by(batch.len() as u64);
            batch.clear();
        }
    }

    /// One POST, off the runtime's threads (ureq blocks).
    async fn post(&self, body: String) -> Result<(), String> {
        let url = self.url.clone();
        let secret = Arc::clone(&self.config.secret);
        let agent = self.agent.clone();
        let sent = tokio::task::spawn_blocking(move || {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs());
            let signed = signature::sign(&secret, now, body.as_bytes());
            let response = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .header(signature::HEADER, &signed)
                .send(body.as_bytes())
                .map_err(|error| error.to_string())?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        })
        .await;
        sent.unwrap_or_else(|error| Err(format!("the POST task failed: {error}")))
    }
}

/// The JSON body of one batch.
fn body(batch: &[String]) -> String {
    let mut body = String::from(r#"{"events":["#);
    for (index, change) in batch.iter().enumerate() {
        if index > 0 {
            body.push(',');
        }
        body.push_str(change);
    }
    body.push_str("]}");
    body
}
