//! One server, two event loops, over real sockets: a takeover of a name
//! held on the other loop, direct and broadcast messages between loops, a
//! loop blocked for twice the deadline that drops none of its healthy
//! sessions and delays nothing on the other loop, shutdown of sessions on
//! both loops, and the per-process limits counted across loops.
//!
//! The acceptor hands connections to the loops in turn, so consecutive
//! connections land on loops 0 and 1; each test checks where they landed
//! from the session ids (the loop is bits 24..32 of an id).

mod common;

use std::time::{Duration, Instant};

use common::{fast_config, RawConn, TestServer, PATIENCE};
use lubdub::core::protocol::{Frame, Message, ReasonCode};
use lubdub::server::{PresenceKind, ServerConfig};

fn two_loops() -> ServerConfig {
    ServerConfig {
        threads: Some(2),
        ..fast_config()
    }
}

fn loop_of(session_id: u64) -> u64 {
    (session_id >> 24) & 0xff
}

fn msg(to: &str, body: &str) -> Frame {
    Frame::Msg(Message {
        from: String::new(),
        to: to.to_owned(),
        body: body.as_bytes().to_vec(),
    })
}

/// The next MSG on `conn`, skipping PONGs.
async fn next_msg(conn: &mut RawConn) -> Message {
    loop {
        match conn.next_frame().await {
            Some(Frame::Msg(message)) => return message,
            Some(Frame::Pong { .. }) => {}
            other => panic!("expected a MSG, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_name_held_on_the_other_loop_is_taken_over_and_fenced() {
    let mut server = TestServer::start(two_loops()).await;
    let (mut old, old_welcome, _) = RawConn::join(server.addr, "alice", 0, true).await;
    let (mut new, new_welcome, _) = RawConn::join(server.addr, "alice", 0, true).await;
    assert_ne!(
        loop_of(old_welcome.session_id),
        loop_of(new_welcome.session_id),
        "the two connections should be on different loops"
    );
    assert!(new_welcome.epoch > old_welcome.epoch);
    old.expect_bye(ReasonCode::TakenOver).await;
    old.expect_closed().await;
    server.expect_taken_over(old_welcome.session_id).await;
    // The successor holds the name: listed once, with its own id, and it
    // still answers.
    new.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(new.next_frame().await, Some(Frame::Pong { seq: 1 }));
    let sessions = server.sessions().await;
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].session_id, new_welcome.session_id);
    assert_eq!(sessions[0].epoch, new_welcome.epoch);
    assert_eq!(
        sessions[0].loop_index as u64,
        loop_of(new_welcome.session_id)
    );
}

#[tokio::test]
async fn direct_and_broadcast_messages_reach_sessions_on_the_other_loop() {
    let server = TestServer::start(two_loops()).await;
    let (mut alice, alice_welcome, _) = RawConn::join(server.addr, "alice", 0, true).await;
    let (mut bob, bob_welcome, _) = RawConn::join(server.addr, "bob", 0, true).await;
    let (mut carol, carol_welcome, _) = RawConn::join(server.addr, "carol", 0, true).await;
    assert_ne!(
        loop_of(alice_welcome.session_id),
        loop_of(bob_welcome.session_id)
    );
    assert_eq!(
        loop_of(alice_welcome.session_id),
        loop_of(carol_welcome.session_id)
    );

    alice.send(&msg("bob", "across")).await;
    let got = next_msg(&mut bob).await;
    assert_eq!(
        (got.from.as_str(), got.body.as_slice()),
        ("alice", &b"across"[..])
    );

    bob.send(&msg("", "to everyone")).await;
    for (name, conn) in [("alice", &mut alice), ("carol", &mut carol)] {
        let got = next_msg(conn).await;
        assert_eq!(
            (got.from.as_str(), got.body.as_slice()),
            ("bob", &b"to everyone"[..]),
            "broadcast to {name}"
        );
    }
    // The sender gets no copy of its own broadcast.
    bob.send(&Frame::Ping { seq: 9, rtt_us: 0 }).await;
    assert_eq!(bob.next_frame().await, Some(Frame::Pong { seq: 9 }));

    // A name held nowhere is refused as before.
    alice.send(&msg("nobody", "hello?")).await;
    match alice.next_frame().await {
        Some(Frame::Notice(reason)) => assert_eq!(reason.code, ReasonCode::NoSuchSession),
        other => panic!("expected NOTICE no_such_session, got {other:?}"),
    }
}

/// Heartbeats `conn` every 40 ms until `until`, recording each round trip.
async fn heartbeat(mut conn: RawConn, until: Instant) -> (RawConn, Vec<Duration>) {
    let mut round_trips = Vec::new();
    let mut seq = 0;
    while Instant::now() < until {
        seq += 1;
        let sent = Instant::now();
        conn.send(&Frame::Ping { seq, rtt_us: 0 }).await;
        match conn.next_frame().await {
            Some(Frame::Pong { seq: answered }) if answered == seq => {
                round_trips.push(sent.elapsed())
            }
            other => panic!("expected PONG {seq}, got {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    (conn, round_trips)
}

/// A loop blocked for twice the deadline (a test hook) judges nobody for
/// the time it could not run: it reads what its sessions sent meanwhile
/// before any verdict, and judges by the instant of its turn, not by a
/// clock read after the block (a loop that judged with a fresh clock right
/// after the block dropped both sessions here). The other loop answers
/// PINGs on time throughout.
#[tokio::test]
async fn a_blocked_loop_drops_none_of_its_sessions_and_delays_nothing_elsewhere() {
    let mut server = TestServer::start(two_loops()).await;
    // 100 ms × 5: dead after 500 ms of silence; the loop is blocked 1 s.
    let (blocked_side, blocked_welcome, _) = RawConn::join(server.addr, "on-0", 0, true).await;
    let (other_side, other_welcome, _) = RawConn::join(server.addr, "on-1", 0, true).await;
    let blocked_loop = loop_of(blocked_welcome.session_id) as usize;
    assert_ne!(blocked_loop as u64, loop_of(other_welcome.session_id));
    let until = Instant::now() + Duration::from_millis(2_000);
    let blocked_task = tokio::spawn(heartbeat(blocked_side, until));
    let other_task = tokio::spawn(heartbeat(other_side, until));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let blocked_at = Instant::now();
    server
        .control()
        .block_loop(blocked_loop, Duration::from_millis(1_000))
        .expect("the loop takes the command");
    let (_blocked_side, blocked_rtts) = blocked_task.await.expect("heartbeats");
    let (_other_side, other_rtts) = other_task.await.expect("heartbeats");
    // The blocked loop's session waited for its PONGs, up to the block.
    let longest = blocked_rtts.iter().max().copied().unwrap_or_default();
    assert!(
        longest >= Duration::from_millis(500),
        "the loop was not blocked: longest round trip {longest:?}"
    );
    // The other loop answered throughout, within a scheduling slice.
    let other_longest = other_rtts.iter().max().copied().unwrap_or_default();
    assert!(
        other_longest < Duration::from_millis(150),
        "the other loop was delayed: longest round trip {other_longest:?} (block began {:?} in)",
        blocked_at.elapsed()
    );
    assert!(
        other_rtts.len() >= 25,
        "{} heartbeats on loop 1",
        other_rtts.len()
    );
    // Nobody was suspected or dropped.
    let seen = server.seen().to_vec();
    let judged: Vec<_> = seen
        .iter()
        .filter(|event| {
            matches!(
                event.kind,
                PresenceKind::Suspected { .. } | PresenceKind::Dropped { .. }
            )
        })
        .collect();
    assert!(judged.is_empty(), "healthy sessions judged: {judged:#?}");
    assert_eq!(server.sessions().await.len(), 2);
}

#[tokio::test]
async fn shutdown_says_bye_to_sessions_on_both_loops() {
    let mut server = TestServer::start(two_loops()).await;
    let (mut first, first_welcome, _) = RawConn::join(server.addr, "first", 0, true).await;
    let (mut second, second_welcome, _) = RawConn::join(server.addr, "second", 0, true).await;
    assert_ne!(
        loop_of(first_welcome.session_id),
        loop_of(second_welcome.session_id)
    );
    let stopping = tokio::spawn(async move {
        server.stop().await;
    });
    for conn in [&mut first, &mut second] {
        match conn.next_frame().await {
            Some(Frame::Bye(bye)) => {
                assert_eq!(bye.reason.code, ReasonCode::Shutdown);
                assert!(bye.retry_after_ms >= 1_000, "{bye:?}");
            }
            other => panic!("expected BYE shutdown, got {other:?}"),
        }
    }
    drop((first, second));
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("both loops stop")
        .expect("join");
}

#[tokio::test]
async fn the_connection_limits_count_over_every_loop() {
    let config = ServerConfig {
        max_connections_per_ip: 3,
        ..two_loops()
    };
    let server = TestServer::start(config).await;
    let mut held = Vec::new();
    for name in ["a", "b", "c"] {
        held.push(RawConn::join(server.addr, name, 0, true).await);
    }
    let loops: std::collections::HashSet<u64> = held
        .iter()
        .map(|(_, welcome, _)| loop_of(welcome.session_id))
        .collect();
    assert_eq!(loops.len(), 2, "three sessions over both loops");
    let mut refused = RawConn::connect(server.addr).await;
    match refused.next_frame().await {
        Some(Frame::Reject(reason)) => {
            assert_eq!(reason.code, ReasonCode::ServerFull);
            assert!(reason.text.contains("127.0.0.1"), "{}", reason.text);
        }
        other => panic!("expected REJECT server_full, got {other:?}"),
    }
    // One closes on either loop: room for one more.
    held.pop();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut conn = RawConn::connect(server.addr).await;
        conn.send(&common::hello("d", 0, true)).await;
        match conn.next_frame().await {
            Some(Frame::Welcome(_)) => break,
            Some(Frame::Reject(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("expected WELCOME once a connection closed, got {other:?}"),
        }
    }
}
