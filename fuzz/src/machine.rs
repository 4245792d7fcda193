//! The server's real connection machine (`lubdub_core::connection`) under
//! a fuzz input: bytes are handed to it as the server's reading does (fed
//! again after a HELLO's pause, once its outputs are carried out), claims
//! and relays are answered at once, and its outputs are read back into one
//! [`Outcome`] per frame for the target's checks. Nothing here applies a
//! rule: a verdict is what the machine's outputs say it was.

use std::time::{Duration, Instant};

use lubdub_core::connection::{
    ClaimAnswer, Close, Connection as Machine, ConnectionConfig, Event, Holdings, Now, Output,
    Request, Rules, Transmit,
};
use lubdub_core::protocol::rooms::WatchMode;
use lubdub_core::detector::{CounterConfig, CounterDetector, CounterState};
use lubdub_core::protocol::handshake::IntervalPolicy;
use lubdub_core::protocol::inbox;
use lubdub_core::protocol::{Bye, DecodeError, Frame, Message};
use lubdub_core::session::{ConductLimits, Inbound, Phase, Violation};

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
    /// server's machine calls it. `on_frame` returns whether to go on.
    pub fn feed(&mut self, fresh: &[u8], on_frame: impl FnMut(Frame) -> bool) -> Fed {
        match inbox::feed(&mut self.partial, fresh, self.max_frame_len, on_frame) {
            inbox::Fed::Waiting | inbox::Fed::Paused => Fed::Waiting,
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

/// One decoded frame and what the machine made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// When the bytes completing the frame arrived, µs since the origin.
    pub now_us: u64,
    /// Phase of the connection when the frame arrived.
    pub phase: Phase,
    /// The decoded frame.
    pub frame: Frame,
    /// The verdict the machine's outputs show.
    pub verdict: Result<Inbound, Violation>,
    /// For an admitted MSG: whether it was handed to the relay (an
    /// oversized body is admitted by the rates but not relayed).
    pub relayed: bool,
    /// Which read (call of [`Connection::receive`], from 0) the frame
    /// completed. The relay tells the machine a MSG was delivered once the
    /// read's outputs are carried out, as the server does, so a refusal
    /// later in the same read still belongs to the run before it.
    pub read: usize,
}

/// One server-side connection: the real machine and what it was sent.
#[derive(Debug)]
pub struct Connection {
    machine: Machine<CounterState>,
    rules: Rules<CounterDetector>,
    origin: Instant,
    /// The partial frame the server's IO layer keeps for the machine.
    partial: Vec<u8>,
    /// An independent decode of the same stream, to pair each frame with
    /// the outputs it caused.
    shadow: Inbox,
    established: bool,
    /// The established session's name and whether it wants PONGs, from
    /// its HELLO (the machine forgets them when the session ends, which
    /// may be later in the same read).
    session: Option<(String, bool)>,
    ending: Option<Ending>,
    /// Reads received so far.
    reads: usize,
    /// Rooms joined and targets watched, as the server would hold them
    /// (reported to the machine after each request, as the server does).
    rooms: Vec<String>,
    watches: Vec<String>,
}

impl Connection {
    /// A fresh connection, awaiting HELLO, on a server with these settings.
    pub fn new(max_frame_len: usize, policy: IntervalPolicy, limits: ConductLimits) -> Self {
        let config = ConnectionConfig {
            max_frame_len,
            intervals: policy,
            conduct: limits,
            // A plain server names a TLS ClientHello in its REJECT; the
            // decode error's own code and text are what is checked here.
            tls: true,
            ..ConnectionConfig::default()
        };
        let detector = CounterDetector::new(CounterConfig {
            max_missed: config.max_missed,
        });
        let rules = Rules::new(config, detector);
        let origin = Instant::now();
        let now = Now {
            listening: origin,
            real_us: 0,
        };
        let machine = Machine::new(now, &rules, &mut Vec::new());
        Self {
            machine,
            rules,
            origin,
            partial: Vec::new(),
            shadow: Inbox::new(max_frame_len),
            established: false,
            session: None,
            ending: None,
            reads: 0,
            rooms: Vec::new(),
            watches: Vec::new(),
        }
    }

    /// Why the connection ended, if it did.
    pub fn ending(&self) -> Option<&Ending> {
        self.ending.as_ref()
    }

    /// The interval the established session was granted.
    pub fn granted_interval(&self) -> Option<Duration> {
        self.machine.session().map(|session| session.interval())
    }

    /// Bytes of an incomplete frame held between reads.
    pub fn partial_len(&self) -> usize {
        self.partial.len()
    }

    /// Bytes arriving at `now_us`; every frame they complete is judged by
    /// the machine and appended to `outcomes`.
    pub fn receive(&mut self, fresh: &[u8], now_us: u64, outcomes: &mut Vec<Outcome>) {
        let read = self.reads;
        self.reads += 1;
        if self.ending.is_some() {
            // The machine discards a closing connection's input.
            let mut out = Vec::new();
            self.machine.handle_bytes(
                self.now(now_us),
                &mut self.partial,
                fresh,
                &self.rules,
                &mut out,
            );
            assert!(out.is_empty(), "acted on input after the end: {out:?}");
            return;
        }
        let mut frames = Vec::new();
        let shadow = self.shadow.feed(fresh, |frame| {
            frames.push(frame);
            true
        });
        let now = self.now(now_us);
        let mut outputs = Vec::new();
        let mut fresh = fresh;
        loop {
            let mut out = Vec::new();
            let fed =
                self.machine
                    .handle_bytes(now, &mut self.partial, fresh, &self.rules, &mut out);
            self.carry_out(now, out, &mut outputs);
            if fed != inbox::Fed::Paused {
                break;
            }
            fresh = &[];
        }
        // Undecodable bytes after the frames end the connection with a
        // refusal of their own, the last one pushed.
        let mut decode_refused = false;
        if let Fed::Failed(error) = &shadow {
            let last = outputs
                .iter()
                .rposition(|output| matches!(output, Output::Event(Event::Violated { .. })));
            if let Some(position) = last {
                if let Output::Event(Event::Violated { code, text, .. }) = &outputs[position] {
                    if (*code, text.as_str()) == (error.reason_code(), error.to_string().as_str()) {
                        outputs.truncate(position);
                        decode_refused = true;
                    }
                }
            }
        }
        let mut outputs = outputs.into_iter().peekable();
        for frame in frames {
            if self.ending.is_some() {
                break;
            }
            let phase = if self.established {
                Phase::Established
            } else {
                Phase::AwaitingHello
            };
            // A frame's outputs run to the next `Heard`, which opens every
            // frame of an established session (before the handshake: a
            // claim or a refusal, and what the claim's answer brought).
            let mut segment = Vec::new();
            while let Some(output) = outputs.next() {
                segment.push(output);
                if matches!(
                    outputs.peek(),
                    None | Some(Output::Event(Event::Heard { .. }))
                ) {
                    break;
                }
            }
            let (verdict, relayed) = self.verdict(&frame, &segment);
            if let Ok(Inbound::Hello(hello)) = &verdict {
                self.established = true;
                self.session = Some((hello.name.clone(), hello.acks_wanted()));
            }
            match &verdict {
                Err(violation) => self.ending = Some(Ending::Violation(violation.clone())),
                Ok(Inbound::Bye(_)) => self.ending = Some(Ending::Bye),
                Ok(_) => {}
            }
            outcomes.push(Outcome {
                now_us,
                phase,
                frame,
                verdict,
                relayed,
                read,
            });
        }
        let rest: Vec<Output> = outputs.collect();
        assert!(
            !rest
                .iter()
                .any(|output| matches!(output, Output::Event(Event::Heard { .. }))),
            "frames judged that the stream does not hold: {rest:?}"
        );
        if let (None, Fed::Failed(error)) = (&self.ending, shadow) {
            assert!(decode_refused, "undecodable bytes not refused as such");
            self.ending = Some(Ending::Decode(error));
        }
    }

    fn now(&self, now_us: u64) -> Now {
        Now {
            listening: self.origin + Duration::from_micros(now_us),
            real_us: now_us,
        }
    }

    /// Answers the machine's requests as the server would, at once, and
    /// collects every output in order.
    fn carry_out(&mut self, now: Now, out: Vec<Output>, all: &mut Vec<Output>) {
        for output in out {
            let mut answer = Vec::new();
            match &output {
                Output::Request(Request::Claim { .. }) => {
                    let claimed = ClaimAnswer::Claimed {
                        session_id: 1,
                        epoch: 1,
                        wall_ms: 0,
                        replaced: None,
                    };
                    all.push(output);
                    self.machine
                        .handle_claim(now, claimed, &self.rules, &mut answer);
                    self.carry_out(now, answer, all);
                    continue;
                }
                // The server tells the sender's `Conduct` when a MSG was
                // delivered; here every relayed MSG is.
                Output::Request(Request::Relay(_)) => self.machine.message_delivered(now.real_us),
                // Carried out as the server does: a room or watch held
                // once, the holdings reported back.
                Output::Request(Request::Join { room, .. }) => {
                    if !self.rooms.contains(room) {
                        self.rooms.push(room.clone());
                    }
                    self.report_holdings();
                }
                Output::Request(Request::Leave { room, .. }) => {
                    self.rooms.retain(|held| held != room);
                    self.report_holdings();
                }
                Output::Request(Request::Watch { mode, target, .. }) => {
                    match mode {
                        WatchMode::Stop => self.watches.retain(|held| held != target),
                        WatchMode::Full | WatchMode::Count if !self.watches.contains(target) => {
                            self.watches.push(target.clone());
                        }
                        _ => {}
                    }
                    self.report_holdings();
                }
                _ => {}
            }
            all.push(output);
        }
    }

    fn report_holdings(&mut self) {
        let held = Holdings {
            rooms: u8::try_from(self.rooms.len()).unwrap_or(u8::MAX),
            watches: u8::try_from(self.watches.len()).unwrap_or(u8::MAX),
        };
        self.machine.set_holdings(held);
    }

    /// What the machine's outputs for `frame` say its verdict was.
    fn verdict(&self, frame: &Frame, segment: &[Output]) -> (Result<Inbound, Violation>, bool) {
        let violated = segment.iter().find_map(|output| match output {
            Output::Event(Event::Violated { code, text, .. }) => Some(Violation {
                code: *code,
                text: text.clone(),
            }),
            _ => None,
        });
        if let Some(violation) = violated {
            return (Err(violation), false);
        }
        let refused = segment.iter().find_map(|output| match output {
            Output::Event(Event::FrameRefused { code, notice }) => Some(Inbound::Refused {
                code: *code,
                notice: notice.clone(),
            }),
            _ => None,
        });
        if let Some(refused) = refused {
            return (Ok(refused), false);
        }
        match frame {
            Frame::Hello(hello) => {
                let claimed = segment.iter().any(|output| {
                    matches!(output, Output::Request(Request::Claim { name }) if *name == hello.name)
                });
                assert!(claimed, "HELLO neither claimed nor refused: {segment:?}");
                (Ok(Inbound::Hello(hello.clone())), false)
            }
            Frame::Ping { seq, rtt_us } => {
                let acks = self.session.as_ref().is_some_and(|(_, acks)| *acks);
                let ponged = segment.iter().any(|output| {
                    matches!(output, Output::Transmit(Transmit::Pong { seq: answered }) if answered == seq)
                });
                assert_eq!(ponged, acks, "PONG iff acks are wanted: {segment:?}");
                (
                    Ok(Inbound::Ping {
                        seq: *seq,
                        rtt_us: *rtt_us,
                    }),
                    false,
                )
            }
            Frame::Msg(message) => {
                let relayed = segment.iter().find_map(|output| match output {
                    Output::Request(Request::Relay(relayed)) => Some(relayed),
                    _ => None,
                });
                if let Some(relayed) = relayed {
                    let name = self.session.as_ref().map(|(name, _)| name);
                    assert_eq!(Some(&relayed.from), name, "relayed under another name");
                    assert_eq!((&relayed.to, &relayed.body), (&message.to, &message.body));
                }
                let original = Message {
                    from: message.from.clone(),
                    to: message.to.clone(),
                    body: message.body.clone(),
                };
                (Ok(Inbound::Message(original)), relayed.is_some())
            }
            Frame::Bye(bye) => {
                let left = segment.iter().any(|output| {
                    matches!(output, Output::Event(Event::PeerLeft { reason }) if *reason == bye.reason)
                });
                let closed = segment
                    .iter()
                    .any(|output| matches!(output, Output::Close(Close::Now)));
                assert!(left && closed, "BYE not acted on: {segment:?}");
                (
                    Ok(Inbound::Bye(Bye {
                        reason: bye.reason.clone(),
                        retry_after_ms: bye.retry_after_ms,
                    })),
                    false,
                )
            }
            Frame::Status { text } => {
                let set = segment.iter().find_map(|output| match output {
                    Output::Event(Event::StatusChanged { status, .. }) => Some(status),
                    _ => None,
                });
                assert_eq!(
                    set,
                    Some(text),
                    "STATUS neither set nor refused: {segment:?}"
                );
                (Ok(Inbound::Status(text.clone())), false)
            }
            Frame::Will(will) => {
                let kept = segment.iter().find_map(|output| match output {
                    Output::Event(Event::WillSet { will, .. }) => Some(will),
                    _ => None,
                });
                assert_eq!(
                    kept,
                    Some(will),
                    "WILL neither kept nor refused: {segment:?}"
                );
                (Ok(Inbound::Will(will.clone())), false)
            }
            Frame::Join { room } | Frame::Leave { room } => {
                let joins = matches!(frame, Frame::Join { .. });
                let asked = segment.iter().any(|output| match output {
                    Output::Request(Request::Join { room: asked, .. }) if joins => asked == room,
                    Output::Request(Request::Leave { room: asked, .. }) if !joins => asked == room,
                    _ => false,
                });
                assert!(asked, "{:?} neither asked for nor refused: {segment:?}", frame.kind());
                let inbound = if joins {
                    Inbound::Join(room.clone())
                } else {
                    Inbound::Leave(room.clone())
                };
                (Ok(inbound), false)
            }
            Frame::Watch(watch) => {
                let asked = segment.iter().find_map(|output| match output {
                    Output::Request(Request::Watch { mode, target, .. }) => Some((*mode, target)),
                    _ => None,
                });
                let Some((mode, target)) = asked else {
                    panic!("WATCH neither asked for nor refused: {segment:?}");
                };
                assert_eq!((mode as u8, target), (watch.mode, &watch.target));
                let inbound = Inbound::Watch {
                    mode,
                    target: target.clone(),
                };
                (Ok(inbound), false)
            }
            other => panic!("{:?} admitted: {segment:?}", other.kind()),
        }
    }
}
