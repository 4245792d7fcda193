//! Reason codes carried by REJECT, BYE and NOTICE.
//!
//! Every error a peer can cause maps to exactly one code here, and the table
//! in `docs/PROTOCOL.md` lists them with the outcome the server applies.

use std::fmt;

/// Why a handshake failed, a session ended, or a request was refused.
///
/// Codes are stable on the wire. An unknown code received from a newer peer
/// decodes as [`ReasonCode::Unknown`] with its number kept, so that a client
/// never fails to read a BYE because the server learnt a new reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// The peer ended the session on purpose (a client's `quit`).
    Normal,
    /// Bytes that do not form a valid frame: a bad field, a truncated
    /// payload, trailing bytes, or text that is not UTF-8.
    MalformedFrame,
    /// The length prefix exceeds the receiver's maximum frame size.
    FrameTooLarge,
    /// A kind byte this version does not define.
    UnknownFrameKind,
    /// HELLO carried a protocol version the server does not speak.
    UnsupportedVersion,
    /// A frame other than HELLO arrived before the handshake completed.
    HelloRequired,
    /// A second HELLO arrived on an established session.
    DuplicateHello,
    /// The claimed name is empty, too long, or contains forbidden characters.
    InvalidName,
    /// HELLO did not arrive within the handshake timeout.
    HandshakeTimeout,
    /// Another connection claimed this session's name.
    TakenOver,
    /// The peer stayed silent until its deadline.
    Timeout,
    /// The server is shutting down.
    Shutdown,
    /// The credential does not grant the claimed name.
    Unauthorized,
    /// A MSG named a recipient that is not online (NOTICE only).
    NoSuchSession,
    /// The peer did not read its messages and its outbound queue filled up.
    SlowConsumer,
    /// The peer sent a frame kind that only the other side may send.
    UnexpectedFrame,
    /// The server is at a connection limit (total, per source address or
    /// accept rate), or cannot take the session now.
    ServerFull,
    /// PINGs arrive much faster than the granted interval calls for; the
    /// text names the spacing allowed.
    TooManyPings,
    /// A MSG was not delivered: the session sends more messages per second
    /// than the server allows (NOTICE only).
    RateLimited,
    /// The server requires TLS and the peer spoke plain TCP.
    TlsRequired,
    /// The server is too busy to do this now (credentials waiting to be
    /// verified, the loop's fan-out budget, the server-wide outbound memory
    /// cap, a registry that cannot take claims); retry later. The text says
    /// which and when.
    ServerBusy,
    /// A MSG was not delivered: the recipient's queue already holds as many
    /// undelivered messages as the server keeps for it (NOTICE only).
    RecipientBusy,
    /// The claimed name looks like (is confusable with) a name that is
    /// online; the text names it.
    ConfusableName,
    /// A status (in HELLO or STATUS) that is too long or holds a control
    /// character; the text says which.
    InvalidStatus,
    /// A WILL whose recipient is not a valid name, whose body is too large
    /// to relay, or whose delay is too long; the text says which.
    InvalidWill,
    /// A JOIN, LEAVE, MSG or WILL naming a room that is not a valid room
    /// name (NOTICE only).
    InvalidRoom,
    /// A JOIN beyond the rooms one session may be in (NOTICE only).
    TooManyRooms,
    /// A WATCH with an unknown mode, an invalid target, or a listing of a
    /// room too large to list (NOTICE only).
    InvalidWatch,
    /// A WATCH beyond the targets one session may watch (NOTICE only).
    TooManyWatches,
    /// The session's credential does not allow this JOIN or WATCH (NOTICE only).
    NotPermitted,
    /// A MSG to, or a LEAVE of, a room the session is not in (NOTICE only).
    NotInRoom,
    /// A code this version does not know.
    Unknown(u16),
}

impl ReasonCode {
    /// The number sent on the wire.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Normal => 0,
            Self::MalformedFrame => 1,
            Self::FrameTooLarge => 2,
            Self::UnknownFrameKind => 3,
            Self::UnsupportedVersion => 4,
            Self::HelloRequired => 5,
            Self::DuplicateHello => 6,
            Self::InvalidName => 7,
            Self::HandshakeTimeout => 8,
            Self::TakenOver => 9,
            Self::Timeout => 10,
            Self::Shutdown => 11,
            Self::Unauthorized => 12,
            Self::NoSuchSession => 13,
            Self::SlowConsumer => 14,
            Self::UnexpectedFrame => 15,
            Self::ServerFull => 16,
            Self::TooManyPings => 17,
            Self::RateLimited => 18,
            Self::TlsRequired => 19,
            Self::ServerBusy => 20,
            Self::RecipientBusy => 21,
            Self::ConfusableName => 22,
            Self::InvalidStatus => 23,
            Self::InvalidWill => 24,
            Self::InvalidRoom => 25,
            Self::TooManyRooms => 26,
            Self::InvalidWatch => 27,
            Self::TooManyWatches => 28,
            Self::NotPermitted => 29,
            Self::NotInRoom => 30,
            Self::Unknown(code) => code,
        }
    }

    /// Maps a wire number to a code; numbers this version does not define are kept as [`ReasonCode::Unknown`].
    pub fn from_u16(code: u16) -> Self {
        match code {
            0 => Self::Normal,
            1 => Self::MalformedFrame,
            2 => Self::FrameTooLarge,
            3 => Self::UnknownFrameKind,
            4 => Self::UnsupportedVersion,
            5 => Self::HelloRequired,
            6 => Self::DuplicateHello,
            7 => Self::InvalidName,
            8 => Self::HandshakeTimeout,
            9 => Self::TakenOver,
            10 => Self::Timeout,
            11 => Self::Shutdown,
            12 => Self::Unauthorized,
            13 => Self::NoSuchSession,
            14 => Self::SlowConsumer,
            15 => Self::UnexpectedFrame,
            16 => Self::ServerFull,
            17 => Self::TooManyPings,
            18 => Self::RateLimited,
            19 => Self::TlsRequired,
            20 => Self::ServerBusy,
            21 => Self::RecipientBusy,
            22 => Self::ConfusableName,
            23 => Self::InvalidStatus,
            24 => Self::InvalidWill,
            25 => Self::InvalidRoom,
            26 => Self::TooManyRooms,
            27 => Self::InvalidWatch,
            28 => Self::TooManyWatches,
            29 => Self::NotPermitted,
            30 => Self::NotInRoom,
            other => Self::Unknown(other),
        }
    }

    /// Short snake_case label used in logs and the admin API.
    pub fn label(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::UnknownFrameKind => "unknown_frame_kind",
            Self::UnsupportedVersion => "unsupported_version",
            Self::HelloRequired => "hello_required",
            Self::DuplicateHello => "duplicate_hello",
            Self::InvalidName => "invalid_name",
            Self::HandshakeTimeout => "handshake_timeout",
            Self::TakenOver => "taken_over",
            Self::Timeout => "timeout",
            Self::Shutdown => "shutdown",
            Self::Unauthorized => "unauthorized",
            Self::NoSuchSession => "no_such_session",
            Self::SlowConsumer => "slow_consumer",
            Self::UnexpectedFrame => "unexpected_frame",
            Self::ServerFull => "server_full",
            Self::TooManyPings => "too_many_pings",
            Self::RateLimited => "rate_limited",
            Self::TlsRequired => "tls_required",
            Self::ServerBusy => "server_busy",
            Self::RecipientBusy => "recipient_busy",
            Self::ConfusableName => "confusable_name",
            Self::InvalidStatus => "invalid_status",
            Self::InvalidWill => "invalid_will",
            Self::InvalidRoom => "invalid_room",
            Self::TooManyRooms => "too_many_rooms",
            Self::InvalidWatch => "invalid_watch",
            Self::TooManyWatches => "too_many_watches",
            Self::NotPermitted => "not_permitted",
            Self::NotInRoom => "not_in_room",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(code) => write!(f, "unknown({code})"),
            other => f.write_str(other.label()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_number() {
        for number in 0..=31u16 {
            assert_eq!(ReasonCode::from_u16(number).to_u16(), number);
        }
        assert_eq!(ReasonCode::from_u16(999), ReasonCode::Unknown(999));
    }
}
