//! The phi accrual failure detector (Hayashibara et al., 2004), as Akka
//! implements it, with O(1) state per session and a hard ceiling.
//!
//! Instead of a yes/no timeout, phi expresses how unlikely it is that a
//! heartbeat is still coming after `elapsed` of silence, given the gaps seen
//! so far: `phi = -log10(P(gap > elapsed))`. Phi 1 means a 10 % chance the
//! session is merely late, phi 8 one in 10⁸. The gaps are modelled as a
//! normal distribution whose mean and standard deviation come from
//! [`ArrivalStats`]; the normal tail uses Akka's logistic approximation
//! `P(gap > m + yσ) ≈ 1 / (1 + e^(y(1.5976 + 0.070566 y²)))`.
//!
//! Akka's two guards keep their meaning: `min_std_dev` is a floor under the
//! measured standard deviation (very regular heartbeats would otherwise make
//! the smallest delay look fatal) and `acceptable_pause` is added to the mean
//! (a pause of that length, such as a garbage collection, is never fatal).
//! lubdub adds a third: the mean is never taken below the protocol's ping
//! period, because a client that just sent a burst of messages may lawfully
//! stay silent for that long afterwards.
//!
//! Because phi only grows with silence, the instant at which it will reach a
//! level is known in advance: `last + mean + pause + y(level) × σ`, where
//! `y(level)` solves the approximation for that level once, at construction.
//! So the detector schedules its checks exactly like the counter does and
//! never evaluates phi on a timer. The counter's deadline stays as a ceiling:
//! no session outlives `max_missed × interval` of silence, whatever phi says.
//!
//! Size: one job (the detector and its state); half of the file is its unit tests over explicit time.

use std::time::{Duration, Instant};

use super::stats::ArrivalStats;
use super::{intervals_missed, CheckOutcome, Detector, HeartbeatOutcome, Liveness, Transition};
use crate::client::ping_after;

/// Largest threshold accepted: phi 100 already means a chance of 1 in
/// 10¹⁰⁰ that the session is merely late, and far beyond it the inversion
/// leaves the range of `f64`.
pub const MAX_THRESHOLD: f64 = 100.0;
/// Largest pause or deviation floor accepted; beyond a day the setting is
/// a mistake, and bounding it keeps every instant computed from it finite.
pub const MAX_PHI_DURATION: Duration = Duration::from_secs(24 * 3600);
/// A heartbeat asks for an earlier check only when the verdict moved earlier
/// than the pending check by more than this. The verdict may then come this
/// much after the exact phi instant; in exchange a burst of frames that
/// tightens the estimate step by step leaves few stale wheel entries behind.
pub const EARLIER_CHECK_SLACK: Duration = Duration::from_millis(5);

/// Coefficients of Akka's logistic approximation of the normal tail.
const LINEAR: f64 = 1.5976;
const CUBIC: f64 = 0.070566;

/// Parameters of the phi policy. The interval is per session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiConfig {
    /// Phi at which a session is dead (Akka's `threshold`). It is suspect
    /// from half of it.
    pub threshold: f64,
    /// Floor under the measured standard deviation of the gaps.
    pub min_std_dev: Duration,
    /// Silence beyond the mean gap that is tolerated before phi starts to
    /// rise.
    pub acceptable_pause: Duration,
    /// Hard ceiling: dead after this many intervals of silence in any case.
    pub max_missed: u32,
}

impl Default for PhiConfig {
    /// Akka's threshold and minimum deviation. The pause of 1.5 s comes
    /// from the simulation in `docs/DETECTION.md`: it puts the verdict just
    /// past a PING lost three times in a row (retransmitted after 1, 3 and
    /// 7 RTOs), which 500 ms did not, for about a third of the false
    /// positives.
    fn default() -> Self {
        Self {
            threshold: 8.0,
            min_std_dev: Duration::from_millis(100),
            acceptable_pause: Duration::from_millis(1500),
            max_missed: 5,
        }
    }
}

/// A [`PhiConfig`] value that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum PhiConfigError {
    /// The threshold is not a number in (0, [`MAX_THRESHOLD`]].
    #[error("phi threshold must be a number above 0 and at most 100, got {0}")]
    Threshold(f64),
    /// The standard deviation floor is zero or above [`MAX_PHI_DURATION`].
    #[error("the minimum standard deviation must be above 0 and at most one day")]
    MinStdDev,
    /// The acceptable pause is above [`MAX_PHI_DURATION`].
    #[error("the acceptable pause must be at most one day")]
    AcceptablePause,
    /// `max_missed` is zero.
    #[error("max-missed must be positive")]
    MaxMissed,
}

/// Phi detector; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiDetector {
    config: PhiConfig,
    /// Standard deviations past the mean at which phi reaches the threshold.
    dead_y: f64,
    /// The same for half the threshold.
    suspect_y: f64,
}

/// Per-session state of the phi detector: 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhiState {
    last_seen: Instant,
    /// The check the detector last asked for; entries due earlier than this
    /// are stale (superseded) and ignored.
    scheduled: Instant,
    interval: Duration,
    stats: ArrivalStats,
    suspected: bool,
}

/// Phi after `elapsed` of silence when gaps have this mean and standard
/// deviation, by Akka's formula. Written as `log10(1 + e^w)` with
/// `w = y(1.5976 + 0.070566 y²)`, which equals Akka's two branches but
/// neither underflows to infinity for long silences nor loses precision
/// for short ones.
pub fn phi(elapsed: Duration, mean: Duration, std_dev: Duration) -> f64 {
    phi_of_secs(
        elapsed.as_secs_f64(),
        mean.as_secs_f64(),
        std_dev.as_secs_f64(),
    )
}

/// [`phi`] on seconds, so that no value has to round-trip through `Duration`.
fn phi_of_secs(elapsed: f64, mean: f64, std_dev: f64) -> f64 {
    let std_dev = std_dev.max(f64::MIN_POSITIVE);
    let y = (elapsed - mean) / std_dev;
    let w = y * (LINEAR + CUBIC * y * y);
    let softplus = if w > 0.0 {
        w + (-w).exp().ln_1p()
    } else {
        w.exp().ln_1p()
    };
    softplus / std::f64::consts::LN_10
}

/// The `y` (standard deviations past the mean) at which [`phi`] equals
/// `level`: the real root of `0.070566 y³ + 1.5976 y = ln(10^level − 1)`,
/// by Cardano's formula (the cubic is increasing, so the root is unique).
pub fn sigmas_for_phi(level: f64) -> f64 {
    // ln(10^L − 1) = L·ln 10 + ln(1 − 10^−L): no overflow for large L.
    let w = level * std::f64::consts::LN_10 + (-(10f64.powf(-level))).ln_1p();
    let p = LINEAR / CUBIC;
    let q = -w / CUBIC;
    let root = (q * q / 4.0 + p * p * p / 27.0).sqrt();
    (-q / 2.0 + root).cbrt() + (-q / 2.0 - root).cbrt()
}

impl PhiDetector {
    /// A phi detector with this configuration.
    ///
    /// # Errors
    /// [`PhiConfigError`] when a value cannot work.
    pub fn new(config: PhiConfig) -> Result<Self, PhiConfigError> {
        if !(config.threshold > 0.0 && config.threshold <= MAX_THRESHOLD) {
            return Err(PhiConfigError::Threshold(config.threshold));
        }
        if config.min_std_dev.is_zero() || config.min_std_dev > MAX_PHI_DURATION {
            return Err(PhiConfigError::MinStdDev);
        }
        if config.acceptable_pause > MAX_PHI_DURATION {
            return Err(PhiConfigError::AcceptablePause);
        }
        if config.max_missed == 0 {
            return Err(PhiConfigError::MaxMissed);
        }
        let dead_y = sigmas_for_phi(config.threshold);
        let suspect_y = sigmas_for_phi(config.threshold / 2.0);
        if !(dead_y.is_finite() && suspect_y.is_finite()) {
            return Err(PhiConfigError::Threshold(config.threshold));
        }
        Ok(Self {
            config,
            dead_y,
            suspect_y,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> PhiConfig {
        self.config
    }

    /// Mean and standard deviation phi is computed with: the measured ones
    /// raised to their floors, the pause added to the mean.
    fn model(&self, state: &PhiState) -> (f64, f64) {
        let mean = state
            .stats
            .mean_secs()
            .max(ping_after(state.interval).as_secs_f64())
            + self.config.acceptable_pause.as_secs_f64();
        let std_dev = state
            .stats
            .std_dev_secs()
            .max(self.config.min_std_dev.as_secs_f64());
        (mean, std_dev)
    }

    /// Silence after which phi reaches the level `y` stands for, capped by
    /// the hard ceiling.
    fn silence_until(&self, state: &PhiState, y: f64) -> Duration {
        let (mean, std_dev) = self.model(state);
        let ceiling = state.interval * self.config.max_missed;
        let secs = (mean + y * std_dev).max(0.0);
        Duration::try_from_secs_f64(secs).map_or(ceiling, |silence| silence.min(ceiling))
    }

    fn suspect_at(&self, state: &PhiState) -> Instant {
        state.last_seen + self.silence_until(state, self.suspect_y)
    }

    fn next_check(&self, state: &PhiState) -> Instant {
        if state.suspected {
            self.dead_at(state)
        } else {
            self.suspect_at(state)
        }
    }

    fn missed_at(state: &PhiState, now: Instant) -> u32 {
        intervals_missed(state.last_seen, state.interval, now)
    }
}

impl Detector for PhiDetector {
    type State = PhiState;

    fn start(&self, now: Instant, interval: Duration) -> (PhiState, Instant) {
        let mut state = PhiState {
            last_seen: now,
            scheduled: now,
            interval,
            stats: ArrivalStats::seeded(ping_after(interval)),
            suspected: false,
        };
        state.scheduled = self.next_check(&state);
        (state, state.scheduled)
    }

    fn heartbeat(&self, state: &mut PhiState, now: Instant) -> HeartbeatOutcome {
        // Frames dated by the same read are one arrival, not gaps of zero.
        if now > state.last_seen {
            state.stats.record(now - state.last_seen);
            state.last_seen = now;
        }
        let recovered = std::mem::take(&mut state.suspected);
        // A tighter estimate can bring the next check forward; the pending
        // one, now later than needed, is recognised as stale when it fires.
        let next = self.next_check(state);
        let earlier_check = (next + EARLIER_CHECK_SLACK < state.scheduled).then(|| {
            state.scheduled = next;
            next
        });
        HeartbeatOutcome {
            transition: recovered.then_some(Transition::Recovered),
            earlier_check,
        }
    }

    fn check(&self, state: &mut PhiState, now: Instant) -> CheckOutcome {
        if now < state.scheduled {
            // Superseded by an earlier check that rescheduled itself.
            return CheckOutcome {
                transition: None,
                next_check: None,
            };
        }
        if now >= self.dead_at(state) {
            return CheckOutcome {
                transition: Some(Transition::Dead {
                    silent_for: now.saturating_duration_since(state.last_seen),
                }),
                next_check: None,
            };
        }
        let mut transition = None;
        if !state.suspected && now >= self.suspect_at(state) {
            state.suspected = true;
            transition = Some(Transition::Suspected {
                missed: Self::missed_at(state, now),
            });
        }
        state.scheduled = self.next_check(state);
        CheckOutcome {
            transition,
            next_check: Some(state.scheduled),
        }
    }

    fn liveness(&self, state: &PhiState, now: Instant) -> Liveness {
        if now >= self.dead_at(state) {
            Liveness::Dead
        } else if now >= self.suspect_at(state) {
            Liveness::Suspect {
                missed: Self::missed_at(state, now),
            }
        } else {
            Liveness::Alive
        }
    }

    fn last_seen(&self, state: &PhiState) -> Instant {
        state.last_seen
    }

    fn phi(&self, state: &PhiState, now: Instant) -> Option<f64> {
        let (mean, std_dev) = self.model(state);
        Some(phi_of_secs(
            now.saturating_duration_since(state.last_seen).as_secs_f64(),
            mean,
            std_dev,
        ))
    }

    fn dead_at(&self, state: &PhiState) -> Instant {
        state.last_seen + self.silence_until(state, self.dead_y)
    }

    fn mean_interarrival(&self, state: &PhiState) -> Duration {
        state.stats.mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Values computed by hand (and checked with Python) from Akka's
    /// `PhiAccrualFailureDetector.phi`:
    /// `y = (t − m)/σ; e = exp(−y(1.5976 + 0.070566 y²));`
    /// `t > m ? −log10(e/(1+e)) : −log10(1 − 1/(1+e))`.
    #[test]
    fn phi_matches_hand_computed_values() {
        let cases = [
            // At the mean phi is −log10(1/2).
            (1000, 1000, 100, std::f64::consts::LOG10_2),
            // One σ late: e = exp(−1.668166) = 0.188 57; −log10(0.158 65).
            (1100, 1000, 100, 0.799_508_320_839_559_8),
            (1200, 1000, 100, 1.642_827_885_487_112_3),
            (1500, 1000, 100, 7.299_947_394_460_206),
            // Early: below the mean phi is small but positive.
            (900, 1000, 100, 0.075_033_032_140_939_9),
            (2920, 2400, 100, 7.917_042_542_997_102),
            (3000, 1000, 250, 21.241_600_212_221_336),
        ];
        for (elapsed, mean, std_dev, expected) in cases {
            let got = phi(elapsed * MS, mean * MS, std_dev * MS);
            assert!(
                (got - expected).abs() < 1e-9,
                "phi({elapsed} ms; {mean} ms, σ {std_dev} ms) = {got}, expected {expected}"
            );
        }
    }

    #[test]
    fn phi_keeps_growing_where_the_direct_formula_overflows() {
        // Akka's −log10(e/(1+e)) is +inf once e underflows (y ≈ 20).
        let far = phi(100_000 * MS, 1000 * MS, 100 * MS);
        assert!(far.is_finite() && far > 1000.0, "{far}");
        assert!(phi(3000 * MS, 1000 * MS, 100 * MS) < far);
    }

    #[test]
    fn sigmas_for_phi_inverts_phi() {
        // Hand-solved: 0.070566 y³ + 1.5976 y = ln(10^8 − 1) = 18.420 68 → y = 5.225 99.
        assert!((sigmas_for_phi(8.0) - 5.225_986_644_093_563).abs() < 1e-9);
        assert!((sigmas_for_phi(1.0) - 1.282_215_344_966_695).abs() < 1e-9);
        for level in [0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0] {
            let y = sigmas_for_phi(level);
            let back = phi(
                Duration::from_secs_f64(10.0 + y),
                Duration::from_secs(10),
                Duration::from_secs(1),
            );
            assert!(
                (back - level).abs() < 1e-6,
                "level {level}: y {y}, phi {back}"
            );
        }
    }

    fn detector(pause: Duration) -> PhiDetector {
        PhiDetector::new(PhiConfig {
            threshold: 8.0,
            min_std_dev: 100 * MS,
            acceptable_pause: pause,
            max_missed: 5,
        })
        .expect("valid config")
    }

    /// Feeds `count` gaps of `gap` and returns the state and the last arrival.
    fn trained(
        detector: &PhiDetector,
        interval: Duration,
        gap: Duration,
        count: u32,
    ) -> (PhiState, Instant) {
        let t0 = Instant::now();
        let (mut state, _) = detector.start(t0, interval);
        let mut now = t0;
        for _ in 0..count {
            now += gap;
            detector.heartbeat(&mut state, now);
        }
        (state, now)
    }

    #[test]
    fn regular_heartbeats_are_judged_at_mean_plus_pause_plus_y_sigma() {
        // 1 s interval, pings every 800 ms: the spread decays to nothing, so
        // σ is the 100 ms floor and the mean is the ping period.
        let detector = detector(Duration::ZERO);
        let (mut state, last) = trained(&detector, 1000 * MS, 800 * MS, 2000);
        let dead_after = Duration::from_secs_f64(0.8 + sigmas_for_phi(8.0) * 0.1);
        let suspect_after = Duration::from_secs_f64(0.8 + sigmas_for_phi(4.0) * 0.1);
        const US: Duration = Duration::from_micros(1);
        let suspect_at = detector.suspect_at(&state);
        // The statistics are f32 seconds: equal to the hand value within a microsecond.
        assert!(suspect_at.duration_since(last).abs_diff(suspect_after) < US);
        assert_eq!(detector.liveness(&state, suspect_at - US), Liveness::Alive);
        let suspected = detector.check(&mut state, suspect_at);
        assert_eq!(
            suspected.transition,
            Some(Transition::Suspected { missed: 1 })
        );
        let next = suspected.next_check.expect("still alive");
        assert!(
            next.duration_since(last).abs_diff(dead_after) < US,
            "{next:?}"
        );
        let before = detector.check(&mut state, next - MS);
        assert_eq!(
            before.transition, None,
            "stale or early checks convict no one"
        );
        let dead = detector.check(&mut state, next);
        assert!(matches!(dead.transition, Some(Transition::Dead { .. })));
        // 1.322 s of silence gives phi 8 by hand: y = 5.226, σ = 0.1.
        let phi_at_death = detector.phi(&state, next).expect("phi detector");
        assert!((phi_at_death - 8.0).abs() < 0.01, "{phi_at_death}");
    }

    #[test]
    fn acceptable_pause_moves_the_verdict_by_exactly_the_pause() {
        let (state0, last0) = trained(&detector(Duration::ZERO), 1000 * MS, 800 * MS, 500);
        let paused = detector(300 * MS);
        let (state1, last1) = trained(&paused, 1000 * MS, 800 * MS, 500);
        let at0 = detector(Duration::ZERO).dead_at(&state0) - last0;
        let at1 = paused.dead_at(&state1) - last1;
        assert!((at1 - at0).abs_diff(300 * MS) < MS, "{at0:?} vs {at1:?}");
    }

    #[test]
    fn jitter_widens_the_margin() {
        let detector = detector(Duration::ZERO);
        let t0 = Instant::now();
        let (mut state, _) = detector.start(t0, 1000 * MS);
        let mut now = t0;
        for i in 0..2000 {
            now += if i % 2 == 0 { 500 * MS } else { 1100 * MS };
            detector.heartbeat(&mut state, now);
        }
        let (regular, regular_last) = trained(&detector, 1000 * MS, 800 * MS, 2000);
        assert!(
            detector.dead_at(&state) - now > detector.dead_at(&regular) - regular_last + 500 * MS,
            "σ ≈ 300 ms must push the verdict well past the regular one"
        );
    }

    #[test]
    fn no_session_outlives_the_hard_ceiling() {
        // A huge pause would keep phi low for a minute; the ceiling is 5 × 100 ms.
        let detector = detector(Duration::from_secs(60));
        let t0 = Instant::now();
        let (mut state, _) = detector.start(t0, 100 * MS);
        let just_before = detector.check(&mut state, t0 + 499 * MS);
        assert!(!matches!(
            just_before.transition,
            Some(Transition::Dead { .. })
        ));
        let dead = detector.check(&mut state, t0 + 500 * MS);
        assert_eq!(
            dead.transition,
            Some(Transition::Dead {
                silent_for: 500 * MS
            })
        );
    }

    #[test]
    fn a_heartbeat_recovers_a_suspect_session() {
        let detector = detector(Duration::ZERO);
        let t0 = Instant::now();
        let (mut state, first) = detector.start(t0, 1000 * MS);
        let suspected = detector.check(&mut state, first);
        assert!(matches!(
            suspected.transition,
            Some(Transition::Suspected { .. })
        ));
        assert!(matches!(
            detector.liveness(&state, first),
            Liveness::Suspect { .. }
        ));
        let outcome = detector.heartbeat(&mut state, first + MS);
        assert_eq!(outcome.transition, Some(Transition::Recovered));
        assert_eq!(detector.liveness(&state, first + MS), Liveness::Alive);
    }

    /// Drives the detector the way the event loop does, with a heap for a
    /// wheel: heartbeats at `arrivals`, checks in time order, earlier checks
    /// inserted as asked. Returns (earlier checks asked, stale checks seen,
    /// largest number of pending entries, instant of the Dead verdict).
    fn drive(
        detector: &PhiDetector,
        t0: Instant,
        arrivals: &[Instant],
    ) -> (u32, u32, usize, Instant) {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let (mut state, first) = detector.start(t0, 1000 * MS);
        let mut wheel = BinaryHeap::from([Reverse(first)]);
        let (mut asked, mut stale, mut largest) = (0, 0, 1);
        let mut process_until =
            |state: &mut PhiState, wheel: &mut BinaryHeap<Reverse<Instant>>, until: Instant| {
                while let Some(&Reverse(due)) = wheel.peek() {
                    if due > until {
                        return None;
                    }
                    wheel.pop();
                    let outcome = detector.check(state, due);
                    match outcome {
                        CheckOutcome {
                            transition: Some(Transition::Dead { .. }),
                            ..
                        } => return Some(due),
                        CheckOutcome {
                            transition: None,
                            next_check: None,
                        } => stale += 1,
                        CheckOutcome {
                            next_check: Some(next),
                            ..
                        } => wheel.push(Reverse(next)),
                        CheckOutcome {
                            next_check: None, ..
                        } => unreachable!("only Dead ends the checks"),
                    }
                    // Exactly one live entry: the one the detector expects.
                    assert!(wheel.iter().any(|&Reverse(at)| at == state.scheduled));
                }
                None
            };
        for &arrival in arrivals {
            assert_eq!(
                process_until(&mut state, &mut wheel, arrival),
                None,
                "died while heartbeating"
            );
            if let Some(at) = detector.heartbeat(&mut state, arrival).earlier_check {
                asked += 1;
                wheel.push(Reverse(at));
            }
            assert!(wheel.iter().any(|&Reverse(at)| at == state.scheduled));
            largest = largest.max(wheel.len());
        }
        let dead = process_until(&mut state, &mut wheel, t0 + Duration::from_secs(100_000))
            .expect("a silent session dies");
        (asked, stale, largest, dead)
    }

    #[test]
    fn a_tighter_estimate_brings_the_check_forward_and_the_old_one_goes_stale() {
        // Idle gaps of 0.8 to 2.3 s, each followed by a burst of frames 1 to
        // 15 ms apart (a chatty client): bursts pull the mean down faster
        // than time passes, so verdicts move earlier than pending checks.
        let detector = PhiDetector::new(PhiConfig::default()).expect("valid");
        let t0 = Instant::now();
        let mut arrivals = Vec::new();
        let mut now = t0;
        for round in 0..300u32 {
            now += Duration::from_millis(800 + u64::from(round % 7) * 250);
            arrivals.push(now);
            for i in 0..(1 + round % 15) {
                now += Duration::from_millis(1 + u64::from(i % 15));
                arrivals.push(now);
            }
        }
        let (asked, stale, largest, dead) = drive(&detector, t0, &arrivals);
        assert!(asked > 0, "an earlier check must be requested");
        assert_eq!(
            stale, asked,
            "each superseded check fires once and is ignored"
        );
        assert!(largest <= 16, "{largest} entries pending for one session");
        // Dead at its phi deadline after the last frame (within the slack),
        // not at a stale entry's time.
        let (mut state, _) = detector.start(t0, 1000 * MS);
        for &arrival in &arrivals {
            detector.heartbeat(&mut state, arrival);
        }
        let exact = detector.dead_at(&state);
        assert!(dead >= exact && dead <= exact + EARLIER_CHECK_SLACK);
    }

    #[test]
    fn state_stays_small() {
        assert!(
            std::mem::size_of::<PhiState>() <= 64,
            "{}",
            std::mem::size_of::<PhiState>()
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let base = PhiConfig::default();
        for threshold in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    PhiDetector::new(PhiConfig { threshold, ..base }),
                    Err(PhiConfigError::Threshold(_))
                ),
                "threshold {threshold}"
            );
        }
        // Above 308 the direct formula overflowed to NaN and every session
        // died at once; now the threshold is refused past 100 and the
        // inversion stays finite well beyond.
        for threshold in [100.5, 308.0, 700.0, 1e300] {
            assert!(PhiDetector::new(PhiConfig { threshold, ..base }).is_err());
        }
        assert!(sigmas_for_phi(700.0).is_finite());
        assert!(PhiDetector::new(PhiConfig {
            threshold: 100.0,
            ..base
        })
        .is_ok());
        for huge in [Duration::from_secs(86_401), Duration::MAX] {
            assert_eq!(
                PhiDetector::new(PhiConfig {
                    acceptable_pause: huge,
                    ..base
                })
                .err(),
                Some(PhiConfigError::AcceptablePause)
            );
            assert_eq!(
                PhiDetector::new(PhiConfig {
                    min_std_dev: huge,
                    ..base
                })
                .err(),
                Some(PhiConfigError::MinStdDev)
            );
        }
        assert_eq!(
            PhiDetector::new(PhiConfig {
                min_std_dev: Duration::ZERO,
                ..base
            })
            .err(),
            Some(PhiConfigError::MinStdDev)
        );
    }
}
