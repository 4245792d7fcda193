//! The phi accrual policy over real sockets: it learns a session's rhythm,
//! convicts a silent session at its phi deadline (well before the counter's
//! ceiling) and shows its reasoning in `/sessions`.

mod common;

use std::time::{Duration, Instant};

use common::{fast_config, RawConn, TestServer, TOLERANCE};
use lubdub::core::detector::sigmas_for_phi;
use lubdub::core::protocol::{Frame, ReasonCode};
use lubdub::server::{DetectorPolicy, PresenceKind, ServerConfig, SessionState};

fn phi_config() -> ServerConfig {
    ServerConfig {
        detector: DetectorPolicy::Phi,
        phi_threshold: 8.0,
        phi_min_std_dev: Duration::from_millis(10),
        phi_acceptable_pause: Duration::ZERO,
        // Ceiling 10 × 100 ms: far beyond where phi convicts.
        max_missed: 10,
        ..fast_config()
    }
}

#[tokio::test]
async fn phi_learns_the_rhythm_and_convicts_a_silent_session_before_the_ceiling() {
    let mut server = TestServer::start(phi_config()).await;
    let (mut conn, welcome, _) = RawConn::join(server.addr, "steady", 100, true).await;
    assert_eq!(welcome.max_missed, 10);
    server.expect("steady", "joined").await;

    // Thirty pings, 80 ms apart (the protocol's ping period for a 100 ms
    // interval), each answered.
    let mut last_ping = Instant::now();
    for seq in 1..=30 {
        tokio::time::sleep_until((last_ping + Duration::from_millis(80)).into()).await;
        conn.send(&Frame::Ping { seq, rtt_us: 0 }).await;
        last_ping = Instant::now();
        assert_eq!(conn.next_frame().await, Some(Frame::Pong { seq }));
    }
    let listed = server.sessions().await;
    let steady = &listed[0];
    assert_eq!(steady.state, SessionState::Alive);
    let phi_now = steady.phi.expect("the phi detector reports phi");
    assert!(phi_now < 1.0, "just pinged, phi {phi_now}");
    assert!(
        (60.0..110.0).contains(&steady.mean_interarrival_ms),
        "mean gap {} ms",
        steady.mean_interarrival_ms
    );
    assert_eq!(steady.interval_ms, 100);
    assert_eq!(steady.last_change, "joined");

    // Silence. With σ at its 10 ms floor, phi reaches 4 about 80 + 3.6 × 10
    // ms and 8 about 80 + 5.2 × 10 ms after the last ping; measured jitter
    // can only widen σ, and the ceiling is 1 s.
    let suspect = server.expect("steady", "suspect").await;
    assert!(suspect.at - last_ping >= Duration::from_millis(80 + 36));
    let listed = server.sessions().await;
    if let Some(info) = listed.first() {
        assert_eq!(info.state, SessionState::Suspect);
        assert!(
            info.last_change.starts_with("suspect: phi"),
            "{}",
            info.last_change
        );
    }
    let dropped = server.expect("steady", "dropped").await;
    let PresenceKind::Dropped { silent_for, .. } = dropped.kind else {
        panic!("a timeout drop carries its silence: {dropped:?}");
    };
    let earliest = Duration::from_secs_f64(0.080 + sigmas_for_phi(8.0) * 0.010);
    assert!(
        silent_for >= earliest && silent_for < Duration::from_millis(500),
        "convicted after {silent_for:?}; phi 8 is not reached before {earliest:?} and should be well before the 1 s ceiling"
    );
    assert!(dropped.at - last_ping <= silent_for + TOLERANCE);
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => {
            assert_eq!(bye.reason.code, ReasonCode::Timeout);
            assert!(bye.reason.text.contains("phi"), "{}", bye.reason.text);
        }
        other => panic!("expected BYE timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn the_ceiling_holds_whatever_phi_says() {
    // A minute of acceptable pause would keep phi low; 5 × 100 ms still ends it.
    let config = ServerConfig {
        phi_acceptable_pause: Duration::from_secs(60),
        max_missed: 5,
        ..phi_config()
    };
    let mut server = TestServer::start(config).await;
    let (mut conn, _, hello_sent) = RawConn::join(server.addr, "quiet", 100, true).await;
    let dropped = server.expect("quiet", "dropped").await;
    let after = dropped.at - hello_sent;
    assert!(
        after >= Duration::from_millis(500) && after <= Duration::from_millis(500) + TOLERANCE,
        "dropped after {after:?}"
    );
    match conn.next_frame().await {
        Some(Frame::Bye(bye)) => assert!(
            bye.reason.text.contains("5 × the 100ms interval"),
            "{}",
            bye.reason.text
        ),
        other => panic!("expected BYE timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bad_phi_configuration_is_refused_at_start() {
    let config = ServerConfig {
        phi_threshold: -1.0,
        ..phi_config()
    };
    let error = lubdub::server::start(
        config,
        std::sync::Arc::new(lubdub::server::InMemoryRegistry::new()),
    )
    .expect_err("a negative threshold cannot work");
    assert!(error.to_string().contains("phi threshold"), "{error}");
}
