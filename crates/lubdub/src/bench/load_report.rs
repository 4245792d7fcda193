//! The report of a hold, pump or stall run: what was asked, what the
//! generator saw, what the server cost, and the derived per-session and
//! per-heartbeat figures; as text and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::dialect::Dialect;
use super::fleet::{LoadConfig, LoadScenario};
use super::process_stats::ProcessSample;
use super::worker::{histogram_from_pairs, Tally, WindowCounts, WorkerConfig};

/// What a run measured, handed from the coordinator to [`LoadReport::build`].
#[derive(Debug, Clone)]
pub struct Measured {
    /// Sessions opened.
    pub established: usize,
    /// Sessions given up on.
    pub handshake_failed: usize,
    /// Why, by message (per worker; merged here).
    pub handshake_errors: Vec<Tally>,
    /// First connect to last handshake outcome.
    pub connect_time: Duration,
    /// Length of the measured window.
    pub window_time: Duration,
    /// How long the server was actually stopped, in a stall run.
    pub stopped_for: Option<Duration>,
    /// Each worker's window counters.
    pub windows: Vec<WindowCounts>,
    /// The server before the first connect.
    pub server_before: Option<ProcessSample>,
    /// The server when the window began.
    pub server_window_start: Option<ProcessSample>,
    /// The server when the window ended.
    pub server_window_end: Option<ProcessSample>,
}

/// The run's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSettings {
    /// hold, pump or stall.
    pub scenario: LoadScenario,
    /// lubdub or mqtt.
    pub dialect: Dialect,
    /// Server address.
    pub server: String,
    /// Sessions asked for.
    pub sessions: usize,
    /// Heartbeat period, ms.
    pub period_ms: u64,
    /// Whether every heartbeat asked for an acknowledgement.
    pub acks: bool,
    /// Warm-up before the window, s.
    pub warmup_s: f64,
    /// Worker processes used.
    pub workers: usize,
    /// Their source addresses (`default` when left to the kernel).
    pub sources: Vec<String>,
    /// The server's pid, when its costs were read.
    pub server_pid: Option<u32>,
}

/// The server's costs, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerCost {
    /// Resident memory before the first connect, KiB.
    pub rss_before_kib: f64,
    /// Resident memory at the end of the window, KiB.
    pub rss_after_kib: f64,
    /// Growth over the sessions held, bytes per session.
    pub rss_per_session_bytes: f64,
    /// CPU time used during the window, s.
    pub cpu_s: f64,
    /// That as a share of one core, %.
    pub cpu_percent_of_core: f64,
    /// CPU time per acknowledged heartbeat, µs.
    pub cpu_us_per_heartbeat: Option<f64>,
}

/// Round trips (heartbeat written to acknowledgement read), ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoundTrips {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// The result of a hold, pump or stall run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// What was asked.
    pub settings: LoadSettings,
    /// Sessions open after connecting.
    pub established: usize,
    /// Sessions whose handshake failed.
    pub handshake_failed: usize,
    /// Why, by message.
    pub handshake_errors: Vec<Tally>,
    /// Connect phase, s.
    pub connect_s: f64,
    /// Measured window, s.
    pub window_s: f64,
    /// Server stopped for, s (stall scenario).
    pub stopped_s: Option<f64>,
    /// Heartbeats written in the window.
    pub heartbeats_sent: u64,
    /// Heartbeats acknowledged in the window.
    pub heartbeats_acked: u64,
    /// Acknowledged per second.
    pub acked_per_s: f64,
    /// Round trips of heartbeats answered in the window.
    pub round_trip: Option<RoundTrips>,
    /// Sessions that ended during the window (the server closed them, or
    /// they failed): evictions, in the stall scenario.
    pub sessions_ended: usize,
    /// How, by message.
    pub endings: Vec<Tally>,
    /// Sessions still open at the end of the window.
    pub sessions_open: usize,
    /// The server's costs, when `--server-pid` was given.
    pub server: Option<ServerCost>,
}

impl LoadReport {
    /// Derives the report from what the coordinator measured.
    pub fn build(config: &LoadConfig, plan: &[WorkerConfig], measured: Measured) -> Self {
        let window_s = measured.window_time.as_secs_f64();
        let heartbeats_sent = measured.windows.iter().map(|w| w.heartbeats_sent).sum();
        let heartbeats_acked: u64 = measured.windows.iter().map(|w| w.heartbeats_acked).sum();
        let histogram = histogram_from_pairs(measured.windows.iter().flat_map(|w| w.rtt_us.iter()));
        let ms = |us: u64| us as f64 / 1000.0;
        let round_trip = (!histogram.is_empty()).then(|| RoundTrips {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        });
        let server = match (
            measured.server_before,
            measured.server_window_start,
            measured.server_window_end,
        ) {
            (Some(before), Some(start), Some(end)) => {
                let cpu = end.cpu.saturating_sub(start.cpu);
                let held = measured.established.max(1) as f64;
                Some(ServerCost {
                    rss_before_kib: before.rss_bytes as f64 / 1024.0,
                    rss_after_kib: end.rss_bytes as f64 / 1024.0,
                    rss_per_session_bytes: (end.rss_bytes as f64 - before.rss_bytes as f64) / held,
                    cpu_s: cpu.as_secs_f64(),
                    cpu_percent_of_core: 100.0 * cpu.as_secs_f64()
                        / end.at.duration_since(start.at).as_secs_f64().max(1e-9),
                    cpu_us_per_heartbeat: (heartbeats_acked > 0)
                        .then(|| cpu.as_secs_f64() * 1e6 / heartbeats_acked as f64),
                })
            }
            _ => None,
        };
        Self {
            settings: LoadSettings {
                scenario: config.scenario,
                dialect: config.dialect,
                server: config.server.to_string(),
                sessions: config.sessions,
                period_ms: u64::try_from(config.period.as_millis()).unwrap_or(u64::MAX),
                acks: config.acks,
                warmup_s: config.warmup.as_secs_f64(),
                workers: plan.len(),
                sources: plan
                    .iter()
                    .map(|worker| {
                        worker
                            .source
                            .map_or_else(|| "default".to_owned(), |ip| ip.to_string())
                    })
                    .collect(),
                server_pid: config.server_pid,
            },
            established: measured.established,
            handshake_failed: measured.handshake_failed,
            handshake_errors: merge(measured.handshake_errors),
            connect_s: measured.connect_time.as_secs_f64(),
            window_s,
            stopped_s: measured.stopped_for.map(|d| d.as_secs_f64()),
            heartbeats_sent,
            heartbeats_acked,
            acked_per_s: heartbeats_acked as f64 / window_s.max(1e-9),
            round_trip,
            sessions_ended: measured.windows.iter().map(|w| w.sessions_ended).sum(),
            endings: merge(
                measured
                    .windows
                    .iter()
                    .flat_map(|w| w.endings.iter().cloned())
                    .collect(),
            ),
            sessions_open: measured.windows.iter().map(|w| w.sessions_open).sum(),
            server,
        }
    }

    /// A short human-readable summary.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:?} scenario, {:?} protocol, against {}: {} sessions, a{} heartbeat every {} ms, \
             from {} worker process(es) ({})",
            s.scenario,
            s.dialect,
            s.server,
            s.sessions,
            if s.acks { "n acknowledged" } else { " one-way" },
            s.period_ms,
            s.workers,
            s.sources.join(", ")
        );
        let _ = writeln!(
            out,
            "connections held:       {} ({} handshake errors) after {:.1} s",
            self.established, self.handshake_failed, self.connect_s
        );
        for tally in &self.handshake_errors {
            let _ = writeln!(out, "  {} × {}", tally.count, tally.what);
        }
        let _ = writeln!(
            out,
            "window:                 {:.1} s{}",
            self.window_s,
            self.stopped_s
                .map(|stopped| format!(", server stopped for {stopped:.2} s of it"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "heartbeats acked:       {} of {} sent ({:.0}/s)",
            self.heartbeats_acked, self.heartbeats_sent, self.acked_per_s
        );
        if let Some(rtt) = self.round_trip {
            let _ = writeln!(
                out,
                "round trip:             p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
                rtt.p50_ms, rtt.p99_ms, rtt.max_ms
            );
        }
        let _ = writeln!(
            out,
            "sessions ended by the server in the window: {} ({} still open)",
            self.sessions_ended, self.sessions_open
        );
        for tally in &self.endings {
            let _ = writeln!(out, "  {} × {}", tally.count, tally.what);
        }
        match self.server {
            Some(cost) => {
                let _ = writeln!(
                    out,
                    "server memory:          {:.0} KiB before, {:.0} KiB after: {:.0} bytes ({:.3} KiB) per session",
                    cost.rss_before_kib,
                    cost.rss_after_kib,
                    cost.rss_per_session_bytes,
                    cost.rss_per_session_bytes / 1024.0
                );
                let _ = writeln!(
                    out,
                    "server CPU:             {:.3} s in the window ({:.2} % of one core){}",
                    cost.cpu_s,
                    cost.cpu_percent_of_core,
                    cost.cpu_us_per_heartbeat
                        .map(|us| format!(", {us:.2} µs per heartbeat"))
                        .unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "server costs:           not measured (give --server-pid)"
                );
            }
        }
        out
    }
}

/// Sums tallies of the same message from several workers, ordered as
/// each worker orders its own.
fn merge(tallies: Vec<Tally>) -> Vec<Tally> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for tally in tallies {
        *counts.entry(tally.what).or_default() += tally.count;
    }
    super::worker::tallies(&counts)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};
    use std::path::PathBuf;
    use std::time::Instant;

    use super::*;

    #[test]
    fn per_session_and_per_heartbeat_costs_are_derived_from_the_samples() {
        let config = LoadConfig {
            scenario: LoadScenario::Pump,
            server: SocketAddr::from(([127, 0, 0, 1], 7070)),
            dialect: Dialect::Mqtt,
            sessions: 1000,
            period: Duration::from_millis(100),
            acks: true,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(10),
            stall: None,
            server_pid: Some(42),
            sessions_per_worker: 10_000,
            source_base: Some(Ipv4Addr::new(127, 0, 0, 2)),
            connect_concurrency: 100,
            handshake_timeout: Duration::from_secs(5),
            connect_attempts: 3,
            worker_program: PathBuf::from("lubdub"),
            name_prefix: "b".to_owned(),
        };
        let t0 = Instant::now();
        let sample = |after_s: u64, rss_kib: u64, cpu_ms: u64| ProcessSample {
            at: t0 + Duration::from_secs(after_s),
            rss_bytes: rss_kib * 1024,
            cpu: Duration::from_millis(cpu_ms),
        };
        let window = |acked: u64, rtt: Vec<(u64, u64)>| WindowCounts {
            heartbeats_sent: acked,
            heartbeats_acked: acked,
            rtt_us: rtt,
            sessions_open: 500,
            ..WindowCounts::default()
        };
        let report = LoadReport::build(
            &config,
            &[],
            Measured {
                established: 1000,
                handshake_failed: 0,
                handshake_errors: vec![],
                connect_time: Duration::from_secs(1),
                window_time: Duration::from_secs(10),
                stopped_for: None,
                windows: vec![
                    window(50_000, vec![(100, 99)]),
                    window(50_000, vec![(900, 1)]),
                ],
                server_before: Some(sample(0, 2000, 0)),
                server_window_start: Some(sample(2, 2500, 100)),
                server_window_end: Some(sample(12, 2500, 300)),
            },
        );
        let cost = report.server.expect("samples given");
        assert_eq!(cost.rss_per_session_bytes, 512.0);
        assert!((cost.cpu_us_per_heartbeat.expect("acks") - 2.0).abs() < 1e-9);
        assert!((cost.cpu_percent_of_core - 2.0).abs() < 1e-9);
        assert_eq!(report.acked_per_s, 10_000.0);
        assert_eq!(report.sessions_open, 1000);
        let rtt = report.round_trip.expect("rtts");
        assert!(
            (rtt.p50_ms - 0.1).abs() < 0.001 && (rtt.max_ms - 0.9).abs() < 0.001,
            "{rtt:?}"
        );
        assert!(
            report.to_text().contains("512 bytes"),
            "{}",
            report.to_text()
        );
        // `lubdub bench plot` reads the reports back from `--json`.
        let json = serde_json::to_string(&report).expect("encodes");
        assert_eq!(
            serde_json::from_str::<LoadReport>(&json).expect("decodes"),
            report
        );
    }

    #[test]
    fn tallies_from_workers_are_merged() {
        let tally = |what: &str, count| Tally {
            what: what.to_owned(),
            count,
        };
        let merged = merge(vec![tally("a", 1), tally("b", 5), tally("a", 6)]);
        assert_eq!(merged, vec![tally("a", 7), tally("b", 5)]);
    }
}
