//! Server metrics in the Prometheus text format, served at `GET /metrics`.
//!
//! Counters and histograms are `prometheus-client` atomics shared between
//! the event loop (which records) and the admin API (which encodes), so a
//! scrape never stops the loop; only the sessions-by-state gauge is counted
//! by the loop on request, because it is a property of every session at
//! one instant.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::auth_gate::AuthMetrics;
use super::presence::DropReason;

/// Label of the drops counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Label of the sessions gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// How many connections are in each state at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Connected, HELLO not yet received.
    pub handshaking: u64,
    /// Established and heard from recently.
    pub alive: u64,
    /// Established and suspect.
    pub suspect: u64,
    /// Ended, farewell being delivered.
    pub closing: u64,
    /// Names held in the registry, counted in the same turn as the last
    /// range of slots (with the in-memory registry: `alive + suspect`
    /// exactly, unless sessions came or went between ranges).
    pub registered: u64,
}

impl StateCounts {
    /// Adds the counts of another range of slots to these.
    pub fn add(&mut self, other: StateCounts) {
        self.handshaking += other.handshaking;
        self.alive += other.alive;
        self.suspect += other.suspect;
        self.closing += other.closing;
        self.registered += other.registered;
    }
}

/// Every metric the server exports; cheap to clone (shared atomics).
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    registry: Arc<Registry>,
    heartbeats: Counter,
    wills_sent: Counter,
    room_memberships: Gauge,
    watches: Gauge,
    presence_updates: Counter,
    watch_resyncs: Counter,
    drops: Family<ReasonLabel, Counter>,
    detection_delay: Histogram,
    round_trip: Histogram,
    sessions: Family<StateLabel, Gauge>,
    registered: Gauge,
    connections_refused: Family<ReasonLabel, Counter>,
    handshakes_failed: Family<ReasonLabel, Counter>,
    frames_refused: Family<ReasonLabel, Counter>,
    /// `frames_refused` of `rate_limited` and `too_many_pings`, looked up once.
    refused_for_rate: Counter,
    refused_for_pings: Counter,
    fanout_refused: Family<ReasonLabel, Counter>,
    deliveries: Counter,
    deliveries_skipped: Family<ReasonLabel, Counter>,
    outbound_queued: Gauge,
    admin_limited: Family<ReasonLabel, Counter>,
    /// Credentials: failures, argon2 runs, cache hits.
    auth: AuthMetrics,
    webhooks: crate::webhook::WebhookMetrics,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerMetrics {
    /// Fresh metrics, registered under the `lubdub_` prefix.
    pub fn new() -> Self {
        let heartbeats = Counter::default();
        let wills_sent = Counter::default();
        let room_memberships = Gauge::default();
        let watches = Gauge::default();
        let presence_updates = Counter::default();
        let watch_resyncs = Counter::default();
        let drops = Family::<ReasonLabel, Counter>::default();
        // 0.25 ms to about 8 s: the lateness of a verdict past its deadline.
        let detection_delay = Histogram::new(exponential_buckets(0.000_25, 2.0, 16));
        // 50 µs to about 1.6 s: client-reported round trips.
        let round_trip = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let sessions = Family::<StateLabel, Gauge>::default();
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        let registered = Gauge::default();
        let handshakes_failed = Family::<ReasonLabel, Counter>::default();
        let frames_refused = Family::<ReasonLabel, Counter>::default();
        let fanout_refused = Family::<ReasonLabel, Counter>::default();
        let deliveries = Counter::default();
        let deliveries_skipped = Family::<ReasonLabel, Counter>::default();
        let outbound_queued = Gauge::default();
        let admin_limited = Family::<ReasonLabel, Counter>::default();
        let mut registry = Registry::with_prefix("lubdub");
        registry.register(
            "wills_sent",
            "Last wills sent: sessions that ended without a BYE of their own, their name not back within the will's delay",
            wills_sent.clone(),
        );
        registry.register(
            "room_memberships",
            "Room memberships held by this server's sessions (a session in three rooms counts three)",
            room_memberships.clone(),
        );
        registry.register(
            "watches",
            "Names and rooms watched by this server's sessions (full and count-only watches)",
            watches.clone(),
        );
        registry.register(
            "presence_updates_sent",
            "PRESENCE frames queued to watching sessions (snapshots, their members, changes)",
            presence_updates.clone(),
        );
        registry.register(
            "watch_resyncs",
            "Times a loop fell behind the presence events and sent its watchers fresh snapshots",
            watch_resyncs.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Frames received from established sessions (any frame is a heartbeat)",
            heartbeats.clone(),
        );
        registry.register(
            "sessions_dropped",
            "Sessions ended, by reason",
            drops.clone(),
        );
        registry.register(
            "detection_delay_seconds",
            "How long after its deadline a silent session was declared dead",
            detection_delay.clone(),
        );
        registry.register(
            "round_trip_seconds",
            "Round-trip times reported by clients in their PINGs",
            round_trip.clone(),
        );
        registry.register(
            "sessions",
            "Connections by state at the moment of the scrape",
            sessions.clone(),
        );
        registry.register(
            "registry_names",
            "Names held in the registry at the moment of the scrape",
            registered.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections refused at accept, by the limit they hit",
            connections_refused.clone(),
        );
        registry.register(
            "handshakes_failed",
            "Connections closed before their session was established, by reason",
            handshakes_failed.clone(),
        );
        registry.register(
            "frames_refused",
            "PINGs and MSGs refused because their session exceeded its rate, by reason",
            frames_refused.clone(),
        );
        registry.register(
            "fanout_refused",
            "MSGs not delivered to anyone because a fan-out budget was spent, by budget \
             (sender: the session's own; loop: all senders together; memory: the \
             server-wide outbound cap)",
            fanout_refused.clone(),
        );
        registry.register(
            "deliveries",
            "MSGs written or queued to a recipient (a broadcast counts once per recipient)",
            deliveries.clone(),
        );
        registry.register(
            "deliveries_skipped",
            "Recipients a MSG was not delivered to, by reason (recipient_busy: its \
             queue already held as many undelivered messages as it may)",
            deliveries_skipped.clone(),
        );
        registry.register(
            "outbound_queued_bytes",
            "Bytes accepted for sending that sockets have not taken yet, all sessions",
            outbound_queued.clone(),
        );
        registry.register(
            "admin_connections_limited",
            "Admin API connections refused (503) or closed by a limit, by the limit",
            admin_limited.clone(),
        );
        let auth = AuthMetrics::register(&mut registry);
        let webhooks = crate::webhook::WebhookMetrics::register(&mut registry);
        let refused_for_rate = frames_refused
            .get_or_create(&ReasonLabel {
                reason: lubdub_core::protocol::ReasonCode::RateLimited.label(),
            })
            .clone();
        let refused_for_pings = frames_refused
            .get_or_create(&ReasonLabel {
                reason: lubdub_core::protocol::ReasonCode::TooManyPings.label(),
            })
            .clone();
        Self {
            refused_for_rate,
            refused_for_pings,
            fanout_refused,
            deliveries,
            deliveries_skipped,
            outbound_queued,
            registry: Arc::new(registry),
            connections_refused,
            registered,
            handshakes_failed,
            frames_refused,
            admin_limited,
            heartbeats,
            wills_sent,
            room_memberships,
            watches,
            presence_updates,
            watch_resyncs,
            drops,
            detection_delay,
            round_trip,
            sessions,
            auth,
            webhooks,
        }
    }

    /// The webhooks' counters.
    pub fn webhooks(&self) -> &crate::webhook::WebhookMetrics {
        &self.webhooks
    }

    /// The credential metrics, for the event loop's auth gate.
    pub(crate) fn auth(&self) -> &AuthMetrics {
        &self.auth
    }

    /// A last will was sent.
    pub(crate) fn will_sent(&self) {
        self.wills_sent.inc();
    }

    /// A session joined a room.
    pub(crate) fn room_joined(&self) {
        self.room_memberships.inc();
    }

    /// Sessions left `count` rooms (by LEAVE, or by ending).
    pub(crate) fn room_left(&self, count: usize) {
        self.room_memberships.dec_by(count as i64);
    }

    /// Watches held changed by `delta`.
    pub(crate) fn watches_changed(&self, delta: i64) {
        self.watches.inc_by(delta);
    }

    /// `count` PRESENCE frames were queued to watchers.
    pub(crate) fn presence_updates(&self, count: u64) {
        self.presence_updates.inc_by(count);
    }

    /// A loop fell behind the hub and re-sent its watchers' snapshots.
    pub(crate) fn watch_resync(&self) {
        self.watch_resyncs.inc();
    }

    /// A frame arrived from an established session.
    pub(crate) fn heartbeat(&self) {
        self.heartbeats.inc();
    }

    /// A session ended.
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.drops
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// A connection was refused at accept; `limit` is the limit's label.
    pub(crate) fn connection_refused(&self, limit: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason: limit })
            .inc();
    }

    /// An admin connection was refused or closed by `limit` (the flag's
    /// name without `--admin-`: `max_connections`, `header_timeout`,
    /// `connection_timeout`).
    pub(crate) fn admin_limited(&self, limit: &'static str) {
        self.admin_limited
            .get_or_create(&ReasonLabel { reason: limit })
            .inc();
    }

    /// A connection closed before its HELLO was accepted.
    pub(crate) fn handshake_failed(&self, reason: DropReason) {
        self.handshakes_failed
            .get_or_create(&ReasonLabel {
                reason: reason.label(),
            })
            .inc();
    }

    /// A PING or MSG was refused for its session's rate.
    ///
    /// Counted per refused frame, so a flood's refusals must be cheap: the
    /// counters of the usual codes are looked up once (a family lookup
    /// takes a lock and hashes the label).
    pub(crate) fn frame_refused(&self, code: lubdub_core::protocol::ReasonCode) {
        use lubdub_core::protocol::ReasonCode;
        let cached = match code {
            ReasonCode::RateLimited => Some(&self.refused_for_rate),
            ReasonCode::TooManyPings => Some(&self.refused_for_pings),
            _ => None,
        };
        match cached {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.frames_refused
                    .get_or_create(&ReasonLabel {
                        reason: code.label(),
                    })
                    .inc();
            }
        }
    }

    /// A MSG was refused for a spent fan-out budget (`sender`, `loop`, `memory`).
    pub(crate) fn fanout_refused(&self, budget: &'static str) {
        self.fanout_refused
            .get_or_create(&ReasonLabel { reason: budget })
            .inc();
    }

    /// `count` recipients got a MSG.
    pub(crate) fn delivered(&self, count: u64) {
        self.deliveries.inc_by(count);
    }

    /// `count` recipients did not get a MSG, for `reason`.
    pub(crate) fn deliveries_skipped(&self, reason: &'static str, count: u64) {
        self.deliveries_skipped
            .get_or_create(&ReasonLabel { reason })
            .inc_by(count);
    }

    /// Bytes queued for sending, all sessions.
    /// Bytes the whole process holds on the way out now (queues, waiting
    /// fan-outs, MSGs between loops).
    pub fn outbound_held(&self) -> u64 {
        u64::try_from(self.outbound_queued.get()).unwrap_or(0)
    }

    pub(crate) fn outbound_queued(&self, bytes: usize) {
        self.outbound_queued
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A silent session was declared dead `late` after its deadline.
    pub(crate) fn detection_delay(&self, late: Duration) {
        self.detection_delay.observe(late.as_secs_f64());
    }

    /// A client reported its round trip.
    pub(crate) fn round_trip(&self, rtt: Duration) {
        self.round_trip.observe(rtt.as_secs_f64());
    }

    /// The Prometheus text exposition of every metric, with the session
    /// gauge set to `counts`.
    pub fn encode(&self, counts: StateCounts) -> String {
        for (state, value) in [
            ("handshaking", counts.handshaking),
            ("alive", counts.alive),
            ("suspect", counts.suspect),
            ("closing", counts.closing),
        ] {
            self.sessions
                .get_or_create(&StateLabel { state })
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        self.registered
            .set(i64::try_from(counts.registered).unwrap_or(i64::MAX));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
