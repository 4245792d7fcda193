//! A session's status and last will over the simulated server of
//! `testing.rs`: a status set at HELLO and later, refused (the session
//! going on) when too long, holding a control character or faster than
//! the message rate; a will kept, or refused when it could not be sent,
//! and which endings send it.

use super::testing::Sim;
use super::*;
use crate::protocol::frame::{MAX_STATUS_LEN, MAX_WILL_BODY, MAX_WILL_DELAY_MS};
use crate::protocol::{Frame, Hello, ReasonCode, Will};

fn status(text: &str) -> Frame {
    Frame::Status {
        text: text.to_owned(),
    }
}

fn statuses(sim: &Sim, id: usize) -> Vec<String> {
    sim.peers[id]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::StatusChanged { status, .. } => Some(status.clone()),
            _ => None,
        })
        .collect()
}

fn notices(sim: &Sim, id: usize) -> Vec<(ReasonCode, String)> {
    sim.peers[id]
        .sent
        .iter()
        .filter_map(|frame| match frame {
            Frame::Notice(reason) => Some((reason.code, reason.text.clone())),
            _ => None,
        })
        .collect()
}

fn hello_with_status(name: &str, status: &str) -> Frame {
    let Frame::Hello(hello) = Sim::hello(name) else {
        unreachable!("Sim::hello is a HELLO");
    };
    Frame::Hello(Hello {
        status: Some(status.to_owned()),
        ..hello
    })
}

#[test]
fn a_status_set_at_hello_comes_with_the_join_and_later_ones_as_changes() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send(id, &hello_with_status("alice", "away"));
    let joined = sim.peers[id].events.iter().find_map(|event| match event {
        Event::Joined { status, .. } => Some(status.clone()),
        _ => None,
    });
    assert_eq!(joined, Some(Some("away".to_owned())));
    sim.send_all(id, &[status("in match 42"), status("")]);
    assert_eq!(statuses(&sim, id), ["in match 42", ""]);
    assert!(notices(&sim, id).is_empty());
}

#[test]
fn a_bad_status_is_refused_with_a_notice_and_the_session_goes_on() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.send_all(
        id,
        &[
            status(&"x".repeat(MAX_STATUS_LEN + 1)),
            status("away\n"),
            Frame::Ping { seq: 1, rtt_us: 0 },
        ],
    );
    assert!(statuses(&sim, id).is_empty());
    let notices = notices(&sim, id);
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices
        .iter()
        .all(|(code, _)| *code == ReasonCode::InvalidStatus));
    assert!(notices[0].1.contains("at most 128"), "{notices:?}");
    assert_eq!(
        sim.peers[id].sent.last(),
        Some(&Frame::Pong { seq: 1 }),
        "the session went on"
    );
}

#[test]
fn an_invalid_status_in_hello_is_rejected() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send(id, &hello_with_status("alice", "\u{1b}[2J"));
    match sim.peers[id].sent.last() {
        Some(Frame::Reject(reason)) => {
            assert_eq!(reason.code, ReasonCode::InvalidStatus, "{reason:?}")
        }
        other => panic!("expected REJECT, got {other:?}"),
    }
    assert!(sim.names.is_empty(), "nothing was claimed");
}

#[test]
fn status_changes_count_against_the_message_rate() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    let burst = sim.rules.config.conduct.messages.burst as usize;
    let flood: Vec<Frame> = (0..burst + 3).map(|n| status(&format!("s{n}"))).collect();
    sim.send_all(id, &flood);
    assert_eq!(statuses(&sim, id).len(), burst);
    let notices = notices(&sim, id);
    assert_eq!(
        notices.len(),
        1,
        "one NOTICE per run of refusals: {notices:?}"
    );
    assert_eq!(notices[0].0, ReasonCode::RateLimited);
}

fn will(to: &str, body_len: usize, delay_ms: u32) -> Frame {
    Frame::Will(Will {
        delay_ms,
        to: to.to_owned(),
        body: vec![b'w'; body_len],
    })
}

#[test]
fn a_valid_will_is_kept_and_an_invalid_one_refused_with_the_session_going_on() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.send_all(
        id,
        &[
            will("bob", 10, 5_000),
            will("", MAX_WILL_BODY, 0),
            will("bad name", 10, 0),
            will("bob", MAX_WILL_BODY + 1, 0),
            will("bob", 10, MAX_WILL_DELAY_MS + 1),
            Frame::Ping { seq: 1, rtt_us: 0 },
        ],
    );
    let kept: Vec<(String, usize, u32)> = sim.peers[id]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::WillSet { will, .. } => Some((will.to.clone(), will.body.len(), will.delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(
        kept,
        [
            ("bob".to_owned(), 10, 5_000),
            (String::new(), MAX_WILL_BODY, 0)
        ]
    );
    let notices = notices(&sim, id);
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(notices
        .iter()
        .all(|(code, _)| *code == ReasonCode::InvalidWill));
    assert!(notices[0].1.contains("invalid recipient"), "{notices:?}");
    assert!(notices[1].1.contains("1024 allowed"), "{notices:?}");
    assert!(notices[2].1.contains("delay"), "{notices:?}");
    assert_eq!(sim.peers[id].sent.last(), Some(&Frame::Pong { seq: 1 }));
}

#[test]
fn only_endings_without_a_bye_whose_name_does_not_live_on_send_the_will() {
    let sent: Vec<&str> = [
        DropReason::Timeout,
        DropReason::Quit,
        DropReason::ClosedByPeer,
        DropReason::TakenOver,
        DropReason::ProtocolError(ReasonCode::MalformedFrame),
        DropReason::SlowConsumer,
        DropReason::IoError,
        DropReason::Shutdown,
    ]
    .into_iter()
    .filter(|reason| reason.sends_will())
    .map(DropReason::label)
    .collect();
    assert_eq!(
        sent,
        [
            "timeout",
            "closed_by_peer",
            "malformed_frame",
            "slow_consumer",
            "io_error"
        ]
    );
}
