//! Whole-run tests: determinism, and sanity checks that fail when the model
//! or the replay is wrong.

use std::time::Duration;

use lubdub_core::detector::{sigmas_for_phi, PhiConfig};

use super::report::PolicyResult;
use super::*;

const MS: Duration = Duration::from_millis(1);

/// Small enough for a debug build: 40 sessions of 10 minutes, 500 crashes
/// per policy.
fn small(model: NetworkModel) -> Simulation {
    Simulation {
        seed: 7,
        sessions: 40,
        duration: Duration::from_secs(600),
        crashes_per_session: 12,
        warm_up: Duration::from_secs(60),
        model,
        phi: PhiGuards::default(),
        threads: 2,
    }
}

fn result<'a>(report: &'a Report, policy: &str, parameter: f64) -> &'a PolicyResult {
    report
        .results
        .iter()
        .find(|r| r.policy == policy && r.parameter == parameter)
        .expect("every policy is in the report")
}

#[test]
fn the_same_seed_gives_the_same_report_whatever_the_threads() {
    let simulation = small(NetworkModel::default());
    let first = simulate(&simulation).expect("valid parameters");
    let again = simulate(&Simulation {
        threads: 3,
        ..simulation
    })
    .expect("valid parameters");
    assert_eq!(first, again);
    assert_eq!(
        serde_json::to_string(&first).expect("reports serialise"),
        serde_json::to_string(&again).expect("reports serialise")
    );
    assert_eq!(
        plot::svg(&first).expect("the plot draws"),
        plot::svg(&again).expect("the plot draws")
    );
    let other = simulate(&Simulation {
        seed: 8,
        ..simulation
    })
    .expect("valid parameters");
    assert_ne!(first.results, other.results, "the seed must matter");
}

#[test]
fn a_calm_network_never_drops_a_live_session_under_any_policy() {
    let report = simulate(&small(NetworkModel::calm(Duration::from_secs(1), 20 * MS)))
        .expect("valid parameters");
    assert_eq!(report.results.len(), 21);
    for r in &report.results {
        assert_eq!(r.false_positives, 0, "{} {}", r.policy, r.parameter);
    }
}

#[test]
fn every_crash_is_detected_within_the_ceiling_plus_the_last_delay() {
    let simulation = small(NetworkModel::default());
    let report = simulate(&simulation).expect("valid parameters");
    let crashes = u64::from(simulation.sessions * simulation.crashes_per_session);
    for r in &report.results {
        assert_eq!(r.undetected_crashes, 0, "{} {}", r.policy, r.parameter);
        assert_eq!(
            r.detections as u64 + r.skipped_crashes,
            crashes,
            "{} {}",
            r.policy,
            r.parameter
        );
        // The verdict comes at most `ceiling` after the last arrival, which
        // is at most a few retransmissions after the crash.
        let ceiling_ms = if r.policy == "counter" {
            r.parameter * 1000.0
        } else {
            5000.0
        };
        assert!(
            r.max_detection_ms < ceiling_ms + 5000.0,
            "{} {}: {}",
            r.policy,
            r.parameter,
            r.max_detection_ms
        );
    }
}

#[test]
fn on_a_calm_network_detection_times_follow_from_the_rules() {
    // PINGs every 800 ms arrive 20 ms later; a crash at a uniform instant
    // comes on average 400 − 20 ms after the last arrival.
    let report = simulate(&small(NetworkModel::calm(Duration::from_secs(1), 20 * MS)))
        .expect("valid parameters");
    for max_missed in 1..=5 {
        let r = result(&report, "counter", f64::from(max_missed));
        let expected = f64::from(max_missed) * 1000.0 - 380.0;
        // 480 uniform samples: the standard error is about 11 ms.
        assert!(
            (r.mean_detection_ms - expected).abs() < 45.0,
            "counter {max_missed}: {} vs {expected}",
            r.mean_detection_ms
        );
        assert!((r.at_ceiling_pct - 100.0).abs() < 1e-9);
    }
    for threshold in 1..=16 {
        let r = result(&report, "phi", f64::from(threshold));
        // σ sits on its 100 ms floor; dead after ping + pause + y × 100 ms.
        let pause_ms = PhiConfig::default().acceptable_pause.as_secs_f64() * 1000.0;
        let silence = 800.0 + pause_ms + sigmas_for_phi(f64::from(threshold)) * 100.0;
        let expected = silence - r.mean_silence_at_crash_ms;
        assert!(
            (r.mean_detection_ms - expected).abs() < 1.0,
            "phi {threshold}: {} vs {expected}",
            r.mean_detection_ms
        );
        assert_eq!(r.at_ceiling_pct, 0.0);
    }
}

#[test]
fn the_counter_judges_max_missed_intervals_after_the_last_arrival() {
    let report = simulate(&small(NetworkModel::default())).expect("valid parameters");
    for max_missed in 1..=5 {
        let r = result(&report, "counter", f64::from(max_missed));
        let expected = f64::from(max_missed) * 1000.0 - r.mean_silence_at_crash_ms;
        // Exact unless a PING in flight at the crash is delayed beyond the
        // deadline itself, which is rare.
        assert!(
            (r.mean_detection_ms - expected).abs() < 10.0,
            "counter {max_missed}: {} vs {expected}",
            r.mean_detection_ms
        );
    }
}

#[test]
fn no_phi_threshold_outlives_the_hard_ceiling() {
    // A minute of acceptable pause keeps phi low for far longer than the
    // 5-interval ceiling: every verdict is the ceiling's, like counter 5's.
    let simulation = Simulation {
        phi: PhiGuards {
            acceptable_pause: Duration::from_secs(60),
            ..PhiGuards::default()
        },
        ..small(NetworkModel::default())
    };
    let report = simulate(&simulation).expect("valid parameters");
    let counter = result(&report, "counter", 5.0);
    for threshold in [1.0, 8.0, 16.0] {
        let r = result(&report, "phi", threshold);
        assert_eq!(r.at_ceiling_pct, 100.0);
        assert!((r.mean_detection_ms - counter.mean_detection_ms).abs() < 1e-6);
        assert_eq!(r.false_positives, counter.false_positives);
    }
}

#[test]
fn noise_makes_aggressive_policies_pay() {
    let report = simulate(&small(NetworkModel::default())).expect("valid parameters");
    let eager = result(&report, "counter", 1.0);
    let patient = result(&report, "counter", 5.0);
    assert!(eager.false_positives > patient.false_positives);
    assert!(eager.mean_detection_ms < patient.mean_detection_ms);
}

#[test]
fn the_plot_is_an_svg_with_every_policy() {
    let report = simulate(&small(NetworkModel::default())).expect("valid parameters");
    let svg = plot::svg(&report).expect("the plot draws");
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    assert!(svg.contains("phi accrual (label: threshold)"));
    assert!(svg.contains("no false positive seen"));
    assert!(svg.matches("<circle").count() >= 16, "phi points");
    assert!(
        svg.matches("<rect").count() >= 5 + 2,
        "counter points, background, legend"
    );
}

#[test]
fn bad_parameters_are_refused_before_running() {
    let simulation = Simulation {
        warm_up: Duration::from_secs(600),
        ..small(NetworkModel::default())
    };
    assert!(matches!(
        simulate(&simulation),
        Err(SimulateError::Model(_))
    ));
    let simulation = Simulation {
        phi: PhiGuards {
            min_std_dev: Duration::ZERO,
            ..PhiGuards::default()
        },
        ..small(NetworkModel::default())
    };
    assert!(matches!(simulate(&simulation), Err(SimulateError::Phi(_))));
}
