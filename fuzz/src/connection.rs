//! The server's per-connection composition of the core, without sockets:
//! the server's own framing (`lubdub_core::protocol::inbox::feed`, which
//! `EventLoop::process_bytes` calls), then `admit` before the handshake and
//! `Conduct::admit` after it, as `EventLoop::handle_frame` chooses between
//! them (`crates/lubdub/src/server/event_loop.rs`). That choice, and the
//! interval in whole milliseconds, are mirrored here: keep them in step.

use std::time::Duration;

use lubdub_core::protocol::handshake::IntervalPolicy;
use lubdub_core::protocol::inbox;
use lubdub_core::protocol::{DecodeError, Frame};
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
    /// until `Ok(None)` and keeps the rest: the core's `inbox::feed`, as the
    /// server calls it. `on_frame` returns whether the connection is still open.
    pub fn feed(&mut self, fresh: &[u8], on_frame: impl FnMut(Frame) -> bool) -> Fed {
        match inbox::feed(&mut self.partial, fresh, self.max_frame_len, on_frame) {
            inbox::Fed::Waiting => Fed::Waiting,
            inbox::Fed::Stopped => Fed::Stopped,
            inbox::Fed::Failed { error, .. } => Fed::Failed(error),
        }
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
                // The server tells the sender's `Conduct` when a MSG was
                // delivered; here every admitted MSG is.
                Ok(Inbound::Message(_)) => {
                    if let State::Established { conduct, .. } = state {
                        conduct.message_delivered(now_us);
                    }
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
