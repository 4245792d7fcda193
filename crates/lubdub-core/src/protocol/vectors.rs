//! Checks the codec against every test vector in `docs/PROTOCOL.md`.

use super::codec::{decode, encode_to_vec, DecodeError};
use super::frame::{flags, FrameKind, Message, PROTOCOL_VERSION};
use super::{Bye, Frame, Hello, Reason, ReasonCode, Welcome};

const PROTOCOL_MD: &str = include_str!("../../../../docs/PROTOCOL.md");
const MAX: usize = 65_536;

/// `(name, bytes)` for every vector between the markers of PROTOCOL.md.
pub(crate) fn vectors() -> Vec<(String, Vec<u8>)> {
    super::test_vectors::parse(PROTOCOL_MD)
}

fn expected_frame(name: &str) -> Frame {
    let reason = |code, text: &str| Reason::new(code, text);
    match name {
        "hello_alice" => Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: flags::ACKS_WANTED,
            requested_interval_ms: 3000,
            name: "alice".into(),
            credential: vec![],
            status: None,
        }),
        "hello_one_way_with_credential" => Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: 0,
            requested_interval_ms: 100,
            name: "bob".into(),
            credential: b"s3cret".to_vec(),
            status: None,
        }),
        "welcome" => Frame::Welcome(Welcome {
            session_id: 0x1_0000_0002,
            epoch: 7,
            granted_interval_ms: 3000,
            max_missed: 5,
        }),
        "reject_invalid_name" => Frame::Reject(reason(
            ReasonCode::InvalidName,
            "invalid name: name is empty",
        )),
        "ping_first" => Frame::Ping { seq: 1, rtt_us: 0 },
        "ping_with_rtt" => Frame::Ping {
            seq: 42,
            rtt_us: 1500,
        },
        "pong" => Frame::Pong { seq: 42 },
        "msg_direct_from_client" => Frame::Msg(Message {
            from: String::new(),
            to: "bob".into(),
            body: b"hi".to_vec(),
        }),
        "msg_broadcast_from_server" => Frame::Msg(Message {
            from: "alice".into(),
            to: String::new(),
            body: b"hello all".to_vec(),
        }),
        "bye_quit" => Frame::Bye(Bye {
            reason: reason(ReasonCode::Normal, "quit"),
            retry_after_ms: 0,
        }),
        "bye_shutdown_retry" => Frame::Bye(Bye {
            reason: reason(ReasonCode::Shutdown, "server shutting down"),
            retry_after_ms: 1000,
        }),
        "hello_with_status" => Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: flags::ACKS_WANTED | flags::HAS_STATUS,
            requested_interval_ms: 3000,
            name: "alice".into(),
            credential: vec![],
            status: Some("away".into()),
        }),
        "status_away" => Frame::Status {
            text: "away".into(),
        },
        "status_clear" => Frame::Status {
            text: String::new(),
        },
        "will_to_alice" => Frame::Will(super::Will {
            delay_ms: 5_000,
            to: "alice".into(),
            body: b"bob is gone".to_vec(),
        }),
        "join_lobby" => Frame::Join {
            room: "#lobby".into(),
        },
        "leave_lobby" => Frame::Leave {
            room: "#lobby".into(),
        },
        "watch_bob" => Frame::Watch(super::rooms::Watch {
            mode: super::rooms::WatchMode::Full as u8,
            target: "bob".into(),
        }),
        "watch_lobby_count" => Frame::Watch(super::rooms::Watch {
            mode: super::rooms::WatchMode::Count as u8,
            target: "#lobby".into(),
        }),
        "presence_snapshot_lobby" => {
            let mut update =
                super::rooms::PresenceUpdate::new(41, super::rooms::UpdateKind::Snapshot, "#lobby");
            update.count = 1;
            Frame::Presence(update)
        }
        "presence_member_bob_suspect" => {
            let mut update =
                super::rooms::PresenceUpdate::new(41, super::rooms::UpdateKind::Member, "#lobby");
            update.suspect = true;
            update.session_id = 7;
            update.name = "bob".into();
            update.text = "away".into();
            Frame::Presence(update)
        }
        "presence_bob_offline_timeout" => {
            let mut update =
                super::rooms::PresenceUpdate::new(42, super::rooms::UpdateKind::Offline, "bob");
            update.session_id = 7;
            update.name = "bob".into();
            update.text = "timeout".into();
            Frame::Presence(update)
        }
        "notice_no_such_session" => {
            Frame::Notice(reason(ReasonCode::NoSuchSession, "no session named carol"))
        }
        other => panic!("PROTOCOL.md has vector {other} that this test does not know"),
    }
}

fn expected_error(name: &str) -> DecodeError {
    match name {
        "err_frame_too_large" => DecodeError::FrameTooLarge {
            len: 65_537,
            max: MAX,
        },
        "err_http_garbage" => DecodeError::FrameTooLarge {
            len: 0x4745_5420,
            max: MAX,
        },
        "err_empty_frame" => DecodeError::EmptyFrame,
        "err_unknown_kind" => DecodeError::UnknownKind { kind: 0x7f },
        "err_unsupported_version" => DecodeError::UnsupportedVersion { version: 2 },
        "err_unknown_flags" => DecodeError::UnknownFlags { flags: 0x81 },
        "err_truncated_ping" => DecodeError::Truncated {
            kind: FrameKind::Ping,
            field: "sequence",
        },
        "err_trailing_bytes_pong" => DecodeError::TrailingBytes {
            kind: FrameKind::Pong,
            extra: 1,
        },
        "err_name_not_utf8" => DecodeError::InvalidUtf8 { field: "name" },
        "err_presence_unknown_flags" => DecodeError::UnknownPresenceFlags { flags: 0x02 },
        "err_truncated_watch" => DecodeError::Truncated {
            kind: FrameKind::Watch,
            field: "target",
        },
        other => panic!("PROTOCOL.md has vector {other} that this test does not know"),
    }
}

#[test]
fn every_vector_decodes_as_documented() {
    let vectors = vectors();
    assert!(vectors.len() >= 20, "found only {} vectors", vectors.len());
    for (name, bytes) in &vectors {
        let decoded = decode(bytes, MAX);
        if name.starts_with("err_") {
            assert_eq!(decoded, Err(expected_error(name)), "vector {name}");
        } else if name.starts_with("incomplete_") {
            assert_eq!(decoded, Ok(None), "vector {name}");
        } else {
            let expected = expected_frame(name);
            assert_eq!(
                decoded,
                Ok(Some((expected.clone(), bytes.len()))),
                "vector {name}"
            );
            assert_eq!(
                encode_to_vec(&expected).as_deref(),
                Ok(bytes.as_slice()),
                "vector {name} encodes back"
            );
        }
    }
}

#[test]
fn the_stack_built_heartbeats_match_the_general_encoder() {
    let vectors = vectors();
    let bytes_of = |wanted: &str| {
        vectors
            .iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, b)| b.clone())
    };
    assert_eq!(
        Some(super::codec::pong_bytes(42).to_vec()),
        bytes_of("pong")
    );
    assert_eq!(
        Some(super::codec::ping_bytes(42, 1500).to_vec()),
        bytes_of("ping_with_rtt")
    );
}

#[test]
fn every_error_maps_to_its_documented_reason_code() {
    assert_eq!(
        expected_error("err_frame_too_large").reason_code(),
        ReasonCode::FrameTooLarge
    );
    assert_eq!(
        expected_error("err_unknown_kind").reason_code(),
        ReasonCode::UnknownFrameKind
    );
    assert_eq!(
        expected_error("err_unsupported_version").reason_code(),
        ReasonCode::UnsupportedVersion
    );
    for malformed in [
        "err_empty_frame",
        "err_unknown_flags",
        "err_truncated_ping",
        "err_trailing_bytes_pong",
        "err_name_not_utf8",
    ] {
        assert_eq!(
            expected_error(malformed).reason_code(),
            ReasonCode::MalformedFrame,
            "{malformed}"
        );
    }
}
