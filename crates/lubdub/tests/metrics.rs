//! `GET /metrics` over real HTTP: the Prometheus text exposition reflects
//! heartbeats, round trips, drops by reason, detection delays and sessions
//! by state.

mod common;

use common::{fast_config, RawConn, TestServer};
use lubdub::core::protocol::Frame;

/// The value of the sample line that starts with `name` (labels included).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name) && line[name.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_heartbeats_round_trips_drops_and_sessions() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    for seq in 1..=3 {
        alice.send(&Frame::Ping { seq, rtt_us: 1500 }).await;
        assert_eq!(alice.next_frame().await, Some(Frame::Pong { seq }));
    }
    // A session that stays silent until its deadline (5 × 100 ms).
    let (_quiet, _, _) = RawConn::join(server.addr, "quiet", 100, true).await;
    server.expect("quiet", "dropped").await;

    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF:\n{text}"
    );
    // Three PINGs from alice (its HELLO is not counted: it is not yet a session).
    assert_eq!(sample(&text, "lubdub_heartbeats_received_total"), 3.0);
    assert_eq!(sample(&text, "lubdub_round_trip_seconds_count"), 3.0);
    assert!((sample(&text, "lubdub_round_trip_seconds_sum") - 0.0045).abs() < 1e-9);
    assert_eq!(
        sample(&text, "lubdub_sessions_dropped_total{reason=\"timeout\"}"),
        1.0
    );
    assert_eq!(sample(&text, "lubdub_detection_delay_seconds_count"), 1.0);
    // Judged within a second of its deadline (the precise bound is the benchmark's).
    assert!(sample(&text, "lubdub_detection_delay_seconds_sum") < 1.0);
    assert_eq!(sample(&text, "lubdub_sessions{state=\"alive\"}"), 1.0);
    assert_eq!(sample(&text, "lubdub_sessions{state=\"suspect\"}"), 0.0);
}
