//! The frames of wire protocol v1 as plain data.
//!
//! These types carry no IO and no buffers of their own beyond the strings and
//! bodies they hold; `codec` turns them into bytes and back. The byte layout
//! of every frame is specified in `docs/PROTOCOL.md`.

use super::reason::ReasonCode;
use super::rooms::{PresenceUpdate, Watch};

/// Protocol version spoken by this crate, carried in HELLO.
pub const PROTOCOL_VERSION: u8 = 1;

/// Longest name a session may claim, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 64;

/// Longest credential a HELLO may carry, in bytes.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// Longest delay a last will may ask for, in milliseconds (one hour).
pub const MAX_WILL_DELAY_MS: u32 = 3_600_000;

/// Largest body of a last will, in bytes: a last word, kept by the server
/// for every session that sets one (19,000 sessions: at most 19 MB).
pub const MAX_WILL_BODY: usize = 1024;

/// Longest status a session may carry, in bytes of UTF-8 (the wire field
/// holds up to 255; the server refuses more than this).
pub const MAX_STATUS_LEN: usize = 128;

/// Bits of the HELLO `flags` byte.
pub mod flags {
    /// The client wants a PONG for every PING. Without it the session is
    /// one-way (seed 003's variant): the server never answers heartbeats.
    pub const ACKS_WANTED: u8 = 0b0000_0001;
    /// A status follows the credential: the session starts with it.
    pub const HAS_STATUS: u8 = 0b0000_0010;
    /// Every bit this version defines; a HELLO with other bits set is rejected
    /// so that a future flag is never silently ignored.
    pub const KNOWN: u8 = ACKS_WANTED | HAS_STATUS;
}

/// One byte on the wire that says what a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → server: opens a session.
    Hello = 0x01,
    /// Server → client: the session is open, with the granted parameters.
    Welcome = 0x02,
    /// Server → client: the handshake failed; the server closes next.
    Reject = 0x03,
    /// Client → server: heartbeat.
    Ping = 0x04,
    /// Server → client: answer to a PING, echoing its sequence number.
    Pong = 0x05,
    /// Either way: a chat message.
    Msg = 0x06,
    /// Either way: the session ends; the sender closes next.
    Bye = 0x07,
    /// Server → client: a non-fatal error about one request (for example a
    /// MSG to a name that is not online). The session goes on.
    Notice = 0x08,
    /// Client → server: sets (or, empty, clears) the session's status.
    Status = 0x09,
    /// Client → server: sets (or, with an empty body, clears) the
    /// session's last will.
    Will = 0x0a,
    /// Client → server: joins a room.
    Join = 0x0b,
    /// Client → server: leaves a room.
    Leave = 0x0c,
    /// Client → server: starts or stops watching a name or a room.
    Watch = 0x0d,
    /// Server → client: a change of a watched name or room.
    Presence = 0x0e,
}

impl FrameKind {
    /// Maps a wire byte to a kind, or `None` for a byte this version does not define.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => Self::Hello,
            0x02 => Self::Welcome,
            0x03 => Self::Reject,
            0x04 => Self::Ping,
            0x05 => Self::Pong,
            0x06 => Self::Msg,
            0x07 => Self::Bye,
            0x08 => Self::Notice,
            0x09 => Self::Status,
            0x0a => Self::Will,
            0x0b => Self::Join,
            0x0c => Self::Leave,
            0x0d => Self::Watch,
            0x0e => Self::Presence,
            _ => return None,
        })
    }
}

/// HELLO: the first frame a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks; the server accepts only [`PROTOCOL_VERSION`].
    pub version: u8,
    /// Bit set of [`flags`].
    pub flags: u8,
    /// Heartbeat interval the client asks for, in milliseconds; 0 asks for the server's default.
    pub requested_interval_ms: u32,
    /// Name the session claims.
    pub name: String,
    /// Opaque credential for the name; empty when the client has none.
    pub credential: Vec<u8>,
    /// The status the session starts with, if any (sent when
    /// [`flags::HAS_STATUS`] is set; the encoder sets that bit from this).
    pub status: Option<String>,
}

impl Hello {
    /// Whether the client asked for a PONG to each PING.
    pub fn acks_wanted(&self) -> bool {
        self.flags & flags::ACKS_WANTED != 0
    }
}

/// WELCOME: the server accepted the HELLO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// Identifier of this session, unique within the server process.
    pub session_id: u64,
    /// Fencing epoch of the name: it grows with every claim, so a newer
    /// session of a name always has a larger epoch than an older one.
    pub epoch: u64,
    /// Interval the client must heartbeat at, in milliseconds.
    pub granted_interval_ms: u32,
    /// Silent intervals after which either side declares the other dead.
    pub max_missed: u16,
}

/// MSG: a chat message. Clients send `from` empty; the server always fills
/// in the sending session's own name, so no client can pose as another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Name of the sending session (set by the server).
    pub from: String,
    /// Name of the receiving session; empty means broadcast to every other session.
    pub to: String,
    /// Application payload; the chat CLI treats it as UTF-8 text.
    pub body: Vec<u8>,
}

/// A reason code with human-readable text, as carried by REJECT, BYE and NOTICE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    /// Machine-readable reason.
    pub code: ReasonCode,
    /// Human-readable explanation.
    pub text: String,
}

impl Reason {
    /// Builds a reason from a code and any text.
    pub fn new(code: ReasonCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }
}

/// BYE: the sender ends the session and closes the connection next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// Why the session ends.
    pub reason: Reason,
    /// When non-zero, how long the receiver should wait before reconnecting, in milliseconds.
    pub retry_after_ms: u32,
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`Welcome`].
    Welcome(Welcome),
    /// The handshake failed for this reason.
    Reject(Reason),
    /// Heartbeat with a sequence number and the sender's last measured
    /// round-trip time in microseconds (0 when not yet known), so that the
    /// server can show it without sending probes of its own.
    Ping {
        /// Sequence number, echoed by the PONG.
        seq: u32,
        /// Client's last measured round-trip time, in microseconds; 0 = unknown.
        rtt_us: u32,
    },
    /// Answer to the PING with this sequence number.
    Pong {
        /// Sequence number of the PING being answered.
        seq: u32,
    },
    /// See [`Message`].
    Msg(Message),
    /// See [`Bye`].
    Bye(Bye),
    /// A non-fatal error about one request.
    Notice(Reason),
    /// The session's status from now on (empty: none), at most
    /// [`MAX_STATUS_LEN`] bytes.
    Status {
        /// The status, e.g. `away` or `in match 42`.
        text: String,
    },
    /// See [`Will`].
    Will(Will),
    /// Join this room (`#lobby`).
    Join {
        /// The room.
        room: String,
    },
    /// Leave this room.
    Leave {
        /// The room.
        room: String,
    },
    /// See [`Watch`].
    Watch(Watch),
    /// See [`PresenceUpdate`].
    Presence(PresenceUpdate),
}

/// WILL: the MSG the server sends for this session if it ends without a
/// BYE of its own (see `docs/PROTOCOL.md`, *WILL*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// How long the server waits before sending it; the name back online
    /// within this wait cancels it. At most [`MAX_WILL_DELAY_MS`].
    pub delay_ms: u32,
    /// The recipient's name; empty: every other session.
    pub to: String,
    /// The message body; empty clears the will.
    pub body: Vec<u8>,
}

impl Frame {
    /// The kind byte this frame is sent with.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::Hello(_) => FrameKind::Hello,
            Frame::Welcome(_) => FrameKind::Welcome,
            Frame::Reject(_) => FrameKind::Reject,
            Frame::Ping { .. } => FrameKind::Ping,
            Frame::Pong { .. } => FrameKind::Pong,
            Frame::Msg(_) => FrameKind::Msg,
            Frame::Bye(_) => FrameKind::Bye,
            Frame::Notice(_) => FrameKind::Notice,
            Frame::Status { .. } => FrameKind::Status,
            Frame::Will(_) => FrameKind::Will,
            Frame::Join { .. } => FrameKind::Join,
            Frame::Leave { .. } => FrameKind::Leave,
            Frame::Watch(_) => FrameKind::Watch,
            Frame::Presence(_) => FrameKind::Presence,
        }
    }

    /// A BYE with this code and text and no reconnect hint.
    pub fn bye(code: ReasonCode, text: impl Into<String>) -> Self {
        Frame::Bye(Bye {
            reason: Reason::new(code, text),
            retry_after_ms: 0,
        })
    }

    /// A REJECT with this code and text.
    pub fn reject(code: ReasonCode, text: impl Into<String>) -> Self {
        Frame::Reject(Reason::new(code, text))
    }
}
