//! Fuzz target `frame_decoder`: arbitrary bytes and a maximum frame length
//! (512..=66,047) through `codec::decode`.
//!
//! Checks: no panic; `used <= len` and `used` is the prefix's length plus 4;
//! a decoded frame re-encodes to exactly the bytes it came from and
//! re-decodes to an equal frame; errors agree with `check` (an over-long or
//! zero prefix is refused from the 4 prefix bytes alone, other errors only
//! once the whole frame is buffered); and the whole input fed as one read
//! or split in two reads, the server's way, yields the same frames and the
//! same ending.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_core::protocol::codec::{self, LENGTH_PREFIX_LEN};
use lubdub_core::protocol::{DecodeError, Frame};
use lubdub_fuzz::inputs::DecoderInput;
use lubdub_fuzz::machine::{Fed, Inbox};

fuzz_target!(|input: DecoderInput<'_>| {
    let max = input.max_frame_len();
    let bytes = input.bytes;
    let decoded = codec::decode(bytes, max);
    let announced = bytes
        .get(..LENGTH_PREFIX_LEN)
        .map(|prefix| u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize);
    match &decoded {
        Ok(Some((frame, used))) => {
            let used = *used;
            assert!(used <= bytes.len(), "used {used} > {}", bytes.len());
            assert_eq!(Some(used - LENGTH_PREFIX_LEN), announced);
            assert!(used - LENGTH_PREFIX_LEN <= max);
            let encoded = codec::encode_to_vec(frame).expect("a decoded frame encodes");
            assert_eq!(encoded, &bytes[..used], "decoding is canonical");
            assert_eq!(
                codec::decode(&encoded, max),
                Ok(Some((frame.clone(), used))),
                "re-decodes"
            );
        }
        Ok(None) => {
            // Incomplete: fewer than 4 bytes, or a valid prefix whose frame
            // has not fully arrived.
            if let Some(len) = announced {
                assert!((1..=max).contains(&len), "prefix {len} not refused");
                assert!(bytes.len() < LENGTH_PREFIX_LEN + len);
            }
        }
        Err(DecodeError::EmptyFrame) if announced == Some(0) => {
            // Judged from the prefix alone; the 4 bytes suffice.
            assert_eq!(
                codec::decode(&bytes[..LENGTH_PREFIX_LEN], max),
                Err(DecodeError::EmptyFrame)
            );
        }
        Err(error @ DecodeError::FrameTooLarge { len, max: told }) => {
            assert_eq!(Some(*len), announced);
            assert_eq!(*told, max);
            assert!(*len > max);
            assert_eq!(
                codec::decode(&bytes[..LENGTH_PREFIX_LEN], max).as_ref(),
                Err(error),
                "refused before the payload arrives"
            );
        }
        Err(error) => {
            // A parse-phase error needs the whole frame.
            let len = announced.expect("a parse error needs a prefix");
            assert!((1..=max).contains(&len), "{error:?} with prefix {len}");
            let total = LENGTH_PREFIX_LEN + len;
            assert!(bytes.len() >= total, "{error:?} before the frame arrived");
            assert_eq!(
                codec::decode(&bytes[..total], max).as_ref(),
                Err(error),
                "the error depends on the frame's own bytes only"
            );
        }
    }

    // The stream as the server reads it: whole, then split in two reads.
    let whole = read_stream(max, &[bytes]);
    let split = input.split_at();
    let parts = read_stream(max, &[&bytes[..split], &bytes[split..]]);
    assert_eq!(whole, parts, "split at {split}");
    // The first frame of the stream is what a single decode saw.
    match decoded {
        Ok(Some((frame, _))) => assert_eq!(whole.0.first(), Some(&frame)),
        Ok(None) => assert!(whole.0.is_empty() && whole.1 == Fed::Waiting),
        Err(error) => assert!(whole.0.is_empty() && whole.1 == Fed::Failed(error)),
    }
});

/// Frames decoded from `reads` fed to one inbox, how the last read ended,
/// and the partial frame kept.
fn read_stream(max: usize, reads: &[&[u8]]) -> (Vec<Frame>, Fed, usize) {
    let mut inbox = Inbox::new(max);
    let mut frames = Vec::new();
    let mut fed = Fed::Waiting;
    for read in reads {
        fed = inbox.feed(read, |frame| {
            frames.push(frame);
            true
        });
        if fed != Fed::Waiting {
            break;
        }
    }
    (frames, fed, inbox.partial_len())
}
