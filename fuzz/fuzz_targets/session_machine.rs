//! Fuzz target `session_machine`: the server's real connection machine
//! (`lubdub_core::connection::Connection`), driven as the server's loop
//! drives it (`lubdub_fuzz::machine`), under a configuration and a
//! sequence of timed reads chosen by the input
//! (`lubdub_fuzz::inputs::SessionInput`).
//!
//! Checks invariants, not only the absence of panics:
//! - nothing is acted on after a violation, a BYE or a decode error;
//! - HELLO is admitted at most once and only as the first frame; no other
//!   frame is admitted before it; each frame gets the verdict the protocol's
//!   table gives its kind and phase;
//! - the frames judged are exactly those the whole byte stream decodes to,
//!   however it was cut into reads;
//! - PINGs admitted never exceed `ping_burst + elapsed / (interval /
//!   pings_per_interval) + 1`, MSGs never `burst + elapsed × rate + 1`;
//! - a PING flood ends in `too_many_pings` once `ping_strikes` strikes
//!   (refusals at least one allowed spacing apart) are reached, and not
//!   before; a warning NOTICE comes exactly with the first refusal of a run;
//!   a run of refused MSGs gets its NOTICE exactly with its first refusal.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_core::protocol::frame::{MAX_WILL_BODY, MAX_WILL_DELAY_MS};
use lubdub_core::protocol::handshake::validate_name;
use lubdub_core::protocol::status::validate_status;
use lubdub_core::protocol::rooms::{is_room, validate_room, WatchMode};
use lubdub_core::protocol::{Frame, ReasonCode};
use lubdub_core::rate::Gcra;
use lubdub_core::session::{Inbound, Phase};
use lubdub_fuzz::inputs::SessionInput;
use lubdub_fuzz::machine::{Connection, Ending, Fed, Inbox, Outcome};

const NANOS_PER_MICRO: u128 = 1_000;

fuzz_target!(|input: SessionInput<'_>| {
    let config = input.config;
    let limits = config.limits();
    let mut connection = Connection::new(config.max_frame_len(), config.policy(), limits);
    let mut outcomes = Vec::new();
    let mut stream = Vec::new();
    let mut now_us = 0u64;
    for step in &input.steps {
        now_us += u64::from(step.advance_us);
        let ended_before = connection.ending().is_some();
        let judged_before = outcomes.len();
        connection.receive(step.chunk, now_us, &mut outcomes);
        if ended_before {
            assert_eq!(outcomes.len(), judged_before, "acted on after the end");
        } else {
            stream.extend_from_slice(step.chunk);
        }
    }

    check_stream(&connection, &outcomes, &stream, config.max_frame_len());
    check_ending(&connection, &outcomes);
    check_handshake(&outcomes);
    check_rates(&connection, &outcomes, &input);
});

/// The frames judged are the frames the whole stream decodes to, up to the
/// end of the connection.
fn check_stream(connection: &Connection, outcomes: &[Outcome], stream: &[u8], max: usize) {
    let mut inbox = Inbox::new(max);
    let mut frames = Vec::new();
    let fed = inbox.feed(stream, |frame| {
        frames.push(frame);
        true
    });
    let judged: Vec<&Frame> = outcomes.iter().map(|outcome| &outcome.frame).collect();
    match connection.ending() {
        Some(Ending::Decode(error)) => {
            assert_eq!(fed, Fed::Failed(error.clone()));
            assert_eq!(judged, frames.iter().collect::<Vec<_>>());
        }
        Some(Ending::Violation(_) | Ending::Bye) => {
            assert!(judged.len() <= frames.len());
            assert_eq!(judged, frames.iter().take(judged.len()).collect::<Vec<_>>());
        }
        None => {
            assert_eq!(fed, Fed::Waiting);
            assert_eq!(judged, frames.iter().collect::<Vec<_>>());
            assert_eq!(connection.partial_len(), inbox.partial_len());
        }
    }
}

/// A violation or a BYE is the last frame judged, and the connection's
/// ending says which.
fn check_ending(connection: &Connection, outcomes: &[Outcome]) {
    let ends = |outcome: &Outcome| matches!(outcome.verdict, Err(_) | Ok(Inbound::Bye(_)));
    if let Some(position) = outcomes.iter().position(ends) {
        assert_eq!(position, outcomes.len() - 1, "judged after the end");
    }
    match (
        outcomes.last().map(|outcome| &outcome.verdict),
        connection.ending(),
    ) {
        (Some(Err(violation)), ending) => {
            assert_eq!(ending, Some(&Ending::Violation(violation.clone())));
        }
        (Some(Ok(Inbound::Bye(_))), ending) => assert_eq!(ending, Some(&Ending::Bye)),
        (_, None | Some(Ending::Decode(_))) => {}
        (last, ending) => panic!("ended by {ending:?} after {last:?}"),
    }
}

/// HELLO first and once; every frame gets its kind's verdict at its phase.
fn check_handshake(outcomes: &[Outcome]) {
    for (index, outcome) in outcomes.iter().enumerate() {
        let first = index == 0;
        let expected_phase = if first {
            Phase::AwaitingHello
        } else {
            Phase::Established
        };
        assert_eq!(outcome.phase, expected_phase, "frame {index}");
        let code = outcome
            .verdict
            .as_ref()
            .err()
            .map(|violation| violation.code);
        match (&outcome.frame, &outcome.verdict) {
            (Frame::Hello(hello), Ok(Inbound::Hello(admitted))) => {
                assert!(first, "HELLO admitted as frame {index}");
                assert_eq!(hello, admitted);
                assert!(validate_name(&hello.name).is_ok());
            }
            (_, Ok(Inbound::Hello(_))) => panic!("a non-HELLO admitted as HELLO"),
            (Frame::Hello(hello), Err(_)) if first => {
                if validate_name(&hello.name).is_err() {
                    assert_eq!(code, Some(ReasonCode::InvalidName));
                } else {
                    assert_eq!(code, Some(ReasonCode::InvalidStatus));
                    let status = hello.status.as_deref().expect("a status");
                    assert!(validate_status(status).is_err());
                }
            }
            (_, _) if first => assert_eq!(code, Some(ReasonCode::HelloRequired)),
            (Frame::Hello(_), _) => assert_eq!(code, Some(ReasonCode::DuplicateHello)),
            (Frame::Ping { seq, rtt_us }, verdict) => match verdict {
                Ok(Inbound::Ping {
                    seq: admitted_seq,
                    rtt_us: admitted_rtt,
                }) => assert_eq!((seq, rtt_us), (admitted_seq, admitted_rtt)),
                Ok(Inbound::Refused {
                    code: ReasonCode::TooManyPings,
                    ..
                }) => {}
                Err(violation) => assert_eq!(violation.code, ReasonCode::TooManyPings),
                other => panic!("PING judged {other:?}"),
            },
            (Frame::Msg(message), verdict) => match verdict {
                Ok(Inbound::Message(admitted)) => assert_eq!(message, admitted),
                Ok(Inbound::Refused {
                    code: ReasonCode::RateLimited,
                    ..
                }) => {}
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidRoom,
                    ..
                }) => assert!(is_room(&message.to) && validate_room(&message.to).is_err()),
                Err(violation) => {
                    assert_eq!(violation.code, ReasonCode::InvalidName);
                    assert!(validate_name(&message.to).is_err() && !message.to.is_empty());
                    assert!(!is_room(&message.to));
                }
                other => panic!("MSG judged {other:?}"),
            },
            (Frame::Bye(bye), verdict) => assert_eq!(verdict, &Ok(Inbound::Bye(bye.clone()))),
            (Frame::Status { text }, verdict) => match verdict {
                Ok(Inbound::Status(admitted)) => {
                    assert_eq!(text, admitted);
                    assert!(validate_status(text).is_ok());
                }
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidStatus,
                    ..
                }) => assert!(validate_status(text).is_err()),
                Ok(Inbound::Refused {
                    code: ReasonCode::RateLimited,
                    ..
                }) => assert!(validate_status(text).is_ok()),
                Err(violation) => assert_eq!(violation.code, ReasonCode::RateLimited),
                other => panic!("STATUS judged {other:?}"),
            },
            (Frame::Will(will), verdict) => match verdict {
                Ok(Inbound::Will(admitted)) => {
                    assert_eq!(will, admitted);
                    assert!(
                        will.to.is_empty()
                            || validate_name(&will.to).is_ok()
                            || validate_room(&will.to).is_ok()
                    );
                    assert!(will.body.len() <= MAX_WILL_BODY && will.delay_ms <= MAX_WILL_DELAY_MS);
                }
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidWill | ReasonCode::RateLimited,
                    ..
                }) => {}
                Err(violation) => assert_eq!(violation.code, ReasonCode::RateLimited),
                other => panic!("WILL judged {other:?}"),
            },
            (Frame::Join { room } | Frame::Leave { room }, verdict) => match verdict {
                Ok(Inbound::Join(admitted) | Inbound::Leave(admitted)) => {
                    assert_eq!(room, admitted);
                    assert!(validate_room(room).is_ok());
                }
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidRoom,
                    ..
                }) => assert!(validate_room(room).is_err()),
                Ok(Inbound::Refused {
                    code: ReasonCode::RateLimited | ReasonCode::TooManyRooms,
                    ..
                }) => assert!(validate_room(room).is_ok()),
                Err(violation) => assert_eq!(violation.code, ReasonCode::RateLimited),
                other => panic!("JOIN or LEAVE judged {other:?}"),
            },
            (Frame::Watch(watch), verdict) => match verdict {
                Ok(Inbound::Watch { mode, target }) => {
                    assert_eq!((*mode as u8, target), (watch.mode, &watch.target));
                    let valid = if is_room(target) {
                        validate_room(target).is_ok()
                    } else {
                        validate_name(target).is_ok() && *mode != WatchMode::Count
                    };
                    assert!(valid, "WATCH of an invalid target admitted");
                }
                Ok(Inbound::Refused {
                    code: ReasonCode::InvalidWatch | ReasonCode::RateLimited | ReasonCode::TooManyWatches,
                    ..
                }) => {}
                Err(violation) => assert_eq!(violation.code, ReasonCode::RateLimited),
                other => panic!("WATCH judged {other:?}"),
            },
            (_, _) => assert_eq!(code, Some(ReasonCode::UnexpectedFrame)),
        }
    }
}

/// The PING and MSG rates, the strikes and the notices.
///
/// Strikes (since e8dd4fb): a refused PING is a strike when it comes at
/// least one allowed spacing after the last strike, the first strike of a
/// run warns with a NOTICE, and a run ends when an admitted PING finds the
/// flow at rest. The core keeps strike times in whole milliseconds, so the
/// check brackets it: greedy strikes at `max(spacing, 1 ms)` apart are
/// certain strikes (the flood must end once they reach the limit), greedy
/// strikes at `spacing - 2 ms` apart are every possible strike (the session
/// must not end before they reach it).
///
/// A flood is forgiven only as `Conduct` documents it: "a flow with no debt
/// left [that] kept to the rate since its last refusal", so the certain
/// strikes and the one-warning-per-flood rule restart only when the
/// admitted PING also comes at least one spacing after the last refusal,
/// whatever rule `Conduct` uses to get there (the run of the exact notice
/// check follows that rule: at rest, no refusal since the last answered
/// PING).
fn check_rates(connection: &Connection, outcomes: &[Outcome], input: &SessionInput<'_>) {
    let Some(established_at) = outcomes
        .first()
        .filter(|outcome| matches!(outcome.verdict, Ok(Inbound::Hello(_))))
        .map(|outcome| outcome.now_us)
    else {
        return;
    };
    let config = input.config;
    let limits = config.limits();
    let interval = match connection.granted_interval() {
        Some(interval) => interval,
        // Ended after the handshake: grant again from the HELLO, as the
        // connection did.
        None => {
            let Frame::Hello(hello) = &outcomes[0].frame else {
                unreachable!("admitted as HELLO");
            };
            whole_millis(config.policy().grant(hello.requested_interval_ms))
        }
    };
    let interval_ns = interval.as_nanos();
    let ping_rate = limits.ping_rate(interval);
    let strike_limit = u32::from(limits.ping_strikes.max(1));
    let certain_gap_us = ping_rate.spacing_us.max(1_000);
    let possible_gap_us = ping_rate.spacing_us.saturating_sub(2_000);

    // The PING flow as the core's limiter sees it, to know when a run ends.
    let mut flow = Gcra::new();
    let mut certain = Strikes::default();
    let mut possible = Strikes::default();
    let mut refused_in_run = 0u32;
    let mut last_refusal_us: Option<u64> = None;
    let mut refused_since_answered = false;
    let mut warnings_in_flood = 0u32;
    let mut pings_admitted = 0u128;
    let mut messages_admitted = 0u128;
    let mut messages_refused_in_a_row = 0u32;
    // The read whose relayed MSG ends the run of refusals once its outputs
    // are carried out, that is, from the next read on.
    let mut delivered_in_read: Option<usize> = None;
    for outcome in &outcomes[1..] {
        let now_us = outcome.now_us;
        if delivered_in_read.is_some_and(|read| outcome.read > read) {
            messages_refused_in_a_row = 0;
            delivered_in_read = None;
        }
        let elapsed_us = u128::from(now_us - established_at);
        if matches!(outcome.frame, Frame::Ping { .. }) {
            // Conduct's rule: at rest, and no refusal since the last
            // answered PING.
            let rested = flow.is_idle(now_us) && !refused_since_answered;
            let allowed = flow.allow(now_us, ping_rate);
            let admitted = matches!(outcome.verdict, Ok(Inbound::Ping { .. }));
            assert_eq!(allowed, admitted, "strikes changed the rate: {outcome:?}");
            refused_since_answered = !admitted;
            if admitted && rested {
                possible = Strikes::default();
                refused_in_run = 0;
                let kept_to_the_rate = last_refusal_us
                    .is_none_or(|refused_us| now_us - refused_us >= ping_rate.spacing_us);
                if kept_to_the_rate {
                    certain = Strikes::default();
                    warnings_in_flood = 0;
                }
            } else if !admitted {
                certain.refused(now_us, certain_gap_us);
                possible.refused(now_us, possible_gap_us);
                refused_in_run += 1;
                last_refusal_us = Some(now_us);
            }
        }
        match &outcome.verdict {
            Ok(Inbound::Ping { .. }) => {
                pings_admitted += 1;
                if limits.pings_per_interval > 0 {
                    let steady =
                        elapsed_us * NANOS_PER_MICRO * u128::from(limits.pings_per_interval)
                            / interval_ns;
                    let bound = u128::from(limits.ping_burst.max(1)) + steady + 1;
                    assert!(
                        pings_admitted <= bound,
                        "{pings_admitted} PINGs admitted in {elapsed_us} µs, bound {bound} \
                         (interval {interval:?}, {} per interval, burst {})",
                        limits.pings_per_interval,
                        limits.ping_burst
                    );
                }
            }
            Ok(Inbound::Refused {
                code: ReasonCode::TooManyPings,
                notice,
            }) => {
                assert!(limits.pings_per_interval > 0, "unlimited PINGs refused");
                assert!(
                    certain.count < strike_limit,
                    "flood not ended: {} strikes {certain_gap_us} µs apart, limit {strike_limit}",
                    certain.count
                );
                assert_eq!(
                    notice.is_some(),
                    refused_in_run == 1,
                    "one warning per run, with its first refusal"
                );
                warnings_in_flood += u32::from(notice.is_some());
                assert!(
                    warnings_in_flood <= 1,
                    "{warnings_in_flood} warnings in one flood (never {} µs without a refusal)",
                    ping_rate.spacing_us
                );
            }
            Err(violation) if violation.code == ReasonCode::TooManyPings => {
                assert!(limits.pings_per_interval > 0, "unlimited PINGs ended");
                assert!(
                    possible.count >= strike_limit,
                    "ended after {} possible strikes ({possible_gap_us} µs apart), limit \
                     {strike_limit}",
                    possible.count
                );
            }
            // A status change counts against the message rate.
            Ok(Inbound::Message(_) | Inbound::Status(_) | Inbound::Will(_)) => {
                messages_admitted += 1;
                // A run of refusals ends with a MSG delivered (after its
                // read); one admitted by the rates but too large to relay is not.
                if outcome.relayed {
                    delivered_in_read = Some(outcome.read);
                }
                if config.messages_per_second > 0 {
                    let steady = elapsed_us * u128::from(config.messages_per_second) / 1_000_000;
                    let bound = u128::from(config.message_burst.max(1)) + steady + 1;
                    assert!(
                        messages_admitted <= bound,
                        "{messages_admitted} MSGs admitted in {elapsed_us} µs, bound {bound} \
                         ({} a second, burst {})",
                        config.messages_per_second,
                        config.message_burst
                    );
                }
            }
            Ok(Inbound::Refused {
                code: ReasonCode::RateLimited,
                notice,
            }) => {
                assert!(config.messages_per_second > 0, "unlimited MSGs refused");
                messages_refused_in_a_row += 1;
                assert_eq!(
                    notice.is_some(),
                    messages_refused_in_a_row == 1,
                    "one NOTICE per run of refused MSGs, with its first refusal"
                );
            }
            _ => {}
        }
    }
}

/// A granted interval as a session keeps it: whole milliseconds,
/// saturating (WELCOME carries it so).
fn whole_millis(granted: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_millis(u64::from(
        u32::try_from(granted.as_millis()).unwrap_or(u32::MAX),
    ))
}

/// Strikes counted greedily: a refusal is one when it is the run's first or
/// comes at least `gap_us` after the last one counted.
#[derive(Debug, Default)]
struct Strikes {
    count: u32,
    last_us: u64,
}

impl Strikes {
    fn refused(&mut self, now_us: u64, gap_us: u64) {
        if self.count == 0 || now_us - self.last_us >= gap_us {
            self.count += 1;
            self.last_us = now_us;
        }
    }
}
