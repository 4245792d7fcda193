//! What every connection of one event loop is judged by: the configured
//! limits, the failure detector, and the PING allowance after the loop's
//! own stalls; and [`Now`], the instant an input happened.

use std::time::{Duration, Instant};

use crate::backlog::StallGrace;
use crate::protocol::handshake::IntervalPolicy;
use crate::session::ConductLimits;

/// The settings a connection's rules read (the defaults are the server's:
/// 10 s handshake, 64 KiB frames, 3 s interval in 100 ms..5 min, 5 missed). The server builds them from
/// its configuration and replaces them on a reload; a change applies to
/// the next frame, deadline or handshake, never retroactively.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionConfig {
    /// Time from accept to a HELLO.
    pub handshake_timeout: Duration,
    /// Largest frame a peer may send.
    pub max_frame_len: usize,
    /// Heartbeat intervals the server grants.
    pub intervals: IntervalPolicy,
    /// Silent intervals before the counter's verdict (the ceiling of every
    /// verdict, also with phi).
    pub max_missed: u32,
    /// Phi threshold of the adaptive detector, for verdict texts.
    pub phi_threshold: f64,
    /// PING and MSG rates.
    pub conduct: ConductLimits,
    /// Whether a HELLO's credential must be checked
    /// ([`Request::Authenticate`](super::Request::Authenticate)) before
    /// its name is claimed.
    pub authenticate: bool,
    /// Whether the server speaks TLS: on a plain server a TLS ClientHello
    /// is refused by name, not as a bad length prefix.
    pub tls: bool,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            max_frame_len: crate::protocol::DEFAULT_MAX_FRAME_LEN,
            intervals: IntervalPolicy {
                default: Duration::from_secs(3),
                min: Duration::from_millis(100),
                max: Duration::from_secs(300),
            },
            max_missed: 5,
            phi_threshold: 8.0,
            conduct: ConductLimits::default(),
            authenticate: false,
            tls: false,
        }
    }
}

/// The rules of one event loop's connections: one value per loop, however
/// many connections it holds.
#[derive(Debug)]
pub struct Rules<D> {
    /// The settings.
    pub config: ConnectionConfig,
    /// The failure detector every established session is judged by.
    pub detector: D,
    /// The PING allowance after the loop's latest stall.
    stall_grace: StallGrace,
}

impl<D> Rules<D> {
    /// Rules with no stall seen yet.
    pub fn new(config: ConnectionConfig, detector: D) -> Self {
        Self {
            config,
            detector,
            stall_grace: StallGrace::new(),
        }
    }

    /// The loop could not run for `stalled`, until `resumed_us` (real time,
    /// µs since the loop's origin): the PINGs its sessions sent meanwhile
    /// arrive together and are no flood.
    pub fn stalled(&mut self, resumed_us: u64, stalled: Duration) {
        self.stall_grace.stalled(resumed_us, stalled);
    }

    /// The PING rule's extra tolerance for frames read at `real_us`.
    pub(super) fn grace_at(&self, real_us: u64) -> u64 {
        self.stall_grace.grace_at(real_us)
    }
}

/// When an input happened, on the two clocks the rules use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Listening time ([`crate::stall::ListeningClock`]): real time minus
    /// the loop's own stalls. Liveness deadlines are kept by it, so that a
    /// stall of the server is nobody's silence.
    pub listening: Instant,
    /// Real time in µs since the loop's origin: rates are kept by it, since
    /// PINGs held up by a stall arrive together in real time too.
    pub real_us: u64,
}
