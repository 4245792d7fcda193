//! Which frame a server accepts at which point of a session.
//!
//! The server's per-connection state machine reduced to its rules: given the
//! phase of the connection and a decoded frame, either an [`Inbound`] request
//! the server acts on, or a [`Violation`] that ends the connection with a
//! reason code. Pure, so that it can be unit-tested and fuzzed without sockets.

use crate::protocol::handshake::validate_name;
use crate::protocol::{Bye, Frame, Hello, Message, ReasonCode};

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
        (Phase::AwaitingHello, Frame::Hello(hello)) => match validate_name(&hello.name) {
            Ok(()) => Ok(Inbound::Hello(hello)),
            Err(error) => violation(ReasonCode::InvalidName, format!("invalid name: {error}")),
        },
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
            if !message.to.is_empty() {
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
        (Phase::Established, other) => violation(
            ReasonCode::UnexpectedFrame,
            format!("{:?} is sent by servers, not clients", other.kind()),
        ),
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
}
