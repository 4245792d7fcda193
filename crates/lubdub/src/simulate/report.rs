//! Turns per-policy tallies into the numbers people read: a markdown table
//! and a serialisable report for `--json`.

use serde::Serialize;

use super::policy::Policy;
use super::run::{Simulation, Tally};

/// The result of a run, with the parameters that produced it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// What was simulated.
    pub parameters: Parameters,
    /// One row per policy, counters first.
    pub results: Vec<PolicyResult>,
}

/// A run's parameters in plain units, so that the JSON describes itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[allow(missing_docs)]
pub struct Parameters {
    pub seed: u64,
    pub sessions: u32,
    pub duration_s: f64,
    pub session_hours: f64,
    pub crashes_per_session: u32,
    pub warm_up_s: f64,
    pub interval_ms: f64,
    pub ping_period_ms: f64,
    pub base_delay_ms: f64,
    pub jitter_median_ms: f64,
    pub jitter_sigma: f64,
    pub loss: f64,
    pub rto_ms: f64,
    pub outages_per_hour: f64,
    pub outage_scale_ms: f64,
    pub outage_shape: f64,
    pub bad_periods_per_hour: f64,
    pub bad_period_length_s: f64,
    pub bad_outages_per_hour: f64,
    pub pauses_per_hour: f64,
    pub pause_scale_ms: f64,
    pub pause_shape: f64,
    pub phi_min_std_dev_ms: f64,
    pub phi_acceptable_pause_ms: f64,
    pub phi_max_missed: u32,
}

/// What one policy did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyResult {
    /// `counter` or `phi`.
    pub policy: &'static str,
    /// Max-missed for the counter, threshold for phi.
    pub parameter: f64,
    /// `Dead` verdicts on live sessions.
    pub false_positives: u64,
    /// The same per 1,000 session-hours.
    pub false_positives_per_1000_session_hours: f64,
    /// Sessions dropped at least once while alive, in percent.
    pub sessions_falsely_dropped_pct: f64,
    /// Crashes judged.
    pub detections: usize,
    /// Mean time from crash to verdict.
    pub mean_detection_ms: f64,
    /// 99th percentile (nearest rank) of the same.
    pub p99_detection_ms: f64,
    /// Longest of the same.
    pub max_detection_ms: f64,
    /// Verdicts that came from the hard ceiling rather than the policy.
    pub at_ceiling_pct: f64,
    /// Mean silence (crash minus last arrival) at the crash.
    pub mean_silence_at_crash_ms: f64,
    /// Crashes that fell while the session was dropped.
    pub skipped_crashes: u64,
    /// Crashes never detected: always 0 unless a detector is broken.
    pub undetected_crashes: u64,
}

impl Report {
    /// Summarises a run's tallies.
    pub fn new(simulation: &Simulation, tallies: &[(Policy, Tally)]) -> Self {
        let parameters = Parameters::of(simulation);
        let results = tallies
            .iter()
            .map(|(policy, tally)| PolicyResult::new(*policy, tally, &parameters))
            .collect();
        Self {
            parameters,
            results,
        }
    }

    /// The results as a markdown table, followed by a note on resolution.
    pub fn table(&self) -> String {
        let header = [
            "policy",
            "parameter",
            "FP / 1,000 session-h",
            "sessions falsely dropped",
            "mean detection ms",
            "p99 detection ms",
            "verdicts at ceiling",
        ];
        let rows: Vec<[String; 7]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.policy.to_owned(),
                    format!("{}", r.parameter),
                    significant(r.false_positives_per_1000_session_hours),
                    format!("{} %", significant(r.sessions_falsely_dropped_pct)),
                    format!("{:.0}", r.mean_detection_ms),
                    format!("{:.0}", r.p99_detection_ms),
                    format!("{:.0} %", r.at_ceiling_pct),
                ]
            })
            .collect();
        let mut out = String::new();
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!(
            "|{}\n",
            ["---|", "--:|", "--:|", "--:|", "--:|", "--:|", "--:|"].concat()
        ));
        for row in rows {
            out.push_str(&format!("| {} |\n", row.join(" | ")));
        }
        let hours = self.parameters.session_hours;
        out.push_str(&format!(
            "\n{} session-hours per policy: 0 false positives means fewer than {} per 1,000 session-hours (95 % upper bound).\n",
            significant(hours),
            significant(zero_upper_bound_per_1000(hours)),
        ));
        out
    }
}

impl Parameters {
    fn of(s: &Simulation) -> Self {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        Self {
            seed: s.seed,
            sessions: s.sessions,
            duration_s: s.duration.as_secs_f64(),
            session_hours: f64::from(s.sessions) * s.duration.as_secs_f64() / 3600.0,
            crashes_per_session: s.crashes_per_session,
            warm_up_s: s.warm_up.as_secs_f64(),
            interval_ms: ms(s.model.interval),
            ping_period_ms: ms(s.model.ping_period()),
            base_delay_ms: ms(s.model.base_delay),
            jitter_median_ms: ms(s.model.jitter_median),
            jitter_sigma: s.model.jitter_sigma,
            loss: s.model.loss,
            rto_ms: ms(s.model.rto),
            outages_per_hour: s.model.outages_per_hour,
            outage_scale_ms: ms(s.model.outage_scale),
            outage_shape: s.model.outage_shape,
            bad_periods_per_hour: s.model.bad_periods_per_hour,
            bad_period_length_s: s.model.bad_period_length.as_secs_f64(),
            bad_outages_per_hour: s.model.bad_outages_per_hour,
            pauses_per_hour: s.model.pauses_per_hour,
            pause_scale_ms: ms(s.model.pause_scale),
            pause_shape: s.model.pause_shape,
            phi_min_std_dev_ms: ms(s.phi.min_std_dev),
            phi_acceptable_pause_ms: ms(s.phi.acceptable_pause),
            phi_max_missed: s.phi.max_missed,
        }
    }
}

impl PolicyResult {
    fn new(policy: Policy, tally: &Tally, parameters: &Parameters) -> Self {
        let detections = tally.detections.len();
        let count = detections.max(1) as f64;
        let total_ns: u128 = tally.detections.iter().map(|d| d.as_nanos()).sum();
        let p99 = tally
            .detections
            .get((detections * 99).div_ceil(100).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Self {
            policy: policy.name(),
            parameter: policy.parameter(),
            false_positives: tally.false_positives,
            false_positives_per_1000_session_hours: tally.false_positives as f64 * 1000.0
                / parameters.session_hours,
            sessions_falsely_dropped_pct: tally.sessions_dropped as f64 * 100.0
                / f64::from(parameters.sessions),
            detections,
            mean_detection_ms: total_ns as f64 / 1e6 / count,
            p99_detection_ms: p99,
            max_detection_ms: tally
                .detections
                .last()
                .map_or(0.0, |d| d.as_secs_f64() * 1e3),
            at_ceiling_pct: tally.at_ceiling as f64 * 100.0 / count,
            mean_silence_at_crash_ms: tally.silence_at_crash_ns as f64 / 1e6 / count,
            skipped_crashes: tally.skipped,
            undetected_crashes: tally.undetected,
        }
    }
}

/// With no event seen in `hours`, the rate per 1,000 hours below which the
/// truth lies with 95 % confidence (the "rule of three": −ln 0.05 ≈ 3).
pub fn zero_upper_bound_per_1000(hours: f64) -> f64 {
    3.0 * 1000.0 / hours
}

/// Three significant digits at most, without a trailing `.0` for integers.
fn significant(value: f64) -> String {
    if value == 0.0 || value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else if value >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn significant_keeps_three_digits() {
        assert_eq!(significant(0.0), "0");
        assert_eq!(significant(0.5), "0.500");
        assert_eq!(significant(2.345), "2.35");
        assert_eq!(significant(12.34), "12.3");
        assert_eq!(significant(1234.4), "1234");
    }
}
