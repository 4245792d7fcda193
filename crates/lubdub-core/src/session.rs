//! Which frame a server accepts at which point of a session, and how often.
//!
//! The server's per-connection state machine reduced to its rules: given the
//! phase of the connection and a decoded frame, either an [`Inbound`] request
//! the server acts on, or a [`Violation`] that ends the connection with a
//! reason code ([`admit`]); for an established session, [`Conduct`] also
//! holds it to its rates of PINGs and messages. Pure, with time passed in,
//! so that it can be unit-tested and fuzzed without sockets. One job; more
//! than half of the file is its unit tests (strike and forgiveness cases).
//!
//! Size: one job (what an established session may send); two thirds of
//! the file are the unit tests of its rules over explicit time. Issue 14
//! moves the connection's whole life into a machine of its own.

use std::time::Duration;

use crate::protocol::frame::{MAX_WILL_BODY, MAX_WILL_DELAY_MS};
use crate::protocol::handshake::validate_name;
use crate::protocol::rooms::{is_room, validate_room, WatchMode};
use crate::protocol::status::validate_status;
use crate::protocol::{Bye, Frame, Hello, Message, ReasonCode, Will};
use crate::rate::{Gcra, Rate};

/// Where a server-side connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected, HELLO not yet received.
    AwaitingHello,
    /// HELLO accepted, WELCOME sent.
    Established,
}

/// A client request the server acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A valid HELLO on a fresh connection.
    Hello(Hello),
    /// A PING with its sequence number and the client's last RTT.
    Ping {
        /// Sequence number to echo.
        seq: u32,
        /// Client's last round-trip time in microseconds, 0 when unknown.
        rtt_us: u32,
    },
    /// A MSG to relay; `to` empty means broadcast.
    Message(Message),
    /// The client ends the session.
    Bye(Bye),
    /// The session's status from now on (empty: none); valid.
    Status(String),
    /// The session's last will from now on (an empty body: none); its
    /// recipient and delay are valid (the machine checks its size).
    Will(Will),
    /// Join this room (a valid room name).
    Join(String),
    /// Leave this room (a valid room name).
    Leave(String),
    /// Start or stop watching a valid name or room.
    Watch {
        /// What is asked.
        mode: WatchMode,
        /// The name or room.
        target: String,
    },
    /// A PING, MSG or STATUS beyond its session's rate, or an invalid
    /// STATUS: not acted on (no PONG, not relayed, not set), the session
    /// goes on. `notice`, when present, is the text of
    /// a NOTICE with `code` to send; it is sent once per run of refusals, so
    /// that refusing a flood does not become a flood of notices.
    Refused {
        /// `too_many_pings` or `rate_limited`.
        code: ReasonCode,
        /// The NOTICE's text, on the first refusal of a run.
        notice: Option<String>,
    },
}

/// A frame that breaks the protocol at this phase. The server answers with
/// REJECT (before the handshake) or BYE (after), carrying this code and text,
/// then closes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Reason code sent to the peer.
    pub code: ReasonCode,
    /// Explanation sent to the peer and logged.
    pub text: String,
}

/// Applies the session rules to one frame.
///
/// # Errors
/// A [`Violation`] when the frame is not allowed in `phase` or carries an invalid name.
pub fn admit(phase: Phase, frame: Frame) -> Result<Inbound, Violation> {
    let violation = |code, text: String| Err(Violation { code, text });
    match (phase, frame) {
        (Phase::AwaitingHello, Frame::Hello(mut hello)) => {
            if let Err(error) = validate_name(&hello.name) {
                return violation(ReasonCode::InvalidName, format!("invalid name: {error}"));
            }
            if let Some(Err(error)) = hello.status.as_deref().map(validate_status) {
                return violation(
                    ReasonCode::InvalidStatus,
                    format!("invalid status: {error}"),
                );
            }
            // An empty status is no status.
            hello.status = hello.status.filter(|status| !status.is_empty());
            Ok(Inbound::Hello(hello))
        }
        (Phase::AwaitingHello, other) => violation(
            ReasonCode::HelloRequired,
            format!("expected HELLO first, got {:?}", other.kind()),
        ),
        (Phase::Established, Frame::Hello(_)) => violation(
            ReasonCode::DuplicateHello,
            "HELLO on an established session".to_owned(),
        ),
        (Phase::Established, Frame::Ping { seq, rtt_us }) => Ok(Inbound::Ping { seq, rtt_us }),
        (Phase::Established, Frame::Msg(message)) => {
            if is_room(&message.to) {
                if let Err(error) = validate_room(&message.to) {
                    return Ok(Inbound::Refused {
                        code: ReasonCode::InvalidRoom,
                        notice: Some(format!("message not delivered: {error}")),
                    });
                }
            } else if !message.to.is_empty() {
                if let Err(error) = validate_name(&message.to) {
                    return violation(
                        ReasonCode::InvalidName,
                        format!("invalid recipient: {error}"),
                    );
                }
            }
            Ok(Inbound::Message(message))
        }
        (Phase::Established, Frame::Bye(bye)) => Ok(Inbound::Bye(bye)),
        (Phase::Established, Frame::Will(will)) => {
            let refused = |text: String| {
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidWill,
                    notice: Some(format!("will not set: {text}")),
                })
            };
            if is_room(&will.to) {
                if let Err(error) = validate_room(&will.to) {
                    return refused(format!("invalid room: {error}"));
                }
            } else if !will.to.is_empty() {
                if let Err(error) = validate_name(&will.to) {
                    return refused(format!("invalid recipient: {error}"));
                }
            }
            if will.body.len() > MAX_WILL_BODY {
                return refused(format!(
                    "a body of {} bytes is larger than the {MAX_WILL_BODY} allowed",
                    will.body.len()
                ));
            }
            if will.delay_ms > MAX_WILL_DELAY_MS {
                return refused(format!(
                    "a delay of {} ms is longer than the {MAX_WILL_DELAY_MS} ms allowed",
                    will.delay_ms
                ));
            }
            Ok(Inbound::Will(will))
        }
        // A bad room or watch is a request refused, not a broken protocol.
        (Phase::Established, frame @ (Frame::Join { .. } | Frame::Leave { .. })) => {
            let (room, joins) = match frame {
                Frame::Join { room } => (room, true),
                Frame::Leave { room } => (room, false),
                _ => unreachable!("matched above"),
            };
            match validate_room(&room) {
                Ok(()) if joins => Ok(Inbound::Join(room)),
                Ok(()) => Ok(Inbound::Leave(room)),
                Err(error) => Ok(Inbound::Refused {
                    code: ReasonCode::InvalidRoom,
                    notice: Some(format!("{room:?} not joined or left: {error}")),
                }),
            }
        }
        (Phase::Established, Frame::Watch(watch)) => {
            let refused = |text: String| {
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidWatch,
                    notice: Some(format!("watch of {:?} refused: {text}", watch.target)),
                })
            };
            let Some(mode) = WatchMode::from_byte(watch.mode) else {
                return refused(format!(
                    "unknown mode {}; modes are 0 (stop), 1 (full), 2 (count) and 3 (once)",
                    watch.mode
                ));
            };
            if is_room(&watch.target) {
                if let Err(error) = validate_room(&watch.target) {
                    return refused(error.to_string());
                }
            } else if let Err(error) = validate_name(&watch.target) {
                return refused(error.to_string());
            } else if mode == WatchMode::Count {
                return refused("a count watches a room, not a name".to_owned());
            }
            Ok(Inbound::Watch {
                mode,
                target: watch.target,
            })
        }
        // A bad status is a request refused, not a broken protocol.
        (Phase::Established, Frame::Status { text }) => match validate_status(&text) {
            Ok(()) => Ok(Inbound::Status(text)),
            Err(error) => Ok(Inbound::Refused {
                code: ReasonCode::InvalidStatus,
                notice: Some(format!("status not set: {error}")),
            }),
        },
        (Phase::Established, other) => violation(
            ReasonCode::UnexpectedFrame,
            format!("{:?} is sent by servers, not clients", other.kind()),
        ),
    }
}

/// How fast an established session may send, beyond the frame rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConductLimits {
    /// PINGs allowed per granted interval at the steady rate; 0 is
    /// unlimited. Scaled to the interval each session was granted, where
    /// gRPC enforces one minimum time for every client. The client's own
    /// schedule sends one PING per 4/5 interval, and at most one more after
    /// a stall of its own.
    pub pings_per_interval: u32,
    /// PINGs allowed at once. PINGs a client sent during a network or
    /// server pause arrive together when it ends, so the server sets this
    /// to what a client may send in one deadline.
    pub ping_burst: u32,
    /// Strikes that end the session with BYE `too_many_pings`; the first
    /// sends a warning NOTICE instead (when this is above 1). A refused
    /// PING is a strike when it comes at least one allowed spacing after
    /// the last strike: a backlog delivered at once is one strike, a flood
    /// that goes on is one more per spacing.
    pub ping_strikes: u8,
    /// MSGs a session may send.
    pub messages: Rate,
    /// Strikes for MSGs that were not delivered (over the message rate or a
    /// fan-out budget) that end the session with BYE `rate_limited`. One
    /// strike counts per [`REFUSAL_STRIKE_SPACING`] while refusals go on,
    /// and one per 255 refused MSGs, so a sender that keeps over its limits
    /// for this many seconds (or sends this many × 255 MSGs that are
    /// refused) is disconnected; 0 never disconnects.
    pub refusal_strikes: u8,
}

/// While a sender's MSGs keep being refused, one strike per this much time.
/// A burst refused at once (a paste) is one strike; a flood that goes on is
/// one more a second.
pub const REFUSAL_STRIKE_SPACING: Duration = Duration::from_secs(1);

impl Default for ConductLimits {
    fn default() -> Self {
        Self {
            pings_per_interval: 4,
            ping_burst: 21,
            ping_strikes: 3,
            messages: Rate::per_second(100, 100),
            refusal_strikes: 5,
        }
    }
}

impl ConductLimits {
    /// The PING rate allowed to a session granted `interval`.
    pub fn ping_rate(&self, interval: Duration) -> Rate {
        if self.pings_per_interval == 0 {
            return Rate::UNLIMITED;
        }
        Rate::every(interval / self.pings_per_interval, self.ping_burst)
    }
}

/// How an established session has behaved: its PING and MSG rates and its
/// strikes for PINGs sent too soon. 24 bytes; every session holds one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Conduct {
    pings: Gcra,
    messages: Gcra,
    /// When the last strike was counted, in ms, wrapping every 49 days (a
    /// `u64` would make every session 8 bytes larger).
    last_strike_ms: u32,
    ping_strikes: u8,
    /// A PING was refused since the last one answered. With a burst of 1
    /// the flow is back at rest at every PING the rate allows (refused ones
    /// add no debt), so rest alone would forgive a flood at each answered
    /// PING; this keeps it from being forgiven until the client keeps to
    /// the rate. Fits in the padding: `Conduct` stays 24 bytes.
    ping_refused: bool,
    /// MSGs refused since the last one delivered, wrapping from 255 to 1
    /// (0: none, so the next refusal starts a run and warns). Each wrap is
    /// a strike: a server that reads a flood rarely (its share of a turn)
    /// sees thousands of refusals at one instant, which the time rule
    /// alone would count as one strike.
    refused_in_run: u8,
    /// Strikes for MSGs not delivered; shares `last_strike_ms` with the
    /// PING strikes (a session flooding both counts each kind at most
    /// half as fast, still bounded), and the last byte of padding, so
    /// `Conduct` stays 24 bytes.
    message_strikes: u8,
}

impl Conduct {
    /// A session that has sent nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies [`admit`] for an established session, then its rates, to one
    /// frame that arrived at `now_us` (µs since an origin of the caller's).
    ///
    /// # Errors
    /// A [`Violation`] for a frame not allowed on an established session,
    /// and BYE `too_many_pings` once `limits.ping_strikes` PINGs were refused.
    pub fn admit(
        &mut self,
        frame: Frame,
        now_us: u64,
        interval: Duration,
        limits: &ConductLimits,
    ) -> Result<Inbound, Violation> {
        self.admit_held_up(frame, now_us, 0, interval, limits)
    }

    /// [`admit`](Self::admit) for a frame that may have waited unread up
    /// to `held_up_us` because the server could not run (see
    /// [`StallGrace`](crate::backlog::StallGrace)): PINGs sent meanwhile
    /// are allowed that much more at once, and are no flood.
    ///
    /// # Errors
    /// As [`admit`](Self::admit).
    pub fn admit_held_up(
        &mut self,
        frame: Frame,
        now_us: u64,
        held_up_us: u64,
        interval: Duration,
        limits: &ConductLimits,
    ) -> Result<Inbound, Violation> {
        let inbound = admit(Phase::Established, frame)?;
        match inbound {
            Inbound::Ping { .. } => {
                let rate = limits.ping_rate(interval);
                // A flow with no debt left kept to the rate since its last
                // refusal: it is forgiven, as gRPC forgets strikes. At rest
                // with no refusal since the previous answered PING, which
                // came at least one spacing earlier, so the last refusal is
                // over a spacing ago. Rest alone is not enough: with a burst
                // of 1 every allowed PING finds the flow at rest, and a
                // flood was forgiven (and warned again) at each of them,
                // never ending (found by the session_machine fuzz target).
                let rested = self.pings.is_idle(now_us) && !self.ping_refused;
                if self.pings.allow_with_grace(now_us, rate, held_up_us) {
                    self.ping_refused = false;
                    if rested {
                        self.ping_strikes = 0;
                    }
                    return Ok(inbound);
                }
                self.ping_refused = true;
                let allowed = Duration::from_micros(rate.spacing_us);
                let now_ms = (now_us / 1000) as u32;
                let spacing_ms = u32::try_from(rate.spacing_us / 1000).unwrap_or(u32::MAX);
                let strike = self.ping_strikes == 0
                    || now_ms.wrapping_sub(self.last_strike_ms) >= spacing_ms.max(1);
                if !strike {
                    return Ok(Inbound::Refused {
                        code: ReasonCode::TooManyPings,
                        notice: None,
                    });
                }
                self.last_strike_ms = now_ms;
                self.ping_strikes = self.ping_strikes.saturating_add(1);
                if self.ping_strikes >= limits.ping_strikes.max(1) {
                    return Err(Violation {
                        code: ReasonCode::TooManyPings,
                        text: format!(
                            "too many pings: send at most one PING every {allowed:?} \
                             (granted interval {interval:?}, bursts of {})",
                            rate.burst
                        ),
                    });
                }
                Ok(Inbound::Refused {
                    code: ReasonCode::TooManyPings,
                    notice: (self.ping_strikes == 1).then(|| {
                        format!(
                            "PINGs too frequent, not answered: send at most one every \
                             {allowed:?} (granted interval {interval:?}); the session \
                             ends if this goes on"
                        )
                    }),
                })
            }
            // A MSG, and a status change (shown to every watcher) or a will
            // (a MSG to come): each counts as a MSG against the session's rate.
            Inbound::Message(_)
            | Inbound::Status(_)
            | Inbound::Will(_)
            | Inbound::Join(_)
            | Inbound::Leave(_)
            | Inbound::Watch { .. } => {
                if self.messages.allow(now_us, limits.messages) {
                    return Ok(inbound);
                }
                let rate = limits.messages;
                let per_second = 1_000_000 / rate.spacing_us.max(1);
                let what = match inbound {
                    Inbound::Message(_) => None,
                    Inbound::Status(_) => Some("status"),
                    Inbound::Will(_) => Some("will"),
                    Inbound::Join(_) => Some("join"),
                    Inbound::Leave(_) => Some("leave"),
                    _ => Some("watch"),
                };
                self.refuse_message(now_us, limits, ReasonCode::RateLimited, || match what {
                    None => format!(
                        "message not delivered: at most {per_second} messages a second \
                         (bursts of {}); later ones are dropped until the rate falls",
                        rate.burst
                    ),
                    Some(what) => format!(
                        "{what} not done: at most {per_second} messages, status, will, \
                         join, leave and watch requests a second (bursts of {}); send it \
                         again later",
                        rate.burst
                    ),
                })
            }
            other => Ok(other),
        }
    }
}

impl Conduct {
    /// A MSG of this session was not delivered at `now_us`: over its
    /// message rate (from [`admit`](Self::admit)), or over a fan-out budget
    /// the server keeps (`code` `rate_limited` or `server_busy`). Counts a
    /// strike per [`REFUSAL_STRIKE_SPACING`] while refusals go on, and one
    /// per 255 refusals; the first refusal of a run carries `notice()` as a
    /// NOTICE's text.
    ///
    /// # Errors
    /// BYE `rate_limited` once `limits.refusal_strikes` strikes are counted.
    pub fn refuse_message(
        &mut self,
        now_us: u64,
        limits: &ConductLimits,
        code: ReasonCode,
        notice: impl FnOnce() -> String,
    ) -> Result<Inbound, Violation> {
        let first = self.refused_in_run == 0;
        self.refused_in_run = self.refused_in_run.checked_add(1).unwrap_or(1);
        let wrapped = self.refused_in_run == 1 && !first;
        let now_ms = (now_us / 1000) as u32;
        let spacing_ms = REFUSAL_STRIKE_SPACING.as_millis() as u32;
        if self.message_strikes == 0
            || wrapped
            || now_ms.wrapping_sub(self.last_strike_ms) >= spacing_ms
        {
            self.last_strike_ms = now_ms;
            self.message_strikes = self.message_strikes.saturating_add(1);
            if limits.refusal_strikes > 0 && self.message_strikes >= limits.refusal_strikes {
                return Err(Violation {
                    code: ReasonCode::RateLimited,
                    text: format!(
                        "messages kept being refused ({code}, {} strikes: one per second \
                         of refusals or per 255 refused): the session is closed; send \
                         within the limits the NOTICEs named",
                        self.message_strikes
                    ),
                });
            }
        }
        Ok(Inbound::Refused {
            code,
            notice: first.then(notice),
        })
    }

    /// A MSG of this session was not delivered for a reason that is not
    /// its own doing (the server's shared budget or memory cap): no strike.
    /// Returns whether this refusal starts a run, so that one NOTICE tells
    /// the sender.
    pub fn refuse_message_without_strike(&mut self) -> bool {
        let first = self.refused_in_run == 0;
        if first {
            self.refused_in_run = 1;
        }
        first
    }

    /// A MSG of this session was delivered at `now_us`. The next refusal
    /// warns again, and a sender with no strike for two strike spacings
    /// (so at least one spacing without a refusal) is forgiven.
    pub fn message_delivered(&mut self, now_us: u64) {
        self.refused_in_run = 0;
        let now_ms = (now_us / 1000) as u32;
        let forgive_ms = 2 * REFUSAL_STRIKE_SPACING.as_millis() as u32;
        if self.message_strikes > 0 && now_ms.wrapping_sub(self.last_strike_ms) >= forgive_ms {
            self.message_strikes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{frame::flags, Welcome, PROTOCOL_VERSION};

    fn hello(name: &str) -> Frame {
        Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: flags::ACKS_WANTED,
            requested_interval_ms: 0,
            name: name.to_owned(),
            credential: Vec::new(),
            status: None,
        })
    }

    fn code(result: Result<Inbound, Violation>) -> ReasonCode {
        result.expect_err("a violation").code
    }

    #[test]
    fn hello_opens_and_only_hello_opens() {
        assert!(matches!(
            admit(Phase::AwaitingHello, hello("alice")),
            Ok(Inbound::Hello(_))
        ));
        let ping = Frame::Ping { seq: 1, rtt_us: 0 };
        assert_eq!(
            code(admit(Phase::AwaitingHello, ping)),
            ReasonCode::HelloRequired
        );
    }

    #[test]
    fn bad_names_are_refused_at_hello() {
        assert_eq!(
            code(admit(Phase::AwaitingHello, hello(""))),
            ReasonCode::InvalidName
        );
        assert_eq!(
            code(admit(Phase::AwaitingHello, hello(&"x".repeat(65)))),
            ReasonCode::InvalidName
        );
        assert_eq!(
            code(admit(Phase::AwaitingHello, hello("a b"))),
            ReasonCode::InvalidName
        );
    }

    #[test]
    fn established_sessions_take_heartbeats_messages_and_bye_only() {
        assert_eq!(
            code(admit(Phase::Established, hello("alice"))),
            ReasonCode::DuplicateHello
        );
        assert_eq!(
            admit(Phase::Established, Frame::Ping { seq: 9, rtt_us: 5 }),
            Ok(Inbound::Ping { seq: 9, rtt_us: 5 })
        );
        let welcome = Frame::Welcome(Welcome {
            session_id: 1,
            epoch: 1,
            granted_interval_ms: 1,
            max_missed: 1,
        });
        assert_eq!(
            code(admit(Phase::Established, welcome)),
            ReasonCode::UnexpectedFrame
        );
        assert_eq!(
            code(admit(Phase::Established, Frame::Pong { seq: 1 })),
            ReasonCode::UnexpectedFrame
        );
        let to_bad_name = Frame::Msg(Message {
            from: String::new(),
            to: "a b".to_owned(),
            body: b"hi".to_vec(),
        });
        assert_eq!(
            code(admit(Phase::Established, to_bad_name)),
            ReasonCode::InvalidName
        );
    }

    fn ping(seq: u32) -> Frame {
        Frame::Ping { seq, rtt_us: 0 }
    }

    fn msg() -> Frame {
        Frame::Msg(Message {
            from: String::new(),
            to: String::new(),
            body: b"hi".to_vec(),
        })
    }

    const SECOND: u64 = 1_000_000;

    #[test]
    fn pings_at_the_client_schedule_are_always_answered() {
        let limits = ConductLimits::default();
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        // Every 4/5 interval for an hour, plus a stall's extra PING now and then.
        let mut now = 0;
        for seq in 0..1_500 {
            now += 2_400_000;
            let answered = conduct.admit(ping(seq), now, interval, &limits);
            assert!(matches!(answered, Ok(Inbound::Ping { .. })), "{answered:?}");
            if seq % 100 == 0 {
                let extra = conduct.admit(ping(seq), now + 1, interval, &limits);
                assert!(matches!(extra, Ok(Inbound::Ping { .. })), "{extra:?}");
            }
        }
    }

    /// A client on its schedule (a PING every 4/5 interval) through a
    /// server stall of `stalled`: the PINGs sent meanwhile are read at the
    /// resume, then the schedule goes on for three stalls' length. Returns
    /// the first PING not answered, if any.
    fn ping_through_a_stall(
        limits: &ConductLimits,
        stalled: Duration,
        grace: bool,
    ) -> Option<Result<Inbound, Violation>> {
        let interval = Duration::from_secs(1);
        let gap = 800_000;
        let mut conduct = Conduct::new();
        let mut stall = crate::backlog::StallGrace::new();
        let stalled_us = stalled.as_micros() as u64;
        let (stops, resumes) = (60 * SECOND, 60 * SECOND + stalled_us);
        if grace {
            stall.stalled(resumes, stalled);
        }
        let mut sent = 10 * SECOND;
        while sent < resumes + 3 * stalled_us {
            // PINGs sent during the stall are read at the resume.
            let read = if sent < stops {
                sent
            } else {
                sent.max(resumes)
            };
            let held_up = if read >= resumes {
                stall.grace_at(read)
            } else {
                0
            };
            let answer = conduct.admit_held_up(ping(1), read, held_up, interval, limits);
            if !matches!(answer, Ok(Inbound::Ping { .. })) {
                return Some(answer);
            }
            sent += gap;
        }
        None
    }

    #[test]
    fn pings_held_up_by_a_server_stall_are_no_flood() {
        for per_interval in 2..=6 {
            // As the server sets them: one deadline (5 intervals) at once.
            let limits = ConductLimits {
                pings_per_interval: per_interval,
                ping_burst: per_interval * 5 + 1,
                ..ConductLimits::default()
            };
            for seconds in [1, 8, 20, 60, 600, 3_600] {
                let stalled = Duration::from_secs(seconds);
                let refused = ping_through_a_stall(&limits, stalled, true);
                assert_eq!(refused, None, "{per_interval} a second, stall {stalled:?}");
            }
            // Without the allowance, the backlog of a stall longer than one
            // deadline was warned as a flood.
            let refused = ping_through_a_stall(&limits, Duration::from_secs(60), false);
            assert!(
                matches!(
                    refused,
                    Some(Ok(Inbound::Refused {
                        code: ReasonCode::TooManyPings,
                        notice: Some(_)
                    }))
                ),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn a_flood_after_a_stall_gains_at_most_the_stall() {
        let limits = ConductLimits::default();
        let interval = Duration::from_secs(1);
        let rate = limits.ping_rate(interval);
        let mut stall = crate::backlog::StallGrace::new();
        let resumed = 100 * SECOND;
        stall.stalled(resumed, Duration::from_secs(10));
        let mut conduct = Conduct::new();
        let answered = (0..1_000)
            .filter(|_| {
                let answer = conduct.admit_held_up(
                    ping(1),
                    resumed,
                    stall.grace_at(resumed),
                    interval,
                    &limits,
                );
                matches!(answer, Ok(Inbound::Ping { .. }))
            })
            .count() as u64;
        assert_eq!(
            answered,
            u64::from(rate.burst) + 10 * SECOND / rate.spacing_us,
            "the burst and the stall's worth, no more"
        );
    }

    fn burst_of_five() -> ConductLimits {
        ConductLimits {
            ping_burst: 5,
            ..ConductLimits::default()
        }
    }

    #[test]
    fn a_ping_flood_is_warned_then_ended_with_the_allowed_spacing() {
        let limits = burst_of_five();
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        let at = 10 * SECOND;
        for seq in 0..limits.ping_burst {
            assert!(matches!(
                conduct.admit(ping(seq), at, interval, &limits),
                Ok(Inbound::Ping { .. })
            ));
        }
        let warned = conduct.admit(ping(5), at, interval, &limits);
        let Ok(Inbound::Refused {
            code: ReasonCode::TooManyPings,
            notice: Some(text),
        }) = warned
        else {
            panic!("expected a warning, got {warned:?}");
        };
        assert!(text.contains("750ms"), "{text}");
        // The rest of what arrived at once is one strike, whatever its size.
        for seq in 6..100 {
            assert_eq!(
                conduct.admit(ping(seq), at + 1_000, interval, &limits),
                Ok(Inbound::Refused {
                    code: ReasonCode::TooManyPings,
                    notice: None
                })
            );
        }
        // The flood goes on: the one PING the rate allows per spacing is
        // answered, the next is one more strike.
        let later = at + 750_000;
        assert!(matches!(
            conduct.admit(ping(100), later, interval, &limits),
            Ok(Inbound::Ping { .. })
        ));
        let second = conduct.admit(ping(101), later, interval, &limits);
        assert!(
            matches!(second, Ok(Inbound::Refused { notice: None, .. })),
            "{second:?}"
        );
        let last = at + 1_500_000;
        assert!(matches!(
            conduct.admit(ping(102), last, interval, &limits),
            Ok(Inbound::Ping { .. })
        ));
        let ended = conduct
            .admit(ping(103), last, interval, &limits)
            .expect_err("third strike ends the session");
        assert_eq!(ended.code, ReasonCode::TooManyPings);
        assert!(ended.text.contains("every 750ms"), "{}", ended.text);
    }

    #[test]
    fn pings_held_up_for_a_whole_deadline_arrive_together_unpunished() {
        // The server's burst: one deadline (5 intervals) of 4 PINGs each, plus one.
        let limits = ConductLimits::default();
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        let mut now = 0;
        for seq in 0..10 {
            now += 2_400_000;
            assert!(matches!(
                conduct.admit(ping(seq), now, interval, &limits),
                Ok(Inbound::Ping { .. })
            ));
        }
        // A 15 s partition: the client's 7 PINGs (one per 2.4 s, and the
        // one sent on resuming) reach the server at once, twice in a row.
        for round in 0..2 {
            now += 15 * SECOND;
            for seq in 0..7 {
                let outcome = conduct.admit(ping(seq), now, interval, &limits);
                assert!(
                    matches!(outcome, Ok(Inbound::Ping { .. })),
                    "round {round}, PING {seq}: {outcome:?}"
                );
            }
        }
    }

    #[test]
    fn a_warned_client_that_slows_down_is_forgiven() {
        let limits = burst_of_five();
        let interval = Duration::from_secs(1);
        let mut conduct = Conduct::new();
        for seq in 0..7 {
            let _ = conduct.admit(ping(seq), SECOND, interval, &limits);
        }
        let _ = conduct.admit(ping(7), SECOND + 250_000, interval, &limits);
        // One strike so far; PINGs slower than one per 250 ms pay off the
        // debt, and the strikes are cleared once it is paid.
        for step in 1..=10u32 {
            let outcome = conduct.admit(
                ping(step),
                SECOND + 250_000 + u64::from(step) * 500_000,
                interval,
                &limits,
            );
            assert!(
                matches!(outcome, Ok(Inbound::Ping { .. })),
                "step {step}: {outcome:?}"
            );
        }
        let at = 7 * SECOND;
        for seq in 0..limits.ping_burst {
            let _ = conduct.admit(ping(seq), at, interval, &limits);
        }
        assert!(
            matches!(
                conduct.admit(ping(0), at, interval, &limits),
                Ok(Inbound::Refused {
                    notice: Some(_),
                    ..
                })
            ),
            "strikes started again from zero: the first refusal warns again"
        );
    }

    #[test]
    fn messages_beyond_the_rate_are_refused_with_one_notice_per_run() {
        let limits = ConductLimits {
            messages: Rate::per_second(10, 2),
            ..ConductLimits::default()
        };
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        let outcomes: Vec<_> = (0..5)
            .map(|_| conduct.admit(msg(), SECOND, interval, &limits))
            .collect();
        assert!(matches!(outcomes[0], Ok(Inbound::Message(_))));
        assert!(matches!(outcomes[1], Ok(Inbound::Message(_))));
        assert!(
            matches!(&outcomes[2], Ok(Inbound::Refused { code: ReasonCode::RateLimited, notice: Some(text) }) if text.contains("10 messages a second")),
            "{:?}",
            outcomes[2]
        );
        assert!(matches!(
            outcomes[3],
            Ok(Inbound::Refused { notice: None, .. })
        ));
        assert!(matches!(
            conduct.admit(msg(), SECOND + 100_000, interval, &limits),
            Ok(Inbound::Message(_))
        ));
        conduct.message_delivered(SECOND + 100_000);
        assert!(
            matches!(
                conduct.admit(msg(), SECOND + 100_000, interval, &limits),
                Ok(Inbound::Refused {
                    notice: Some(_),
                    ..
                })
            ),
            "a new run of refusals gets a new notice"
        );
    }

    /// Regression, from the `session_machine` fuzz target's first crash
    /// (minimized: interval 1 µs, 3 PINGs per interval, burst 0, 3 PINGs at
    /// once, all answered): more PINGs per interval than the interval has
    /// microseconds made the PING rate unlimited.
    #[test]
    fn a_sub_microsecond_ping_spacing_still_limits() {
        for (interval, pings_per_interval) in [
            (Duration::from_micros(1), 3),
            (Duration::from_millis(1), 2_000),
        ] {
            let limits = ConductLimits {
                pings_per_interval,
                ping_burst: 0,
                ping_strikes: 1,
                ..ConductLimits::default()
            };
            let mut conduct = Conduct::new();
            assert!(matches!(
                conduct.admit(ping(1), 0, interval, &limits),
                Ok(Inbound::Ping { .. })
            ));
            let second = conduct.admit(ping(2), 0, interval, &limits);
            assert_eq!(
                second.map_err(|violation| violation.code),
                Err(ReasonCode::TooManyPings),
                "{interval:?} / {pings_per_interval}"
            );
        }
    }

    /// Regression, from the `session_machine` fuzz target's second crash
    /// (minimized): with a PING burst of 1, a PING answered 0.5 s after a
    /// refusal (spacing 1.722 s) cleared the strikes, so the flood was
    /// warned again and again and never ended.
    #[test]
    fn a_flood_at_a_burst_of_one_is_not_forgiven_at_each_answered_ping() {
        let interval = Duration::from_millis(6_888);
        let limits = ConductLimits {
            pings_per_interval: 4,
            ping_burst: 0,
            ping_strikes: 42,
            ..ConductLimits::default()
        };
        let mut conduct = Conduct::new();
        let mut notices = 0;
        for (at, count) in [(SECOND, 6), (2_500_000, 1), (3 * SECOND, 1), (3_500_000, 1)] {
            for seq in 0..count {
                if let Ok(Inbound::Refused {
                    notice: Some(_), ..
                }) = conduct.admit(ping(seq), at, interval, &limits)
                {
                    notices += 1;
                }
            }
        }
        assert_eq!(notices, 1, "one warning for one flood");

        // Ten PINGs per spacing, spread out: the flood ends after its three
        // strikes, one per spacing, instead of going on with a warning per
        // spacing.
        let interval = Duration::from_secs(1);
        let limits = ConductLimits {
            ping_burst: 1,
            ..ConductLimits::default()
        };
        let mut conduct = Conduct::new();
        let ended = (0..400u64).find_map(|n| {
            let at = SECOND + n * 25_000;
            conduct
                .admit(ping(n as u32), at, interval, &limits)
                .err()
                .map(|violation| (at, violation.code))
        });
        assert_eq!(ended, Some((SECOND + 525_000, ReasonCode::TooManyPings)));
    }

    /// Attack 4 of issue 12: a session streaming MSGs that are all refused
    /// was never disconnected. Fails on the code before the change (no
    /// strikes for refused messages).
    #[test]
    fn a_sender_that_keeps_sending_refused_messages_is_ended_after_its_strikes() {
        let limits = ConductLimits {
            messages: Rate::per_second(10, 10),
            ..ConductLimits::default()
        };
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        // 1,000 MSGs a second; the rate lets 10 a second through.
        let ended = (0..20_000u64).find_map(|n| {
            let at = SECOND + n * 1_000;
            match conduct.admit(msg(), at, interval, &limits) {
                Ok(Inbound::Message(_)) => {
                    conduct.message_delivered(at);
                    None
                }
                Ok(_) => None,
                Err(violation) => Some((at, violation)),
            }
        });
        let (at, violation) = ended.expect("the flood is ended");
        assert_eq!(violation.code, ReasonCode::RateLimited);
        // Strikes at 1.01 s, 2.01, 3.01, 4.01 and 5.01: ended at the fifth.
        assert_eq!(at, SECOND + 10_000 + 4 * SECOND, "{}", violation.text);
    }

    /// Attack 4 of issue 12, as the server reads it: a flooding socket is
    /// read a share at a time, so its refused MSGs come in batches of
    /// thousands at one instant, seconds apart.
    #[test]
    fn thousands_of_refusals_at_one_instant_are_several_strikes() {
        let limits = ConductLimits {
            messages: Rate::per_second(100, 100),
            ..ConductLimits::default()
        };
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        // 100 delivered (the burst), then strikes at the 1st, 256th, 511th,
        // 766th and 1,021st refusal: the fifth ends the session.
        let ended = (0..4_681).find_map(|n| {
            conduct
                .admit(msg(), SECOND, interval, &limits)
                .err()
                .map(|violation| (n, violation.code))
        });
        assert_eq!(ended, Some((100 + 1_020, ReasonCode::RateLimited)));
    }

    #[test]
    fn a_paste_over_the_rate_is_one_strike_and_is_forgiven() {
        let limits = ConductLimits {
            messages: Rate::per_second(10, 10),
            refusal_strikes: 2,
            ..ConductLimits::default()
        };
        let interval = Duration::from_secs(3);
        let mut conduct = Conduct::new();
        for round in 0..5u64 {
            // 30 lines at once every 3 s: 10 delivered, 20 refused.
            let at = SECOND + round * 3 * SECOND;
            for _ in 0..30 {
                match conduct.admit(msg(), at, interval, &limits) {
                    Ok(Inbound::Message(_)) => conduct.message_delivered(at),
                    Ok(_) => {}
                    Err(violation) => panic!("round {round}: {violation:?}"),
                }
            }
        }
    }

    #[test]
    fn refusals_that_are_not_the_senders_doing_are_no_strikes() {
        let limits = ConductLimits {
            refusal_strikes: 2,
            ..ConductLimits::default()
        };
        let mut conduct = Conduct::new();
        assert!(conduct.refuse_message_without_strike(), "the first warns");
        for _ in 0..10_000 {
            assert!(!conduct.refuse_message_without_strike());
        }
        // Its own refusals still count from zero.
        assert!(conduct
            .refuse_message(SECOND, &limits, ReasonCode::RateLimited, String::new)
            .is_ok());
        conduct.message_delivered(10 * SECOND);
        assert!(
            conduct.refuse_message_without_strike(),
            "a new run warns again"
        );
    }

    #[test]
    fn budget_refusals_count_as_strikes_too() {
        let limits = ConductLimits {
            refusal_strikes: 3,
            ..ConductLimits::default()
        };
        let mut conduct = Conduct::new();
        let busy = |conduct: &mut Conduct, at| {
            conduct.refuse_message(at, &limits, ReasonCode::ServerBusy, || "busy".to_owned())
        };
        assert_eq!(
            busy(&mut conduct, SECOND),
            Ok(Inbound::Refused {
                code: ReasonCode::ServerBusy,
                notice: Some("busy".to_owned())
            })
        );
        assert_eq!(
            busy(&mut conduct, SECOND + 500_000),
            Ok(Inbound::Refused {
                code: ReasonCode::ServerBusy,
                notice: None
            })
        );
        assert!(busy(&mut conduct, 2 * SECOND).is_ok());
        assert!(busy(&mut conduct, 3 * SECOND).is_err());
    }

    #[test]
    fn conduct_keeps_the_frame_rules() {
        let mut conduct = Conduct::new();
        let limits = ConductLimits::default();
        let refused = conduct
            .admit(hello("bob"), 0, Duration::from_secs(1), &limits)
            .expect_err("HELLO on an established session");
        assert_eq!(refused.code, ReasonCode::DuplicateHello);
    }

    #[test]
    fn conduct_is_small() {
        assert!(std::mem::size_of::<Conduct>() <= 24);
    }
}
