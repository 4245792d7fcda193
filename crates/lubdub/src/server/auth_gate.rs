//! The event loop's side of credentials: decides what it can at once
//! (tokens, missing credentials, cached secrets) and sends the rest to
//! verifier threads, whose verdicts come back through the loop's `Waker`.
//!
//! Data flow: HELLO → [`AuthGate::admit`] → granted / denied / busy now,
//! or `Verifying` (the connection's machine waits in its `Authenticating`
//! phase, for at most
//! the queue wait: [`AuthGate::overdue`]) → argon2 on a `lubdub-auth`
//! thread → `Waker` → [`AuthGate::next_verdict`] → the loop establishes or
//! refuses, if the connection is still the one that asked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use mio::Waker;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::admission::Source;
use crate::auth::verifier::{Full, Ticket, VerifierPool};
use crate::auth::{AuthConfig, Authenticator, Decision, Denial, Fingerprint, VerifiedCache};

/// Label of the auth failures counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Label of the `server_busy` refusals counter: which bound was reached.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BusyLabel {
    what: &'static str,
}

/// Credential metrics, registered with the server's other metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthMetrics {
    failures: Family<ReasonLabel, Counter>,
    verifications: Counter,
    cache_hits: Counter,
    queue_depth: Gauge,
    busy: Family<BusyLabel, Counter>,
}

impl AuthMetrics {
    /// Fresh counters, registered in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "auth_failures",
            "HELLOs refused because their credential does not grant the name, by reason",
            metrics.failures.clone(),
        );
        registry.register(
            "auth_password_verifications",
            "Auth-file secrets checked with argon2 (on verifier threads)",
            metrics.verifications.clone(),
        );
        registry.register(
            "auth_cache_hits",
            "Auth-file secrets granted from the cache of earlier verifications, without argon2",
            metrics.cache_hits.clone(),
        );
        registry.register(
            "auth_verification_queue_depth",
            "Auth-file secrets waiting for a verifier thread",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "auth_server_busy_refusals",
            "HELLOs answered REJECT server_busy because the verification queue was full \
             (in all, or for the source) or the secret waited too long, by what was busy",
            metrics.busy.clone(),
        );
        metrics
    }

    pub(crate) fn failed(&self, denial: &Denial) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: denial.label(),
            })
            .inc();
    }

    fn busy(&self, busy: &Busy) {
        self.busy
            .get_or_create(&BusyLabel { what: busy.label() })
            .inc();
    }
}

/// Delays a REJECT `server_busy` suggests: the client's own backoff (from
/// 200 ms, with jitter) falls in this window.
const RETRY_HINT: &str = "retry in 200ms-1s";

/// Why a secret is not verified now: the verification queue is busy. The
/// HELLO is answered REJECT `server_busy` with [`text`](Busy::text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Busy {
    /// `max` secrets are waiting in all.
    Queue { max: usize },
    /// `max` secrets of the HELLO's source are waiting.
    SourceShare { max: usize },
    /// The secret was not taken by a verifier thread within `wait`.
    Waited { wait: Duration },
}

impl Busy {
    /// Metric label.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Busy::Queue { .. } => "verifier_queue",
            Busy::SourceShare { .. } => "verifier_queue_per_source",
            Busy::Waited { .. } => "verifier_queue_wait",
        }
    }

    /// The REJECT text: what is busy, the bound, and when to retry.
    pub(crate) fn text(&self) -> String {
        match self {
            Busy::Queue { max } => format!(
                "server busy: {max} credentials are waiting to be verified \
                 (--verifier-queue); {RETRY_HINT}"
            ),
            Busy::SourceShare { max } => format!(
                "server busy: {max} credentials from this address are waiting to be \
                 verified; {RETRY_HINT}"
            ),
            Busy::Waited { wait } => format!(
                "server busy: the credential waited {} for a verifier thread \
                 (--verifier-queue-wait); {RETRY_HINT}",
                humantime::format_duration(*wait)
            ),
        }
    }
}

impl From<Full> for Busy {
    fn from(full: Full) -> Self {
        match full {
            Full::Everyone { max } => Busy::Queue { max },
            Full::Source { max } => Busy::SourceShare { max },
        }
    }
}

/// What became of a HELLO's credential when it arrived.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Granted now (a token, with what it grants; or a secret verified
    /// before, which grants no rooms or watches).
    Granted(crate::auth::grants::Grants),
    /// Refused now.
    Denied(Denial),
    /// Queued for a verifier thread: a [`Verdict`] follows, unless the
    /// secret is still waiting after [`AuthGate::queue_wait`] (then
    /// [`AuthGate::overdue`] says so).
    Verifying,
    /// The queue is full; refuse for now.
    Busy(Busy),
}

/// A verifier thread's answer for one connection.
#[derive(Debug)]
pub(crate) struct Verdict {
    /// Slab index of the connection that asked.
    pub(crate) index: usize,
    /// Its generation: a different one means it closed meanwhile.
    pub(crate) generation: u32,
    /// Granted, or why not.
    pub(crate) result: Result<(), Denial>,
}

/// Who is waiting for a verification, and what to remember if it succeeds.
#[derive(Debug)]
struct Waiting {
    index: usize,
    generation: u32,
    fingerprint: Fingerprint,
    cacheable: bool,
}

/// Verifications one source may have waiting at once. Without a share per
/// source, one host (within its connection limits) could keep the whole
/// queue full of secrets that never verify and lock everyone else out.
const MAX_QUEUED_PER_SOURCE: usize = 8;

/// Credentials for one event loop: its handle on the process's verifier
/// threads, fair queue and cache, and its own verdicts.
#[derive(Debug)]
pub(crate) struct AuthGate {
    authenticator: Authenticator,
    /// Shared by every loop's gate: a secret verified on one loop is
    /// granted from the cache on all.
    cache: Arc<Mutex<VerifiedCache>>,
    /// One set of verifier threads and one fair queue for the process,
    /// whichever loop a connection is on; this gate's handle.
    pool: VerifierPool<Source, Waiting>,
    metrics: AuthMetrics,
    /// How long a secret may wait for a verifier thread.
    queue_wait: Duration,
    /// Queued or running verifications by connection: to withdraw when
    /// it closes or waited too long.
    queued: HashMap<(usize, u32), (Source, Ticket)>,
}

impl AuthGate {
    /// Starts the verifier threads; they wake the loop through `waker`.
    ///
    /// # Errors
    /// The OS error when a thread cannot be started.
    pub(crate) fn new(
        authenticator: Authenticator,
        config: &AuthConfig,
        waker: Arc<Waker>,
        metrics: AuthMetrics,
    ) -> std::io::Result<Self> {
        let notify = Arc::new(move || {
            // A loop that is gone has no one left to tell.
            let _ = waker.wake();
        });
        Ok(Self {
            authenticator,
            cache: Arc::new(Mutex::new(VerifiedCache::new(config.cache_entries))),
            pool: VerifierPool::new(
                config.verifier_threads,
                config.verifier_queue,
                MAX_QUEUED_PER_SOURCE,
                notify,
            )?,
            metrics,
            queue_wait: config.verifier_queue_wait,
            queued: HashMap::new(),
        })
    }

    /// A gate for another loop, waking it through `waker`: the same
    /// verifier threads, fair queue and cache, its own verdicts.
    pub(crate) fn share(&self, waker: Arc<Waker>) -> Self {
        let notify = Arc::new(move || {
            // A loop that is gone has no one left to tell.
            let _ = waker.wake();
        });
        Self {
            authenticator: self.authenticator.clone(),
            cache: Arc::clone(&self.cache),
            pool: self.pool.share(notify),
            metrics: self.metrics.clone(),
            queue_wait: self.queue_wait,
            queued: HashMap::new(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VerifiedCache> {
        // A panic while holding it left a usable cache.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks HELLOs from now on with `authenticator` (a reload), and lets
    /// secrets queued from now on wait `queue_wait`. Checks already queued
    /// carry their stored hash and finish as they started; the cache is
    /// keyed by that hash too, so a changed or removed line is never
    /// granted from it.
    pub(crate) fn replace(&mut self, authenticator: Authenticator, queue_wait: Duration) {
        self.authenticator = authenticator;
        self.queue_wait = queue_wait;
    }

    /// How long after [`Admission::Verifying`] the loop asks
    /// [`overdue`](Self::overdue) about the connection.
    pub(crate) fn queue_wait(&self) -> Duration {
        self.queue_wait
    }

    /// Decides on the credential of a HELLO from connection `index` of
    /// `generation` claiming `name`, at wall-clock `now` (token expiry).
    /// Costs at most one HMAC on the calling thread: what is cheap is
    /// decided here and never waits behind argon2 work.
    pub(crate) fn admit(
        &mut self,
        index: usize,
        generation: u32,
        peer: IpAddr,
        name: &str,
        credential: &[u8],
        now: SystemTime,
    ) -> Admission {
        let check = match self.authenticator.check(name, credential, now) {
            Decision::Granted(grants) => return Admission::Granted(grants),
            Decision::Denied(denial) => {
                self.metrics.failed(&denial);
                return Admission::Denied(denial);
            }
            Decision::CheckPassword(check) => check,
        };
        let fingerprint = check.fingerprint(&self.cache());
        if check.is_known() && self.cache().contains(&fingerprint) {
            self.metrics.cache_hits.inc();
            return Admission::Granted(crate::auth::grants::Grants::default());
        }
        let source = Source::of(peer);
        let waiting = Waiting {
            index,
            generation,
            fingerprint,
            cacheable: check.is_known(),
        };
        let admission = match self.pool.submit(source, waiting, check) {
            Ok(ticket) => {
                self.queued.insert((index, generation), (source, ticket));
                Admission::Verifying
            }
            Err(full) => {
                let busy = Busy::from(full);
                self.metrics.busy(&busy);
                Admission::Busy(busy)
            }
        };
        self.update_depth();
        admission
    }

    /// Connection `index` of `generation` closed while its secret was
    /// queued: the secret is not checked if it is still waiting.
    pub(crate) fn cancel(&mut self, index: usize, generation: u32) {
        if let Some((source, ticket)) = self.queued.remove(&(index, generation)) {
            self.pool.withdraw(&source, ticket);
            self.update_depth();
        }
    }

    /// The queue wait of connection `index` of `generation` is over: when
    /// its secret is still waiting, it is withdrawn, and the [`Busy`] to
    /// answer comes back; `None` when a thread is checking it (its verdict
    /// follows within one argon2 run).
    pub(crate) fn overdue(&mut self, index: usize, generation: u32) -> Option<Busy> {
        // Not queued at all: no verdict can come, so it is refused too.
        if let Some(&(source, ticket)) = self.queued.get(&(index, generation)) {
            if !self.pool.withdraw(&source, ticket) {
                return None;
            }
            self.queued.remove(&(index, generation));
            self.update_depth();
        }
        let busy = Busy::Waited {
            wait: self.queue_wait,
        };
        self.metrics.busy(&busy);
        Some(busy)
    }

    /// The next verdict from the verifier threads, if one is ready. A
    /// granted secret is remembered, whether or not its connection is still there.
    pub(crate) fn next_verdict(&mut self) -> Option<Verdict> {
        let (waiting, result) = self.pool.try_result()?;
        self.queued.remove(&(waiting.index, waiting.generation));
        self.update_depth();
        self.metrics.verifications.inc();
        match &result {
            Ok(()) if waiting.cacheable => self.cache().remember(waiting.fingerprint),
            Ok(()) => {}
            Err(denial) => self.metrics.failed(denial),
        }
        Some(Verdict {
            index: waiting.index,
            generation: waiting.generation,
            result,
        })
    }

    fn update_depth(&self) {
        let depth = i64::try_from(self.pool.waiting()).unwrap_or(i64::MAX);
        self.metrics.queue_depth.set(depth);
    }
}
