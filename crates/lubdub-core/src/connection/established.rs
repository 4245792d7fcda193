//! An established session's state: what the machine keeps for each
//! session between its frames, kept small because every session holds it.

use std::time::Duration;

use crate::budget::FanoutBudget;
use crate::session::Conduct;

/// A session after its HELLO was accepted and its name claimed.
///
/// Times in whole milliseconds in 32 or 64 bits rather than `Duration`
/// and `SystemTime` (16 bytes each): tens of thousands of these per loop.
#[derive(Debug)]
pub struct Session<S> {
    pub(super) name: Box<str>,
    // No session id: the IO layer derives it from where the connection
    // lives, and 8 bytes here are paid by every session.
    pub(super) epoch: u64,
    /// When the session was established, ms since the Unix epoch.
    pub(super) connected_at_ms: u64,
    /// Granted heartbeat interval, ms (as granted in WELCOME).
    pub(super) interval_ms: u32,
    /// Client-reported round trip in microseconds; 0 until known.
    pub(super) rtt_us: u32,
    pub(super) acks_wanted: bool,
    /// Rooms and watches the IO layer holds for it.
    pub(super) held: super::rooms::Holdings,
    pub(super) last_change: StateChange,
    /// Its PING and MSG rates so far.
    pub(super) conduct: Conduct,
    /// Its fan-out work so far (deliveries and bytes).
    pub(super) fanout: FanoutBudget,
    pub(super) liveness: S,
}

impl<S> Session<S> {
    /// The claimed name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing epoch of its claim.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// When it was established, ms since the Unix epoch.
    pub fn connected_at_ms(&self) -> u64 {
        self.connected_at_ms
    }

    /// The granted heartbeat interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_ms))
    }

    /// The client's last reported round trip, µs; 0 until known.
    pub fn rtt_us(&self) -> u32 {
        self.rtt_us
    }

    /// Whether the client asked for a PONG to each PING.
    pub fn acks_wanted(&self) -> bool {
        self.acks_wanted
    }

    /// Its last change of state, as the admin API explains it.
    pub fn last_change(&self) -> StateChange {
        self.last_change
    }

    /// The detector's state for it.
    pub fn liveness(&self) -> &S {
        &self.liveness
    }

    /// Its fan-out budget, which the relay checks and charges.
    pub fn fanout_mut(&mut self) -> &mut FanoutBudget {
        &mut self.fanout
    }

    /// Its fan-out budget.
    pub fn fanout(&self) -> &FanoutBudget {
        &self.fanout
    }
}

/// The last change of a session's state, as `/sessions` explains it.
/// Compact (12 bytes): every session holds one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StateChange {
    /// The handshake completed.
    Joined,
    /// It turned suspect.
    Suspected {
        /// Whole intervals of silence then.
        missed: u32,
        /// Its phi then, with an adaptive detector.
        phi: Option<f32>,
    },
    /// A frame arrived while it was suspect.
    Recovered {
        /// How long it had been silent, ms.
        after_ms: u32,
    },
}

impl StateChange {
    /// The change in words, for the admin API.
    pub fn describe(self, phi_threshold: f64) -> String {
        match self {
            StateChange::Joined => "joined".to_owned(),
            StateChange::Suspected { phi: Some(phi), .. } => format!(
                "suspect: phi {phi:.2} reached half the threshold {}",
                phi_threshold / 2.0
            ),
            StateChange::Suspected { missed, phi: None } => {
                format!("suspect: {missed} interval(s) without a frame")
            }
            StateChange::Recovered { after_ms } => format!(
                "recovered: a frame arrived after {} of silence",
                humantime::format_duration(Duration::from_millis(u64::from(after_ms)))
            ),
        }
    }
}
