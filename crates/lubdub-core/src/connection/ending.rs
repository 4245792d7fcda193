//! How a connection ends: the choice of farewell (REJECT before the
//! handshake, BYE after, or none), the release of an established session's
//! name (not when taken over) and its `Dropped` event, then the close or
//! the linger.

use std::time::Duration;

use crate::detector::Detector;
use crate::protocol::{Frame, ReasonCode};

use super::rules::Now;
use super::{
    texts, Close, Connection, DropReason, Event, Output, OutputSink, Phase, Request, Rules, Timer,
    LINGER,
};

impl<S> Connection<S> {
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
    pub(super) fn end_timed_out<D: Detector<State = S>>(
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
    pub(super) fn end<D: Detector<State = S>>(
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
