//! Wire protocol v1: frames, their byte encoding, reason codes and the
//! handshake rules both sides apply.
//!
//! Layout: [`frame`] holds the frames as data, [`codec`] turns them into
//! bytes and back, [`inbox`] feeds a connection's reads to the codec,
//! [`reason`] lists every reason code, [`name`] holds the naming
//! rules and the confusable skeleton, [`handshake`] validates names
//! and negotiates the heartbeat interval, [`status`] says which statuses
//! a session may carry, [`rooms`] says which rooms and watches, and [`test_vectors`] reads the
//! vectors of `docs/PROTOCOL.md`. The normative
//! description, with test vectors, is `docs/PROTOCOL.md`.

pub mod codec;
pub mod frame;
pub mod handshake;
pub mod inbox;
pub mod name;
pub mod reason;
pub mod rooms;
pub mod status;
pub mod test_vectors;

pub use codec::{
    check, decode, encode, encode_to_vec, max_msg_body, DecodeError, EncodeError,
    DEFAULT_MAX_FRAME_LEN,
};
pub use frame::{Bye, Frame, FrameKind, Hello, Message, Reason, Welcome, Will, PROTOCOL_VERSION};
pub use reason::ReasonCode;

#[cfg(test)]
mod vectors;
