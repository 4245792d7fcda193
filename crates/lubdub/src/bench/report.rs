//! From per-session outcomes to what a reader needs: counts that add up,
//! percentiles of the detection error, a verdict against the requirement,
//! and two renderings (a text summary and JSON).
//!
//! Size: one job (outcomes to a report and its renderings); a quarter is its tests.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::outcome::{SessionOutcome, SilentSession};

/// The requirement of issue 4: p99 of the detection error at most this late.
pub const LATE_BOUND: Duration = Duration::from_millis(10);

/// How far before its deadline a drop may be observed and still not count as
/// early. Zero, because nothing in the measurement can make a correct drop
/// look early: `last_sent` is taken before the PING is written (the server
/// sees it later), the end is taken after the read returns (the server ended
/// it earlier), and both sides read the same monotonic clock.
pub const EARLY_TOLERANCE: Duration = Duration::ZERO;

/// Distinct error messages kept in a report; the rest are summed up.
const MAX_ERROR_KINDS: usize = 20;

/// What the scenario was asked to do and what the server granted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Server address.
    pub server: String,
    /// Sessions asked for.
    pub sessions: usize,
    /// Interval requested in every HELLO, ms.
    pub requested_interval_ms: u64,
    /// Interval the server granted (the first WELCOME's), ms.
    pub granted_interval_ms: Option<u64>,
    /// Max missed the server granted (the first WELCOME's).
    pub max_missed: Option<u16>,
    /// Granted interval × max missed, ms.
    pub deadline_ms: Option<u64>,
    /// Heartbeating between the last WELCOME and the silence, ms.
    pub warmup_ms: u64,
    /// How long past its deadline a session is waited for, ms.
    pub grace_ms: u64,
    /// Whether every session sent its last PING at the same instant.
    pub synchronized: bool,
    /// Whether the sessions asked for PONGs.
    pub acks_wanted: bool,
    /// Handshakes in flight at once.
    pub connect_concurrency: usize,
    /// Time from the first connect to the last handshake outcome, ms.
    pub connect_ms: f64,
}

/// How many sessions ended up where. `requested = handshake_failed +
/// lost_during_warmup + silent`, `silent = dropped + never_dropped`,
/// `dropped = dropped_by_timeout + ended_otherwise`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Sessions asked for.
    pub requested: usize,
    /// Sessions that got no WELCOME.
    pub handshake_failed: usize,
    /// Sessions that ended before the silence began.
    pub lost_during_warmup: usize,
    /// Sessions that fell silent: the ones measured.
    pub silent: usize,
    /// Silent sessions whose end was observed within deadline + grace.
    pub dropped: usize,
    /// ...of which by BYE `timeout`, as the protocol prescribes.
    pub dropped_by_timeout: usize,
    /// ...of which by anything else: EOF without BYE, another reason, an error.
    pub ended_otherwise: usize,
    /// Dropped sessions whose end came before their deadline: must be 0.
    pub dropped_before_deadline: usize,
    /// Silent sessions still open at deadline + grace: must be 0.
    pub never_dropped: usize,
}

impl Counts {
    /// Whether the partitions documented on the type hold.
    pub fn add_up(&self) -> bool {
        self.requested == self.handshake_failed + self.lost_during_warmup + self.silent
            && self.silent == self.dropped + self.never_dropped
            && self.dropped == self.dropped_by_timeout + self.ended_otherwise
            && self.dropped_before_deadline <= self.dropped
    }
}

/// Distribution of the detection error over dropped sessions, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ErrorDistribution {
    /// Smallest error (the margin to an early drop when positive).
    pub min_ms: f64,
    /// Mean error.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile: the figure the requirement bounds.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest error.
    pub max_ms: f64,
}

impl ErrorDistribution {
    /// Summarises errors in nanoseconds; `None` for no errors.
    pub fn of(errors_ns: &[i64]) -> Option<Self> {
        let mut sorted = errors_ns.to_vec();
        sorted.sort_unstable();
        let ms = |ns: i64| ns as f64 / 1e6;
        let at = |p: f64| percentile(&sorted, p).map(ms);
        let sum: i128 = sorted.iter().map(|&ns| i128::from(ns)).sum();
        Some(Self {
            min_ms: ms(*sorted.first()?),
            mean_ms: sum as f64 / sorted.len() as f64 / 1e6,
            p50_ms: at(50.0)?,
            p90_ms: at(90.0)?,
            p99_ms: at(99.0)?,
            p999_ms: at(99.9)?,
            max_ms: ms(*sorted.last()?),
        })
    }
}

/// Nearest-rank percentile of an ascending slice: the smallest value with at
/// least `p`% of the values at or below it. `None` for an empty slice.
pub fn percentile(sorted: &[i64], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The requirement, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Every requested session was established and fell silent as planned.
    pub all_measured: bool,
    /// Every silent session was dropped within deadline + grace.
    pub all_dropped: bool,
    /// Every drop was a BYE `timeout`.
    pub all_by_timeout: bool,
    /// No drop came before its deadline.
    pub none_before_deadline: bool,
    /// p99 of the error is at most [`LATE_BOUND`].
    pub p99_within_bound: bool,
    /// All of the above.
    pub passed: bool,
}

/// One kind of error and how often it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// `handshake`, `warmup` or `drop`.
    pub phase: &'static str,
    /// The message.
    pub error: String,
    /// Sessions it happened to.
    pub count: usize,
}

/// The result of one run of the silence scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SilenceReport {
    /// Always `silence`.
    pub scenario: &'static str,
    /// Parameters and grants.
    pub settings: Settings,
    /// Where the sessions ended up.
    pub counts: Counts,
    /// Detection error over dropped sessions; `None` when none was dropped.
    pub error: Option<ErrorDistribution>,
    /// Span between the earliest and latest last PING, ms: about one ping
    /// period when spread, the client's burst time when synchronized.
    pub last_ping_spread_ms: Option<f64>,
    /// The bound judged against, ms.
    pub late_bound_ms: f64,
    /// The judgement.
    pub verdict: Verdict,
    /// Errors by phase and message, most frequent first.
    pub errors: Vec<ErrorCount>,
    /// How to read the figures.
    pub note: &'static str,
}

/// Why the figures are upper bounds; printed with every report.
pub const NOTE: &str = "times are taken by the benchmark client on the same machine as the \
server: the client's own scheduling delay in noticing each drop is included, so the errors \
are upper bounds of the server's";

impl SilenceReport {
    /// Aggregates the outcomes of a run.
    pub fn build(settings: Settings, outcomes: &[SessionOutcome]) -> Self {
        let mut counts = Counts {
            requested: settings.sessions,
            ..Counts::default()
        };
        let mut errors: BTreeMap<(&'static str, String), usize> = BTreeMap::new();
        let mut silent: Vec<&SilentSession> = Vec::new();
        for outcome in outcomes {
            match outcome {
                SessionOutcome::HandshakeFailed { error } => {
                    counts.handshake_failed += 1;
                    *errors.entry(("handshake", error.clone())).or_default() += 1;
                }
                SessionOutcome::LostDuringWarmup { error } => {
                    counts.lost_during_warmup += 1;
                    *errors.entry(("warmup", error.clone())).or_default() += 1;
                }
                SessionOutcome::Silent(session) => silent.push(session),
            }
        }
        counts.silent = silent.len();
        let mut errors_ns = Vec::with_capacity(silent.len());
        let early_ns = -(EARLY_TOLERANCE.as_nanos() as i64);
        for session in &silent {
            let Some((_, ending)) = &session.end else {
                counts.never_dropped += 1;
                continue;
            };
            counts.dropped += 1;
            if ending.is_timeout() {
                counts.dropped_by_timeout += 1;
            } else {
                counts.ended_otherwise += 1;
                *errors
                    .entry(("drop", format!("ended by {ending:?}, not BYE timeout")))
                    .or_default() += 1;
            }
            if let Some(error_ns) = session.error_ns() {
                if error_ns < early_ns {
                    counts.dropped_before_deadline += 1;
                }
                errors_ns.push(error_ns);
            }
        }
        let error = ErrorDistribution::of(&errors_ns);
        let last_ping_spread_ms = silent
            .iter()
            .map(|s| s.last_sent)
            .min()
            .zip(silent.iter().map(|s| s.last_sent).max())
            .map(|(first, last)| (last - first).as_secs_f64() * 1e3);
        let late_bound_ms = LATE_BOUND.as_secs_f64() * 1e3;
        let verdict = judge(&counts, error.as_ref(), late_bound_ms);
        Self {
            scenario: "silence",
            settings,
            counts,
            error,
            last_ping_spread_ms,
            late_bound_ms,
            verdict,
            errors: error_counts(errors),
            note: NOTE,
        }
    }

    /// The human-readable summary.
    pub fn to_text(&self) -> String {
        let s = &self.settings;
        let c = &self.counts;
        let mut out = String::new();
        let mode = if s.synchronized {
            "synchronized: every session sent its last PING at the same instant"
        } else {
            "spread: each session stopped at its own phase"
        };
        let _ = writeln!(
            out,
            "lubdub bench silence: {} sessions against {} ({mode})",
            s.sessions, s.server
        );
        match (s.granted_interval_ms, s.max_missed, s.deadline_ms) {
            (Some(interval), Some(missed), Some(deadline)) => {
                let _ = writeln!(
                    out,
                    "deadline: granted interval {interval} ms × max missed {missed} = {deadline} ms \
                     (requested {} ms); warm-up {} ms",
                    s.requested_interval_ms, s.warmup_ms
                );
            }
            _ => {
                let _ = writeln!(out, "deadline: unknown (no WELCOME received)");
            }
        }
        let _ = writeln!(
            out,
            "requirement: dropped no later than deadline + {} ms (p99), never before",
            self.late_bound_ms
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "sessions  requested {}  established {} (in {:.0} ms)  handshake failed {}  lost in warm-up {}",
            c.requested,
            c.requested - c.handshake_failed,
            s.connect_ms,
            c.handshake_failed,
            c.lost_during_warmup
        );
        let _ = writeln!(
            out,
            "silent    {}  dropped by BYE timeout {}  ended otherwise {}  never dropped (within {} ms grace) {}  dropped before deadline {}",
            c.silent,
            c.dropped_by_timeout,
            c.ended_otherwise,
            s.grace_ms,
            c.never_dropped,
            c.dropped_before_deadline
        );
        if let Some(spread) = self.last_ping_spread_ms {
            let _ = writeln!(out, "last PINGs spread over {spread:.1} ms");
        }
        let _ = writeln!(out);
        match &self.error {
            Some(e) => {
                let _ = writeln!(
                    out,
                    "detection error = observed end − (last PING + deadline), ms"
                );
                let _ = writeln!(
                    out,
                    "  {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                    "min", "mean", "p50", "p90", "p99", "p99.9", "max"
                );
                let _ = writeln!(
                    out,
                    "  {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                    e.min_ms, e.mean_ms, e.p50_ms, e.p90_ms, e.p99_ms, e.p999_ms, e.max_ms
                );
            }
            None => {
                let _ = writeln!(out, "detection error: no session was dropped");
            }
        }
        if !self.errors.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "errors:");
            for e in &self.errors {
                let _ = writeln!(out, "  {:>6} × [{}] {}", e.count, e.phase, e.error);
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "verdict: {}", self.verdict_text());
        let _ = writeln!(out, "note: {}", self.note);
        out
    }

    fn verdict_text(&self) -> String {
        let v = &self.verdict;
        if v.passed {
            return "PASS".to_owned();
        }
        let mut failures = Vec::new();
        if !v.all_measured {
            failures.push("not every requested session was measured".to_owned());
        }
        if !v.all_dropped {
            failures.push(format!(
                "{} sessions never dropped",
                self.counts.never_dropped
            ));
        }
        if !v.all_by_timeout {
            failures.push(format!(
                "{} sessions ended without BYE timeout",
                self.counts.ended_otherwise
            ));
        }
        if !v.none_before_deadline {
            failures.push(format!(
                "{} sessions dropped before their deadline",
                self.counts.dropped_before_deadline
            ));
        }
        if !v.p99_within_bound {
            match &self.error {
                Some(e) => failures.push(format!(
                    "p99 {:.2} ms exceeds the {} ms bound by {:.2} ms",
                    e.p99_ms,
                    self.late_bound_ms,
                    e.p99_ms - self.late_bound_ms
                )),
                None => failures.push("no drop to measure".to_owned()),
            }
        }
        format!("FAIL: {}", failures.join("; "))
    }
}

fn judge(counts: &Counts, error: Option<&ErrorDistribution>, late_bound_ms: f64) -> Verdict {
    let all_measured = counts.requested > 0 && counts.silent == counts.requested && counts.add_up();
    let all_dropped = counts.never_dropped == 0;
    let all_by_timeout = counts.ended_otherwise == 0;
    let none_before_deadline = counts.dropped_before_deadline == 0;
    let p99_within_bound = error.is_some_and(|e| e.p99_ms <= late_bound_ms);
    Verdict {
        all_measured,
        all_dropped,
        all_by_timeout,
        none_before_deadline,
        p99_within_bound,
        passed: all_measured
            && all_dropped
            && all_by_timeout
            && none_before_deadline
            && p99_within_bound,
    }
}

fn error_counts(errors: BTreeMap<(&'static str, String), usize>) -> Vec<ErrorCount> {
    let mut list: Vec<ErrorCount> = errors
        .into_iter()
        .map(|((phase, error), count)| ErrorCount {
            phase,
            error,
            count,
        })
        .collect();
    list.sort_by_key(|e| std::cmp::Reverse(e.count));
    if list.len() > MAX_ERROR_KINDS {
        let rest: usize = list[MAX_ERROR_KINDS..].iter().map(|e| e.count).sum();
        let kinds = list.len() - MAX_ERROR_KINDS;
        list.truncate(MAX_ERROR_KINDS);
        list.push(ErrorCount {
            phase: "any",
            error: format!("{kinds} other kinds of error"),
            count: rest,
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use lubdub_core::protocol::ReasonCode;

    use super::super::outcome::Ending;
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), Some(50));
        assert_eq!(percentile(&values, 99.0), Some(99));
        assert_eq!(percentile(&values, 99.9), Some(100));
        assert_eq!(percentile(&values, 100.0), Some(100));
        assert_eq!(percentile(&values, 0.0), Some(1), "clamped to the first");
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn p99_of_ten_thousand_ignores_only_the_worst_hundred() {
        let mut values: Vec<i64> = vec![1; 9_900];
        values.extend(std::iter::repeat_n(1_000, 100));
        assert_eq!(percentile(&values, 99.0), Some(1));
        values[9_899] = 1_000;
        assert_eq!(percentile(&values, 99.0), Some(1_000));
    }

    #[test]
    fn the_distribution_is_in_milliseconds() {
        let errors = [3_000_000, -1_000_000, 1_000_000, 2_000_000];
        let d = ErrorDistribution::of(&errors).expect("non-empty");
        assert_eq!(d.min_ms, -1.0);
        assert_eq!(d.max_ms, 3.0);
        assert_eq!(d.mean_ms, 1.25);
        assert_eq!(d.p50_ms, 1.0);
        assert_eq!(ErrorDistribution::of(&[]), None);
    }

    fn settings(sessions: usize) -> Settings {
        Settings {
            server: "127.0.0.1:7070".into(),
            sessions,
            requested_interval_ms: 100,
            granted_interval_ms: Some(100),
            max_missed: Some(5),
            deadline_ms: Some(500),
            warmup_ms: 500,
            grace_ms: 1000,
            synchronized: false,
            acks_wanted: false,
            connect_concurrency: 500,
            connect_ms: 12.0,
        }
    }

    fn silent(t0: Instant, sent_ms: u32, end: Option<(u32, Ending)>) -> SessionOutcome {
        SessionOutcome::Silent(SilentSession {
            last_sent: t0 + sent_ms * MS,
            deadline: 500 * MS,
            end: end.map(|(at_ms, ending)| (t0 + at_ms * MS, ending)),
        })
    }

    #[test]
    fn every_outcome_lands_in_exactly_one_count() {
        let t0 = Instant::now();
        let timeout = Ending::Bye(ReasonCode::Timeout);
        let outcomes = vec![
            SessionOutcome::HandshakeFailed {
                error: "connect failed: refused".into(),
            },
            SessionOutcome::LostDuringWarmup {
                error: "closed".into(),
            },
            silent(t0, 0, Some((502, timeout.clone()))),
            silent(t0, 10, Some((509, timeout.clone()))),
            silent(t0, 20, Some((530, Ending::Closed))),
            silent(t0, 30, None),
        ];
        let report = SilenceReport::build(settings(6), &outcomes);
        let c = report.counts;
        assert!(c.add_up(), "{c:?}");
        assert_eq!(
            (c.handshake_failed, c.lost_during_warmup, c.silent),
            (1, 1, 4)
        );
        assert_eq!((c.dropped, c.never_dropped), (3, 1));
        assert_eq!((c.dropped_by_timeout, c.ended_otherwise), (2, 1));
        assert_eq!(c.dropped_before_deadline, 1, "509 ms < 10 ms + 500 ms");
        assert_eq!(report.last_ping_spread_ms, Some(30.0));
        let v = report.verdict;
        assert!(!v.passed && !v.all_measured && !v.all_dropped && !v.all_by_timeout);
        assert!(!v.none_before_deadline);
        assert_eq!(report.errors.len(), 3);
        let text = report.to_text();
        assert!(text.contains("FAIL"), "{text}");
        assert!(
            text.contains("1 sessions dropped before their deadline"),
            "{text}"
        );
    }

    #[test]
    fn a_clean_run_passes_and_a_slow_one_says_by_how_much() {
        let t0 = Instant::now();
        let timeout = Ending::Bye(ReasonCode::Timeout);
        let clean: Vec<SessionOutcome> = (0..100)
            .map(|i| silent(t0, i, Some((i + 503, timeout.clone()))))
            .collect();
        let report = SilenceReport::build(settings(100), &clean);
        assert!(report.verdict.passed, "{}", report.to_text());
        assert_eq!(report.error.map(|e| e.p99_ms), Some(3.0));

        let slow: Vec<SessionOutcome> = (0..100)
            .map(|i| silent(t0, i, Some((i + 525, timeout.clone()))))
            .collect();
        let report = SilenceReport::build(settings(100), &slow);
        assert!(!report.verdict.passed);
        assert!(!report.verdict.p99_within_bound);
        assert!(
            report
                .to_text()
                .contains("p99 25.00 ms exceeds the 10 ms bound by 15.00 ms"),
            "{}",
            report.to_text()
        );
        let json = serde_json::to_value(&report).expect("serializable");
        assert_eq!(json["counts"]["dropped_by_timeout"], 100);
        assert_eq!(json["error"]["p99_ms"], 25.0);
    }
}
