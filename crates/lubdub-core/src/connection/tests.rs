//! The connection machine's rules over explicit time, on the simulated
//! server of `testing.rs`: phases, frame rules, rates, verdicts and their
//! texts, takeover and the choice of farewell.
//!
//! Size: unit tests only, one per rule of the machine; the status and will rules have their own file (`status_will_tests.rs`).

use std::time::Duration;

use super::testing::{Checker, Sim};
use super::*;
use crate::protocol::{Bye, Frame, Message, Reason, ReasonCode};

const MS: Duration = Duration::from_millis(1);

fn ping(seq: u32) -> Frame {
    Frame::Ping { seq, rtt_us: 0 }
}

fn last_sent(sim: &Sim, id: usize) -> &Frame {
    sim.peers[id].sent.last().expect("something was sent")
}

fn code_of(frame: &Frame) -> ReasonCode {
    match frame {
        Frame::Reject(reason) | Frame::Notice(reason) => reason.code,
        Frame::Bye(bye) => bye.reason.code,
        other => panic!("no reason code in {other:?}"),
    }
}

fn dropped(sim: &Sim, id: usize) -> Option<(DropReason, Duration)> {
    sim.peers[id].events.iter().find_map(|event| match event {
        Event::Dropped {
            reason, silent_for, ..
        } => Some((*reason, *silent_for)),
        _ => None,
    })
}

#[test]
fn a_connection_that_sends_no_hello_is_refused_at_the_handshake_timeout() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.advance(Duration::from_secs(10) - MS);
    assert!(sim.peers[id].sent.is_empty(), "refused early");
    sim.advance(MS);
    let Frame::Reject(reason) = last_sent(&sim, id) else {
        panic!("expected REJECT");
    };
    assert_eq!(reason.code, ReasonCode::HandshakeTimeout);
    assert_eq!(reason.text, "no HELLO within the handshake timeout of 10s");
    assert!(sim.peers[id].machine.is_closing());
    sim.advance(LINGER);
    assert!(sim.peers[id].removed, "lingered beyond LINGER");
}

#[test]
fn frames_before_hello_and_bad_names_are_refused_with_their_codes() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send(id, &ping(1));
    assert_eq!(code_of(last_sent(&sim, id)), ReasonCode::HelloRequired);
    let id = sim.connect();
    sim.send(id, &Sim::hello("has space"));
    assert_eq!(code_of(last_sent(&sim, id)), ReasonCode::InvalidName);
    assert!(sim.names.is_empty(), "a refused HELLO claimed nothing");
}

#[test]
fn a_hello_is_welcomed_with_the_granted_interval_and_the_claims_epoch() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    let Frame::Welcome(welcome) = &sim.peers[id].sent[0] else {
        panic!("expected WELCOME, got {:?}", sim.peers[id].sent);
    };
    assert_eq!(
        (
            welcome.granted_interval_ms,
            welcome.max_missed,
            welcome.epoch
        ),
        (1_000, 5, 1)
    );
    assert!(matches!(
        &sim.peers[id].events[0],
        Event::Joined { name, one_way: false, .. } if name == "alice"
    ));
    let session = sim.peers[id].machine.session().expect("established");
    assert_eq!((session.name(), session.epoch()), ("alice", 1));
}

#[test]
fn pings_are_answered_only_when_acks_are_wanted_and_every_frame_is_heard() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.send(
        id,
        &Frame::Ping {
            seq: 7,
            rtt_us: 1_500,
        },
    );
    assert_eq!(last_sent(&sim, id), &Frame::Pong { seq: 7 });
    assert!(sim.peers[id]
        .events
        .contains(&Event::Heard { rtt_us: 1_500 }));
    let quiet = sim.connect();
    let Frame::Hello(mut hello) = Sim::hello("bob") else {
        unreachable!()
    };
    hello.flags = 0;
    sim.send(quiet, &Frame::Hello(hello));
    sim.send(quiet, &ping(1));
    assert_eq!(sim.peers[quiet].sent.len(), 1, "only the WELCOME");
    assert!(sim.peers[quiet]
        .events
        .contains(&Event::Heard { rtt_us: 0 }));
}

#[test]
fn what_follows_a_hello_in_the_same_read_is_judged_after_its_answer() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send_all(id, &[Sim::hello("alice"), ping(1)]);
    assert!(matches!(sim.peers[id].sent[0], Frame::Welcome(_)));
    assert_eq!(sim.peers[id].sent[1], Frame::Pong { seq: 1 });
}

#[test]
fn a_silent_session_turns_suspect_then_is_declared_dead_at_its_deadline() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.advance(Duration::from_millis(1_600));
    assert!(
        sim.peers[id].events.iter().any(|event| matches!(
            event,
            Event::Suspected {
                missed: 1,
                first: true,
                ..
            }
        )),
        "{:?}",
        sim.peers[id].events
    );
    sim.advance(Duration::from_millis(3_399));
    // Each further silent interval is reported, as detail: not news.
    let firsts: Vec<bool> = sim.peers[id]
        .events
        .iter()
        .filter_map(|event| match event {
            Event::Suspected { first, .. } => Some(*first),
            _ => None,
        })
        .collect();
    assert_eq!(firsts, [true, false, false, false]);
    assert!(dropped(&sim, id).is_none(), "declared dead early");
    sim.advance(MS);
    let (reason, silent_for) = dropped(&sim, id).expect("dropped");
    assert_eq!(
        (reason, silent_for),
        (DropReason::Timeout, Duration::from_secs(5))
    );
    let Frame::Bye(bye) = last_sent(&sim, id) else {
        panic!("expected BYE");
    };
    assert_eq!(
        bye.reason.text,
        "no frame for 5s: declared dead (5 × the 1s interval)"
    );
    assert!(sim.names.is_empty(), "its name was released");
    // The release comes before the drop is reported.
    let release = sim
        .requests
        .iter()
        .position(|(_, request)| matches!(request, Request::Release { .. }));
    assert!(release.is_some());
}

#[test]
fn a_frame_from_a_suspect_session_recovers_it_and_moves_its_deadline() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.advance(Duration::from_millis(2_500));
    sim.send(id, &ping(1));
    assert!(sim.peers[id]
        .events
        .iter()
        .any(|event| matches!(event, Event::Recovered { .. })));
    let StateChange::Recovered { after_ms } = sim.peers[id]
        .machine
        .session()
        .expect("established")
        .last_change()
    else {
        panic!("not recovered");
    };
    assert_eq!(after_ms, 2_500);
    sim.advance(Duration::from_millis(4_999));
    assert!(dropped(&sim, id).is_none(), "judged by its old deadline");
    sim.advance(MS);
    assert_eq!(
        dropped(&sim, id).map(|(reason, _)| reason),
        Some(DropReason::Timeout)
    );
}

#[test]
fn a_stall_of_the_loop_is_nobodys_silence_and_its_ping_backlog_no_flood() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.advance(Duration::from_millis(800));
    sim.send(id, &ping(1));
    // Twenty seconds in which the loop could not run: the client went on
    // with a PING every 800 ms, all read at once when it resumes.
    sim.stall(Duration::from_secs(20));
    let backlog: Vec<Frame> = (2..27).map(ping).collect();
    sim.send_all(id, &backlog);
    let refused = sim.peers[id]
        .events
        .iter()
        .filter(|event| matches!(event, Event::FrameRefused { .. }))
        .count();
    assert_eq!(refused, 0, "the backlog was counted as a flood");
    assert!(dropped(&sim, id).is_none());
}

#[test]
fn a_ping_flood_is_warned_once_then_ended_with_too_many_pings() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    // Burst: 4 per interval × 5 missed + 1 = 21 PINGs at once.
    let flood: Vec<Frame> = (0..22).map(ping).collect();
    sim.send_all(id, &flood);
    let Frame::Notice(notice) = last_sent(&sim, id) else {
        panic!("expected a warning NOTICE, got {:?}", last_sent(&sim, id));
    };
    assert_eq!(notice.code, ReasonCode::TooManyPings);
    // Refusals one allowed spacing (250 ms) apart are strikes; the third ends it.
    for seq in 0..2 {
        sim.advance(Duration::from_millis(251));
        let flood: Vec<Frame> = (0..3).map(|n| ping(100 + seq * 10 + n)).collect();
        sim.send_all(id, &flood);
    }
    assert_eq!(code_of(last_sent(&sim, id)), ReasonCode::TooManyPings);
    assert!(matches!(last_sent(&sim, id), Frame::Bye(_)));
    assert_eq!(
        dropped(&sim, id).map(|(reason, _)| reason),
        Some(DropReason::ProtocolError(ReasonCode::TooManyPings))
    );
}

#[test]
fn a_takeover_ends_the_old_session_without_releasing_the_name() {
    let mut sim = Sim::one_second();
    let old = sim.join("alice");
    let new = sim.join("alice");
    let Frame::Bye(bye) = last_sent(&sim, old) else {
        panic!("expected BYE");
    };
    assert_eq!(bye.reason.code, ReasonCode::TakenOver);
    assert_eq!(
        dropped(&sim, old).map(|(reason, _)| reason),
        Some(DropReason::TakenOver)
    );
    assert!(!sim
        .requests
        .iter()
        .any(|(id, request)| *id == old && matches!(request, Request::Release { .. })));
    let Frame::Welcome(welcome) = &sim.peers[new].sent[0] else {
        panic!("expected WELCOME");
    };
    assert_eq!(welcome.epoch, 2, "the newer claim carries the larger epoch");
    // The old connection's late close changes nothing: its name is fenced.
    sim.peer_closes(old);
    assert_eq!(sim.names.get("alice"), Some(&(new, 2)));
}

#[test]
fn a_bye_ends_the_session_as_quit_and_nothing_after_it_is_acted_on() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    let bye = Frame::Bye(Bye {
        reason: Reason::new(ReasonCode::Normal, "bye"),
        retry_after_ms: 0,
    });
    sim.send_all(id, &[bye, ping(1)]);
    assert_eq!(
        dropped(&sim, id).map(|(reason, _)| reason),
        Some(DropReason::Quit)
    );
    assert_eq!(sim.peers[id].closed, Some(Close::Now));
    assert!(!sim.peers[id].sent.contains(&Frame::Pong { seq: 1 }));
    assert!(sim.names.is_empty());
}

#[test]
fn a_close_in_the_middle_of_a_frame_is_a_protocol_error() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    let bytes = crate::protocol::codec::encode_to_vec(&ping(1)).expect("encodable");
    sim.send_bytes(id, &bytes[..3]);
    sim.peer_closes(id);
    assert_eq!(
        dropped(&sim, id).map(|(reason, _)| reason),
        Some(DropReason::ProtocolError(ReasonCode::MalformedFrame))
    );
}

#[test]
fn a_closing_connection_discards_its_input() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send(id, &ping(1));
    let sent = sim.peers[id].sent.len();
    sim.send_all(id, &[Sim::hello("alice"), ping(2)]);
    assert_eq!(sim.peers[id].sent.len(), sent);
    assert!(sim.names.is_empty());
}

#[test]
fn credentials_are_checked_before_the_name_is_claimed() {
    let mut config = ConnectionConfig {
        authenticate: true,
        ..ConnectionConfig::default()
    };
    config.intervals.default = Duration::from_secs(1);
    let mut sim = Sim::new(config);
    sim.checker = Checker::Refuse;
    let holder = {
        sim.checker = Checker::Grant;
        sim.join("alice")
    };
    sim.checker = Checker::Refuse;
    let intruder = sim.join("alice");
    assert_eq!(code_of(last_sent(&sim, intruder)), ReasonCode::Unauthorized);
    assert!(
        sim.peers[holder].machine.session().is_some(),
        "holder disturbed"
    );
    // While a check is held, frames are judged as before the handshake.
    sim.checker = Checker::Hold;
    let waiting = sim.join("bob");
    assert!(sim.peers[waiting].sent.is_empty());
    sim.send(waiting, &Sim::hello("bob"));
    assert_eq!(
        code_of(last_sent(&sim, waiting)),
        ReasonCode::DuplicateHello
    );
    assert!(sim
        .requests
        .iter()
        .any(|(id, request)| *id == waiting && *request == Request::CancelAuthentication));
    let patient = sim.join("carol");
    sim.answer_authentication(patient, Authentication::Granted);
    assert!(matches!(sim.peers[patient].sent[0], Frame::Welcome(_)));
    // The credential went to the checker only.
    let credential = sim.requests.iter().find_map(|(id, request)| match request {
        Request::Authenticate { credential, .. } if *id == patient => Some(credential.clone()),
        _ => None,
    });
    assert_eq!(credential.as_deref(), Some(&b"secret"[..]));
}

#[test]
fn a_registry_that_is_down_refuses_with_a_text_of_its_own() {
    let mut sim = Sim::one_second();
    sim.registry_down = true;
    let id = sim.join("alice");
    let Frame::Reject(reason) = last_sent(&sim, id) else {
        panic!("expected REJECT");
    };
    assert_eq!(reason.code, ReasonCode::ServerBusy);
    assert_eq!(reason.text, texts::REGISTRY_UNAVAILABLE_TEXT);
}

#[test]
fn a_tls_client_hello_on_a_plain_server_is_named_as_such() {
    let mut sim = Sim::one_second();
    let id = sim.connect();
    sim.send_bytes(id, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
    let Frame::Reject(reason) = last_sent(&sim, id) else {
        panic!("expected REJECT");
    };
    assert_eq!(
        (reason.code, reason.text.as_str()),
        (ReasonCode::MalformedFrame, texts::TLS_ON_PLAIN_TEXT)
    );
}

#[test]
fn messages_are_relayed_with_their_senders_name_and_oversized_ones_refused() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    sim.send(
        id,
        &Frame::Msg(Message {
            from: "mallory".into(),
            to: "bob".into(),
            body: b"hi".to_vec(),
        }),
    );
    assert_eq!(
        sim.peers[id].relayed[0].from, "alice",
        "sender's name forged"
    );
    let max = crate::protocol::codec::max_msg_body(sim.rules.config.max_frame_len);
    sim.send(
        id,
        &Frame::Msg(Message {
            from: String::new(),
            to: String::new(),
            body: vec![b'x'; max + 1],
        }),
    );
    assert_eq!(code_of(last_sent(&sim, id)), ReasonCode::FrameTooLarge);
    assert_eq!(sim.peers[id].relayed.len(), 1);
}

#[test]
fn refusals_of_the_senders_own_budget_strike_until_the_session_ends() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    let refusal = || MessageRefusal {
        code: ReasonCode::RateLimited,
        text: "over your budget".into(),
        strike: true,
    };
    for second in 0..5 {
        let now = sim.now();
        let mut out = Vec::new();
        let peer = &mut sim.peers[id];
        peer.machine
            .handle_message_refused(now, refusal(), &sim.rules, &mut out);
        let notices = out
            .iter()
            .filter(|output| matches!(output, Output::Transmit(Transmit::Notice(_))))
            .count();
        assert_eq!(notices, usize::from(second == 0), "one NOTICE per run");
        let ended = out
            .iter()
            .any(|output| matches!(output, Output::Close(Close::Farewell(Frame::Bye(_)))));
        assert_eq!(ended, second == 4, "strike {second}");
        sim.advance(Duration::from_millis(1_001));
    }
}

#[test]
fn refusals_for_shared_budgets_are_no_strike() {
    let mut sim = Sim::one_second();
    let id = sim.join("alice");
    for _ in 0..20 {
        let now = sim.now();
        let mut out = Vec::new();
        let refusal = MessageRefusal {
            code: ReasonCode::ServerBusy,
            text: "the server is busy".into(),
            strike: false,
        };
        sim.peers[id]
            .machine
            .handle_message_refused(now, refusal, &sim.rules, &mut out);
        assert!(
            !out.iter().any(|output| matches!(output, Output::Close(_))),
            "a shared budget's refusal ended the session"
        );
        sim.advance(Duration::from_millis(600));
        sim.send(id, &ping(1));
    }
    assert!(sim.peers[id].machine.session().is_some());
}

#[test]
fn shutdown_says_bye_with_a_hint_and_reject_to_handshakes() {
    let mut sim = Sim::one_second();
    let joined = sim.join("alice");
    let handshaking = sim.connect();
    sim.shutdown(Duration::from_millis(2_345));
    let Frame::Bye(bye) = last_sent(&sim, joined) else {
        panic!("expected BYE");
    };
    assert_eq!(
        (bye.reason.code, bye.retry_after_ms),
        (ReasonCode::Shutdown, 2_345)
    );
    assert_eq!(
        bye.reason.text,
        "server shutting down; reconnect after 2s 345ms"
    );
    assert_eq!(code_of(last_sent(&sim, handshaking)), ReasonCode::Shutdown);
    assert!(matches!(last_sent(&sim, handshaking), Frame::Reject(_)));
    assert_eq!(
        dropped(&sim, joined).map(|(reason, _)| reason),
        Some(DropReason::Shutdown)
    );
}

#[test]
fn the_handshake_timer_does_not_fire_once_the_hello_is_in() {
    let mut sim = Sim::one_second();
    let mut config = sim.rules.config.clone();
    config.authenticate = true;
    sim.rules.config = config;
    sim.checker = Checker::Hold;
    let id = sim.join("alice");
    sim.advance(Duration::from_secs(11));
    assert!(sim.peers[id].sent.is_empty(), "{:?}", sim.peers[id].sent);
    assert!(sim.peers[id].machine.awaits_authentication());
    assert_eq!(sim.elapsed(), Duration::from_secs(11));
}
