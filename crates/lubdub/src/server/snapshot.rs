//! The admin view of sessions, as served by `GET /sessions`: one session,
//! and one page of them.

use std::net::SocketAddr;

/// Liveness shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Heard from within the last interval.
    Alive,
    /// Silent for at least one interval, not yet dead.
    Suspect,
}

/// One established session at the instant of the listing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionInfo {
    /// Name the session holds.
    pub name: String,
    /// Peer address of its connection.
    pub addr: SocketAddr,
    /// `alive` or `suspect`.
    pub state: SessionState,
    /// Whole intervals of silence so far.
    pub missed: u32,
    /// Milliseconds since the last inbound frame.
    pub last_seen_ms: u64,
    /// When the session was established, RFC 3339 in UTC.
    pub connected_at: String,
    /// Fencing epoch of the session's claim on its name.
    pub epoch: u64,
    /// Session id, as sent in WELCOME.
    pub session_id: u64,
    /// The event loop (thread) serving the session, from 0 (see `--threads`).
    #[serde(rename = "loop", default)]
    pub loop_index: usize,
    /// Whether the client asked for one-way heartbeats (no PONG).
    pub one_way: bool,
    /// Round-trip time last measured by the client, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rtt_ms: Option<f64>,
    /// Granted heartbeat interval, in milliseconds.
    pub interval_ms: u64,
    /// Exponentially weighted mean gap between the session's frames, in
    /// milliseconds (seeded with the expected ping period).
    pub mean_interarrival_ms: f64,
    /// Current phi (suspicion level), when the phi detector judges sessions.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub phi: Option<f64>,
    /// Why the session is in its current state, e.g. `joined`,
    /// `suspect: 2 interval(s) without a frame`, `recovered: …`.
    pub last_change: String,
    /// The status the session set, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
}

/// One page of `GET /sessions?limit=N&after=CURSOR`: established sessions in
/// slab order (the order in which slots were allocated, not by name).
///
/// Paging is consistent for sessions that stay: a session keeps its slot
/// for its whole life, so one that exists from the first page to the last
/// appears exactly once; one that comes or goes meanwhile may or may not.
/// To rebuild exact state, apply the event stream's changes numbered after
/// the first page's `seq` (applied by session id, they are idempotent).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionPage {
    /// The sessions of this page; fewer than asked for (even none) when
    /// the slots looked at in one turn of the loop held fewer.
    pub sessions: Vec<SessionInfo>,
    /// The cursor to pass as `after` for the next page; `None` (JSON
    /// `null`) when this page is the last.
    pub next: Option<u64>,
    /// The number of the last presence event published before this page
    /// was taken (see [`crate::server::PresenceHub::last_seq`]); set by the
    /// admin API.
    #[serde(default)]
    pub seq: u64,
}
