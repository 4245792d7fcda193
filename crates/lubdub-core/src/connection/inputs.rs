//! What comes into a connection machine besides bytes and deadlines: the
//! answers to its requests (credentials, claims, relay refusals), and why
//! a connection ended, which its `Dropped` event reports.

use crate::protocol::ReasonCode;

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
    /// Whether a session that ended so has its last will sent: it ended
    /// without a BYE of its own, and its name did not live on. Not after
    /// `quit` (it left on purpose), `taken_over` (the name is online, in
    /// the new session) or `shutdown` (the server, not the session, went
    /// away: every will at once would be a false alarm about every client).
    pub fn sends_will(self) -> bool {
        match self {
            DropReason::Timeout
            | DropReason::ClosedByPeer
            | DropReason::ProtocolError(_)
            | DropReason::SlowConsumer
            | DropReason::IoError => true,
            DropReason::Quit | DropReason::TakenOver | DropReason::Shutdown => false,
        }
    }

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
        /// The session that held the name until now (it is being taken
        /// over), if any: the name stays online, in this session.
        replaced: Option<u64>,
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
