//! What a connection machine asks of its IO layer, as values: frames to
//! send, presence and accounting events, requests to other parts of the
//! server (credentials, the registry, the relay), deadlines, and how to
//! close. The IO layer carries them out in the order they were pushed.
//!
//! One ordered queue rather than a queue per kind: order across kinds
//! matters (a session's `Dropped` before its farewell; the release of a
//! name before the close of its socket), and one queue per event loop,
//! not per connection, keeps an idle session's memory at its slot.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::protocol::{Frame, Message, Reason, ReasonCode, Welcome, Will};

use super::DropReason;

/// One thing the machine asks the IO layer to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame.
    Transmit(Transmit),
    /// Something happened that others may want to know.
    Event(Event),
    /// Ask another part of the server; answers come back as inputs.
    Request(Request),
    /// Call [`handle_timeout`](super::Connection::handle_timeout) with
    /// this timer at `at` (or at any instant up to `latest`, when given:
    /// the IO layer may coalesce it with other connections' deadlines).
    /// A timer that comes due after the connection moved on is ignored.
    Timeout {
        /// Which deadline.
        timer: Timer,
        /// When it is due.
        at: Instant,
        /// The latest instant it may be run at instead, if it may be late.
        latest: Option<Instant>,
    },
    /// The connection ends.
    Close(Close),
}

/// A frame to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// The answer to a PING: encoded without allocating on the hot path.
    Pong {
        /// The PING's sequence number.
        seq: u32,
    },
    /// The handshake succeeded.
    Welcome(Welcome),
    /// A warning or a refusal that does not end the session. The IO layer
    /// may leave it out when the peer's queue already holds its share, so
    /// that a peer that does not read gets no pile of notices.
    Notice(Reason),
}

/// How the connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Close {
    /// Send this REJECT or BYE, shut the write side once it is out, and
    /// discard input until the peer closes or the linger timer fires; if
    /// the frame cannot be queued, close at once.
    Farewell(Frame),
    /// Close the socket now.
    Now,
}

/// Deadlines a connection keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// The HELLO must have arrived.
    Handshake,
    /// The detector's next check of an established session.
    Liveness,
    /// A closing connection's farewell has had time to be read.
    Linger,
}

/// Something that happened to a connection.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A frame arrived on an established session (any frame is proof of
    /// life); `rtt_us` is a PING's reported round trip, 0 when none.
    Heard {
        /// The client's last round trip, µs; 0 when unknown.
        rtt_us: u32,
    },
    /// The handshake completed.
    Joined {
        /// The session's name.
        name: String,
        /// Fencing epoch of its claim.
        epoch: u64,
        /// Granted heartbeat interval.
        interval: Duration,
        /// The client asked for no PONGs.
        one_way: bool,
        /// The session it took the name over from, if any.
        replaced: Option<u64>,
        /// The status it starts with (HELLO's), if any.
        status: Option<String>,
    },
    /// The session turned suspect.
    Suspected {
        /// The session's name.
        name: Box<str>,
        /// Whole intervals of silence.
        missed: u32,
        /// Its phi, with an adaptive detector.
        phi: Option<f64>,
        /// It was not suspect before (the counter reports each further
        /// silent interval too; a late check may skip straight past 1).
        first: bool,
    },
    /// The session set its status (empty: cleared it); valid, and within
    /// its rate.
    StatusChanged {
        /// The session's name.
        name: Box<str>,
        /// The status from now on.
        status: String,
    },
    /// The session set its last will (an empty body: cleared it); valid.
    WillSet {
        /// The session's name.
        name: Box<str>,
        /// The will from now on.
        will: Will,
    },
    /// A frame arrived from a suspect session.
    Recovered {
        /// The session's name.
        name: Box<str>,
    },
    /// An established session ended; its name is released (unless taken
    /// over) by a [`Request::Release`] pushed before this event.
    Dropped {
        /// The session's name.
        name: Box<str>,
        /// Why.
        reason: DropReason,
        /// How long it had been silent.
        silent_for: Duration,
        /// For a timeout: how long after its deadline the verdict came.
        late_by: Option<Duration>,
        /// Context for the log (an IO error's text, phi).
        detail: Option<String>,
    },
    /// A connection ended before its handshake completed.
    HandshakeFailed {
        /// Why.
        reason: DropReason,
        /// Context for the log.
        detail: Option<String>,
    },
    /// The peer broke a rule and is answered with REJECT (before the
    /// handshake) or BYE (after), with this code and text.
    Violated {
        /// The code the peer is told.
        code: ReasonCode,
        /// The text the peer is told.
        text: String,
        /// Whether the session was established.
        established: bool,
    },
    /// A PING or MSG over its rate was not acted on; the session goes on.
    /// `notice` is the warning sent, on the first refusal of a run.
    FrameRefused {
        /// `too_many_pings`, `rate_limited` or `server_busy`.
        code: ReasonCode,
        /// The NOTICE's text, when one is sent.
        notice: Option<String>,
    },
    /// The peer said BYE.
    PeerLeft {
        /// Its reason.
        reason: Reason,
    },
}

/// What a connection asks of the rest of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Check this credential for the HELLO's name; answer with
    /// [`handle_authentication`](super::Connection::handle_authentication),
    /// now or later.
    Authenticate {
        /// The name claimed.
        name: String,
        /// The credential, taken out of the HELLO kept meanwhile.
        credential: Vec<u8>,
    },
    /// The connection ended while its credential was being checked: the
    /// answer is not needed any more.
    CancelAuthentication,
    /// Claim the name; answer with
    /// [`handle_claim`](super::Connection::handle_claim).
    Claim {
        /// The name.
        name: String,
    },
    /// Release the name held under this epoch. Needs no answer: a release
    /// of an epoch that no longer holds the name changes nothing (fencing).
    Release {
        /// The name.
        name: Box<str>,
        /// The epoch its claim was granted.
        epoch: u64,
    },
    /// Relay this MSG (its `from` set to the sender's name); tell the
    /// machine what became of it with
    /// [`message_delivered`](super::Connection::message_delivered) or
    /// [`handle_message_refused`](super::Connection::handle_message_refused).
    Relay(Message),
    /// Make this session a member of the room; report what the session
    /// holds with [`set_holdings`](super::Connection::set_holdings), or
    /// why not with
    /// [`handle_request_refused`](super::Connection::handle_request_refused).
    Join {
        /// The session's name.
        name: Box<str>,
        /// The room.
        room: String,
    },
    /// End this session's membership of the room (as for `Join`).
    Leave {
        /// The session's name.
        name: Box<str>,
        /// The room.
        room: String,
    },
    /// Start (`full`, `count`), answer once (`once`) or stop watching
    /// the target for this session (as for `Join`).
    Watch {
        /// The session's name.
        name: Box<str>,
        /// What is asked.
        mode: crate::protocol::rooms::WatchMode,
        /// A name or a room.
        target: String,
    },
}

/// Where a machine pushes its outputs: the IO layer's queue (tagged with
/// the connection, [`Outputs::to`]) or, in tests, a plain `Vec`.
pub trait OutputSink {
    /// Adds one output after those already pushed.
    fn push(&mut self, output: Output);
}

impl OutputSink for Vec<Output> {
    fn push(&mut self, output: Output) {
        Vec::push(self, output);
    }
}

/// One event loop's queue of outputs, each tagged with the connection
/// (`K`: the loop's key for it) that pushed it.
#[derive(Debug)]
pub struct Outputs<K> {
    queue: VecDeque<(K, Output)>,
}

impl<K> Default for Outputs<K> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<K: Copy> Outputs<K> {
    /// A sink that tags what is pushed to it with `key`.
    pub fn to(&mut self, key: K) -> Tagged<'_, K> {
        Tagged { key, outputs: self }
    }

    /// The oldest output not yet carried out.
    pub fn poll(&mut self) -> Option<(K, Output)> {
        self.queue.pop_front()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// [`Outputs`] for one connection.
#[derive(Debug)]
pub struct Tagged<'a, K> {
    key: K,
    outputs: &'a mut Outputs<K>,
}

impl<K: Copy> OutputSink for Tagged<'_, K> {
    fn push(&mut self, output: Output) {
        self.outputs.queue.push_back((self.key, output));
    }
}
