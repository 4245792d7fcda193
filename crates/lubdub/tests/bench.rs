//! `lubdub bench silence` in-process against a real server: every silent
//! session is dropped, none before its deadline, and the report's counts add
//! up. No timing bound is asserted here; the p99 figure is the benchmark's
//! business (BENCHMARKS.md), not the tests', on a shared 2-core machine.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fast_config;
use lubdub::bench::{silence, BenchError, SilenceConfig, SilenceReport};
use lubdub::server::{self, InMemoryRegistry};

const SESSIONS: usize = 50;

async fn run_against_a_fresh_server(synchronized: bool) -> SilenceReport {
    let handle =
        server::start(fast_config(), Arc::new(InMemoryRegistry::new())).expect("server starts");
    let config = SilenceConfig {
        server: handle.local_addr(),
        sessions: SESSIONS,
        interval: Duration::from_millis(100),
        warmup: Some(Duration::from_millis(300)),
        synchronized,
        grace: Duration::from_secs(2),
        ..SilenceConfig::default()
    };
    let mut stages = Vec::new();
    let report = silence::run(&config, |stage| stages.push(stage))
        .await
        .expect("the scenario runs");
    assert_eq!(
        stages.len(),
        3,
        "connecting, warming up, silent: {stages:?}"
    );
    tokio::task::spawn_blocking(move || handle.stop())
        .await
        .expect("join")
        .expect("the server stops cleanly");
    report
}

fn assert_every_session_dropped_on_time(report: &SilenceReport) {
    let c = report.counts;
    let text = report.to_text();
    assert!(c.add_up(), "{text}");
    assert_eq!(c.requested, SESSIONS, "{text}");
    assert_eq!(c.silent, SESSIONS, "every session measured: {text}");
    assert_eq!(
        c.dropped_by_timeout, SESSIONS,
        "every drop a BYE timeout: {text}"
    );
    assert_eq!(c.never_dropped, 0, "{text}");
    assert_eq!(c.dropped_before_deadline, 0, "{text}");
    let error = report.error.expect("drops were measured");
    assert!(error.min_ms >= 0.0, "{text}");
    assert_eq!(report.settings.deadline_ms, Some(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_silent_session_is_dropped_and_none_before_its_deadline() {
    let report = run_against_a_fresh_server(false).await;
    assert_every_session_dropped_on_time(&report);
    assert!(!report.settings.synchronized);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronized_last_pings_are_measured_the_same_way() {
    let report = run_against_a_fresh_server(true).await;
    assert_every_session_dropped_on_time(&report);
    let spread = report.last_ping_spread_ms.expect("sessions were silent");
    assert!(
        spread < 80.0,
        "the last PINGs were sent together, not over a ping period: {spread} ms"
    );
}

#[tokio::test]
async fn more_sessions_than_open_files_are_refused_before_connecting() {
    let config = SilenceConfig {
        // Nothing listens here; the refusal must come before any connect.
        server: "127.0.0.1:9".parse().expect("valid address"),
        sessions: 100_000_000,
        ..SilenceConfig::default()
    };
    match silence::run(&config, |_| {}).await {
        Err(BenchError::TooManySessions {
            requested,
            capacity,
            ..
        }) => {
            assert_eq!(requested, 100_000_000);
            assert!(capacity < 100_000_000);
        }
        other => panic!("expected TooManySessions, got {other:?}"),
    }
}
