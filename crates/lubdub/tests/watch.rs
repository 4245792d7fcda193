//! Watches over real sockets: a snapshot with its sequence number, then
//! every change after it, in order (online with status, suspect,
//! recovered, status, offline with the reason of each way of ending; a
//! takeover as one continuous presence); a room's members coming and
//! going; a count-only watch; a watcher that stops reading is ended as a
//! slow consumer while everyone else goes on.

mod common;

use common::{fast_config, RawConn, TestServer};
use lubdub::core::protocol::rooms::{PresenceUpdate, UpdateKind, Watch, WatchMode};
use lubdub::core::protocol::{Bye, Frame, Reason, ReasonCode};
use lubdub::server::presence::{DropReason, PresenceKind};
use tokio::net::TcpSocket;

/// A long interval: the session never goes silent during a test.
const CALM: u32 = 60_000;

fn watch(target: &str, mode: WatchMode) -> Frame {
    Frame::Watch(Watch {
        mode: mode as u8,
        target: target.to_owned(),
    })
}

/// The next PRESENCE frame (PONGs skipped).
async fn next_update(conn: &mut RawConn) -> PresenceUpdate {
    loop {
        match conn.next_frame().await {
            Some(Frame::Presence(update)) => return update,
            Some(Frame::Pong { .. }) => {}
            other => panic!("expected a PRESENCE frame, got {other:?}"),
        }
    }
}

/// The kinds and names of the next `count` updates, checked to be in
/// increasing order of their numbers, after `since`.
async fn updates(
    conn: &mut RawConn,
    count: usize,
    mut since: u64,
) -> Vec<(UpdateKind, String, String)> {
    let mut seen = Vec::new();
    for _ in 0..count {
        let update = next_update(conn).await;
        assert!(update.seq > since, "{update:?} after {since}");
        since = update.seq;
        seen.push((update.kind, update.name, update.text));
    }
    seen
}

fn of(kind: UpdateKind, name: &str, text: &str) -> (UpdateKind, String, String) {
    (kind, name.to_owned(), text.to_owned())
}

/// Fails on the code before watches (WATCH was an unknown frame kind).
#[tokio::test]
async fn a_name_watch_is_a_snapshot_then_every_change_in_order() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut watcher, _, _) = RawConn::join(server.addr, "watcher", CALM, true).await;
    watcher.send(&watch("bob", WatchMode::Full)).await;
    let snapshot = next_update(&mut watcher).await;
    assert_eq!((snapshot.kind, snapshot.count), (UpdateKind::Snapshot, 0));

    // Online with a status, a status change, then a quit.
    let mut hello = common::hello("bob", CALM, true);
    if let Frame::Hello(hello) = &mut hello {
        hello.status = Some("away".into());
    }
    let mut bob = RawConn::connect(server.addr).await;
    bob.send(&hello).await;
    assert!(matches!(bob.next_frame().await, Some(Frame::Welcome(_))));
    bob.send(&Frame::Status {
        text: "in match 42".into(),
    })
    .await;
    bob.send(&Frame::Bye(Bye {
        reason: Reason::new(ReasonCode::Normal, "done"),
        retry_after_ms: 0,
    }))
    .await;
    assert_eq!(
        updates(&mut watcher, 3, snapshot.seq).await,
        vec![
            of(UpdateKind::Online, "bob", "away"),
            of(UpdateKind::Status, "bob", "in match 42"),
            of(UpdateKind::Offline, "bob", "quit"),
        ]
    );

    // Silent until suspect, then heard from, then silent to the end.
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 100, true).await;
    let online = next_update(&mut watcher).await;
    assert_eq!(online.kind, UpdateKind::Online);
    let suspect = next_update(&mut watcher).await;
    assert_eq!(suspect.kind, UpdateKind::Suspect);
    bob.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(
        updates(&mut watcher, 2, suspect.seq).await,
        vec![
            of(UpdateKind::Recovered, "bob", ""),
            of(UpdateKind::Suspect, "bob", ""),
        ]
    );
    assert_eq!(
        updates(&mut watcher, 1, suspect.seq).await,
        vec![of(UpdateKind::Offline, "bob", "timeout")]
    );
    drop(bob);

    // A lost connection; then a takeover, which is no offline.
    let (mut bob, first, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    assert_eq!(next_update(&mut watcher).await.kind, UpdateKind::Online);
    let (_bob_again, _, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    let takeover = next_update(&mut watcher).await;
    assert_eq!(takeover.kind, UpdateKind::Takeover);
    bob.expect_bye(ReasonCode::TakenOver).await;
    drop(bob);
    server.expect_taken_over(first.session_id).await;
    drop(_bob_again);
    assert_eq!(
        updates(&mut watcher, 1, takeover.seq).await,
        vec![of(UpdateKind::Offline, "bob", "closed_by_peer")]
    );
}

/// Fails on the code before watches.
#[tokio::test]
async fn a_room_watch_lists_members_then_their_comings_and_goings_and_a_count_only_counts() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;
    alice
        .send(&Frame::Join {
            room: "#lobby".into(),
        })
        .await;
    server.expect("alice", "room_joined").await;
    alice
        .send(&Frame::Status {
            text: "here".into(),
        })
        .await;
    server.expect("alice", "status").await;

    let (mut watcher, _, _) = RawConn::join(server.addr, "watcher", CALM, true).await;
    watcher.send(&watch("#lobby", WatchMode::Full)).await;
    let snapshot = next_update(&mut watcher).await;
    assert_eq!((snapshot.kind, snapshot.count), (UpdateKind::Snapshot, 1));
    let member = next_update(&mut watcher).await;
    assert_eq!(
        (
            member.kind,
            member.name.as_str(),
            member.text.as_str(),
            member.seq
        ),
        (UpdateKind::Member, "alice", "here", snapshot.seq)
    );
    let (mut counter, _, _) = RawConn::join(server.addr, "counter", CALM, true).await;
    counter.send(&watch("#lobby", WatchMode::Count)).await;
    let counted = next_update(&mut counter).await;
    assert_eq!((counted.kind, counted.count), (UpdateKind::Snapshot, 1));

    let (mut bob, _, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    bob.send(&Frame::Join {
        room: "#lobby".into(),
    })
    .await;
    bob.send(&Frame::Leave {
        room: "#lobby".into(),
    })
    .await;
    bob.send(&Frame::Join {
        room: "#lobby".into(),
    })
    .await;
    drop(bob);
    let seen = updates(&mut watcher, 4, snapshot.seq).await;
    assert_eq!(
        seen,
        vec![
            of(UpdateKind::Joined, "bob", ""),
            of(UpdateKind::Left, "bob", "left"),
            of(UpdateKind::Joined, "bob", ""),
            of(UpdateKind::Left, "bob", "closed_by_peer"),
        ]
    );
    let counts: Vec<u32> = {
        let mut counts = Vec::new();
        for _ in 0..4 {
            let update = next_update(&mut counter).await;
            assert_eq!((update.kind, update.name.as_str()), (UpdateKind::Count, ""));
            counts.push(update.count);
        }
        counts
    };
    assert_eq!(counts, vec![2, 1, 2, 1]);

    // A bad target is refused with a NOTICE; the session goes on.
    watcher.send(&watch("#lobby", WatchMode::Stop)).await;
    watcher.send(&watch("#lob by", WatchMode::Full)).await;
    watcher.send(&Frame::Ping { seq: 7, rtt_us: 0 }).await;
    match watcher.next_frame().await {
        Some(Frame::Notice(reason)) => assert_eq!(reason.code, ReasonCode::InvalidWatch),
        other => panic!("expected an invalid_watch NOTICE, got {other:?}"),
    }
    assert_eq!(watcher.next_frame().await, Some(Frame::Pong { seq: 7 }));
}

/// Fails without the slow-consumer rule for watchers (the queue of PRESENCE
/// frames grew without bound, or the loop waited for the watcher).
#[tokio::test]
async fn a_watcher_that_stops_reading_is_ended_as_a_slow_consumer_and_no_one_else_is_harmed() {
    let mut config = fast_config();
    config.max_frame_len = 4096;
    config.max_outbound_bytes = 64 * 1024;
    config.max_messages_per_sec = 0;
    let mut server = TestServer::start(config).await;
    let mut chatty = chatty_in_busy(&mut server).await;

    // Never reads again after its snapshot, through a small window.
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let stream = socket.connect(server.addr).await.expect("connect");
    let mut slow = RawConn::from_stream(stream);
    slow.send(&common::hello("slow", CALM, true)).await;
    assert!(matches!(slow.next_frame().await, Some(Frame::Welcome(_))));
    slow.send(&watch("#busy", WatchMode::Full)).await;
    // Its snapshot read: the watch is in place before the flood.
    assert_eq!(next_update(&mut slow).await.kind, UpdateKind::Snapshot);
    // A bystander watches the same room and reads everything.
    let (mut bystander, _, _) = RawConn::join(server.addr, "bystander", CALM, true).await;
    bystander.send(&watch("#busy", WatchMode::Full)).await;
    let snapshot = next_update(&mut bystander).await;
    assert_eq!(snapshot.kind, UpdateKind::Snapshot);
    let _member = next_update(&mut bystander).await;

    let changes = 40_000u32;
    let mut flood = Vec::new();
    for index in 0..changes {
        let text = format!("{index:0>120}");
        lubdub::core::protocol::codec::encode(&Frame::Status { text }, &mut flood).expect("fits");
    }
    chatty.send_bytes(&flood).await;
    let dropped = server.expect("slow", "dropped").await;
    assert!(
        matches!(
            dropped.kind,
            PresenceKind::Dropped {
                reason: DropReason::SlowConsumer,
                ..
            }
        ),
        "{dropped:?}"
    );
    // The bystander got every change, in order, and is still served.
    let mut since = snapshot.seq;
    for index in 0..changes {
        let update = next_update(&mut bystander).await;
        assert!(update.seq > since);
        since = update.seq;
        assert_eq!(
            (update.kind, update.text),
            (UpdateKind::Status, format!("{index:0>120}"))
        );
    }
    bystander.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(next_pong(&mut bystander).await, 1);
    chatty.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(next_pong(&mut chatty).await, 1);
}

/// A session `chatty` in the room `#busy`, whose STATUS floods reach the
/// room's watchers.
async fn chatty_in_busy(server: &mut TestServer) -> RawConn {
    let (mut chatty, _, _) = RawConn::join(server.addr, "chatty", CALM, true).await;
    chatty
        .send(&Frame::Join {
            room: "#busy".into(),
        })
        .await;
    server.expect("chatty", "room_joined").await;
    chatty
}

async fn next_pong(conn: &mut RawConn) -> u32 {
    loop {
        match conn.next_frame().await {
            Some(Frame::Pong { seq }) => return seq,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
}

/// Fails without the size check: the snapshot was queued whole and the
/// watcher, its queue full at once, was ended as a slow consumer.
#[tokio::test]
async fn a_room_too_large_for_the_watchers_queue_is_refused_and_watched_by_count() {
    let mut config = fast_config();
    config.max_frame_len = 4096;
    config.max_outbound_bytes = 8192;
    let mut server = TestServer::start(config).await;
    let mut members = Vec::new();
    for index in 0..150 {
        let (mut member, _, _) =
            RawConn::join(server.addr, &format!("member-{index:03}"), CALM, true).await;
        member
            .send(&Frame::Join {
                room: "#big".into(),
            })
            .await;
        members.push(member);
    }
    for _ in 0..150 {
        server
            .expect_event("a join", |event| {
                matches!(event.kind, PresenceKind::RoomJoined)
            })
            .await;
    }
    let (mut watcher, _, _) = RawConn::join(server.addr, "watcher", CALM, true).await;
    watcher.send(&watch("#big", WatchMode::Full)).await;
    watcher.send(&watch("#big", WatchMode::Count)).await;
    match watcher.next_frame().await {
        Some(Frame::Notice(reason)) => {
            assert_eq!(reason.code, ReasonCode::InvalidWatch);
            assert!(
                reason.text.contains("watch its count instead"),
                "{}",
                reason.text
            );
        }
        other => panic!("expected an invalid_watch NOTICE, got {other:?}"),
    }
    let counted = next_update(&mut watcher).await;
    assert_eq!((counted.kind, counted.count), (UpdateKind::Snapshot, 150));
    watcher.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(next_pong(&mut watcher).await, 1);
}

/// A loop that falls behind the hub's ring sends each watcher `resync` and
/// a fresh snapshot, shared by the watchers of the target. With a ring of
/// one event, three STATUS frames read together publish three events in
/// one turn: the loop, reading after its turn, has lost two. Fails if the
/// loop's gap handling sends nothing.
#[tokio::test]
async fn a_loop_that_falls_behind_the_ring_resyncs_its_watchers() {
    let config = lubdub::server::ServerConfig {
        threads: Some(1),
        ..fast_config()
    };
    let ring_of_one = std::sync::Arc::new(lubdub::server::PresenceHub::new(1));
    let registry = std::sync::Arc::new(lubdub::server::InMemoryRegistry::new());
    let handle =
        lubdub::server::start_with_hub(config, registry, ring_of_one).expect("server starts");
    let addr = handle.local_addr();
    let (mut alice, _, _) = RawConn::join(addr, "alice", CALM, true).await;
    alice
        .send(&Frame::Join {
            room: "#lobby".to_owned(),
        })
        .await;
    let mut watchers = Vec::new();
    for name in ["w1", "w2"] {
        let (mut watcher, _, _) = RawConn::join(addr, name, CALM, true).await;
        watcher.send(&watch("#lobby", WatchMode::Full)).await;
        let snapshot = next_update(&mut watcher).await;
        assert_eq!((snapshot.kind, snapshot.count), (UpdateKind::Snapshot, 1));
        assert_eq!(next_update(&mut watcher).await.name, "alice");
        watchers.push(watcher);
    }

    let mut statuses = Vec::new();
    for text in ["one", "two", "three"] {
        let status = Frame::Status { text: text.into() };
        statuses.extend(lubdub::core::protocol::codec::encode_to_vec(&status).expect("encodes"));
    }
    alice.send_bytes(&statuses).await;

    for watcher in &mut watchers {
        let resync = next_update(watcher).await;
        assert_eq!(
            (resync.kind, resync.target.as_str()),
            (UpdateKind::Resync, "#lobby"),
            "{resync:?}"
        );
        let snapshot = next_update(watcher).await;
        assert_eq!((snapshot.kind, snapshot.count), (UpdateKind::Snapshot, 1));
        let member = next_update(watcher).await;
        assert_eq!(
            (member.kind, member.name.as_str(), member.text.as_str()),
            (UpdateKind::Member, "alice", "three")
        );
    }
    drop((alice, watchers));
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .expect("join")
        .expect("loop ends cleanly");
}

/// Fails without the bound (a 65th watch was answered with a snapshot), and
/// on the code before this change, which refused a WATCH read together
/// with the STOP that made room for it.
#[tokio::test]
async fn a_watch_past_the_bound_gets_its_notice_and_the_session_goes_on() {
    use lubdub::core::protocol::rooms::MAX_WATCHES_PER_SESSION;
    let mut config = fast_config();
    // Every WATCH of this test within the message rate.
    config.max_messages_per_sec = 1_000;
    let server = TestServer::start(config).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;
    for index in 0..MAX_WATCHES_PER_SESSION {
        alice
            .send(&watch(&format!("n{index}"), WatchMode::Full))
            .await;
    }
    let snapshots = alice.frames_until_pong(1).await;
    assert_eq!(snapshots.len(), MAX_WATCHES_PER_SESSION, "{snapshots:?}");
    alice.send(&watch("one-too-many", WatchMode::Full)).await;
    match alice.frames_until_pong(2).await.as_slice() {
        [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::TooManyWatches),
        other => panic!("expected one too_many_watches NOTICE, got {other:?}"),
    }
    // Stopping one makes room for another; the session is whole.
    alice.send(&watch("n0", WatchMode::Stop)).await;
    alice.send(&watch("one-more", WatchMode::Full)).await;
    match alice.frames_until_pong(3).await.as_slice() {
        [Frame::Presence(snapshot)] => assert_eq!(snapshot.target, "one-more"),
        other => panic!("expected one snapshot, got {other:?}"),
    }
    // A stop of what it does not watch frees nothing, even read together
    // with the next WATCH.
    alice.send(&watch("nobody-watched", WatchMode::Stop)).await;
    alice.send(&watch("still-too-many", WatchMode::Full)).await;
    match alice.frames_until_pong(4).await.as_slice() {
        [Frame::Notice(reason)] => assert_eq!(reason.code, ReasonCode::TooManyWatches),
        other => panic!("expected one too_many_watches NOTICE, got {other:?}"),
    }
}

/// A burst to many watchers is written a slice of time at a time (so that
/// no verdict waits for all their sends); what a slice leaves is written
/// next, so every watcher still gets every change, whole and in order.
#[tokio::test]
async fn a_burst_to_many_watchers_reaches_each_whole_and_in_order() {
    const WATCHERS: usize = 100;
    const CHANGES: u32 = 1_000;
    let mut config = fast_config();
    config.max_messages_per_sec = 0;
    let mut server = TestServer::start(config).await;
    let mut chatty = chatty_in_busy(&mut server).await;
    let mut readers = Vec::new();
    for index in 0..WATCHERS {
        let (mut watcher, _, _) =
            RawConn::join(server.addr, &format!("watcher{index}"), CALM, true).await;
        watcher.send(&watch("#busy", WatchMode::Full)).await;
        let snapshot = next_update(&mut watcher).await;
        assert_eq!(snapshot.kind, UpdateKind::Snapshot);
        let member = next_update(&mut watcher).await;
        assert_eq!(member.name, "chatty");
        readers.push(tokio::spawn(async move {
            let mut since = snapshot.seq;
            for index in 0..CHANGES {
                let update = next_update(&mut watcher).await;
                assert!(update.seq > since, "{update:?} after {since}");
                since = update.seq;
                assert_eq!(
                    (update.kind, update.text),
                    (UpdateKind::Status, format!("{index}"))
                );
            }
        }));
    }
    let mut flood = Vec::new();
    for index in 0..CHANGES {
        let text = format!("{index}");
        lubdub::core::protocol::codec::encode(&Frame::Status { text }, &mut flood).expect("fits");
    }
    chatty.send_bytes(&flood).await;
    for reader in readers {
        tokio::time::timeout(common::PATIENCE, reader)
            .await
            .expect("every change within the patience")
            .expect("every change, in order");
    }
}
