//! One server-side connection as a sans-IO state machine: every rule that
//! decides a connection's life, from accept to close.
//!
//! In the style of quinn-proto's `Connection`: inputs are bytes
//! ([`Connection::handle_bytes`]), deadlines ([`Connection::handle_timeout`])
//! and the answers to its requests (credentials, claims, relays); outputs
//! are pushed, in order, to an [`OutputSink`] the IO layer drains: frames
//! to send, events, requests, deadlines and how to close. Time is passed in
//! as [`Now`]; nothing here reads a clock or touches a socket.
//!
//! Phases: `AwaitingHello` → (`Authenticating`) → `Claiming` →
//! `Established` → `Closing`. Frames that arrive before WELCOME is sent
//! are judged as before the handshake. The outputs go to one queue per
//! event loop ([`Outputs`]), not per connection, so an idle session's
//! memory is its slot alone.
//!
//! Size: one job (a connection's life) in about 500 lines; its outputs,
//! rules, texts and session state live in the modules beside it.

use std::time::{Duration, Instant};

use crate::detector::{Detector, Transition};
use crate::protocol::codec;
use crate::protocol::inbox::{self, Fed, Next};
use crate::protocol::{Frame, Hello, Message, Reason, ReasonCode, Welcome};
use crate::session::{admit, Conduct, Inbound, Phase as RulePhase};

mod established;
mod output;
mod rules;
pub mod texts;

#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use established::{Session, StateChange};
pub use output::{Close, Event, Output, OutputSink, Outputs, Request, Tagged, Timer, Transmit};
pub use rules::{ConnectionConfig, Now, Rules};

/// How long a closing connection is kept after its farewell (REJECT or
/// BYE): its input is read and discarded meanwhile, so that closing does
/// not reset the connection and destroy the farewell before the peer reads it.
pub const LINGER: Duration = Duration::from_secs(2);

/// Why a session (or a connection not yet established) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Silent until its deadline.
    Timeout,
    /// The client said BYE: it left on purpose (a client's `quit`).
    Quit,
    /// The client's connection closed without a BYE: the process was
    /// killed, or its host or network failed.
    ClosedByPeer,
    /// Another connection claimed the name.
    TakenOver,
    /// The client broke the protocol; the code it was told.
    ProtocolError(ReasonCode),
    /// The client did not read and its outbound queue filled up.
    SlowConsumer,
    /// The socket failed.
    IoError,
    /// The server shut down.
    Shutdown,
}

impl DropReason {
    /// One-word label used in logs (`reason=timeout`) and metrics; a
    /// protocol error is labelled with the code the peer was told
    /// (`too_many_pings`, `frame_too_large`, ...).
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Timeout => "timeout",
            DropReason::Quit => "quit",
            DropReason::ClosedByPeer => "closed_by_peer",
            DropReason::TakenOver => "taken_over",
            DropReason::ProtocolError(code) => code.label(),
            DropReason::SlowConsumer => "slow_consumer",
            DropReason::IoError => "io_error",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// The answer to a [`Request::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// The credential grants the name.
    Granted,
    /// Refused: REJECT with this code (`unauthorized`, `server_busy`) and text.
    Refused {
        /// The code the peer is told.
        code: ReasonCode,
        /// Why, for the peer.
        text: String,
    },
}

/// The answer to a [`Request::Claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The name is this connection's.
    Claimed {
        /// The session id the IO layer gives it (sent in WELCOME).
        session_id: u64,
        /// The epoch of the claim.
        epoch: u64,
        /// Wall-clock time now, ms since the Unix epoch.
        wall_ms: u64,
    },
    /// The name is confusable with one held: REJECT `confusable_name`.
    Confusable {
        /// Which name it is confused with, for the peer.
        text: String,
    },
    /// The registry cannot take claims now: REJECT `server_busy`, with a
    /// text that says nothing of the registry's own error.
    Unavailable,
}

/// What became of a MSG the relay refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRefusal {
    /// `rate_limited` or `server_busy`.
    pub code: ReasonCode,
    /// The NOTICE's text.
    pub text: String,
    /// Whether the sender itself is to blame (its own budget): a strike.
    /// A shared budget or the memory cap is no strike of the sender's.
    pub strike: bool,
}

/// Where a connection is in its life.
#[derive(Debug)]
enum Phase<S> {
    AwaitingHello,
    /// HELLO received, its credential being checked; the HELLO is kept,
    /// its credential taken out.
    Authenticating(Hello),
    /// Credential granted (or none needed); the name being claimed.
    Claiming(Hello),
    Established(Session<S>),
    /// Farewell sent (or the socket is closing): input is discarded.
    Closing,
}

/// One server-side connection's rules and state.
#[derive(Debug)]
pub struct Connection<S> {
    phase: Phase<S>,
}

impl<S> Connection<S> {
    /// A connection accepted at `now`: it must send HELLO within the
    /// handshake timeout.
    pub fn new<D>(now: Now, rules: &Rules<D>, out: &mut impl OutputSink) -> Self {
        out.push(Output::Timeout {
            timer: Timer::Handshake,
            at: now.listening + rules.config.handshake_timeout,
            latest: None,
        });
        Self {
            phase: Phase::AwaitingHello,
        }
    }

    /// The established session, if it is one.
    pub fn session(&self) -> Option<&Session<S>> {
        match &self.phase {
            Phase::Established(session) => Some(session),
            _ => None,
        }
    }

    /// The established session, to charge its fan-out budget.
    pub fn session_mut(&mut self) -> Option<&mut Session<S>> {
        match &mut self.phase {
            Phase::Established(session) => Some(session),
            _ => None,
        }
    }

    /// Whether the connection is ending (its farewell sent or being sent).
    pub fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing)
    }

    /// Whether its HELLO's credential is being checked.
    pub fn awaits_authentication(&self) -> bool {
        matches!(self.phase, Phase::Authenticating(_))
    }

    /// Whether a HELLO was received and its answer is awaited.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.phase, Phase::Authenticating(_) | Phase::Claiming(_))
    }

    /// Bytes read at `now`: `partial` is the incomplete frame kept from
    /// earlier reads (the IO layer holds it), `fresh` what was just read.
    /// Returns [`Fed::Paused`] after a HELLO: the bytes after it are kept
    /// in `partial` undecoded; feed again (with nothing fresh) once the
    /// outputs pushed so far are carried out, so that what follows a HELLO
    /// is judged after its answer when the answer came at once.
    pub fn handle_bytes<D: Detector<State = S>>(
        &mut self,
        now: Now,
        partial: &mut Vec<u8>,
        fresh: &[u8],
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) -> Fed {
        if self.is_closing() {
            // Read and discarded: only the peer's EOF matters now.
            partial.clear();
            return Fed::Waiting;
        }
        // Said plainly, rather than as the length prefix too large that
        // `16 03` makes.
        let tls_on_plain = matches!(self.phase, Phase::AwaitingHello)
            && !rules.config.tls
            && texts::looks_like_client_hello(if partial.is_empty() { fresh } else { partial });
        let fed = inbox::feed_until(partial, fresh, rules.config.max_frame_len, |frame| {
            self.handle_frame(now, frame, rules, out)
        });
        match &fed {
            Fed::Failed { first: true, .. } if tls_on_plain => {
                let text = texts::TLS_ON_PLAIN_TEXT.to_owned();
                self.refuse(now, ReasonCode::MalformedFrame, text, rules, out);
            }
            Fed::Failed { error, .. } => {
                self.refuse(now, error.reason_code(), error.to_string(), rules, out);
            }
            Fed::Waiting | Fed::Stopped | Fed::Paused => {}
        }
        fed
    }

    fn handle_frame<D: Detector<State = S>>(
        &mut self,
        now: Now,
        frame: Frame,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) -> Next {
        let admitted = match &mut self.phase {
            Phase::Closing => return Next::Stop,
            Phase::AwaitingHello => admit(RulePhase::AwaitingHello, frame),
            Phase::Authenticating(_) | Phase::Claiming(_) => {
                match admit(RulePhase::AwaitingHello, frame) {
                    Ok(Inbound::Hello(_)) => {
                        let text =
                            "HELLO again while the first HELLO's credential is being verified";
                        self.refuse(now, ReasonCode::DuplicateHello, text.to_owned(), rules, out);
                        return Next::Stop;
                    }
                    other => other,
                }
            }
            Phase::Established(session) => heard(session, now, frame, rules, out),
        };
        match admitted {
            Ok(Inbound::Hello(hello)) => {
                self.hello(hello, rules, out);
                Next::Pause
            }
            Ok(Inbound::Ping { seq, .. }) => {
                if self.session().is_some_and(|session| session.acks_wanted) {
                    out.push(Output::Transmit(Transmit::Pong { seq }));
                }
                Next::Continue
            }
            Ok(Inbound::Message(message)) => {
                self.message(message, rules, out);
                Next::Continue
            }
            Ok(Inbound::Bye(bye)) => {
                out.push(Output::Event(Event::PeerLeft { reason: bye.reason }));
                self.end(now, DropReason::Quit, None, None, rules, out);
                Next::Stop
            }
            Ok(Inbound::Refused { code, notice }) => {
                if let Some(text) = &notice {
                    out.push(Output::Transmit(Transmit::Notice(Reason::new(
                        code,
                        text.clone(),
                    ))));
                }
                out.push(Output::Event(Event::FrameRefused { code, notice }));
                Next::Continue
            }
            Err(violation) => {
                self.refuse(now, violation.code, violation.text, rules, out);
                Next::Stop
            }
        }
    }

    /// An admitted HELLO: its credential is checked, or its name claimed.
    fn hello<D>(&mut self, mut hello: Hello, rules: &Rules<D>, out: &mut impl OutputSink) {
        if rules.config.authenticate {
            // Only the checker sees the credential; the kept HELLO holds none.
            let credential = std::mem::take(&mut hello.credential);
            out.push(Output::Request(Request::Authenticate {
                name: hello.name.clone(),
                credential,
            }));
            self.phase = Phase::Authenticating(hello);
        } else {
            out.push(Output::Request(Request::Claim {
                name: hello.name.clone(),
            }));
            self.phase = Phase::Claiming(hello);
        }
    }

    /// An admitted MSG: relayed, or refused when its body could not be
    /// relayed within what recipients accept once the sender's name is added.
    fn message<D>(&self, message: Message, rules: &Rules<D>, out: &mut impl OutputSink) {
        let Some(session) = self.session() else {
            return;
        };
        let max_body = codec::max_msg_body(rules.config.max_frame_len);
        if message.body.len() > max_body {
            let text = format!(
                "message body of {} bytes exceeds the maximum of {max_body}; not delivered",
                message.body.len()
            );
            out.push(Output::Transmit(Transmit::Notice(Reason::new(
                ReasonCode::FrameTooLarge,
                text,
            ))));
            return;
        }
        out.push(Output::Request(Request::Relay(Message {
            from: session.name.to_string(),
            to: message.to,
            body: message.body,
        })));
    }

    /// The answer to [`Request::Authenticate`].
    pub fn handle_authentication<D: Detector<State = S>>(
        &mut self,
        now: Now,
        answer: Authentication,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        if !matches!(self.phase, Phase::Authenticating(_)) {
            // The connection moved on (closed) meanwhile.
            return;
        }
        match answer {
            Authentication::Granted => {
                let Phase::Authenticating(hello) =
                    std::mem::replace(&mut self.phase, Phase::AwaitingHello)
                else {
                    unreachable!("checked above");
                };
                out.push(Output::Request(Request::Claim {
                    name: hello.name.clone(),
                }));
                self.phase = Phase::Claiming(hello);
            }
            Authentication::Refused { code, text } => self.refuse(now, code, text, rules, out),
        }
    }

    /// The answer to [`Request::Claim`]: the session is established (WELCOME,
    /// `Joined`, its first liveness check) or refused.
    pub fn handle_claim<D: Detector<State = S>>(
        &mut self,
        now: Now,
        answer: ClaimAnswer,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        if !matches!(self.phase, Phase::Claiming(_)) {
            // Closed meanwhile. A name claimed for a connection that is
            // gone is released by the IO layer, which made the claim and
            // knows its name and epoch (the epoch fences the release).
            return;
        }
        let (session_id, epoch, wall_ms) = match answer {
            ClaimAnswer::Claimed {
                session_id,
                epoch,
                wall_ms,
            } => (session_id, epoch, wall_ms),
            ClaimAnswer::Confusable { text } => {
                return self.refuse(now, ReasonCode::ConfusableName, text, rules, out);
            }
            ClaimAnswer::Unavailable => {
                let text = texts::REGISTRY_UNAVAILABLE_TEXT.to_owned();
                return self.refuse(now, ReasonCode::ServerBusy, text, rules, out);
            }
        };
        let Phase::Claiming(hello) = std::mem::replace(&mut self.phase, Phase::AwaitingHello)
        else {
            unreachable!("checked above");
        };
        let interval = rules.config.intervals.grant(hello.requested_interval_ms);
        let (liveness, first_check) = rules.detector.start(now.listening, interval);
        let dead_at = rules.detector.dead_at(&liveness);
        let session = Session {
            name: hello.name.as_str().into(),
            epoch,
            connected_at_ms: wall_ms,
            interval_ms: texts::millis_u32(interval),
            rtt_us: 0,
            acks_wanted: hello.acks_wanted(),
            last_change: StateChange::Joined,
            conduct: Conduct::new(),
            fanout: crate::budget::FanoutBudget::new(),
            liveness,
        };
        out.push(Output::Event(Event::Joined {
            name: hello.name,
            epoch,
            interval,
            one_way: !session.acks_wanted,
        }));
        out.push(Output::Transmit(Transmit::Welcome(Welcome {
            session_id,
            epoch,
            granted_interval_ms: session.interval_ms,
            max_missed: u16::try_from(rules.config.max_missed).unwrap_or(u16::MAX),
        })));
        push_check(out, first_check, dead_at);
        self.phase = Phase::Established(session);
    }

    /// A deadline pushed as [`Output::Timeout`] came due at `now`.
    pub fn handle_timeout<D: Detector<State = S>>(
        &mut self,
        now: Now,
        timer: Timer,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        match (timer, &mut self.phase) {
            // Once the HELLO is in, the credential check's own wait bounds
            // the handshake.
            (Timer::Handshake, Phase::AwaitingHello) => {
                let text = texts::handshake_timeout(rules.config.handshake_timeout);
                self.refuse(now, ReasonCode::HandshakeTimeout, text, rules, out);
            }
            (Timer::Liveness, Phase::Established(_)) => self.judge(now, rules, out),
            (Timer::Linger, Phase::Closing) => out.push(Output::Close(Close::Now)),
            // The connection moved on since this deadline was pushed.
            _ => {}
        }
    }

    /// Whether the liveness check due now would declare the session dead:
    /// the IO layer then reads its socket first when frames may be waiting
    /// unread (a full batch of readiness), since proof of life must be read
    /// before a verdict.
    pub fn would_die<D: Detector<State = S>>(&self, now: Now, rules: &Rules<D>) -> bool {
        self.session().is_some_and(|session| {
            rules.detector.liveness(&session.liveness, now.listening)
                == crate::detector::Liveness::Dead
        })
    }

    /// The detector's check of an established session.
    fn judge<D: Detector<State = S>>(
        &mut self,
        now: Now,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let Phase::Established(session) = &mut self.phase else {
            return;
        };
        let detector = &rules.detector;
        let outcome = detector.check(&mut session.liveness, now.listening);
        let dead_at = detector.dead_at(&session.liveness);
        match outcome.transition {
            Some(Transition::Suspected { missed }) => {
                let phi = detector.phi(&session.liveness, now.listening);
                session.last_change = StateChange::Suspected {
                    missed,
                    phi: phi.map(|phi| phi as f32),
                };
                out.push(Output::Event(Event::Suspected {
                    name: session.name.clone(),
                    missed,
                    phi,
                }));
            }
            Some(Transition::Dead { silent_for }) => {
                let text = texts::declared_dead(
                    silent_for,
                    detector.phi(&session.liveness, now.listening),
                    rules.config.phi_threshold,
                    rules.config.max_missed,
                    session.interval(),
                );
                let late_by = now.listening.saturating_duration_since(dead_at);
                let bye = Frame::bye(ReasonCode::Timeout, text);
                self.end_timed_out(now, late_by, bye, rules, out);
                return;
            }
            Some(Transition::Recovered) | None => {}
        }
        if let Some(next_check) = outcome.next_check {
            push_check(out, next_check, dead_at);
        }
    }

    /// The name was claimed by a new connection from `new_peer`: BYE
    /// `taken_over`, no release (the name is its successor's).
    pub fn handle_taken_over<D: Detector<State = S>>(
        &mut self,
        now: Now,
        new_peer: &str,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        if self.session().is_some() {
            let bye = texts::taken_over(new_peer);
            self.end(now, DropReason::TakenOver, Some(bye), None, rules, out);
        }
    }

    /// The peer closed its side. `truncated`: in the middle of a frame.
    pub fn handle_closed<D: Detector<State = S>>(
        &mut self,
        now: Now,
        truncated: bool,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let reason = if truncated && !self.is_closing() {
            DropReason::ProtocolError(ReasonCode::MalformedFrame)
        } else {
            DropReason::ClosedByPeer
        };
        let detail = truncated
            .then(|| "connection closed in the middle of a frame (truncated frame)".to_owned());
        self.end(now, reason, None, detail, rules, out);
    }

    /// The socket failed; `by_peer` when it was the peer going away (a
    /// reset, a write to a socket it closed) rather than a fault here.
    pub fn handle_io_error<D: Detector<State = S>>(
        &mut self,
        now: Now,
        by_peer: bool,
        detail: String,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let reason = if by_peer {
            DropReason::ClosedByPeer
        } else {
            DropReason::IoError
        };
        self.end(now, reason, None, Some(detail), rules, out);
    }

    /// The peer does not read: its queue is full, or did not drain within
    /// the slow-consumer timeout. Closed without a farewell (it would not
    /// be read).
    pub fn handle_slow_consumer<D: Detector<State = S>>(
        &mut self,
        now: Now,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        self.end(now, DropReason::SlowConsumer, None, None, rules, out);
    }

    /// A TLS server read plain lubdub: REJECT `tls_required`.
    pub fn handle_tls_required<D: Detector<State = S>>(
        &mut self,
        now: Now,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let text = texts::TLS_REQUIRED_TEXT.to_owned();
        self.refuse(now, ReasonCode::TlsRequired, text, rules, out);
    }

    /// The server shuts down: BYE `shutdown` with a hint to reconnect after
    /// `retry_after` (REJECT `shutdown` before the handshake).
    pub fn handle_shutdown<D: Detector<State = S>>(
        &mut self,
        now: Now,
        retry_after: Duration,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let farewell = match self.phase {
            Phase::Closing => return,
            Phase::Established(_) => texts::shutdown_bye(retry_after),
            _ => Frame::reject(ReasonCode::Shutdown, "server shutting down"),
        };
        self.end(now, DropReason::Shutdown, Some(farewell), None, rules, out);
    }

    /// A relayed MSG of this session was delivered (to every recipient
    /// that could take it) at `real_us`.
    pub fn message_delivered(&mut self, real_us: u64) {
        if let Some(session) = self.session_mut() {
            session.conduct.message_delivered(real_us);
        }
    }

    /// The relay refused this session's MSG: a NOTICE on the first refusal
    /// of a run; strikes for the sender's own budget, which end the session
    /// with BYE `rate_limited` once too many.
    pub fn handle_message_refused<D: Detector<State = S>>(
        &mut self,
        now: Now,
        refusal: MessageRefusal,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let MessageRefusal { code, text, strike } = refusal;
        let Phase::Established(session) = &mut self.phase else {
            return;
        };
        let judged = if strike {
            session
                .conduct
                .refuse_message(now.real_us, &rules.config.conduct, code, || text)
        } else {
            // The loop's budget and the memory cap are shared: a sender
            // refused for them may be an innocent bystander of someone
            // else's flood, so this is no strike (one NOTICE per run).
            let first = session.conduct.refuse_message_without_strike();
            Ok(Inbound::Refused {
                code,
                notice: first.then_some(text),
            })
        };
        match judged {
            Ok(Inbound::Refused { code, notice }) => {
                if let Some(text) = &notice {
                    out.push(Output::Transmit(Transmit::Notice(Reason::new(
                        code,
                        text.clone(),
                    ))));
                }
                out.push(Output::Event(Event::FrameRefused { code, notice }));
            }
            Ok(_) => {}
            Err(violation) => self.refuse(now, violation.code, violation.text, rules, out),
        }
    }

    /// Ends the connection for a rule broken: REJECT before the handshake,
    /// BYE after, with `code` and `text`.
    pub fn refuse<D: Detector<State = S>>(
        &mut self,
        now: Now,
        code: ReasonCode,
        text: String,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        let established = match self.phase {
            Phase::Closing => return,
            Phase::Established(_) => true,
            _ => false,
        };
        out.push(Output::Event(Event::Violated {
            code,
            text: text.clone(),
            established,
        }));
        let answer = if established {
            Frame::bye(code, text.clone())
        } else {
            Frame::reject(code, text.clone())
        };
        let reason = DropReason::ProtocolError(code);
        self.end(now, reason, Some(answer), Some(text), rules, out);
    }

    /// A silent session declared dead `late_by` after its deadline.
    fn end_timed_out<D: Detector<State = S>>(
        &mut self,
        now: Now,
        late_by: Duration,
        bye: Frame,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        self.retire(now, DropReason::Timeout, Some(late_by), None, rules, out);
        farewell(now, Some(bye), out);
    }

    /// Ends the connection: releases its name and reports `Dropped` (for an
    /// established session), then its farewell or the close.
    fn end<D: Detector<State = S>>(
        &mut self,
        now: Now,
        reason: DropReason,
        farewell_frame: Option<Frame>,
        detail: Option<String>,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        if self.is_closing() {
            // Its farewell was said: the peer's close or an error now
            // only ends the lingering.
            out.push(Output::Close(Close::Now));
            return;
        }
        self.retire(now, reason, None, detail, rules, out);
        farewell(now, farewell_frame, out);
    }

    /// The connection moves to `Closing`; an established session's name is
    /// released (unless taken over) and `Dropped` reported.
    fn retire<D: Detector<State = S>>(
        &mut self,
        now: Now,
        reason: DropReason,
        late_by: Option<Duration>,
        detail: Option<String>,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
        match std::mem::replace(&mut self.phase, Phase::Closing) {
            Phase::Closing => {}
            Phase::AwaitingHello | Phase::Claiming(_) => {
                out.push(Output::Event(Event::HandshakeFailed { reason, detail }));
            }
            Phase::Authenticating(_) => {
                // Its credential need not be checked any more.
                out.push(Output::Request(Request::CancelAuthentication));
                out.push(Output::Event(Event::HandshakeFailed { reason, detail }));
            }
            Phase::Established(session) => {
                let silent_for = now
                    .listening
                    .saturating_duration_since(rules.detector.last_seen(&session.liveness));
                // A taken-over session's name already belongs to its successor.
                if reason != DropReason::TakenOver {
                    out.push(Output::Request(Request::Release {
                        name: session.name.clone(),
                        epoch: session.epoch,
                    }));
                }
                out.push(Output::Event(Event::Dropped {
                    name: session.name,
                    reason,
                    silent_for,
                    late_by,
                    detail,
                }));
            }
        }
    }
}

/// The close after `retire`: the farewell and its linger, or at once.
fn farewell(now: Now, frame: Option<Frame>, out: &mut impl OutputSink) {
    match frame {
        Some(frame) => {
            out.push(Output::Close(Close::Farewell(frame)));
            out.push(Output::Timeout {
                timer: Timer::Linger,
                at: now.listening + LINGER,
                latest: None,
            });
        }
        None => out.push(Output::Close(Close::Now)),
    }
}

/// A frame on an established session: proof of life for the detector,
/// then the session's frame rules and rates.
fn heard<D: Detector>(
    session: &mut Session<D::State>,
    now: Now,
    frame: Frame,
    rules: &Rules<D>,
    out: &mut impl OutputSink,
) -> Result<Inbound, crate::session::Violation> {
    let detector = &rules.detector;
    let silence = now
        .listening
        .saturating_duration_since(detector.last_seen(&session.liveness));
    let outcome = detector.heartbeat(&mut session.liveness, now.listening);
    if let Some(earlier) = outcome.earlier_check {
        push_check(out, earlier, detector.dead_at(&session.liveness));
    }
    if let Some(Transition::Recovered) = outcome.transition {
        session.last_change = StateChange::Recovered {
            after_ms: texts::millis_u32(silence),
        };
        out.push(Output::Event(Event::Recovered {
            name: session.name.clone(),
        }));
    }
    let admitted = session.conduct.admit_held_up(
        frame,
        now.real_us,
        rules.grace_at(now.real_us),
        session.interval(),
        &rules.config.conduct,
    );
    let rtt_us = match admitted {
        Ok(Inbound::Ping { rtt_us, .. }) if rtt_us != 0 => {
            session.rtt_us = rtt_us;
            rtt_us
        }
        _ => 0,
    };
    out.push(Output::Event(Event::Heard { rtt_us }));
    admitted
}

/// Pushes a liveness check at `at`. A check before the verdict instant can
/// at most make the session suspect, an informational state, so the IO
/// layer may run it late to share a wake-up with other sessions' checks;
/// never past halfway to the verdict, so that a session is still seen
/// suspect before it is declared dead (phi's two thresholds can be a few
/// ms apart). The verdict itself is pushed exact.
fn push_check(out: &mut impl OutputSink, at: Instant, dead_at: Instant) {
    let latest = (at < dead_at).then(|| at + (dead_at - at) / 2);
    out.push(Output::Timeout {
        timer: Timer::Liveness,
        at,
        latest,
    });
}
