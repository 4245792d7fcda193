//! Feeding one connection's bytes to the decoder, the way the server reads:
//! whole frames are decoded from the front of what arrived, and the tail of
//! an incomplete frame is kept until the next read.
//!
//! Shared by the server's event loop and the `session_machine` fuzz target,
//! so that the fuzzer drives the server's own framing, not a copy.

use super::codec::{self, DecodeError};
use super::frame::Frame;

/// What feeding bytes ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fed {
    /// Every whole frame was handed on; an incomplete one is kept.
    Waiting,
    /// The frame handler ended the connection; the rest is not decoded.
    Stopped,
    /// The frame handler asked to stop decoding for now ([`Next::Pause`]):
    /// the bytes after its frame are kept in `partial`, undecoded, for a
    /// later feed (with nothing fresh, or more).
    Paused,
    /// The bytes do not decode; the connection must end with this error's
    /// reason code. `first` tells whether the bad frame starts at the first
    /// byte fed (the start of the stream, before any frame of it decoded).
    Failed {
        /// Why the bytes do not decode.
        error: DecodeError,
        /// The bad frame starts at the first byte of `partial` + `fresh`.
        first: bool,
    },
}

/// Decodes every whole frame in `partial` followed by `fresh` (each at most
/// `max_frame_len`), handing each to `on_frame`, which returns whether the
/// connection goes on. On [`Fed::Waiting`], `partial` holds the bytes of
/// the incomplete frame, if any; on [`Fed::Stopped`] and [`Fed::Failed`] it
/// is left empty, whichever way the bytes came (the connection ends).
///
/// With nothing partial, frames are decoded straight from `fresh` and only
/// an incomplete tail is copied. With a partial frame, `fresh` is appended
/// and the consumed prefix dropped once, so that a peer sending one byte at
/// a time costs time linear in what it sends.
pub fn feed(
    partial: &mut Vec<u8>,
    fresh: &[u8],
    max_frame_len: usize,
    mut on_frame: impl FnMut(Frame) -> bool,
) -> Fed {
    feed_until(partial, fresh, max_frame_len, |frame| {
        if on_frame(frame) {
            Next::Continue
        } else {
            Next::Stop
        }
    })
}

/// What a frame handler wants after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Decode the next frame.
    Continue,
    /// The connection ended: drop the rest.
    Stop,
    /// Keep the rest undecoded for now (a HELLO waits for its answer, and
    /// what follows it is judged once the answer is in).
    Pause,
}

/// [`feed`], with a handler that may also pause decoding ([`Fed::Paused`]).
pub fn feed_until(
    partial: &mut Vec<u8>,
    fresh: &[u8],
    max_frame_len: usize,
    mut on_frame: impl FnMut(Frame) -> Next,
) -> Fed {
    let from_partial = !partial.is_empty();
    if from_partial {
        partial.extend_from_slice(fresh);
    }
    let bytes: &[u8] = if from_partial { partial } else { fresh };
    let mut offset = 0;
    while offset < bytes.len() {
        match codec::decode(&bytes[offset..], max_frame_len) {
            Ok(Some((frame, used))) => {
                offset += used;
                match on_frame(frame) {
                    Next::Continue => {}
                    Next::Stop => {
                        partial.clear();
                        return Fed::Stopped;
                    }
                    Next::Pause => {
                        keep_tail(partial, fresh, from_partial, offset);
                        return Fed::Paused;
                    }
                }
            }
            Ok(None) => break,
            Err(error) => {
                partial.clear();
                return Fed::Failed {
                    error,
                    first: offset == 0,
                };
            }
        }
    }
    keep_tail(partial, fresh, from_partial, offset);
    Fed::Waiting
}

/// Leaves in `partial` what follows the first `offset` bytes decoded.
fn keep_tail(partial: &mut Vec<u8>, fresh: &[u8], from_partial: bool, offset: usize) {
    if from_partial {
        partial.drain(..offset);
    } else {
        partial.extend_from_slice(&fresh[offset..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::encode_to_vec;

    fn ping(seq: u32) -> Vec<u8> {
        encode_to_vec(&Frame::Ping { seq, rtt_us: 0 }).expect("encodable")
    }

    #[test]
    fn frames_split_anywhere_come_out_whole_and_in_order() {
        let stream: Vec<u8> = (0..5).flat_map(ping).collect();
        for chunk in 1..stream.len() {
            let mut partial = Vec::new();
            let mut seen = Vec::new();
            for piece in stream.chunks(chunk) {
                let fed = feed(&mut partial, piece, 1024, |frame| {
                    seen.push(frame);
                    true
                });
                assert_eq!(fed, Fed::Waiting);
            }
            let expected: Vec<Frame> = (0..5).map(|seq| Frame::Ping { seq, rtt_us: 0 }).collect();
            assert_eq!(seen, expected, "chunks of {chunk}");
            assert!(partial.is_empty());
        }
    }

    #[test]
    fn an_incomplete_tail_is_kept_and_a_stop_ends_decoding() {
        let mut bytes = ping(1);
        bytes.extend_from_slice(&ping(2)[..3]);
        let mut partial = Vec::new();
        assert_eq!(feed(&mut partial, &bytes, 1024, |_| true), Fed::Waiting);
        assert_eq!(partial.len(), 3);
        let stream: Vec<u8> = (0..3).flat_map(ping).collect();
        let mut handed = 0;
        let fed = feed(&mut Vec::new(), &stream, 1024, |_| {
            handed += 1;
            false
        });
        assert_eq!((fed, handed), (Fed::Stopped, 1));
    }

    #[test]
    fn a_pause_keeps_what_follows_for_the_next_feed() {
        let stream: Vec<u8> = (0..3).flat_map(ping).collect();
        let mut partial = Vec::new();
        let mut seen = Vec::new();
        let fed = feed_until(&mut partial, &stream, 1024, |frame| {
            seen.push(frame);
            Next::Pause
        });
        assert_eq!(
            (fed, seen.len(), partial.len()),
            (Fed::Paused, 1, 2 * ping(0).len())
        );
        let fed = feed(&mut partial, &[], 1024, |frame| {
            seen.push(frame);
            true
        });
        assert_eq!((fed, seen.len(), partial.len()), (Fed::Waiting, 3, 0));
    }

    #[test]
    fn an_ended_feed_leaves_nothing_partial_whichever_way_the_bytes_came() {
        // Found by the frame_decoder fuzz target: after an error, the
        // partial frame held the bytes or not depending on how they were split.
        let bad = [0u8, 0, 0, 0];
        let mut whole = Vec::new();
        assert!(matches!(
            feed(&mut whole, &bad, 1024, |_| true),
            Fed::Failed { .. }
        ));
        let mut split = Vec::new();
        assert_eq!(feed(&mut split, &bad[..2], 1024, |_| true), Fed::Waiting);
        assert!(matches!(
            feed(&mut split, &bad[2..], 1024, |_| true),
            Fed::Failed { .. }
        ));
        assert_eq!((whole.len(), split.len()), (0, 0));
    }

    #[test]
    fn a_bad_frame_is_reported_with_where_it_starts() {
        let mut partial = Vec::new();
        let fed = feed(&mut partial, &[0x16, 0x03, 0x01, 0x02, 0x00], 1024, |_| {
            true
        });
        assert!(matches!(fed, Fed::Failed { first: true, .. }), "{fed:?}");
        let mut bytes = ping(1);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        let fed = feed(&mut Vec::new(), &bytes, 1024, |_| true);
        assert_eq!(
            fed,
            Fed::Failed {
                error: DecodeError::EmptyFrame,
                first: false
            }
        );
    }
}
