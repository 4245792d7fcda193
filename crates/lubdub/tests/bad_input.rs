//! Every bad input of PROTOCOL.md over a real socket: each gets its defined
//! answer (REJECT or BYE with a reason code), the connection is closed, and a
//! bystander session on the same server is unaffected.

mod common;

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use common::{fast_config, hello, RawConn, TestServer};
use lubdub::core::protocol::{codec, Frame, ReasonCode};
use lubdub::server::{DropReason, PresenceKind, ServerConfig};

/// A server with a bystander session that must survive whatever the test does.
async fn server_with_bystander(config: ServerConfig) -> (TestServer, RawConn) {
    let mut server = TestServer::start(config).await;
    let (bystander, _, _) = RawConn::join(server.addr, "bystander", 1000, true).await;
    server.expect("bystander", "joined").await;
    (server, bystander)
}

async fn assert_bystander_unaffected(server: &mut TestServer, bystander: &mut RawConn) {
    bystander.send(&Frame::Ping { seq: 99, rtt_us: 0 }).await;
    assert_eq!(bystander.next_frame().await, Some(Frame::Pong { seq: 99 }));
    let names: Vec<String> = server
        .sessions()
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["bystander"]);
    let seen = server.seen();
    assert!(
        !seen
            .iter()
            .any(|e| e.name == "bystander" && common::kind_label(&e.kind) != "joined"),
        "{seen:#?}"
    );
}

/// Sends `bytes` on a fresh connection and expects REJECT `code`, then close.
async fn expect_rejected(bytes: &[u8], code: ReasonCode) -> String {
    let (mut server, mut bystander) = server_with_bystander(fast_config()).await;
    let mut conn = RawConn::connect(server.addr).await;
    conn.send_bytes(bytes).await;
    let text = match conn.next_frame().await {
        Some(Frame::Reject(reason)) => {
            assert_eq!(reason.code, code, "{}", reason.text);
            reason.text
        }
        other => panic!("expected REJECT {code}, got {other:?}"),
    };
    conn.expect_closed().await;
    assert_bystander_unaffected(&mut server, &mut bystander).await;
    text
}

fn encoded(frame: &Frame) -> Vec<u8> {
    codec::encode_to_vec(frame).expect("encodable")
}

#[tokio::test]
async fn garbage_bytes_are_rejected_as_too_large() {
    let text = expect_rejected(
        b"GET / HTTP/1.1\r\nHost: lubdub\r\n\r\n",
        ReasonCode::FrameTooLarge,
    )
    .await;
    assert!(text.contains("exceeds the maximum"), "{text}");
}

#[tokio::test]
async fn a_length_over_the_maximum_is_rejected_before_the_payload_arrives() {
    // Only the 4-byte prefix is sent: the server must not wait for (or
    // allocate) the megabyte it announces.
    expect_rejected(&(1u32 << 20).to_be_bytes(), ReasonCode::FrameTooLarge).await;
}

#[tokio::test]
async fn an_empty_frame_is_malformed() {
    expect_rejected(&[0, 0, 0, 0], ReasonCode::MalformedFrame).await;
}

#[tokio::test]
async fn an_unknown_frame_kind_is_rejected() {
    expect_rejected(&[0, 0, 0, 1, 0x7f], ReasonCode::UnknownFrameKind).await;
}

#[tokio::test]
async fn an_unsupported_version_is_rejected() {
    let mut bytes = encoded(&hello("alice", 0, true));
    bytes[5] = 2;
    let text = expect_rejected(&bytes, ReasonCode::UnsupportedVersion).await;
    assert!(text.contains("version 2"), "{text}");
}

#[tokio::test]
async fn a_frame_before_hello_is_rejected() {
    expect_rejected(
        &encoded(&Frame::Ping { seq: 1, rtt_us: 0 }),
        ReasonCode::HelloRequired,
    )
    .await;
}

#[tokio::test]
async fn an_empty_name_is_rejected() {
    expect_rejected(&encoded(&hello("", 0, true)), ReasonCode::InvalidName).await;
}

#[tokio::test]
async fn an_over_long_name_is_rejected() {
    let text = expect_rejected(
        &encoded(&hello(&"n".repeat(65), 0, true)),
        ReasonCode::InvalidName,
    )
    .await;
    assert!(text.contains("64"), "{text}");
}

#[tokio::test]
async fn a_name_with_spaces_is_rejected() {
    expect_rejected(
        &encoded(&hello("bad name", 0, true)),
        ReasonCode::InvalidName,
    )
    .await;
}

#[tokio::test]
async fn a_non_utf8_name_is_malformed() {
    let mut bytes = encoded(&hello("ab", 0, true));
    // version, flags, interval (4), name length, then the 2 name bytes.
    let name_at = 4 + 1 + 1 + 1 + 4 + 1;
    bytes[name_at..name_at + 2].copy_from_slice(&[0xff, 0xfe]);
    let text = expect_rejected(&bytes, ReasonCode::MalformedFrame).await;
    assert!(text.contains("UTF-8"), "{text}");
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_at_the_handshake_timeout() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(200),
        ..fast_config()
    };
    let (mut server, mut bystander) = server_with_bystander(config).await;
    // Before the connect: the server starts the handshake's clock when its
    // acceptor takes the connection, which may come before this side's
    // connect returns (seen: closed 0.3 ms short of 200 ms after it).
    let opened = std::time::Instant::now();
    let mut conn = RawConn::connect(server.addr).await;
    // Half a HELLO: partial frames are not proof of anything.
    conn.send_bytes(&encoded(&hello("slowpoke", 0, true))[..6])
        .await;
    match conn.next_frame().await {
        Some(Frame::Reject(reason)) => assert_eq!(reason.code, ReasonCode::HandshakeTimeout),
        other => panic!("expected REJECT handshake_timeout, got {other:?}"),
    }
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "closed after {waited:?}"
    );
    conn.expect_closed().await;
    assert_bystander_unaffected(&mut server, &mut bystander).await;
}

#[tokio::test]
async fn a_truncated_frame_before_close_is_a_protocol_error() {
    let (mut server, mut bystander) = server_with_bystander(fast_config()).await;
    let (mut conn, _, _) = RawConn::join(server.addr, "cutoff", 1000, true).await;
    conn.send_bytes(&encoded(&Frame::Ping { seq: 1, rtt_us: 0 })[..7])
        .await;
    conn.stream.shutdown().await.ok();
    drop(conn);
    let dropped = server.expect("cutoff", "dropped").await;
    assert!(
        matches!(
            dropped.kind,
            PresenceKind::Dropped {
                reason: DropReason::ProtocolError(ReasonCode::MalformedFrame),
                ..
            }
        ),
        "{dropped:?}"
    );
    assert_bystander_unaffected(&mut server, &mut bystander).await;
}

/// Joins, sends `frame`, expects BYE `code`, close and a protocol-error drop.
async fn expect_bye_after_join(frame: Frame, code: ReasonCode) {
    let (mut server, mut bystander) = server_with_bystander(fast_config()).await;
    let (mut conn, _, _) = RawConn::join(server.addr, "offender", 1000, true).await;
    conn.send(&frame).await;
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, code, "{}", bye.reason.text),
        other => panic!("expected BYE {code}, got {other:?}"),
    }
    conn.expect_closed().await;
    let dropped = server.expect("offender", "dropped").await;
    assert!(
        matches!(
            dropped.kind,
            PresenceKind::Dropped { reason: DropReason::ProtocolError(c), .. } if c == code
        ),
        "{dropped:?}"
    );
    assert_bystander_unaffected(&mut server, &mut bystander).await;
}

#[tokio::test]
async fn a_second_hello_ends_the_session() {
    expect_bye_after_join(hello("offender", 0, true), ReasonCode::DuplicateHello).await;
}

#[tokio::test]
async fn a_server_only_frame_from_a_client_ends_the_session() {
    expect_bye_after_join(Frame::Pong { seq: 1 }, ReasonCode::UnexpectedFrame).await;
}

#[tokio::test]
async fn garbage_after_the_handshake_ends_the_session_with_bye() {
    let (mut server, mut bystander) = server_with_bystander(fast_config()).await;
    let (mut conn, _, _) = RawConn::join(server.addr, "offender", 1000, true).await;
    conn.send_bytes(&[0, 0, 0, 1, 0xee]).await;
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, ReasonCode::UnknownFrameKind),
        other => panic!("expected BYE unknown_frame_kind, got {other:?}"),
    }
    conn.expect_closed().await;
    server.expect("offender", "dropped").await;
    assert_bystander_unaffected(&mut server, &mut bystander).await;
}
