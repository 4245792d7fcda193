//! Last wills over real sockets: sent after a timeout and after a lost
//! connection, not after a quit, not when the name comes back within the
//! delay, and once only when the session was taken over (also when the
//! loop learns of the takeover only after the session ended). Whether a will
//! went out is read from `lubdub_wills_sent_total`, which the loop counts
//! in the same step as it reports the session's end (or its delay's).

mod common;

use std::sync::Arc;

use common::{fast_config, RawConn, TestServer};
use lubdub::core::protocol::{Bye, Frame, Reason, ReasonCode, Will};
use lubdub::server::registry::{Claim, NodeId};
use lubdub::server::{DropReason, InMemoryRegistry, PresenceKind, Registry};

/// A long interval: the session never goes silent during a test.
const CALM: u32 = 60_000;

fn will(to: &str, body: &str, delay_ms: u32) -> Frame {
    Frame::Will(Will {
        delay_ms,
        to: to.to_owned(),
        body: body.as_bytes().to_vec(),
    })
}

fn bye() -> Frame {
    Frame::Bye(Bye {
        reason: Reason::new(ReasonCode::Normal, "done"),
        retry_after_ms: 0,
    })
}

async fn wills_sent(server: &TestServer) -> u64 {
    let (_, text) = server.get("/metrics").await;
    text.lines()
        .find_map(|line| line.strip_prefix("lubdub_wills_sent_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lubdub_wills_sent_total in\n{text}"))
}

/// The next MSG `conn` receives (PONGs and NOTICEs skipped).
async fn next_msg(conn: &mut RawConn) -> (String, String) {
    loop {
        match tokio::time::timeout(common::process::PATIENCE, conn.next_frame()).await {
            Ok(Some(Frame::Msg(message))) => {
                return (
                    message.from,
                    String::from_utf8_lossy(&message.body).into_owned(),
                )
            }
            Ok(Some(_)) => {}
            other => panic!("no MSG: {other:?}"),
        }
    }
}

/// Fails on the code before wills (WILL was an unknown frame kind, and
/// the session ended with `unknown_frame_kind`).
#[tokio::test]
async fn a_will_is_sent_after_a_timeout_and_a_lost_connection_and_not_after_a_quit() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;

    // Silent until its deadline (100 ms × 5).
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", 100, true).await;
    bob.send(&will("alice", "bob timed out", 0)).await;
    server.expect("bob", "dropped").await;
    assert_eq!(
        next_msg(&mut alice).await,
        ("bob".to_owned(), "bob timed out".to_owned())
    );

    // Its connection lost, without a BYE: to everyone.
    let (mut carol, _, _) = RawConn::join(server.addr, "carol", CALM, true).await;
    carol.send(&will("", "carol lost", 0)).await;
    // A round trip: the WILL was read before the connection goes.
    carol.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(carol.next_frame().await, Some(Frame::Pong { seq: 1 }));
    drop(carol);
    server.expect("carol", "dropped").await;
    assert_eq!(
        next_msg(&mut alice).await,
        ("carol".to_owned(), "carol lost".to_owned())
    );
    assert_eq!(wills_sent(&server).await, 2);

    // Quit on purpose: no will.
    let (mut dave, _, _) = RawConn::join(server.addr, "dave", CALM, true).await;
    dave.send(&will("alice", "dave gone", 0)).await;
    dave.send(&bye()).await;
    server.expect("dave", "dropped").await;
    assert_eq!(wills_sent(&server).await, 2, "a quit sent its will");
}

#[tokio::test]
async fn a_name_back_within_the_delay_cancels_its_will_and_a_takeover_sends_one_only() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;

    // Lost, back within the 2 s delay: never sent.
    let (mut bob, _, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    bob.send(&will("alice", "bob is gone", 2_000)).await;
    bob.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(bob.next_frame().await, Some(Frame::Pong { seq: 1 }));
    drop(bob);
    server.expect("bob", "dropped").await;
    let (_bob_again, _, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    // A witness whose will is due 1 s after bob's would have been: when it
    // arrives, bob's delay is long over.
    let (mut witness, _, _) = RawConn::join(server.addr, "witness", CALM, true).await;
    witness.send(&will("alice", "witness gone", 3_000)).await;
    witness.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(witness.next_frame().await, Some(Frame::Pong { seq: 1 }));
    drop(witness);
    assert_eq!(
        next_msg(&mut alice).await,
        ("witness".to_owned(), "witness gone".to_owned()),
        "bob's will was sent though bob came back"
    );
    assert_eq!(wills_sent(&server).await, 1);

    // Taken over: the old session's will is not sent (the name lives on);
    // the new session's is, once, when it times out.
    let (mut erin, _, _) = RawConn::join(server.addr, "erin", CALM, true).await;
    erin.send(&will("alice", "erin's first session", 0)).await;
    erin.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(erin.next_frame().await, Some(Frame::Pong { seq: 1 }));
    let (mut erin_again, _, _) = RawConn::join(server.addr, "erin", 100, true).await;
    erin_again
        .send(&will("alice", "erin's second session", 0))
        .await;
    server
        .expect_event("erin's second session dropped", |event| {
            event.name == "erin"
                && matches!(
                    event.kind,
                    lubdub::server::PresenceKind::Dropped {
                        reason: lubdub::server::DropReason::Timeout,
                        ..
                    }
                )
        })
        .await;
    assert_eq!(
        next_msg(&mut alice).await,
        ("erin".to_owned(), "erin's second session".to_owned())
    );
    assert_eq!(wills_sent(&server).await, 2, "one will for erin");
    drop(erin);
}

/// A session whose name was claimed by a session its loop has not heard
/// of yet (on another node, or on another loop whose takeover command is
/// still unread when this connection closes) ends as taken over: its
/// name stays online, nobody is told it went offline, and its will is
/// not sent. Before, its close was an offline `closed_by_peer` published
/// after the successor's takeover, and its will went out.
#[tokio::test]
async fn a_session_ending_after_its_name_was_claimed_elsewhere_is_taken_over_not_offline() {
    let registry = Arc::new(InMemoryRegistry::new());
    let mut server = TestServer::start_with_registry(fast_config(), Arc::clone(&registry)).await;
    let (_alice, _, _) = RawConn::join(server.addr, "alice", CALM, true).await;
    let (mut bob, welcome, _) = RawConn::join(server.addr, "bob", CALM, true).await;
    bob.send(&will("alice", "bob is gone", 0)).await;
    bob.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(bob.next_frame().await, Some(Frame::Pong { seq: 1 }));
    let elsewhere = NodeId(welcome.session_id.wrapping_add(1));
    registry
        .claim(Claim {
            name: "bob".into(),
            session_id: 7,
            node: elsewhere,
        })
        .expect("claimed");
    drop(bob);
    let ended = server
        .expect_event("bob's session ended", |event| {
            event.session_id == welcome.session_id
                && matches!(event.kind, PresenceKind::Dropped { .. })
        })
        .await;
    assert!(
        matches!(
            ended.kind,
            PresenceKind::Dropped {
                reason: DropReason::TakenOver,
                ..
            }
        ),
        "{ended:?}"
    );
    assert_eq!(
        wills_sent(&server).await,
        0,
        "the will of a session taken over"
    );
    let holder = registry.lookup("bob").expect("lookup").expect("held");
    assert_eq!(holder.node, elsewhere, "the successor keeps the name");
}
