//! The two protocols the load generator speaks, as bytes in and out: lubdub
//! (HELLO/WELCOME, PING/PONG) and MQTT 3.1.1 (CONNECT/CONNACK,
//! PINGREQ/PINGRESP), so that one generator drives lubdub and Mosquitto
//! alike. Sans-IO: callers pass bytes and get replies.
//!
//! The MQTT side is hand-written rather than taken from an MQTT client
//! crate: it needs four fixed packets, and a client crate brings its own
//! event loop, buffering and per-connection tasks, which would make the
//! generator cost differ between the two servers being compared.

use std::time::Duration;

use lubdub_core::client::interval_for_ping_period;
use lubdub_core::protocol::frame::flags;
use lubdub_core::protocol::{codec, Frame, Hello, PROTOCOL_VERSION};
use serde::{Deserialize, Serialize};

/// Largest lubdub frame expected from the server (WELCOME, PONG, BYE, and
/// relayed messages, which the generator never asks for).
const MAX_LUBDUB_FRAME: usize = codec::DEFAULT_MAX_FRAME_LEN;
/// MQTT control packet types (high nibble of the first byte).
const MQTT_CONNACK: u8 = 2;
const MQTT_PINGRESP: u8 = 13;
const MQTT_PINGREQ: [u8; 2] = [0xC0, 0x00];
/// Largest MQTT packet accepted from the server: CONNACK and PINGRESP have
/// two bytes; anything bigger means the generator talks to the wrong thing.
const MAX_MQTT_REMAINING: usize = 1024;

/// Which protocol a run speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// lubdub's own protocol; every PING asks for a PONG unless one-way.
    Lubdub,
    /// MQTT 3.1.1: CONNECT with a keep-alive, then PINGREQ, answered by PINGRESP.
    Mqtt,
}

/// What the server said, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The session is open (WELCOME; CONNACK with return code 0).
    Accepted {
        /// The heartbeat interval the server granted (MQTT: the keep-alive sent).
        granted_interval: Duration,
    },
    /// The server refused the session (REJECT; CONNACK with a non-zero code).
    Refused(String),
    /// The answer to a heartbeat (PONG; PINGRESP).
    HeartbeatAck,
    /// The server ended the session (lubdub BYE) with this reason.
    Ended(String),
    /// Anything else; counted, otherwise ignored.
    Other,
}

/// Bytes the server sent that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ReplyError(String);

impl Dialect {
    /// The bytes that open a session named `name` heartbeating every `period`.
    ///
    /// Both servers get the same heartbeat rate, each with the slack its
    /// protocol expects: lubdub is asked for the interval at whose 80 % a
    /// lubdub client pings ([`interval_for_ping_period`]; pinging at exactly
    /// the interval would make every session flap to suspect and back), MQTT
    /// for a keep-alive of `period` rounded up to whole seconds (the broker
    /// allows 1.5 × keep-alive).
    ///
    /// `acks` asks lubdub for a PONG to every PING; without it the session
    /// is one-way (the server answers nothing). MQTT always answers.
    pub fn open_bytes(self, name: &str, period: Duration, acks: bool) -> Vec<u8> {
        match self {
            Dialect::Lubdub => {
                let interval = interval_for_ping_period(period);
                let hello = Frame::Hello(Hello {
                    version: PROTOCOL_VERSION,
                    flags: if acks { flags::ACKS_WANTED } else { 0 },
                    requested_interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
                    name: name.to_owned(),
                    credential: Vec::new(),
                    status: None,
                });
                // Names come from the generator itself and are short ASCII.
                codec::encode_to_vec(&hello).unwrap_or_default()
            }
            Dialect::Mqtt => mqtt_connect(name, mqtt_keep_alive_secs(period)),
        }
    }

    /// The bytes of one heartbeat. `seq` numbers lubdub PINGs; MQTT has none.
    pub fn heartbeat_bytes(self, seq: u32) -> HeartbeatBytes {
        match self {
            Dialect::Lubdub => HeartbeatBytes::Lubdub(codec::ping_bytes(seq, 0)),
            Dialect::Mqtt => HeartbeatBytes::Mqtt(MQTT_PINGREQ),
        }
    }

    /// Decodes the first reply in `buf`: `None` until it is complete, else
    /// the reply and the bytes it used.
    ///
    /// # Errors
    /// Bytes that are not a valid packet of this dialect.
    pub fn decode(self, buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
        match self {
            Dialect::Lubdub => decode_lubdub(buf),
            Dialect::Mqtt => decode_mqtt(buf),
        }
    }
}

/// One heartbeat's bytes, on the stack.
#[derive(Debug, Clone, Copy)]
pub enum HeartbeatBytes {
    /// A lubdub PING.
    Lubdub([u8; 13]),
    /// An MQTT PINGREQ.
    Mqtt([u8; 2]),
}

impl AsRef<[u8]> for HeartbeatBytes {
    fn as_ref(&self) -> &[u8] {
        match self {
            HeartbeatBytes::Lubdub(bytes) => bytes,
            HeartbeatBytes::Mqtt(bytes) => bytes,
        }
    }
}

/// MQTT keep-alive for a heartbeat period: whole seconds, rounded up, at
/// least one (zero would switch keep-alive off).
pub fn mqtt_keep_alive_secs(interval: Duration) -> u16 {
    let secs = interval.as_millis().div_ceil(1000).max(1);
    u16::try_from(secs).unwrap_or(u16::MAX)
}

fn decode_lubdub(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let decoded = codec::decode(buf, MAX_LUBDUB_FRAME)
        .map_err(|error| ReplyError(format!("invalid lubdub frame from the server: {error}")))?;
    Ok(decoded.map(|(frame, used)| {
        let reply = match frame {
            Frame::Welcome(welcome) => Reply::Accepted {
                granted_interval: Duration::from_millis(u64::from(welcome.granted_interval_ms)),
            },
            Frame::Reject(reason) => Reply::Refused(format!("{}: {}", reason.code, reason.text)),
            Frame::Pong { .. } => Reply::HeartbeatAck,
            Frame::Bye(bye) => {
                Reply::Ended(format!("BYE {}: {}", bye.reason.code, bye.reason.text))
            }
            _ => Reply::Other,
        };
        (reply, used)
    }))
}

/// An MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, the
/// keep-alive, and `client_id` as the only payload field (MQTT 3.1.1 §3.1).
fn mqtt_connect(client_id: &str, keep_alive_secs: u16) -> Vec<u8> {
    const CLEAN_SESSION: u8 = 0x02;
    let id = client_id.as_bytes();
    let id_len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let id = &id[..usize::from(id_len)];
    let mut variable = Vec::with_capacity(12 + id.len());
    variable.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, CLEAN_SESSION]);
    variable.extend_from_slice(&keep_alive_secs.to_be_bytes());
    variable.extend_from_slice(&id_len.to_be_bytes());
    variable.extend_from_slice(id);
    let mut packet = vec![0x10];
    put_remaining_length(&mut packet, variable.len());
    packet.extend_from_slice(&variable);
    packet
}

/// MQTT's variable-length "remaining length": 7 bits per byte, low first.
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return;
        }
    }
}

fn decode_mqtt(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut remaining = 0usize;
    let mut header_len = 1;
    loop {
        let Some(&byte) = buf.get(header_len) else {
            return Ok(None);
        };
        remaining |= usize::from(byte & 0x7f) << (7 * (header_len - 1));
        header_len += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header_len > 4 {
            return Err(ReplyError(
                "MQTT remaining length longer than 4 bytes".to_owned(),
            ));
        }
    }
    if remaining > MAX_MQTT_REMAINING {
        return Err(ReplyError(format!(
            "MQTT packet of {remaining} bytes from the server; only CONNACK and PINGRESP are expected"
        )));
    }
    let total = header_len + remaining;
    if buf.len() < total {
        return Ok(None);
    }
    let body = &buf[header_len..total];
    let reply = match first >> 4 {
        MQTT_CONNACK => match body {
            [_, 0] => Reply::Accepted {
                granted_interval: Duration::ZERO,
            },
            [_, code] => Reply::Refused(format!("CONNACK return code {code}")),
            _ => return Err(ReplyError(format!("CONNACK of {} bytes", body.len()))),
        },
        MQTT_PINGRESP => Reply::HeartbeatAck,
        _ => Reply::Other,
    };
    Ok(Some((reply, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_connect_matches_the_3_1_1_layout() {
        let packet = mqtt_connect("dev-1", 3);
        assert_eq!(
            packet,
            [
                0x10, 17, // CONNECT, remaining length
                0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, // protocol, level, clean session
                0, 3, // keep-alive 3 s
                0, 5, b'd', b'e', b'v', b'-', b'1',
            ]
        );
    }

    #[test]
    fn remaining_length_uses_continuation_bits() {
        let mut out = Vec::new();
        put_remaining_length(&mut out, 321);
        assert_eq!(out, [0xC1, 0x02]);
        out.clear();
        put_remaining_length(&mut out, 127);
        assert_eq!(out, [0x7f]);
    }

    #[test]
    fn mqtt_replies_decode_and_partial_ones_wait() {
        let mqtt = Dialect::Mqtt;
        assert_eq!(mqtt.decode(&[0x20, 2, 0]), Ok(None));
        assert_eq!(
            mqtt.decode(&[0x20, 2, 0, 0, 0xD0]),
            Ok(Some((
                Reply::Accepted {
                    granted_interval: Duration::ZERO
                },
                4
            )))
        );
        assert_eq!(
            mqtt.decode(&[0x20, 2, 0, 5]),
            Ok(Some((Reply::Refused("CONNACK return code 5".into()), 4)))
        );
        assert_eq!(mqtt.decode(&[0xD0, 0]), Ok(Some((Reply::HeartbeatAck, 2))));
        assert!(mqtt.decode(&[0x30, 0xff, 0xff, 0x7f]).is_err());
    }

    #[test]
    fn lubdub_heartbeats_ask_for_acks_and_decode_pongs() {
        let lubdub = Dialect::Lubdub;
        let hello = lubdub.open_bytes("a", Duration::from_millis(200), true);
        let Some((Frame::Hello(hello), _)) = codec::decode(&hello, 1024).expect("valid") else {
            panic!("not a HELLO");
        };
        assert_eq!(hello.flags, flags::ACKS_WANTED);
        assert_eq!(hello.requested_interval_ms, 250);
        let pong = codec::pong_bytes(9);
        assert_eq!(lubdub.decode(&pong), Ok(Some((Reply::HeartbeatAck, 9))));
        assert_eq!(lubdub.decode(&pong[..4]), Ok(None));
    }

    #[test]
    fn keep_alive_rounds_up_to_whole_seconds() {
        assert_eq!(mqtt_keep_alive_secs(Duration::from_millis(100)), 1);
        assert_eq!(mqtt_keep_alive_secs(Duration::from_secs(3)), 3);
        assert_eq!(mqtt_keep_alive_secs(Duration::from_millis(2500)), 3);
    }
}
