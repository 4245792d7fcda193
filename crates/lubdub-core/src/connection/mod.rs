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
//! Rooms: `handshake.rs` (HELLO to WELCOME), `ending.rs` (farewells,
//! releases, `Dropped`), `inputs.rs` (answers and drop reasons),
//! `output.rs`, `rules.rs`, `texts.rs`, `established.rs` (session state).
//!
//! Size: the machine's type, its phases and the frame, timeout and
//! verdict rules, about 430 lines; the handshake and the endings have
//! rooms of their own.

use std::time::{Duration, Instant};

use crate::detector::{Detector, Transition};
use crate::protocol::codec;
use crate::protocol::inbox::{self, Fed, Next};
use crate::protocol::{Frame, Hello, Message, Reason, ReasonCode, Will};
use crate::session::{admit, Inbound, Phase as RulePhase};

mod ending;
mod established;
mod handshake;
mod inputs;
mod output;
mod rooms;
mod rules;
pub mod texts;

#[cfg(test)]
mod status_will_tests;
#[cfg(test)]
mod testing;
#[cfg(test)]
mod tests;

pub use established::{Session, StateChange};
pub use inputs::{Authentication, ClaimAnswer, DropReason, MessageRefusal};
pub use output::{Close, Event, Output, OutputSink, Outputs, Request, Tagged, Timer, Transmit};
pub use rooms::{too_many_rooms, too_many_watches, Holdings};
pub use rules::{ConnectionConfig, Now, Rules};

/// How long a closing connection is kept after its farewell (REJECT or
/// BYE): its input is read and discarded meanwhile, so that closing does
/// not reset the connection and destroy the farewell before the peer reads it.
pub const LINGER: Duration = Duration::from_secs(2);

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
            Ok(Inbound::Status(status)) => {
                if let Some(session) = self.session() {
                    out.push(Output::Event(Event::StatusChanged {
                        name: session.name.clone(),
                        status,
                    }));
                }
                Next::Continue
            }
            Ok(Inbound::Will(will)) => {
                self.will(will, rules, out);
                Next::Continue
            }
            Ok(Inbound::Join(room)) => {
                self.join(room, out);
                Next::Continue
            }
            Ok(Inbound::Leave(room)) => {
                self.leave(room, out);
                Next::Continue
            }
            Ok(Inbound::Watch { mode, target }) => {
                self.watch(mode, target, out);
                Next::Continue
            }
            Ok(Inbound::Bye(bye)) => {
                out.push(Output::Event(Event::PeerLeft { reason: bye.reason }));
                self.end(now, DropReason::Quit, None, None, rules, out);
                Next::Stop
            }
            Ok(Inbound::Refused { code, notice }) => {
                push_refused(out, code, notice);
                Next::Continue
            }
            Err(violation) => {
                self.refuse(now, violation.code, violation.text, rules, out);
                Next::Stop
            }
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

    /// An admitted WILL: kept (by the IO layer, told by `WillSet`), or
    /// refused when its body could not be relayed.
    fn will<D>(&self, will: Will, rules: &Rules<D>, out: &mut impl OutputSink) {
        let Some(session) = self.session() else {
            return;
        };
        let max_body = codec::max_msg_body(rules.config.max_frame_len);
        if will.body.len() > max_body {
            let text = format!(
                "will not set: a body of {} bytes exceeds the maximum of {max_body}",
                will.body.len()
            );
            push_refused(out, ReasonCode::InvalidWill, Some(text));
            return;
        }
        out.push(Output::Event(Event::WillSet {
            name: session.name.clone(),
            will,
        }));
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
                let first = !matches!(session.last_change, StateChange::Suspected { .. });
                session.last_change = StateChange::Suspected {
                    missed,
                    phi: phi.map(|phi| phi as f32),
                };
                out.push(Output::Event(Event::Suspected {
                    name: session.name.clone(),
                    missed,
                    phi,
                    first,
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
                push_refused(out, code, notice);
            }
            Ok(_) => {}
            Err(violation) => self.refuse(now, violation.code, violation.text, rules, out),
        }
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

/// A frame refused without ending the session: its NOTICE, on the first
/// refusal of a run, then the event that counts it.
fn push_refused(out: &mut impl OutputSink, code: ReasonCode, notice: Option<String>) {
    if let Some(text) = &notice {
        let reason = Reason::new(code, text.clone());
        out.push(Output::Transmit(Transmit::Notice(reason)));
    }
    out.push(Output::Event(Event::FrameRefused { code, notice }));
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
