//! The server's per-connection composition of the core, without sockets:
//! partial-frame buffering, `decode`, `admit` before the handshake and
//! `Conduct::admit` after it.
//!
//! This mirrors `EventLoop::process_bytes` and `handle_frame` in
//! `crates/lubdub/src/server/event_loop.rs` (as on main at f986b2e, which
//! gives `Conduct` the session's interval in whole milliseconds and the
//! read's arrival in µs). It is a copy, not a shared
//! type: keep the two in step until the composition moves into the core
//! (docs/FUZZING.md, "Sharing the composition").

use std::time::Duration;

use lubdub_core::protocol::handshake::IntervalPolicy;
use lubdub_core::protocol::{codec, DecodeError, Frame};
use lubdub_core::session::{admit, Conduct, ConductLimits, Inbound, Phase, Violation};

/// A connection's partial inbound frame, fed the way the server feeds it.
#[derive(Debug)]
pub struct Inbox {
    partial: Vec<u8>,
    max_frame_len: usize,
}

/// What feeding bytes to an [`Inbox`] ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// Every whole frame was handed on; the rest is kept as a partial frame.
    Waiting,
    /// The frame handler ended the connection.
    Stopped,
    /// The bytes do not decode; the server ends the connection with
    /// REJECT/BYE and this error's reason code.
    Failed(DecodeError),
}

impl Inbox {
    /// An empty inbox for a receiver with this maximum frame length.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            partial: Vec::new(),
            max_frame_len,
        }
    }

    /// Bytes of an incomplete frame held between reads.
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Appends `fresh` to the partial frame, decodes frames from the front
    /// until `Ok(None)` and keeps the rest, as `process_bytes` does
    /// (including its two paths: fresh bytes alone, or appended to a partial
    /// frame). `on_frame` returns whether the connection is still open.
    pub fn feed(&mut self, fresh: &[u8], mut on_frame: impl FnMut(Frame) -> bool) -> Fed {
        let mut pending = std::mem::take(&mut self.partial);
        let from_pending = !pending.is_empty();
        if from_pending {
            pending.extend_from_slice(fresh);
        }
        let bytes: &[u8] = if from_pending { &pending } else { fresh };
        let mut offset = 0;
        while offset < bytes.len() {
            match codec::decode(&bytes[offset..], self.max_frame_len) {
                Ok(Some((frame, used))) => {
                    offset += used;
                    if !on_frame(frame) {
                        return Fed::Stopped;
                    }
                }
                Ok(None) => break,
                Err(error) => return Fed::Failed(error),
            }
        }
        if from_pending {
            pending.drain(..offset);
            self.partial = pending;
        } else {
            self.partial = fresh[offset..].to_vec();
        }
        Fed::Waiting
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// Bytes that do not decode.
    Decode(DecodeError),
    /// A frame the session rules refuse.
    Violation(Violation),
    /// The client sent BYE.
    Bye,
}

/// One decoded frame and what the rules made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When the bytes completing the frame arrived, µs since the origin.
    pub now_us: u64,
    /// Phase of the connection when the frame arrived.
    pub phase: Phase,
    /// The decoded frame.
    pub frame: Frame,
    /// `admit` or `Conduct::admit`'s answer.
    pub verdict: Result<Inbound, Violation>,
}

/// Where the server-side connection is.
#[derive(Debug)]
enum State {
    AwaitingHello,
    Established {
        interval: Duration,
        conduct: Conduct,
    },
    Closing(Ending),
}

/// One server-side connection under the core's rules.
#[derive(Debug)]
pub struct Connection {
    inbox: Inbox,
    state: State,
    policy: IntervalPolicy,
    limits: ConductLimits,
}

impl Connection {
    /// A fresh connection, awaiting HELLO.
    pub fn new(max_frame_len: usize, policy: IntervalPolicy, limits: ConductLimits) -> Self {
        Self {
            inbox: Inbox::new(max_frame_len),
            state: State::AwaitingHello,
            policy,
            limits,
        }
    }

    /// Why the connection ended, if it did.
    pub fn ending(&self) -> Option<&Ending> {
        match &self.state {
            State::Closing(ending) => Some(ending),
            _ => None,
        }
    }

    /// The interval `Conduct` is given, once established.
    pub fn granted_interval(&self) -> Option<Duration> {
        match self.state {
            State::Established { interval, .. } => Some(interval),
            _ => None,
        }
    }

    /// Bytes of an incomplete frame held between reads.
    pub fn partial_len(&self) -> usize {
        self.inbox.partial_len()
    }

    /// Bytes arriving at `now_us`; every frame they complete is judged and
    /// appended to `outcomes`. A closing connection discards its input, as
    /// the server's `Closing` state does.
    pub fn receive(&mut self, fresh: &[u8], now_us: u64, outcomes: &mut Vec<Outcome>) {
        if matches!(self.state, State::Closing(_)) {
            return;
        }
        let Self {
            inbox,
            state,
            policy,
            limits,
        } = self;
        let fed = inbox.feed(fresh, |frame| {
            let (phase, verdict) = match state {
                State::AwaitingHello => (
                    Phase::AwaitingHello,
                    admit(Phase::AwaitingHello, frame.clone()),
                ),
                State::Established { interval, conduct } => (
                    Phase::Established,
                    conduct.admit(frame.clone(), now_us, *interval, limits),
                ),
                State::Closing(_) => return false,
            };
            match &verdict {
                Ok(Inbound::Hello(hello)) => {
                    *state = State::Established {
                        interval: session_interval(policy.grant(hello.requested_interval_ms)),
                        conduct: Conduct::new(),
                    };
                }
                Ok(Inbound::Bye(_)) => *state = State::Closing(Ending::Bye),
                Err(violation) => *state = State::Closing(Ending::Violation(violation.clone())),
                Ok(_) => {}
            }
            outcomes.push(Outcome {
                now_us,
                phase,
                frame,
                verdict,
            });
            !matches!(state, State::Closing(_))
        });
        if let Fed::Failed(error) = fed {
            self.state = State::Closing(Ending::Decode(error));
        }
    }
}

/// The granted interval as the server's session keeps it and hands it to
/// `Conduct`: whole milliseconds, saturating at `u32::MAX`
/// (`Session::interval_ms`, `millis_u32` in the event loop).
pub fn session_interval(granted: Duration) -> Duration {
    Duration::from_millis(u64::from(
        u32::try_from(granted.as_millis()).unwrap_or(u32::MAX),
    ))
}
