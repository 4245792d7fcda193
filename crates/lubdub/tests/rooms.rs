//! Rooms over real sockets and the admin API: a MSG to `#room` reaches its
//! members and no one else, a non-member is told `not_in_room`, membership
//! ends with the session, `GET /rooms` and `GET /rooms/{room}` list them
//! with the sequence number of their snapshot, and bad room requests get
//! their documented NOTICE while the session goes on.

mod common;

use common::{fast_config, RawConn, TestServer};
use lubdub::core::protocol::rooms::MAX_ROOMS_PER_SESSION;
use lubdub::core::protocol::{Frame, Message, ReasonCode};

/// A long interval: the session never goes silent during a test.
const CALM: u32 = 60_000;

fn join(room: &str) -> Frame {
    Frame::Join {
        room: room.to_owned(),
    }
}

fn msg(to: &str, body: &str) -> Frame {
    Frame::Msg(Message {
        from: String::new(),
        to: to.to_owned(),
        body: body.as_bytes().to_vec(),
    })
}

/// Fails on the code before rooms (JOIN was an unknown frame kind).
#[tokio::test]
async fn a_room_message_reaches_its_members_only_and_membership_ends_with_the_session() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    let (mut carol, _, _) = RawConn::join(server.addr, "carol", CALM, true).await;
    alice.send(&join("#lobby")).await;
    bob.send(&join("#lobby")).await;
    assert_eq!(alice.frames_until_pong(1).await, vec![]);
    assert_eq!(bob.frames_until_pong(1).await, vec![]);
    server.expect("bob", "room_joined").await;

    alice.send(&msg("#lobby", "hi room")).await;
    match bob.next_frame().await {
        Some(Frame::Msg(message)) => {
            assert_eq!(
                (
                    message.from.as_str(),
                    message.to.as_str(),
                    &message.body[..]
                ),
                ("alice", "#lobby", &b"hi room"[..])
            );
        }
        other => panic!("bob expected the room's MSG, got {other:?}"),
    }
    // Not to carol, who is not in it, nor back to alice.
    assert_eq!(carol.frames_until_pong(1).await, vec![]);
    assert_eq!(alice.frames_until_pong(2).await, vec![]);

    // carol is not in #lobby: told so, and the session goes on.
    carol.send(&msg("#lobby", "let me in")).await;
    match carol.frames_until_pong(2).await.as_slice() {
        [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::NotInRoom),
        other => panic!("expected one not_in_room NOTICE, got {other:?}"),
    }

    let (status, listing) = server.get("/rooms").await;
    assert_eq!(status, 200);
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("JSON");
    assert_eq!(
        listing["rooms"],
        serde_json::json!([{"room": "#lobby", "members": 2}])
    );
    assert!(listing["seq"].as_u64().expect("a seq") >= 5, "{listing}");

    // bob's connection goes: so does his membership.
    drop(bob);
    server.expect("bob", "dropped").await;
    let (status, room) = server.get("/rooms/lobby").await;
    assert_eq!(status, 200);
    let room: serde_json::Value = serde_json::from_str(&room).expect("JSON");
    assert_eq!(room["count"], 1);
    assert_eq!(room["members"][0]["name"], "alice");
}

/// Fails without the checks: a bad room was taken (or closed the session),
/// and a 33rd room was joined; and on the code before the machine counted
/// LEAVEs out, which refused a JOIN read together with the LEAVE that made
/// room for it.
#[tokio::test]
async fn bad_room_requests_get_their_notice_and_the_session_goes_on() {
    let mut config = fast_config();
    // Every JOIN of this test within the message rate.
    config.max_messages_per_sec = 1_000;
    let server = TestServer::start(config).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;
    let long = format!("#{}", "r".repeat(64));
    for (seq, room) in (1..).zip(["lobby", "#", "#a b", long.as_str()]) {
        alice.send(&join(room)).await;
        match alice.frames_until_pong(seq).await.as_slice() {
            [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::InvalidRoom, "{room}"),
            other => panic!("{room}: expected one invalid_room NOTICE, got {other:?}"),
        }
    }
    for index in 0..MAX_ROOMS_PER_SESSION {
        alice.send(&join(&format!("#r{index}"))).await;
    }
    alice.send(&join("#one-too-many")).await;
    match alice.frames_until_pong(10).await.as_slice() {
        [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::TooManyRooms),
        other => panic!("expected one too_many_rooms NOTICE, got {other:?}"),
    }
    alice
        .send(&Frame::Leave {
            room: "#nowhere".into(),
        })
        .await;
    match alice.frames_until_pong(11).await.as_slice() {
        [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::NotInRoom),
        other => panic!("expected one not_in_room NOTICE, got {other:?}"),
    }
    // A LEAVE read together with the JOIN it makes room for: both taken.
    alice.send(&Frame::Leave { room: "#r0".into() }).await;
    alice.send(&join("#fresh")).await;
    assert_eq!(alice.frames_until_pong(12).await, vec![]);
    // A LEAVE of a room it is not in frees nothing.
    alice
        .send(&Frame::Leave {
            room: "#nowhere".into(),
        })
        .await;
    alice.send(&join("#still-too-many")).await;
    match alice.frames_until_pong(13).await.as_slice() {
        [Frame::Notice(left), Frame::Notice(joined)] => assert_eq!(
            (left.code, joined.code),
            (ReasonCode::NotInRoom, ReasonCode::TooManyRooms)
        ),
        other => panic!("expected not_in_room and too_many_rooms, got {other:?}"),
    }
    let (_, listing) = server.get("/rooms").await;
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("JSON");
    assert_eq!(
        listing["rooms"].as_array().expect("a list").len(),
        MAX_ROOMS_PER_SESSION
    );
}
