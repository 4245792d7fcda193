//! Presence over real sockets: joining, listing, suspicion and drop at the
//! deadline, heartbeats that refresh only their own connection, takeover,
//! one-way mode, and shutdown.

mod common;

use std::time::Duration;

use common::{fast_config, RawConn, TestServer, TOLERANCE};
use lubdub::core::protocol::{Frame, Message, ReasonCode};
use lubdub::server::{DropReason, PresenceKind, SessionState};

#[tokio::test]
async fn joined_sessions_are_listed_with_their_details() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, welcome, _) = RawConn::join(server.addr, "alice", 200, true).await;
    assert_eq!(welcome.granted_interval_ms, 200);
    assert_eq!(welcome.max_missed, 5);
    let (_bob, bob_welcome, _) = RawConn::join(server.addr, "bob", 0, false).await;
    assert_eq!(
        bob_welcome.granted_interval_ms, 100,
        "0 asks for the server's default"
    );
    assert!(bob_welcome.epoch > welcome.epoch);
    server.expect("alice", "joined").await;
    server.expect("bob", "joined").await;

    alice
        .send(&Frame::Ping {
            seq: 1,
            rtt_us: 1500,
        })
        .await;
    assert_eq!(alice.next_frame().await, Some(Frame::Pong { seq: 1 }));

    let sessions = server.sessions().await;
    let names: Vec<&str> = sessions.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);
    let alice_info = &sessions[0];
    assert_eq!(alice_info.state, SessionState::Alive);
    assert_eq!(alice_info.missed, 0);
    assert_eq!(
        alice_info.addr,
        alice.stream.local_addr().expect("local address")
    );
    assert_eq!(alice_info.epoch, welcome.epoch);
    assert_eq!(alice_info.session_id, welcome.session_id);
    assert_eq!(alice_info.rtt_ms, Some(1.5));
    assert!(
        alice_info.last_seen_ms < 200,
        "pinged just now: {}",
        alice_info.last_seen_ms
    );
    assert!(
        alice_info.connected_at.ends_with('Z'),
        "RFC 3339 UTC: {}",
        alice_info.connected_at
    );
    assert!(sessions[1].one_way);
    assert_eq!(sessions[1].rtt_ms, None);

    assert_eq!(server.get("/healthz").await.0, 200);
}

#[tokio::test]
async fn a_silent_session_is_suspect_after_one_interval_and_dropped_at_the_deadline() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut conn, welcome, hello_sent) = RawConn::join(server.addr, "quiet", 100, true).await;
    let interval = Duration::from_millis(u64::from(welcome.granted_interval_ms));
    let deadline = interval * u32::from(welcome.max_missed);

    let suspect = server.expect("quiet", "suspect").await;
    assert_eq!(
        suspect.kind,
        PresenceKind::Suspected {
            missed: 1,
            first: true
        }
    );
    let after = suspect.at - hello_sent;
    assert!(
        after >= interval && after <= interval + TOLERANCE,
        "suspect after {after:?}"
    );

    let listed = server.sessions().await;
    assert_eq!(listed[0].state, SessionState::Suspect);
    assert!(listed[0].missed >= 1);

    // The later silent intervals are logged, not published: the next
    // event of the name is its drop.
    let dropped = server.expect("quiet", "dropped").await;
    let between: Vec<_> = server
        .seen()
        .iter()
        .filter(|event| event.name == "quiet")
        .map(|event| event.kind)
        .collect();
    assert_eq!(between.len(), 3, "joined, suspect, dropped: {between:?}");
    let after = dropped.at - hello_sent;
    assert!(
        after >= deadline && after <= deadline + TOLERANCE,
        "dropped after {after:?}, deadline {deadline:?}"
    );
    let PresenceKind::Dropped { reason, silent_for } = dropped.kind else {
        unreachable!("expect() matched a drop");
    };
    assert_eq!(reason, DropReason::Timeout);
    assert!(silent_for >= deadline);

    // The peer, if it is only hung, learns why when it wakes up.
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, ReasonCode::Timeout),
        other => panic!("expected BYE timeout, got {other:?}"),
    }
    conn.expect_closed().await;
    assert!(server.sessions().await.is_empty());
}

#[tokio::test]
async fn any_frame_recovers_a_suspect_session() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut conn, _, _) = RawConn::join(server.addr, "sleepy", 100, true).await;
    server.expect("sleepy", "suspect").await;
    // A MSG, not a PING: every frame is proof of life.
    conn.send(&Frame::Msg(Message {
        from: String::new(),
        to: "sleepy".into(),
        body: b"still here".to_vec(),
    }))
    .await;
    server.expect("sleepy", "recovered").await;
    assert!(matches!(conn.next_frame().await, Some(Frame::Msg(_))));
    assert_eq!(server.sessions().await[0].state, SessionState::Alive);
}

#[tokio::test]
async fn a_heartbeat_refreshes_only_the_connection_it_arrived_on() {
    let mut server = TestServer::start(fast_config()).await;
    let (_silent, _, silent_joined) = RawConn::join(server.addr, "silent", 100, true).await;
    let (mut chatty, _, _) = RawConn::join(server.addr, "chatty", 100, true).await;
    // chatty heartbeats every 50 ms; nothing it sends names anyone, so
    // nothing it sends can keep `silent` alive (seed 003 looks up the name in
    // the packet, and any client can keep anyone alive that way).
    let heartbeats = tokio::spawn(async move {
        for seq in 1..=20 {
            chatty.send(&Frame::Ping { seq, rtt_us: 0 }).await;
            assert_eq!(chatty.next_frame().await, Some(Frame::Pong { seq }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        chatty
    });
    let dropped = server.expect("silent", "dropped").await;
    assert!(dropped.at - silent_joined >= Duration::from_millis(500));
    let _chatty = heartbeats.await.expect("heartbeats answered");
    assert!(
        !server
            .seen()
            .iter()
            .any(|event| event.name == "chatty" && common::kind_label(&event.kind) != "joined"),
        "chatty stayed alive throughout: {:#?}",
        server.seen()
    );
    let listed = server.sessions().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "chatty");
}

#[tokio::test]
async fn a_second_hello_with_an_online_name_takes_the_session_over() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut old, old_welcome, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let (mut new, new_welcome, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    assert!(
        new_welcome.epoch > old_welcome.epoch,
        "epochs fence the old session"
    );
    match old.next_frame().await {
        Some(Frame::Bye(bye)) => {
            assert_eq!(bye.reason.code, ReasonCode::TakenOver);
            assert!(
                bye.reason.text.contains("taken over"),
                "{}",
                bye.reason.text
            );
        }
        other => panic!("expected BYE taken_over, got {other:?}"),
    }
    old.expect_closed().await;
    let dropped = server
        .expect_event("drop of the old alice", |event| {
            event.session_id == old_welcome.session_id
                && common::kind_label(&event.kind) == "dropped"
        })
        .await;
    assert!(
        matches!(
            dropped.kind,
            PresenceKind::Dropped {
                reason: DropReason::TakenOver,
                ..
            }
        ),
        "{dropped:?}"
    );
    // The old connection's close did not remove the new holder.
    let listed = server.sessions().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, new_welcome.session_id);
    new.send(&Frame::Ping { seq: 7, rtt_us: 0 }).await;
    assert_eq!(new.next_frame().await, Some(Frame::Pong { seq: 7 }));
}

#[tokio::test]
async fn one_way_sessions_get_no_pong_and_stay_alive_on_heartbeats() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut conn, welcome, _) = RawConn::join(server.addr, "sensor", 100, false).await;
    let interval = Duration::from_millis(u64::from(welcome.granted_interval_ms));
    for seq in 1..=15 {
        conn.send(&Frame::Ping { seq, rtt_us: 0 }).await;
        tokio::time::sleep(interval / 2).await;
    }
    // Had the server answered any PING, a PONG would arrive before this MSG.
    conn.send(&Frame::Msg(Message {
        from: String::new(),
        to: "sensor".into(),
        body: b"marker".to_vec(),
    }))
    .await;
    match conn.next_frame().await {
        Some(Frame::Msg(message)) => assert_eq!(message.body, b"marker"),
        other => panic!("expected only the marker message, got {other:?}"),
    }
    // Every event so far, not only those a wait drained: a session that
    // flapped (suspect, recovered) or was dropped would show here.
    let seen = server.seen();
    assert!(
        seen.iter().all(|e| common::kind_label(&e.kind) == "joined"),
        "{seen:#?}"
    );
    let listed = server.sessions().await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0].one_way);
    assert_eq!(listed[0].state, SessionState::Alive);
}

#[tokio::test]
async fn shutdown_says_bye_to_every_session() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut conn, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    server.stop().await;
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => {
            assert_eq!(bye.reason.code, ReasonCode::Shutdown);
            assert!(bye.retry_after_ms > 0, "a reconnect hint");
        }
        other => panic!("expected BYE shutdown, got {other:?}"),
    }
    conn.expect_closed().await;
    let dropped = server.expect("alice", "dropped").await;
    assert!(matches!(
        dropped.kind,
        PresenceKind::Dropped {
            reason: DropReason::Shutdown,
            ..
        }
    ));
}

#[tokio::test]
async fn a_connection_busy_writing_when_taken_over_reads_its_bye_and_a_clean_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = TestServer::start(fast_config()).await;
    let (old, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let (mut read_half, mut write_half) = old.stream.into_split();
    // The old client keeps sending PINGs through the takeover, so the server
    // ends a connection whose input it has not all read. Closing the socket
    // then would reset the connection; the server must instead send its BYE,
    // shut its write side (a clean FIN) and discard input for a while.
    let writer = tokio::spawn(async move {
        let ping = lubdub::core::protocol::codec::ping_bytes(1, 0);
        while write_half.write_all(&ping).await.is_ok() {
            tokio::task::yield_now().await;
        }
    });
    let (_new, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let mut buffer = Vec::new();
    let mut bye = None;
    loop {
        while let Some((frame, used)) =
            lubdub::core::protocol::decode(&buffer, 1 << 16).expect("valid frames")
        {
            buffer.drain(..used);
            if let Frame::Bye(received) = frame {
                bye = Some(received);
            }
        }
        let mut chunk = [0u8; 4096];
        match read_half.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) => panic!("the connection was reset instead of closed cleanly: {error}"),
        }
    }
    assert_eq!(bye.map(|bye| bye.reason.code), Some(ReasonCode::TakenOver));
    writer.abort();
}

#[tokio::test]
async fn every_drop_carries_how_long_the_session_had_been_silent() {
    let mut server = TestServer::start(fast_config()).await;
    let (conn, _, hello_sent) = RawConn::join(server.addr, "leaver", 1000, true).await;
    server.expect("leaver", "joined").await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(conn);
    let closed_at = std::time::Instant::now();
    let dropped = server.expect("leaver", "dropped").await;
    let PresenceKind::Dropped { reason, silent_for } = dropped.kind else {
        panic!("{dropped:?}");
    };
    assert_eq!(reason, DropReason::ClosedByPeer);
    // Silent since its HELLO, the last frame it sent.
    assert!(
        silent_for >= closed_at - hello_sent - TOLERANCE && silent_for <= dropped.at - hello_sent,
        "silent for {silent_for:?}"
    );
}

/// Fencing: after a takeover, what the old connection still does (a
/// message sent after its BYE, then its close) cannot touch the new
/// session. Would catch a relay from a connection already ended, and a new
/// holder listed with anything but its own epoch and id afterwards. (The
/// old connection's drop is reported at the takeover, so its close reaches
/// no `release`; the registry's epoch fence on `release` is unit-tested in
/// `registry.rs`.)
#[tokio::test]
async fn late_actions_of_a_taken_over_connection_never_touch_its_successor() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 1000, true).await;
    let (mut old, first, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    let (mut new, second, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    assert!(
        second.epoch > first.epoch,
        "the takeover has the larger epoch"
    );
    let to_bob = |body: &str| {
        Frame::Msg(Message {
            from: String::new(),
            to: "bob".into(),
            body: body.as_bytes().to_vec(),
        })
    };
    // The old connection ignores its BYE and goes on, then vanishes. (Read
    // first: with two loops, what it sent before its loop heard of the
    // takeover would be a live session's.)
    old.expect_bye(ReasonCode::TakenOver).await;
    old.send(&to_bob("late, from the old alice")).await;
    drop(old);
    server.expect_taken_over(first.session_id).await;
    new.send(&to_bob("from the new alice")).await;
    match bob.next_frame().await {
        Some(Frame::Msg(message)) => {
            assert_eq!(message.from, "alice");
            assert_eq!(
                message.body, b"from the new alice",
                "the late one was never relayed"
            );
        }
        other => panic!("expected the new alice's message, got {other:?}"),
    }
    let listed = server.sessions().await;
    let alice = listed
        .iter()
        .find(|session| session.name == "alice")
        .expect("alice still online");
    assert_eq!(alice.epoch, second.epoch);
    assert_eq!(alice.session_id, second.session_id);
}

/// Presence events leave the loop on a bounded path: a reader that does
/// not read holds the loop up in nothing (a silent session is still dropped
/// at its deadline), keeps at most the ring's worth of events, and learns
/// how many it lost as a gap; every event is numbered in order and stamped
/// on the wall clock.
#[tokio::test]
async fn a_reader_that_falls_behind_loses_the_oldest_events_and_is_told_how_many() {
    use lubdub::server::{FeedItem, PresenceHub};
    use std::sync::Arc;
    use std::time::SystemTime;

    let started = SystemTime::now();
    let hub = Arc::new(PresenceHub::new(8));
    let mut behind = hub.subscribe();
    let server = lubdub::server::start_with_hub(
        fast_config(),
        Arc::new(lubdub::server::InMemoryRegistry::new()),
        Arc::clone(&hub),
    )
    .expect("starts");
    // 20 sessions join and leave: 40 events, five times the ring.
    for index in 0..20 {
        let (mut conn, _, _) =
            RawConn::join(server.local_addr(), &format!("s{index}"), 100, true).await;
        conn.send(&Frame::bye(ReasonCode::Normal, "quit")).await;
        conn.expect_closed().await;
    }
    // Meanwhile the loop judges on time: a silent session is dropped at its
    // deadline (5 × 100 ms), not held up by the reader that does not read.
    let (mut mute, _, joined_at) = RawConn::join(server.local_addr(), "mute", 100, true).await;
    match mute.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, ReasonCode::Timeout, "{bye:?}"),
        other => panic!("expected BYE timeout, got {other:?}"),
    }
    let silent_for = joined_at.elapsed();
    assert!(
        silent_for < Duration::from_millis(500) + TOLERANCE,
        "dropped after {silent_for:?}"
    );
    let server_stopped = tokio::task::spawn_blocking(move || server.stop());
    server_stopped.await.expect("join").expect("stops");

    // 20 × (joined, dropped), then mute's joined, one suspect per missed
    // interval or so, and dropped: at least 43 events, of which the ring
    // kept the last 8.
    let mut items = Vec::new();
    while let Some(item) = behind.try_recv() {
        items.push(item);
    }
    let total = match items.last() {
        Some(FeedItem::Event(last)) => last.seq,
        other => panic!("no event last: {other:?}"),
    };
    assert!(total >= 43, "{total} events");
    assert_eq!(
        items.first(),
        Some(&FeedItem::Gap { missed: total - 8 }),
        "{items:#?}"
    );
    let events: Vec<_> = items[1..]
        .iter()
        .map(|item| match item {
            FeedItem::Event(event) => (**event).clone(),
            FeedItem::Gap { .. } => panic!("a second gap: {items:#?}"),
        })
        .collect();
    assert_eq!(events.len(), 8);
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(seqs, (total - 7..=total).collect::<Vec<_>>());
    assert_eq!(behind.missed(), total - 8);
    assert!(matches!(
        events.last().map(|event| &event.kind),
        Some(PresenceKind::Dropped {
            reason: DropReason::Timeout,
            ..
        })
    ));
    let now = SystemTime::now();
    for event in &events {
        assert!(event.wall >= started && event.wall <= now, "{event:?}");
    }
    assert!(events.windows(2).all(|pair| pair[0].at <= pair[1].at));
}
