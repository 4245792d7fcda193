//! Drives one detector over one session's heartbeat stream exactly as the
//! server does, and measures its false positives and detection times.
//!
//! The server calls `heartbeat` when a frame is read and `check` when a
//! scheduled check comes due, and in one wake-up it reads sockets before it
//! expires deadlines. The replay does the same in simulated time: one heap
//! of pending checks (including every `earlier_check`), arrivals first on a
//! tie, a check that returns neither verdict nor next check ignored as stale.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use lubdub_core::detector::{Detector, Transition};

use super::model::Heartbeat;

/// What one policy did with one session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionOutcome {
    /// `Dead` verdicts while the client was alive.
    pub false_positives: u32,
    /// One entry per simulated crash that was judged.
    pub detections: Vec<Detection>,
    /// Crashes that fell while the session was dropped (after a false
    /// positive, before its next frame): nothing was there to detect.
    pub skipped: u32,
    /// Crashes never declared dead. Always zero unless the detector is broken.
    pub undetected: u32,
}

/// One crash and its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    /// From the crash to the `Dead` verdict.
    pub delay: Duration,
    /// Crash instant minus the arrival of the last PING sent before it;
    /// negative when that PING was still in flight at the crash.
    pub silence_at_crash_ns: i64,
    /// The verdict came from the hard ceiling (`max_missed × interval` of
    /// silence), not from the policy's own judgement.
    pub at_ceiling: bool,
}

/// A detector, the state of one session (none while dropped) and its
/// pending checks: what the server holds for a session, in simulated time.
struct Replay<'d, D: Detector> {
    detector: &'d D,
    interval: Duration,
    origin: Instant,
    session: Option<D::State>,
    checks: BinaryHeap<Reverse<Instant>>,
}

/// By hand: a derive would ask for `D: Clone`, but only the state is copied.
impl<D: Detector> Clone for Replay<'_, D>
where
    D::State: Clone,
{
    fn clone(&self) -> Self {
        Self {
            detector: self.detector,
            interval: self.interval,
            origin: self.origin,
            session: self.session.clone(),
            checks: self.checks.clone(),
        }
    }
}

/// What happened at one event.
enum Event {
    Arrival,
    Check,
}

impl<'d, D: Detector> Replay<'d, D>
where
    D::State: Clone,
{
    fn new(detector: &'d D, interval: Duration, origin: Instant) -> Self {
        Self {
            detector,
            interval,
            origin,
            session: None,
            checks: BinaryHeap::new(),
        }
    }

    /// The next event, given the next arrival: arrivals win ties, because
    /// the server reads its sockets before it expires deadlines.
    fn next_event(&self, arrival: Option<Duration>) -> Option<(Duration, Event)> {
        let check = self
            .checks
            .peek()
            .map(|Reverse(due)| due.duration_since(self.origin));
        match (arrival, check) {
            (Some(arrival), Some(check)) if check < arrival => Some((check, Event::Check)),
            (Some(arrival), _) => Some((arrival, Event::Arrival)),
            (None, Some(check)) => Some((check, Event::Check)),
            (None, None) => None,
        }
    }

    /// A frame is read at `at`. A dropped session comes back, as a client
    /// reconnects, with fresh state.
    fn arrive(&mut self, at: Duration) {
        let now = self.origin + at;
        match &mut self.session {
            Some(state) => {
                let outcome = self.detector.heartbeat(state, now);
                if let Some(earlier) = outcome.earlier_check {
                    self.checks.push(Reverse(earlier));
                }
            }
            None => {
                let (state, first_check) = self.detector.start(now, self.interval);
                self.session = Some(state);
                self.checks.push(Reverse(first_check));
            }
        }
    }

    /// Runs the earliest pending check; the silence it convicted, if it did.
    fn check(&mut self) -> Option<Duration> {
        let Reverse(due) = self.checks.pop()?;
        let state = self.session.as_mut()?;
        let outcome = self.detector.check(state, due);
        if let Some(Transition::Dead { silent_for }) = outcome.transition {
            self.session = None;
            self.checks.clear();
            return Some(silent_for);
        }
        if let Some(next) = outcome.next_check {
            debug_assert!(next > due, "a check must move time forward");
            self.checks.push(Reverse(next));
        }
        None
    }
}

/// Replays a live session until `end`, counting false positives, and at
/// each instant of `crashes` (sorted, before `end`) forks a copy of the
/// session whose client crashes there and measures how long the detector
/// takes to declare it dead. Forking keeps crashes from disturbing the
/// false-positive count and judges every crash with statistics trained on
/// the session so far.
pub fn session<D: Detector>(
    detector: &D,
    interval: Duration,
    ceiling: Duration,
    beats: &[Heartbeat],
    end: Duration,
    crashes: &[Duration],
) -> SessionOutcome
where
    D::State: Clone,
{
    // Only differences of instants matter; any base will do.
    let origin = Instant::now();
    let mut live = Replay::new(detector, interval, origin);
    let mut outcome = SessionOutcome::default();
    let mut next_beat = 0;
    let mut crashes = crashes.iter().copied().peekable();
    loop {
        let event = live.next_event(beats.get(next_beat).map(|beat| beat.arrived));
        let horizon = event.as_ref().map_or(Duration::MAX, |(at, _)| *at);
        // Everything before the crash has happened; what is left is the
        // crashed client's in-flight PINGs and the pending checks.
        while let Some(crash) = crashes.next_if(|&crash| crash <= horizon) {
            if live.session.is_none() {
                outcome.skipped += 1;
                continue;
            }
            let sent_before = beats.partition_point(|beat| beat.sent < crash);
            let in_flight = beats.get(next_beat..sent_before).unwrap_or_default();
            match crashed(live.clone(), in_flight, crash) {
                Some((dead_at, silent_for)) => outcome.detections.push(Detection {
                    delay: dead_at - crash,
                    silence_at_crash_ns: signed_nanos(crash, beats[sent_before - 1].arrived),
                    at_ceiling: silent_for >= ceiling,
                }),
                None => outcome.undetected += 1,
            }
        }
        match event {
            Some((at, _)) if at >= end => break,
            None => break,
            Some((at, Event::Arrival)) => {
                live.arrive(at);
                next_beat += 1;
            }
            Some((_, Event::Check)) => {
                if live.check().is_some() {
                    outcome.false_positives += 1;
                }
            }
        }
    }
    outcome
}

/// Runs a forked session whose client crashed at `crash` until its `Dead`
/// verdict: when (offset) and after how much silence. `None` if it never
/// comes, which only a broken detector allows.
fn crashed<D: Detector>(
    mut replay: Replay<'_, D>,
    in_flight: &[Heartbeat],
    crash: Duration,
) -> Option<(Duration, Duration)>
where
    D::State: Clone,
{
    let mut next_beat = 0;
    while let Some((at, event)) = replay.next_event(in_flight.get(next_beat).map(|b| b.arrived)) {
        debug_assert!(at >= crash);
        match event {
            Event::Arrival => {
                replay.arrive(at);
                next_beat += 1;
            }
            Event::Check => {
                if let Some(silent_for) = replay.check() {
                    return Some((at, silent_for));
                }
            }
        }
    }
    None
}

/// `a − b` in nanoseconds, signed.
fn signed_nanos(a: Duration, b: Duration) -> i64 {
    let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    nanos(a) - nanos(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lubdub_core::detector::{CounterConfig, CounterDetector};

    const MS: Duration = Duration::from_millis(1);

    fn regular(period: Duration, delay: Duration, count: u32) -> Vec<Heartbeat> {
        (0..count)
            .map(|i| Heartbeat {
                sent: period * i,
                arrived: period * i + delay,
            })
            .collect()
    }

    fn counter(max_missed: u32) -> CounterDetector {
        CounterDetector::new(CounterConfig { max_missed })
    }

    #[test]
    fn a_crash_is_declared_dead_max_missed_intervals_after_the_last_arrival() {
        let beats = regular(800 * MS, 20 * MS, 100);
        // Crash at 10.1 s: the last PING was sent at 9.6 s and read at 9.62 s.
        let outcome = session(
            &counter(3),
            1000 * MS,
            3000 * MS,
            &beats,
            60_000 * MS,
            &[10_100 * MS],
        );
        assert_eq!(outcome.false_positives, 0);
        assert_eq!(
            outcome.detections,
            vec![Detection {
                delay: 9620 * MS + 3000 * MS - 10_100 * MS,
                silence_at_crash_ns: 480_000_000,
                at_ceiling: true,
            }]
        );
    }

    #[test]
    fn a_ping_in_flight_at_the_crash_still_counts() {
        let beats = regular(800 * MS, 20 * MS, 100);
        // Sent at 9.6 s, read at 9.62 s: the crash at 9.61 s comes between.
        let outcome = session(
            &counter(1),
            1000 * MS,
            1000 * MS,
            &beats,
            60_000 * MS,
            &[9610 * MS],
        );
        assert_eq!(outcome.detections[0].delay, 1010 * MS);
        assert_eq!(outcome.detections[0].silence_at_crash_ns, -10_000_000);
    }

    #[test]
    fn a_long_gap_is_a_false_positive_and_the_session_comes_back() {
        let mut beats = regular(800 * MS, 20 * MS, 10);
        // A 3 s hole, then regular again.
        let last = beats[9].sent;
        beats.extend(
            regular(800 * MS, 20 * MS, 10)
                .into_iter()
                .map(|b| Heartbeat {
                    sent: b.sent + last + 3000 * MS,
                    arrived: b.arrived + last + 3000 * MS,
                }),
        );
        // One crash while dropped (nothing to judge), one after the return;
        // the window closes before the stream's own end would look fatal.
        let crashes = [last + 2500 * MS, last + 5000 * MS];
        let outcome = session(
            &counter(2),
            1000 * MS,
            2000 * MS,
            &beats,
            18_000 * MS,
            &crashes,
        );
        assert_eq!(outcome.false_positives, 1);
        assert_eq!(outcome.skipped, 1);
        assert_eq!(outcome.detections.len(), 1);
    }

    #[test]
    fn nothing_after_the_end_is_judged() {
        let beats = regular(800 * MS, 20 * MS, 10);
        // The stream stops at 7.2 s; the window closes before the verdict.
        let outcome = session(&counter(1), 1000 * MS, 1000 * MS, &beats, 8000 * MS, &[]);
        assert_eq!(outcome.false_positives, 0);
    }
}
