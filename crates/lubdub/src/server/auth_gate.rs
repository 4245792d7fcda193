//! The event loop's side of credentials: decides what it can at once
//! (tokens, missing credentials, cached secrets) and sends the rest to
//! verifier threads, whose verdicts come back through the loop's `Waker`.
//!
//! Data flow: HELLO → [`AuthGate::admit`] → granted / denied now, or
//! `Verifying` (the connection waits in `State::Verifying`) → argon2 on a
//! `lubdub-auth` thread → `Waker` → [`AuthGate::next_verdict`] → the loop
//! establishes or refuses, if the connection is still the one that asked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::Waker;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::admission::Source;
use crate::auth::verifier::{Cancel, Outcome, VerifierPool};
use crate::auth::{AuthConfig, Authenticator, Decision, Denial, Fingerprint, VerifiedCache};

/// Label of the auth failures counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Credential metrics, registered with the server's other metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct AuthMetrics {
    failures: Family<ReasonLabel, Counter>,
    verifications: Counter,
    cache_hits: Counter,
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
        metrics
    }

    fn failed(&self, denial: &Denial) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: denial.label(),
            })
            .inc();
    }
}

/// What became of a HELLO's credential when it arrived.
#[derive(Debug)]
pub(crate) enum Admission {
    /// Granted now (a token, or a secret verified before).
    Granted,
    /// Refused now.
    Denied(Denial),
    /// Sent to a verifier thread; a [`Verdict`] follows.
    Verifying,
    /// Too many secrets are waiting for verification; refuse for now.
    Busy,
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
    source: Source,
    fingerprint: Fingerprint,
    cacheable: bool,
}

/// Verifications one source may have queued at once. Without a share per
/// source, one host (within its connection limits) could keep the whole
/// queue full of secrets that never verify and lock everyone else out.
const MAX_QUEUED_PER_SOURCE: u32 = 8;

/// Credentials for one event loop.
#[derive(Debug)]
pub(crate) struct AuthGate {
    authenticator: Authenticator,
    cache: VerifiedCache,
    pool: VerifierPool<Waiting>,
    metrics: AuthMetrics,
    /// A secret still queued this long after its HELLO is not checked:
    /// the handshake timeout has closed its connection.
    give_up_after: Duration,
    /// Queued verifications by connection, to cancel when it closes.
    queued: HashMap<(usize, u32), Cancel>,
    /// Queued verifications by source, against [`MAX_QUEUED_PER_SOURCE`].
    queued_per_source: HashMap<Source, u32>,
}

impl AuthGate {
    /// Starts the verifier threads; they wake the loop through `waker`.
    ///
    /// # Errors
    /// The OS error when a thread cannot be started.
    pub(crate) fn new(
        authenticator: Authenticator,
        config: &AuthConfig,
        handshake_timeout: Duration,
        waker: Arc<Waker>,
        metrics: AuthMetrics,
    ) -> std::io::Result<Self> {
        let notify = Arc::new(move || {
            // A loop that is gone has no one left to tell.
            let _ = waker.wake();
        });
        Ok(Self {
            authenticator,
            cache: VerifiedCache::new(config.cache_entries),
            pool: VerifierPool::new(config.verifier_threads, config.verifier_queue, notify)?,
            metrics,
            give_up_after: handshake_timeout,
            queued: HashMap::new(),
            queued_per_source: HashMap::new(),
        })
    }

    /// Decides on the credential of a HELLO from connection `index` of
    /// `generation` claiming `name`, at wall-clock `now` (token expiry).
    /// Costs at most one HMAC on the calling thread.
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
            Decision::Granted => return Admission::Granted,
            Decision::Denied(denial) => {
                self.metrics.failed(&denial);
                return Admission::Denied(denial);
            }
            Decision::CheckPassword(check) => check,
        };
        let fingerprint = check.fingerprint(&self.cache);
        if check.is_known() && self.cache.contains(&fingerprint) {
            self.metrics.cache_hits.inc();
            return Admission::Granted;
        }
        let source = Source::of(peer);
        let queued_here = self.queued_per_source.entry(source).or_default();
        if *queued_here >= MAX_QUEUED_PER_SOURCE {
            return Admission::Busy;
        }
        let waiting = Waiting {
            index,
            generation,
            source,
            fingerprint,
            cacheable: check.is_known(),
        };
        match self
            .pool
            .submit(waiting, check, Instant::now() + self.give_up_after)
        {
            Ok(cancel) => {
                *queued_here += 1;
                self.queued.insert((index, generation), cancel);
                Admission::Verifying
            }
            Err(_) => Admission::Busy,
        }
    }

    /// Connection `index` of `generation` closed while its secret was
    /// queued: the secret is not checked, and its source's share is freed
    /// when the skipped job comes back.
    pub(crate) fn cancel(&mut self, index: usize, generation: u32) {
        if let Some(cancel) = self.queued.remove(&(index, generation)) {
            cancel.cancel();
        }
    }

    /// The next verdict from the verifier threads, if one is ready. A
    /// granted secret is remembered, whether or not its connection is still there.
    pub(crate) fn next_verdict(&mut self) -> Option<Verdict> {
        loop {
            let (waiting, outcome) = self.pool.try_result()?;
            self.queued.remove(&(waiting.index, waiting.generation));
            if let Some(count) = self.queued_per_source.get_mut(&waiting.source) {
                *count -= 1;
                if *count == 0 {
                    self.queued_per_source.remove(&waiting.source);
                }
            }
            let Outcome::Verified(result) = outcome else {
                continue; // abandoned: its connection closed or timed out
            };
            self.metrics.verifications.inc();
            match &result {
                Ok(()) if waiting.cacheable => self.cache.remember(waiting.fingerprint),
                Ok(()) => {}
                Err(denial) => self.metrics.failed(denial),
            }
            return Some(Verdict {
                index: waiting.index,
                generation: waiting.generation,
                result,
            });
        }
    }
}
