//! A simulated server for the connection machine's tests, in the spirit of
//! quinn's `Pair`: machines on a simulated clock, an in-memory registry
//! and credential checker that answer their requests, and every frame
//! sent, event and close recorded per connection. Rule tests run in
//! microseconds, with time passed explicitly.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::detector::{CounterConfig, CounterDetector, CounterState};
use crate::protocol::codec::encode_to_vec;
use crate::protocol::frame::flags;
use crate::protocol::inbox::Fed;
use crate::protocol::{Frame, Hello, Message, PROTOCOL_VERSION};

use super::{
    Authentication, ClaimAnswer, Close, Connection, ConnectionConfig, Event, Now, Output, Request,
    Rules, Timer, Transmit,
};

/// How the simulated credential checker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Checker {
    /// Every credential grants its name at once.
    Grant,
    /// Every credential is refused at once.
    Refuse,
    /// Answers wait for [`Sim::answer_authentication`].
    Hold,
}

/// One simulated client connection and what the server did with it.
#[derive(Debug)]
pub(super) struct Peer {
    pub(super) machine: Connection<CounterState>,
    partial: Vec<u8>,
    /// Frames the server sent, farewells included, in order.
    pub(super) sent: Vec<Frame>,
    pub(super) events: Vec<Event>,
    /// How the connection was closed (the first close asked for).
    pub(super) closed: Option<Close>,
    /// MSGs handed to the relay.
    pub(super) relayed: Vec<Message>,
    /// Rooms it is in and targets it watches, as the IO layer would hold them.
    pub(super) rooms: Vec<String>,
    pub(super) watches: Vec<String>,
    /// Whether its socket is gone (closed at once, or after lingering).
    pub(super) removed: bool,
}

/// Machines of one simulated loop, their clock and their registry.
#[derive(Debug)]
pub(super) struct Sim {
    pub(super) rules: Rules<CounterDetector>,
    t0: Instant,
    /// Real time since `t0`.
    real: Duration,
    /// Listening time since `t0` (real time minus the loop's stalls).
    listening: Duration,
    pub(super) peers: Vec<Peer>,
    /// Name → holder and epoch.
    pub(super) names: HashMap<String, (usize, u64)>,
    next_epoch: u64,
    /// Deadlines pushed: when, whose, which.
    timers: Vec<(Instant, usize, Timer)>,
    pub(super) checker: Checker,
    /// The registry answers every claim `Unavailable`.
    pub(super) registry_down: bool,
    /// Requests seen, in order, with the connection that made them.
    pub(super) requests: Vec<(usize, Request)>,
}

impl Sim {
    /// A simulated loop with `config` and the counter detector.
    pub(super) fn new(config: ConnectionConfig) -> Self {
        let detector = CounterDetector::new(CounterConfig {
            max_missed: config.max_missed,
        });
        Self {
            rules: Rules::new(config, detector),
            t0: Instant::now(),
            real: Duration::ZERO,
            listening: Duration::ZERO,
            peers: Vec::new(),
            names: HashMap::new(),
            next_epoch: 1,
            timers: Vec::new(),
            checker: Checker::Grant,
            registry_down: false,
            requests: Vec::new(),
        }
    }

    /// The defaults with a 1 s interval: 5 s to a verdict.
    pub(super) fn one_second() -> Self {
        let mut config = ConnectionConfig::default();
        config.intervals.default = Duration::from_secs(1);
        Self::new(config)
    }

    pub(super) fn now(&self) -> Now {
        Now {
            listening: self.t0 + self.listening,
            real_us: self.real.as_micros() as u64,
        }
    }

    /// Listening time elapsed since the start.
    pub(super) fn elapsed(&self) -> Duration {
        self.listening
    }

    /// A new connection, accepted now.
    pub(super) fn connect(&mut self) -> usize {
        let mut out = Vec::new();
        let machine = Connection::new(self.now(), &self.rules, &mut out);
        self.peers.push(Peer {
            machine,
            partial: Vec::new(),
            sent: Vec::new(),
            events: Vec::new(),
            closed: None,
            relayed: Vec::new(),
            rooms: Vec::new(),
            watches: Vec::new(),
            removed: false,
        });
        let id = self.peers.len() - 1;
        self.carry_out(id, out);
        id
    }

    /// A HELLO for `name` asking for acks and the default interval.
    pub(super) fn hello(name: &str) -> Frame {
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: flags::ACKS_WANTED,
            requested_interval_ms: 0,
            name: name.to_owned(),
            credential: b"secret".to_vec(),
            status: None,
        })
    }

    /// A connection whose HELLO for `name` was answered.
    pub(super) fn join(&mut self, name: &str) -> usize {
        let id = self.connect();
        self.send(id, &Self::hello(name));
        id
    }

    /// The peer of `id` sends `frames` in one write.
    pub(super) fn send_all(&mut self, id: usize, frames: &[Frame]) {
        let bytes: Vec<u8> = frames
            .iter()
            .flat_map(|frame| encode_to_vec(frame).expect("encodable"))
            .collect();
        self.send_bytes(id, &bytes);
    }

    /// The peer of `id` sends `frame`.
    pub(super) fn send(&mut self, id: usize, frame: &Frame) {
        self.send_all(id, std::slice::from_ref(frame));
    }

    /// `bytes` arrive now on connection `id`, handed over as the server's
    /// reading does: again after a pause, once the outputs are carried out.
    pub(super) fn send_bytes(&mut self, id: usize, bytes: &[u8]) {
        let mut fresh = bytes;
        loop {
            let now = self.now();
            let mut out = Vec::new();
            let peer = &mut self.peers[id];
            let fed =
                peer.machine
                    .handle_bytes(now, &mut peer.partial, fresh, &self.rules, &mut out);
            self.carry_out(id, out);
            if fed != Fed::Paused {
                return;
            }
            fresh = &[];
        }
    }

    /// The peer of `id` closes its side.
    pub(super) fn peer_closes(&mut self, id: usize) {
        let now = self.now();
        let mut out = Vec::new();
        let peer = &mut self.peers[id];
        let truncated = !peer.partial.is_empty();
        peer.machine
            .handle_closed(now, truncated, &self.rules, &mut out);
        self.carry_out(id, out);
    }

    /// Time passes (real and listening alike), firing every deadline due
    /// on the way at its own instant.
    pub(super) fn advance(&mut self, by: Duration) {
        let until = self.listening + by;
        loop {
            self.timers.sort_by_key(|&(at, ..)| at);
            let Some(&(at, id, timer)) = self.timers.first() else {
                break;
            };
            if at > self.t0 + until {
                break;
            }
            self.timers.remove(0);
            let step = at.saturating_duration_since(self.t0 + self.listening);
            self.listening += step;
            self.real += step;
            let now = self.now();
            let mut out = Vec::new();
            self.peers[id]
                .machine
                .handle_timeout(now, timer, &self.rules, &mut out);
            self.carry_out(id, out);
        }
        let rest = until - self.listening;
        self.listening = until;
        self.real += rest;
    }

    /// The loop could not run for `stalled`: real time passes, listening
    /// time does not.
    pub(super) fn stall(&mut self, stalled: Duration) {
        self.real += stalled;
        let resumed_us = self.real.as_micros() as u64;
        self.rules.stalled(resumed_us, stalled);
    }

    /// The held credential check of `id` is answered.
    pub(super) fn answer_authentication(&mut self, id: usize, answer: Authentication) {
        let now = self.now();
        let mut out = Vec::new();
        self.peers[id]
            .machine
            .handle_authentication(now, answer, &self.rules, &mut out);
        self.carry_out(id, out);
    }

    /// The server shuts down, hinting `retry_after`.
    pub(super) fn shutdown(&mut self, retry_after: Duration) {
        for id in 0..self.peers.len() {
            let now = self.now();
            let mut out = Vec::new();
            self.peers[id]
                .machine
                .handle_shutdown(now, retry_after, &self.rules, &mut out);
            self.carry_out(id, out);
        }
    }

    /// Carries out `outputs` of connection `id`, as the server's dispatch
    /// does, answering requests at once (unless the checker holds them).
    fn carry_out(&mut self, id: usize, outputs: Vec<Output>) {
        for output in outputs {
            let peer = &mut self.peers[id];
            match output {
                Output::Transmit(Transmit::Pong { seq }) => peer.sent.push(Frame::Pong { seq }),
                Output::Transmit(Transmit::Welcome(welcome)) => {
                    peer.sent.push(Frame::Welcome(welcome));
                }
                Output::Transmit(Transmit::Notice(reason)) => peer.sent.push(Frame::Notice(reason)),
                Output::Event(event) => peer.events.push(event),
                Output::Timeout { timer, at, .. } => self.timers.push((at, id, timer)),
                Output::Close(close) => {
                    if let Close::Farewell(frame) = &close {
                        peer.sent.push(frame.clone());
                    } else {
                        peer.removed = true;
                    }
                    peer.closed.get_or_insert(close);
                }
                Output::Request(request) => self.request(id, request),
            }
        }
    }

    fn report_holdings(peer: &mut Peer) {
        let held = super::Holdings {
            rooms: u8::try_from(peer.rooms.len()).unwrap_or(u8::MAX),
            watches: u8::try_from(peer.watches.len()).unwrap_or(u8::MAX),
        };
        peer.machine.set_holdings(held);
    }

    fn request(&mut self, id: usize, request: Request) {
        self.requests.push((id, request.clone()));
        let now = self.now();
        let mut out = Vec::new();
        match request {
            Request::Authenticate { .. } => {
                let answer = match self.checker {
                    Checker::Grant => Authentication::Granted,
                    Checker::Refuse => Authentication::Refused {
                        code: crate::protocol::ReasonCode::Unauthorized,
                        text: "no valid credential".to_owned(),
                    },
                    Checker::Hold => return,
                };
                self.peers[id]
                    .machine
                    .handle_authentication(now, answer, &self.rules, &mut out);
            }
            Request::CancelAuthentication => {}
            Request::Claim { .. } if self.registry_down => {
                self.peers[id].machine.handle_claim(
                    now,
                    ClaimAnswer::Unavailable,
                    &self.rules,
                    &mut out,
                );
            }
            Request::Claim { name } => {
                if let Some(&(holder, _)) = self.names.get(&name) {
                    let mut taken = Vec::new();
                    self.peers[holder].machine.handle_taken_over(
                        now,
                        "127.0.0.1:9",
                        &self.rules,
                        &mut taken,
                    );
                    self.carry_out(holder, taken);
                }
                let epoch = self.next_epoch;
                self.next_epoch += 1;
                self.names.insert(name, (id, epoch));
                let answer = ClaimAnswer::Claimed {
                    session_id: id as u64,
                    epoch,
                    wall_ms: 1_700_000_000_000,
                    replaced: None,
                };
                self.peers[id]
                    .machine
                    .handle_claim(now, answer, &self.rules, &mut out);
            }
            Request::Release { name, epoch } => {
                // Fenced: only the epoch that holds the name releases it.
                if self
                    .names
                    .get(&*name)
                    .is_some_and(|&(_, held)| held == epoch)
                {
                    self.names.remove(&*name);
                }
            }
            Request::Relay(message) => {
                self.peers[id].relayed.push(message);
                self.peers[id].machine.message_delivered(now.real_us);
            }
            Request::Join { room, .. } | Request::Leave { room, .. } => {
                let joins = matches!(self.requests.last(), Some((_, Request::Join { .. })));
                let peer = &mut self.peers[id];
                let held = peer.rooms.contains(&room);
                if joins && !held {
                    peer.rooms.push(room);
                } else if !joins && held {
                    peer.rooms.retain(|r| *r != room);
                }
                Self::report_holdings(peer);
            }
            Request::Watch { mode, target, .. } => {
                let peer = &mut self.peers[id];
                let held = peer.watches.contains(&target);
                match mode {
                    crate::protocol::rooms::WatchMode::Stop => {
                        peer.watches.retain(|t| *t != target)
                    }
                    crate::protocol::rooms::WatchMode::Once => {}
                    _ if !held => peer.watches.push(target),
                    _ => {}
                }
                Self::report_holdings(peer);
            }
        }
        self.carry_out(id, out);
    }
}
