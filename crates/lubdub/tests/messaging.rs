//! Chat messages over real sockets: direct, broadcast, unknown recipients,
//! and senders who try to pose as someone else.

mod common;

use common::{fast_config, RawConn, TestServer};
use lubdub::core::protocol::{Frame, Message, ReasonCode};

fn msg(to: &str, body: &str) -> Frame {
    Frame::Msg(Message {
        from: String::new(),
        to: to.to_owned(),
        body: body.as_bytes().to_vec(),
    })
}

async fn expect_message(conn: &mut RawConn) -> Message {
    match conn.next_frame().await {
        Some(Frame::Msg(message)) => message,
        other => panic!("expected a MSG, got {other:?}"),
    }
}

#[tokio::test]
async fn a_broadcast_reaches_every_other_session_and_not_the_sender() {
    let server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 1000, true).await;
    let (mut carol, _, _) = RawConn::join(server.addr, "carol", 1000, true).await;
    alice.send(&msg("", "hello all")).await;
    for receiver in [&mut bob, &mut carol] {
        let message = expect_message(receiver).await;
        assert_eq!((message.from.as_str(), message.to.as_str()), ("alice", ""));
        assert_eq!(message.body, b"hello all");
    }
    // The sender gets no copy: the next thing it receives is its own PONG.
    alice.send(&Frame::Ping { seq: 3, rtt_us: 0 }).await;
    assert_eq!(alice.next_frame().await, Some(Frame::Pong { seq: 3 }));
}

#[tokio::test]
async fn a_direct_message_reaches_only_its_recipient() {
    let server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 1000, true).await;
    let (mut carol, _, _) = RawConn::join(server.addr, "carol", 1000, true).await;
    alice.send(&msg("bob", "just for bob")).await;
    alice.send(&msg("", "for everyone")).await;
    let first = expect_message(&mut bob).await;
    assert_eq!(
        (
            first.from.as_str(),
            first.to.as_str(),
            first.body.as_slice()
        ),
        ("alice", "bob", &b"just for bob"[..])
    );
    assert_eq!(expect_message(&mut bob).await.body, b"for everyone");
    // carol's first message is the broadcast: the direct one never reached her.
    assert_eq!(expect_message(&mut carol).await.body, b"for everyone");
}

#[tokio::test]
async fn a_message_to_a_name_that_is_not_online_gets_a_notice_and_the_session_goes_on() {
    let server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    alice.send(&msg("nobody", "hello?")).await;
    match alice.next_frame().await {
        Some(Frame::Notice(reason)) => {
            assert_eq!(reason.code, ReasonCode::NoSuchSession);
            assert!(reason.text.contains("nobody"), "{}", reason.text);
        }
        other => panic!("expected NOTICE no_such_session, got {other:?}"),
    }
    alice.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(alice.next_frame().await, Some(Frame::Pong { seq: 1 }));
}

#[tokio::test]
async fn nobody_can_send_as_someone_else() {
    let server = TestServer::start(fast_config()).await;
    let (mut mallory, _, _) = RawConn::join(server.addr, "mallory", 1000, true).await;
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 1000, true).await;
    mallory
        .send(&Frame::Msg(Message {
            from: "alice".into(),
            to: "bob".into(),
            body: b"trust me, I am alice".to_vec(),
        }))
        .await;
    let received = expect_message(&mut bob).await;
    assert_eq!(
        received.from, "mallory",
        "the server fills in the real sender"
    );
}

#[tokio::test]
async fn binary_bodies_are_relayed_unchanged() {
    let server = TestServer::start(fast_config()).await;
    let (mut sensor, _, _) = RawConn::join(server.addr, "sensor", 1000, true).await;
    let (mut collector, _, _) = RawConn::join(server.addr, "collector", 1000, true).await;
    let body: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
    sensor
        .send(&Frame::Msg(Message {
            from: String::new(),
            to: "collector".into(),
            body: body.clone(),
        }))
        .await;
    assert_eq!(expect_message(&mut collector).await.body, body);
}

#[tokio::test]
async fn a_message_too_large_to_relay_gets_a_notice_and_hurts_no_one() {
    use lubdub::client::{Client, ClientConfig, ClientEvent};
    use lubdub::core::protocol::{max_msg_body, DEFAULT_MAX_FRAME_LEN};

    let server = TestServer::start(fast_config()).await;
    // Longest names on both sides, so the largest relayed frame is exactly
    // the receiver's maximum.
    let sender_name = "s".repeat(64);
    let receiver_name = "r".repeat(64);
    let (mut sender, _, _) = RawConn::join(server.addr, &sender_name, 1000, true).await;
    let mut receiver = Client::connect(ClientConfig::new(
        server.addr.to_string(),
        receiver_name.clone(),
    ))
    .await
    .expect("connects");
    let largest = max_msg_body(DEFAULT_MAX_FRAME_LEN);

    let too_large = Frame::Msg(Message {
        from: String::new(),
        to: receiver_name.clone(),
        body: vec![b'x'; largest + 1],
    });
    sender.send(&too_large).await;
    match sender.next_frame().await {
        Some(Frame::Notice(reason)) => {
            assert_eq!(reason.code, ReasonCode::FrameTooLarge);
            assert!(
                reason.text.contains(&largest.to_string()),
                "{}",
                reason.text
            );
        }
        other => panic!("expected NOTICE frame_too_large, got {other:?}"),
    }

    sender
        .send(&msg(&receiver_name, &"y".repeat(largest)))
        .await;
    let received = loop {
        match tokio::time::timeout(common::PATIENCE, receiver.next_event())
            .await
            .expect("in time")
        {
            Some(ClientEvent::Message(message)) => break message,
            Some(ClientEvent::Status(status)) => {
                assert!(
                    matches!(status, lubdub::client::Status::Connected { .. }),
                    "receiver hurt: {status:?}"
                )
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(received.body.len(), largest);
    assert_eq!(received.from, sender_name);
}
