//! The fuzz targets' input formats: raw bytes ⇄ structured input.
//!
//! Parsing uses `arbitrary::Unstructured`; every field is read with
//! `fill_buffer` as little-endian, so the layout is fixed and documented
//! here, and the seed generator can write inputs with the `encode`
//! functions (which round-trip: see the tests).

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use lubdub_core::protocol::handshake::IntervalPolicy;
use lubdub_core::protocol::DEFAULT_MAX_FRAME_LEN;
use lubdub_core::rate::Rate;
use lubdub_core::session::ConductLimits;

/// Smallest maximum frame length a server accepts (`ServerConfig::validate`).
pub const MIN_MAX_FRAME_LEN: usize = 512;

/// The `max_frame_extra` that gives the default maximum, 65,536 bytes (the
/// maximum the PROTOCOL.md vectors are specified for).
pub const DEFAULT_MAX_FRAME_EXTRA: u16 = (DEFAULT_MAX_FRAME_LEN - MIN_MAX_FRAME_LEN) as u16;

fn u8_le(u: &mut Unstructured<'_>) -> Result<u8> {
    let mut bytes = [0; 1];
    u.fill_buffer(&mut bytes)?;
    Ok(bytes[0])
}

fn u16_le(u: &mut Unstructured<'_>) -> Result<u16> {
    let mut bytes = [0; 2];
    u.fill_buffer(&mut bytes)?;
    Ok(u16::from_le_bytes(bytes))
}

fn u32_le(u: &mut Unstructured<'_>) -> Result<u32> {
    let mut bytes = [0; 4];
    u.fill_buffer(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

/// `frame_decoder`'s input. Layout: `max_frame_extra: u16`, `split: u16`,
/// then the bytes to decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderInput<'a> {
    /// The decoder's maximum is `MIN_MAX_FRAME_LEN + max_frame_extra`
    /// (512..=66,047, which covers the default 65,536).
    pub max_frame_extra: u16,
    /// Where the stream is split in two reads (modulo its length + 1).
    pub split: u16,
    /// The bytes a peer sent.
    pub bytes: &'a [u8],
}

impl DecoderInput<'_> {
    /// The decoder's maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        MIN_MAX_FRAME_LEN + usize::from(self.max_frame_extra)
    }

    /// The split point, within `0..=bytes.len()`.
    pub fn split_at(&self) -> usize {
        usize::from(self.split) % (self.bytes.len() + 1)
    }

    /// The raw input that parses back to `self`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.bytes.len());
        out.extend_from_slice(&self.max_frame_extra.to_le_bytes());
        out.extend_from_slice(&self.split.to_le_bytes());
        out.extend_from_slice(self.bytes);
        out
    }
}

impl<'a> Arbitrary<'a> for DecoderInput<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let max_frame_extra = u16_le(u)?;
        let split = u16_le(u)?;
        let bytes = u.bytes(u.len())?;
        Ok(Self {
            max_frame_extra,
            split,
            bytes,
        })
    }
}

/// The server configuration a `session_machine` run uses. Layout, 19 bytes:
/// `max_frame_extra: u16`, `min_interval_ms: u32`, `default_interval_ms:
/// u16`, `max_interval_ms: u32`, `pings_per_interval: u16`, `ping_burst:
/// u8`, `ping_strikes: u8`, `messages_per_second: u16`, `message_burst: u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Maximum frame length is `MIN_MAX_FRAME_LEN + max_frame_extra`.
    pub max_frame_extra: u16,
    /// Shortest interval granted, ms (raised to 1: the server refuses 0).
    /// Whole milliseconds, because the server's session keeps its interval
    /// in whole milliseconds (`Session::interval_ms`) and hands that to
    /// `Conduct`; a sub-millisecond grant would reach it as zero.
    pub min_interval_ms: u32,
    /// Interval granted to a HELLO asking for 0, ms (raised to the minimum).
    pub default_interval_ms: u16,
    /// Longest interval granted, ms (raised to the default).
    pub max_interval_ms: u32,
    /// [`ConductLimits::pings_per_interval`].
    pub pings_per_interval: u16,
    /// [`ConductLimits::ping_burst`].
    pub ping_burst: u8,
    /// [`ConductLimits::ping_strikes`].
    pub ping_strikes: u8,
    /// Messages a second (`Rate::per_second`); 0 is unlimited.
    pub messages_per_second: u16,
    /// Message burst (`Rate::per_second`).
    pub message_burst: u8,
}

impl SessionConfig {
    /// Bytes of the encoded configuration.
    pub const LEN: usize = 19;

    /// The server's maximum frame length.
    pub fn max_frame_len(&self) -> usize {
        MIN_MAX_FRAME_LEN + usize::from(self.max_frame_extra)
    }

    /// The interval policy, made valid the way `ServerConfig::validate`
    /// requires: `0 < min <= default <= max`.
    pub fn policy(&self) -> IntervalPolicy {
        let min = Duration::from_millis(u64::from(self.min_interval_ms.max(1)));
        let default = Duration::from_millis(u64::from(self.default_interval_ms)).max(min);
        let max = Duration::from_millis(u64::from(self.max_interval_ms)).max(default);
        IntervalPolicy { default, min, max }
    }

    /// The session limits.
    pub fn limits(&self) -> ConductLimits {
        ConductLimits {
            pings_per_interval: u32::from(self.pings_per_interval),
            ping_burst: u32::from(self.ping_burst),
            ping_strikes: self.ping_strikes,
            messages: Rate::per_second(
                u32::from(self.messages_per_second),
                u32::from(self.message_burst),
            ),
            // Not fuzzed yet (the input format predates it): refused MSGs
            // never end the session here; unit tests in `session` cover
            // the strikes.
            refusal_strikes: 0,
        }
    }

    fn parse(u: &mut Unstructured<'_>) -> Result<Self> {
        Ok(Self {
            max_frame_extra: u16_le(u)?,
            min_interval_ms: u32_le(u)?,
            default_interval_ms: u16_le(u)?,
            max_interval_ms: u32_le(u)?,
            pings_per_interval: u16_le(u)?,
            ping_burst: u8_le(u)?,
            ping_strikes: u8_le(u)?,
            messages_per_second: u16_le(u)?,
            message_burst: u8_le(u)?,
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.max_frame_extra.to_le_bytes());
        out.extend_from_slice(&self.min_interval_ms.to_le_bytes());
        out.extend_from_slice(&self.default_interval_ms.to_le_bytes());
        out.extend_from_slice(&self.max_interval_ms.to_le_bytes());
        out.extend_from_slice(&self.pings_per_interval.to_le_bytes());
        out.push(self.ping_burst);
        out.push(self.ping_strikes);
        out.extend_from_slice(&self.messages_per_second.to_le_bytes());
        out.push(self.message_burst);
    }
}

impl Default for SessionConfig {
    /// The server's defaults (`ServerConfig::default`, `ConductLimits::default`).
    fn default() -> Self {
        Self {
            max_frame_extra: DEFAULT_MAX_FRAME_EXTRA,
            min_interval_ms: 100,
            default_interval_ms: 3_000,
            max_interval_ms: 600_000,
            pings_per_interval: 4,
            ping_burst: 5,
            ping_strikes: 3,
            messages_per_second: 100,
            message_burst: 100,
        }
    }
}

/// One read: time passes, then a chunk of bytes arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<'a> {
    /// Microseconds since the previous read.
    pub advance_us: u32,
    /// The bytes of this read (up to 65,535).
    pub chunk: &'a [u8],
}

/// `session_machine`'s input: a [`SessionConfig`], then steps, each
/// `advance_us: u32`, `len: u16`, then `len` bytes (fewer if the input ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInput<'a> {
    /// The server's configuration.
    pub config: SessionConfig,
    /// The reads, in order.
    pub steps: Vec<Step<'a>>,
}

impl SessionInput<'_> {
    /// The raw input that parses back to `self`.
    ///
    /// # Panics
    /// If a chunk is longer than 65,535 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.config.encode(&mut out);
        for step in &self.steps {
            out.extend_from_slice(&step.advance_us.to_le_bytes());
            let len = u16::try_from(step.chunk.len()).expect("a chunk fits a u16 length");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(step.chunk);
        }
        out
    }
}

impl<'a> Arbitrary<'a> for SessionInput<'a> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let config = SessionConfig::parse(u)?;
        let mut steps = Vec::new();
        while !u.is_empty() {
            let advance_us = u32_le(u)?;
            let len = usize::from(u16_le(u)?).min(u.len());
            steps.push(Step {
                advance_us,
                chunk: u.bytes(len)?,
            });
        }
        Ok(Self { config, steps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_inputs_round_trip() {
        let input = DecoderInput {
            max_frame_extra: DEFAULT_MAX_FRAME_EXTRA,
            split: 7,
            bytes: b"\x00\x00\x00\x05\x05\x00\x00\x00\x2a",
        };
        let raw = input.encode();
        let parsed = DecoderInput::arbitrary(&mut Unstructured::new(&raw)).expect("parses");
        assert_eq!(parsed, input);
        assert_eq!(parsed.max_frame_len(), 65_536);
    }

    #[test]
    fn session_inputs_round_trip() {
        let input = SessionInput {
            config: SessionConfig::default(),
            steps: vec![
                Step {
                    advance_us: 1,
                    chunk: b"abc",
                },
                Step {
                    advance_us: 70_000,
                    chunk: b"",
                },
                Step {
                    advance_us: u32::MAX,
                    chunk: b"\x00\x01",
                },
            ],
        };
        let raw = input.encode();
        assert_eq!(raw.len(), SessionConfig::LEN + 3 * 6 + 5);
        let parsed = SessionInput::arbitrary(&mut Unstructured::new(&raw)).expect("parses");
        assert_eq!(parsed, input);
        assert_eq!(parsed.config.max_frame_len(), 65_536);
    }
}
