//! Bytes ⇄ frames: pure functions, no IO, no allocation before validation.
//!
//! Decoding has two phases, as in mini-redis: [`check`] only asks whether a
//! whole frame is buffered (an incomplete frame is `Ok(None)`, not an error,
//! and an over-long length prefix is rejected before anything is allocated);
//! [`decode`] then parses it. Every [`DecodeError`] maps to the reason code the
//! peer is told, via [`DecodeError::reason_code`].
//!
//! Size: one job (the byte layout of every frame, both ways); a third of the file is its property tests.

use super::frame::{flags, MAX_CREDENTIAL_LEN, MAX_NAME_LEN};
use super::frame::{
    Bye, Frame, FrameKind, Hello, Message, Reason, Welcome, Will, PROTOCOL_VERSION,
};
use super::reason::ReasonCode;
use super::rooms::{PresenceUpdate, UpdateKind, Watch};

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Default largest frame (kind byte and payload, without the length prefix) a
/// peer accepts. Chat bodies fit comfortably; a heartbeat is 9 bytes.
pub const DEFAULT_MAX_FRAME_LEN: usize = 64 * 1024;

/// Bytes a MSG frame needs besides its body when both names are as long as
/// allowed: kind byte, two name lengths and two names of [`MAX_NAME_LEN`].
pub const MSG_OVERHEAD: usize = 1 + 1 + MAX_NAME_LEN + 1 + MAX_NAME_LEN;

/// Largest MSG body a peer with this maximum frame size accepts for relay.
/// A relayed MSG carries the sender's name, which the client did not send,
/// so the limit leaves room for both names at their longest: whatever a
/// client is allowed to send, every recipient can receive.
pub fn max_msg_body(max_frame_len: usize) -> usize {
    max_frame_len.saturating_sub(MSG_OVERHEAD)
}

/// Why bytes could not be decoded into a frame. The buffer is never consumed
/// on error: the connection is expected to end.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix announces more than the receiver accepts.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge {
        /// Announced length.
        len: usize,
        /// Receiver's maximum.
        max: usize,
    },
    /// The length prefix is zero: not even a kind byte follows.
    #[error("empty frame: the length prefix is 0")]
    EmptyFrame,
    /// The kind byte is not one this version defines.
    #[error("unknown frame kind 0x{kind:02x}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// HELLO announces a protocol version this crate does not speak.
    #[error("unsupported protocol version {version} (this server speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion {
        /// Version the peer announced.
        version: u8,
    },
    /// The payload ends before a field it must contain.
    #[error("{kind:?} frame is truncated: missing {field}")]
    Truncated {
        /// Kind of the frame being parsed.
        kind: FrameKind,
        /// The field that did not fit.
        field: &'static str,
    },
    /// The payload holds bytes after its last field.
    #[error("{kind:?} frame has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// Kind of the frame being parsed.
        kind: FrameKind,
        /// Number of bytes left over.
        extra: usize,
    },
    /// A text field is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field that failed.
        field: &'static str,
    },
    /// A field is longer than the protocol allows.
    #[error("{field} is {len} bytes, more than the maximum of {max}")]
    FieldTooLong {
        /// The field that is too long.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The allowed maximum.
        max: usize,
    },
    /// HELLO sets flag bits this version does not define.
    #[error("unknown HELLO flags 0x{flags:02x}")]
    UnknownFlags {
        /// The flags byte received.
        flags: u8,
    },
    /// PRESENCE sets flag bits this version does not define.
    #[error("unknown PRESENCE flags 0x{flags:02x}")]
    UnknownPresenceFlags {
        /// The flags byte received.
        flags: u8,
    },
}

impl DecodeError {
    /// The reason code a peer is told when its bytes fail with this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::FrameTooLarge { .. } => ReasonCode::FrameTooLarge,
            DecodeError::UnknownKind { .. } => ReasonCode::UnknownFrameKind,
            DecodeError::UnsupportedVersion { .. } => ReasonCode::UnsupportedVersion,
            DecodeError::EmptyFrame
            | DecodeError::Truncated { .. }
            | DecodeError::TrailingBytes { .. }
            | DecodeError::InvalidUtf8 { .. }
            | DecodeError::FieldTooLong { .. }
            | DecodeError::UnknownFlags { .. }
            | DecodeError::UnknownPresenceFlags { .. } => ReasonCode::MalformedFrame,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field does not fit its length prefix.
    #[error("{field} is {len} bytes, more than the maximum of {max}")]
    FieldTooLong {
        /// The field that is too long.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The allowed maximum.
        max: usize,
    },
}

/// Phase one: is a whole frame buffered at the start of `buf`?
///
/// Returns the number of bytes the frame occupies, length prefix included, or
/// `Ok(None)` when more bytes are needed.
///
/// # Errors
/// [`DecodeError::FrameTooLarge`] as soon as the prefix announces more than
/// `max_frame_len`, before the payload has arrived or anything is allocated;
/// [`DecodeError::EmptyFrame`] for a zero prefix.
pub fn check(buf: &[u8], max_frame_len: usize) -> Result<Option<usize>, DecodeError> {
    let Some(prefix) = buf.get(..LENGTH_PREFIX_LEN) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
    if len == 0 {
        return Err(DecodeError::EmptyFrame);
    }
    if len > max_frame_len {
        return Err(DecodeError::FrameTooLarge {
            len,
            max: max_frame_len,
        });
    }
    let total = LENGTH_PREFIX_LEN + len;
    Ok((buf.len() >= total).then_some(total))
}

/// Both phases: decodes the frame at the start of `buf`.
///
/// Returns the frame and the number of bytes it used, or `Ok(None)` when the
/// frame is not yet complete.
///
/// # Errors
/// Any [`DecodeError`]; `buf` is not consumed and the connection should end
/// with the error's [`reason code`](DecodeError::reason_code).
pub fn decode(buf: &[u8], max_frame_len: usize) -> Result<Option<(Frame, usize)>, DecodeError> {
    let Some(total) = check(buf, max_frame_len)? else {
        return Ok(None);
    };
    let frame = parse(&buf[LENGTH_PREFIX_LEN..total])?;
    Ok(Some((frame, total)))
}

/// Phase two: parses one frame body (kind byte and payload, no length prefix).
///
/// # Errors
/// Any [`DecodeError`] except the two that [`check`] reports.
pub fn parse(body: &[u8]) -> Result<Frame, DecodeError> {
    let (&kind_byte, payload) = body.split_first().ok_or(DecodeError::EmptyFrame)?;
    let kind =
        FrameKind::from_byte(kind_byte).ok_or(DecodeError::UnknownKind { kind: kind_byte })?;
    let mut reader = Reader {
        kind,
        rest: payload,
    };
    let frame = match kind {
        FrameKind::Hello => {
            let version = reader.u8("version")?;
            if version != PROTOCOL_VERSION {
                // The rest of the layout belongs to that version; do not guess at it.
                return Err(DecodeError::UnsupportedVersion { version });
            }
            let hello_flags = reader.u8("flags")?;
            if hello_flags & !flags::KNOWN != 0 {
                return Err(DecodeError::UnknownFlags { flags: hello_flags });
            }
            let requested_interval_ms = reader.u32("interval")?;
            let name = reader.str8("name")?;
            let credential = reader.bytes16("credential")?;
            if credential.len() > MAX_CREDENTIAL_LEN {
                return Err(DecodeError::FieldTooLong {
                    field: "credential",
                    len: credential.len(),
                    max: MAX_CREDENTIAL_LEN,
                });
            }
            let status = if hello_flags & flags::HAS_STATUS != 0 {
                Some(reader.str8("status")?)
            } else {
                None
            };
            Frame::Hello(Hello {
                version,
                flags: hello_flags,
                requested_interval_ms,
                name,
                credential: credential.to_vec(),
                status,
            })
        }
        FrameKind::Welcome => Frame::Welcome(Welcome {
            session_id: reader.u64("session id")?,
            epoch: reader.u64("epoch")?,
            granted_interval_ms: reader.u32("interval")?,
            max_missed: reader.u16("max missed")?,
        }),
        FrameKind::Reject => Frame::Reject(reader.reason()?),
        FrameKind::Ping => Frame::Ping {
            seq: reader.u32("sequence")?,
            rtt_us: reader.u32("rtt")?,
        },
        FrameKind::Pong => Frame::Pong {
            seq: reader.u32("sequence")?,
        },
        FrameKind::Msg => {
            let from = reader.str8("from")?;
            let to = reader.str8("to")?;
            let body = std::mem::take(&mut reader.rest).to_vec();
            Frame::Msg(Message { from, to, body })
        }
        FrameKind::Bye => {
            let reason = reader.reason()?;
            let retry_after_ms = reader.u32("retry after")?;
            Frame::Bye(Bye {
                reason,
                retry_after_ms,
            })
        }
        FrameKind::Notice => Frame::Notice(reader.reason()?),
        FrameKind::Status => Frame::Status {
            text: reader.str8("status")?,
        },
        FrameKind::Will => {
            let delay_ms = reader.u32("delay")?;
            let to = reader.str8("to")?;
            let body = std::mem::take(&mut reader.rest).to_vec();
            Frame::Will(Will { delay_ms, to, body })
        }
        FrameKind::Join => Frame::Join {
            room: reader.str8("room")?,
        },
        FrameKind::Leave => Frame::Leave {
            room: reader.str8("room")?,
        },
        FrameKind::Watch => Frame::Watch(Watch {
            mode: reader.u8("mode")?,
            target: reader.str8("target")?,
        }),
        FrameKind::Presence => {
            let seq = reader.u64("sequence")?;
            let kind = UpdateKind::from_byte(reader.u8("kind")?);
            let flags = reader.u8("flags")?;
            if flags & !1 != 0 {
                return Err(DecodeError::UnknownPresenceFlags { flags });
            }
            Frame::Presence(PresenceUpdate {
                seq,
                kind,
                suspect: flags & 1 != 0,
                count: reader.u32("count")?,
                session_id: reader.u64("session id")?,
                target: reader.str8("target")?,
                name: reader.str8("name")?,
                text: reader.str8("text")?,
            })
        }
    };
    if !reader.rest.is_empty() {
        return Err(DecodeError::TrailingBytes {
            kind,
            extra: reader.rest.len(),
        });
    }
    Ok(frame)
}

/// Appends the encoding of `frame`, length prefix included, to `out`.
///
/// # Errors
/// [`EncodeError::FieldTooLong`] when a name exceeds 255 bytes, a text or
/// credential exceeds 65,535 bytes; `out` is left as it was.
pub fn encode(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX_LEN]);
    out.push(frame.kind() as u8);
    let written = encode_payload(frame, out);
    if let Err(error) = written {
        out.truncate(start);
        return Err(error);
    }
    let len = out.len() - start - LENGTH_PREFIX_LEN;
    let len = u32::try_from(len).map_err(|_| {
        out.truncate(start);
        EncodeError::FieldTooLong {
            field: "frame",
            len,
            max: u32::MAX as usize,
        }
    })?;
    out[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes a frame into a fresh buffer. Convenience for tests and cold paths.
///
/// # Errors
/// As [`encode`].
pub fn encode_to_vec(frame: &Frame) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode(frame, &mut out)?;
    Ok(out)
}

/// Encoded PONG for `seq`, built on the stack: the server's heartbeat path
/// answers every PING with one and must not allocate to do it.
pub fn pong_bytes(seq: u32) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[..4].copy_from_slice(&5u32.to_be_bytes());
    out[4] = FrameKind::Pong as u8;
    out[5..].copy_from_slice(&seq.to_be_bytes());
    out
}

/// Encoded PING for `seq` carrying `rtt_us`, built on the stack.
pub fn ping_bytes(seq: u32, rtt_us: u32) -> [u8; 13] {
    let mut out = [0u8; 13];
    out[..4].copy_from_slice(&9u32.to_be_bytes());
    out[4] = FrameKind::Ping as u8;
    out[5..9].copy_from_slice(&seq.to_be_bytes());
    out[9..].copy_from_slice(&rtt_us.to_be_bytes());
    out
}

fn encode_payload(frame: &Frame, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    match frame {
        Frame::Hello(hello) => {
            out.push(hello.version);
            // The status bit says whether a status follows: it is the
            // field's, not the caller's, to set.
            let status_bit = if hello.status.is_some() {
                flags::HAS_STATUS
            } else {
                0
            };
            out.push((hello.flags & !flags::HAS_STATUS) | status_bit);
            out.extend_from_slice(&hello.requested_interval_ms.to_be_bytes());
            put_str8(out, "name", &hello.name)?;
            put_bytes16(out, "credential", &hello.credential)?;
            if let Some(status) = &hello.status {
                put_str8(out, "status", status)?;
            }
        }
        Frame::Welcome(welcome) => {
            out.extend_from_slice(&welcome.session_id.to_be_bytes());
            out.extend_from_slice(&welcome.epoch.to_be_bytes());
            out.extend_from_slice(&welcome.granted_interval_ms.to_be_bytes());
            out.extend_from_slice(&welcome.max_missed.to_be_bytes());
        }
        Frame::Reject(reason) | Frame::Notice(reason) => put_reason(out, reason)?,
        Frame::Ping { seq, rtt_us } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&rtt_us.to_be_bytes());
        }
        Frame::Pong { seq } => out.extend_from_slice(&seq.to_be_bytes()),
        Frame::Msg(message) => {
            put_str8(out, "from", &message.from)?;
            put_str8(out, "to", &message.to)?;
            out.extend_from_slice(&message.body);
        }
        Frame::Bye(bye) => {
            put_reason(out, &bye.reason)?;
            out.extend_from_slice(&bye.retry_after_ms.to_be_bytes());
        }
        Frame::Status { text } => put_str8(out, "status", text)?,
        Frame::Will(will) => {
            out.extend_from_slice(&will.delay_ms.to_be_bytes());
            put_str8(out, "to", &will.to)?;
            out.extend_from_slice(&will.body);
        }
        Frame::Join { room } | Frame::Leave { room } => put_str8(out, "room", room)?,
        Frame::Watch(watch) => {
            out.push(watch.mode);
            put_str8(out, "target", &watch.target)?;
        }
        Frame::Presence(update) => {
            out.extend_from_slice(&update.seq.to_be_bytes());
            out.push(update.kind.to_byte());
            out.push(u8::from(update.suspect));
            out.extend_from_slice(&update.count.to_be_bytes());
            out.extend_from_slice(&update.session_id.to_be_bytes());
            put_str8(out, "target", &update.target)?;
            put_str8(out, "name", &update.name)?;
            put_str8(out, "text", &update.text)?;
        }
    }
    Ok(())
}

fn put_reason(out: &mut Vec<u8>, reason: &Reason) -> Result<(), EncodeError> {
    out.extend_from_slice(&reason.code.to_u16().to_be_bytes());
    put_bytes16(out, "text", reason.text.as_bytes())
}

fn put_str8(out: &mut Vec<u8>, field: &'static str, value: &str) -> Result<(), EncodeError> {
    let len = u8::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: value.len(),
        max: u8::MAX as usize,
    })?;
    out.push(len);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

fn put_bytes16(out: &mut Vec<u8>, field: &'static str, value: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(value.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: value.len(),
        max: u16::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

/// Cursor over one frame's payload that names the field it failed on.
struct Reader<'a> {
    kind: FrameKind,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                kind: self.kind,
                field,
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, field)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn utf8(bytes: &[u8], field: &'static str) -> Result<String, DecodeError> {
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        let bytes = self.take(len, field)?;
        Self::utf8(bytes, field)
    }

    fn bytes16(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u16(field)? as usize;
        self.take(len, field)
    }

    fn reason(&mut self) -> Result<Reason, DecodeError> {
        let code = ReasonCode::from_u16(self.u16("reason code")?);
        let text = self.bytes16("reason text")?;
        Ok(Reason {
            code,
            text: Self::utf8(text, "reason text")?,
        })
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::protocol::frame::Message;
    use proptest::prelude::*;

    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(any::<char>(), 0..max)
            .prop_map(|chars| chars.into_iter().collect::<String>())
            .prop_filter("fits a str8", |s| s.len() <= 255)
    }

    fn reason() -> impl Strategy<Value = Reason> {
        (any::<u16>(), text(40))
            .prop_map(|(code, text)| Reason::new(ReasonCode::from_u16(code), text))
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (
                any::<u8>(),
                any::<u32>(),
                text(64),
                proptest::collection::vec(any::<u8>(), 0..64),
                proptest::option::of(text(40)),
            )
                .prop_map(
                    |(flag_bits, requested_interval_ms, name, credential, status)| {
                        let status_bit = if status.is_some() {
                            flags::HAS_STATUS
                        } else {
                            0
                        };
                        Frame::Hello(Hello {
                            version: PROTOCOL_VERSION,
                            flags: (flag_bits & flags::ACKS_WANTED) | status_bit,
                            requested_interval_ms,
                            name,
                            credential,
                            status,
                        })
                    }
                ),
            (any::<u64>(), any::<u64>(), any::<u32>(), any::<u16>()).prop_map(
                |(session_id, epoch, granted_interval_ms, max_missed)| {
                    Frame::Welcome(Welcome {
                        session_id,
                        epoch,
                        granted_interval_ms,
                        max_missed,
                    })
                }
            ),
            reason().prop_map(Frame::Reject),
            (any::<u32>(), any::<u32>()).prop_map(|(seq, rtt_us)| Frame::Ping { seq, rtt_us }),
            any::<u32>().prop_map(|seq| Frame::Pong { seq }),
            (
                text(20),
                text(20),
                proptest::collection::vec(any::<u8>(), 0..200)
            )
                .prop_map(|(from, to, body)| Frame::Msg(Message { from, to, body })),
            (reason(), any::<u32>()).prop_map(|(reason, retry_after_ms)| Frame::Bye(Bye {
                reason,
                retry_after_ms
            })),
            reason().prop_map(Frame::Notice),
            text(60).prop_map(|text| Frame::Status { text }),
            (
                any::<u32>(),
                text(20),
                proptest::collection::vec(any::<u8>(), 0..100)
            )
                .prop_map(|(delay_ms, to, body)| Frame::Will(Will {
                    delay_ms,
                    to,
                    body
                })),
            text(40).prop_map(|room| Frame::Join { room }),
            text(40).prop_map(|room| Frame::Leave { room }),
            (any::<u8>(), text(40)).prop_map(|(mode, target)| Frame::Watch(Watch { mode, target })),
            (
                (
                    any::<u64>(),
                    any::<u8>(),
                    any::<bool>(),
                    any::<u32>(),
                    any::<u64>()
                ),
                (text(20), text(20), text(40)),
            )
                .prop_map(
                    |((seq, kind, suspect, count, session_id), (target, name, text))| {
                        Frame::Presence(PresenceUpdate {
                            seq,
                            kind: UpdateKind::from_byte(kind),
                            suspect,
                            count,
                            session_id,
                            target,
                            name,
                            text,
                        })
                    }
                ),
        ]
    }

    proptest! {
        #[test]
        fn every_frame_round_trips(frame in frame()) {
            let bytes = encode_to_vec(&frame).expect("generated frames fit their fields");
            prop_assert_eq!(decode(&bytes, DEFAULT_MAX_FRAME_LEN), Ok(Some((frame, bytes.len()))));
        }

        #[test]
        fn every_proper_prefix_is_incomplete(frame in frame()) {
            let bytes = encode_to_vec(&frame).expect("generated frames fit their fields");
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut], DEFAULT_MAX_FRAME_LEN), Ok(None));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(Some((_, used))) = decode(&bytes, DEFAULT_MAX_FRAME_LEN) {
                prop_assert!(used <= bytes.len());
            }
        }

        #[test]
        fn decoding_ignores_what_follows_the_frame(
            frame in frame(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let bytes = encode_to_vec(&frame).expect("generated frames fit their fields");
            let used = bytes.len();
            let mut stream = bytes;
            stream.extend_from_slice(&tail);
            prop_assert_eq!(decode(&stream, DEFAULT_MAX_FRAME_LEN), Ok(Some((frame, used))));
        }

        #[test]
        fn a_frame_fits_exactly_its_own_length_as_maximum(frame in frame()) {
            let bytes = encode_to_vec(&frame).expect("generated frames fit their fields");
            let len = bytes.len() - LENGTH_PREFIX_LEN;
            prop_assert_eq!(decode(&bytes, len), Ok(Some((frame, bytes.len()))));
            prop_assert_eq!(
                decode(&bytes, len - 1),
                Err(DecodeError::FrameTooLarge { len, max: len - 1 })
            );
        }

        #[test]
        fn a_stream_fed_in_any_reads_decodes_as_whole(
            frames in proptest::collection::vec(frame(), 1..8),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut stream = Vec::new();
            for frame in &frames {
                encode(frame, &mut stream).expect("generated frames fit their fields");
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(stream.len() + 1)).collect();
            cuts.sort_unstable();
            let mut reads = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                reads.push(&stream[start..cut]);
                start = cut;
            }
            prop_assert_eq!(&feed(&reads), &frames);
            let byte_by_byte: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(&feed(&byte_by_byte), &frames);
        }

        #[test]
        fn over_long_prefixes_are_refused_before_the_payload(
            max in 512usize..=2 * DEFAULT_MAX_FRAME_LEN,
            excess in 1u32..,
            payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let len = u32::try_from(max).expect("max fits a u32").saturating_add(excess);
            prop_assume!(len as usize > max);
            let mut bytes = len.to_be_bytes().to_vec();
            bytes.extend_from_slice(&payload);
            for available in LENGTH_PREFIX_LEN..=bytes.len() {
                prop_assert_eq!(
                    decode(&bytes[..available], max),
                    Err(DecodeError::FrameTooLarge { len: len as usize, max })
                );
            }
        }

        #[test]
        fn a_zero_prefix_is_an_empty_frame_whatever_follows(
            payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut bytes = vec![0; LENGTH_PREFIX_LEN];
            bytes.extend_from_slice(&payload);
            prop_assert_eq!(decode(&bytes, DEFAULT_MAX_FRAME_LEN), Err(DecodeError::EmptyFrame));
        }

        #[test]
        fn the_stack_built_heartbeats_match_the_encoder(seq in any::<u32>(), rtt_us in any::<u32>()) {
            prop_assert_eq!(
                Ok(ping_bytes(seq, rtt_us).to_vec()),
                encode_to_vec(&Frame::Ping { seq, rtt_us })
            );
            prop_assert_eq!(Ok(pong_bytes(seq).to_vec()), encode_to_vec(&Frame::Pong { seq }));
        }

        /// Decoding is canonical: whatever a corrupted frame decodes to
        /// encodes back to exactly the bytes it came from.
        #[test]
        fn corrupted_frames_fail_or_decode_canonically(
            frame in frame(),
            at in any::<prop::sample::Index>(),
            xor in 1u8..,
        ) {
            let mut bytes = encode_to_vec(&frame).expect("generated frames fit their fields");
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            if let Ok(Some((decoded, used))) = decode(&bytes, DEFAULT_MAX_FRAME_LEN) {
                prop_assert!(used <= bytes.len());
                prop_assert_eq!(encode_to_vec(&decoded), Ok(bytes[..used].to_vec()));
            }
        }
    }

    /// Frames from `reads` fed the way the server feeds a connection: keep a
    /// partial frame, append each read, decode from the front until
    /// `Ok(None)`, keep the rest.
    fn feed(reads: &[&[u8]]) -> Vec<Frame> {
        let mut partial = Vec::new();
        let mut frames = Vec::new();
        for read in reads {
            partial.extend_from_slice(read);
            let mut offset = 0;
            while let Some((frame, used)) =
                decode(&partial[offset..], DEFAULT_MAX_FRAME_LEN).expect("valid frames")
            {
                frames.push(frame);
                offset += used;
            }
            partial.drain(..offset);
        }
        assert!(partial.is_empty(), "{} bytes left over", partial.len());
        frames
    }

    /// One frame of every kind round-trips with its exact length: the
    /// strategy above picks kinds at random, this names each one.
    #[test]
    fn every_kind_round_trips() {
        let reason = || Reason::new(ReasonCode::Unknown(999), "why");
        let frames = [
            Frame::Hello(Hello {
                version: PROTOCOL_VERSION,
                flags: flags::ACKS_WANTED,
                requested_interval_ms: 1,
                name: "n".repeat(255),
                credential: vec![7; MAX_CREDENTIAL_LEN],
                status: None,
            }),
            Frame::Welcome(Welcome {
                session_id: u64::MAX,
                epoch: 1,
                granted_interval_ms: u32::MAX,
                max_missed: u16::MAX,
            }),
            Frame::Reject(reason()),
            Frame::Ping {
                seq: u32::MAX,
                rtt_us: 1,
            },
            Frame::Pong { seq: 0 },
            Frame::Msg(Message {
                from: "f".repeat(255),
                to: String::new(),
                body: vec![0; 1000],
            }),
            Frame::Bye(Bye {
                reason: reason(),
                retry_after_ms: u32::MAX,
            }),
            Frame::Notice(Reason::new(ReasonCode::TooManyPings, "é".repeat(1000))),
            Frame::Status {
                text: "away".into(),
            },
            Frame::Will(Will {
                delay_ms: 5,
                to: "bob".into(),
                body: b"gone".to_vec(),
            }),
            Frame::Join {
                room: "#lobby".into(),
            },
            Frame::Leave {
                room: "#r".repeat(127),
            },
            Frame::Watch(Watch {
                mode: 255,
                target: "bob".into(),
            }),
            Frame::Presence(PresenceUpdate {
                seq: u64::MAX,
                kind: UpdateKind::Other(200),
                suspect: true,
                count: u32::MAX,
                session_id: 7,
                target: "#lobby".into(),
                name: "bob".into(),
                text: "t".repeat(255),
            }),
        ];
        for (kind, frame) in (1u8..).zip(frames) {
            assert_eq!(frame.kind() as u8, kind);
            let bytes = encode_to_vec(&frame).expect("fits its fields");
            assert_eq!(bytes[LENGTH_PREFIX_LEN], kind);
            assert_eq!(
                decode(&bytes, DEFAULT_MAX_FRAME_LEN),
                Ok(Some((frame, bytes.len())))
            );
        }
    }
}
