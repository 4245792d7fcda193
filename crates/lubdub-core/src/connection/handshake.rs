//! A connection's handshake: an admitted HELLO asks for its credential to
//! be checked (when the server requires credentials) and for its name to be
//! claimed; the answers establish the session (WELCOME, `Joined`, its first
//! liveness check) or refuse it.

use crate::detector::Detector;
use crate::protocol::{Hello, ReasonCode, Welcome};
use crate::session::Conduct;

use super::rules::Now;
use super::{
    push_check, texts, Authentication, ClaimAnswer, Connection, Event, Output, OutputSink, Phase,
    Request, Rules, Session, StateChange, Transmit,
};

impl<S> Connection<S> {
    /// An admitted HELLO: its credential is checked, or its name claimed.
    pub(super) fn hello<D>(
        &mut self,
        mut hello: Hello,
        rules: &Rules<D>,
        out: &mut impl OutputSink,
    ) {
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
        let (session_id, epoch, wall_ms, replaced) = match answer {
            ClaimAnswer::Claimed {
                session_id,
                epoch,
                wall_ms,
                replaced,
            } => (session_id, epoch, wall_ms, replaced),
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
            held: super::rooms::Holdings::default(),
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
            replaced,
            status: hello.status,
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
}
