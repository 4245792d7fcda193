//! A whole simulation: many sessions, every policy on each, split over
//! threads, tallied per policy.
//!
//! Each session's heartbeat stream is generated once and replayed by every
//! policy, so policies are compared on the very same traffic. Seeds are drawn
//! per session up front and tallies only add integers, so the result does not
//! depend on the number of threads.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::model::{self, NetworkModel, SessionSeeds};
use super::policy::{self, Judge, PhiGuards, Policy};
use super::replay::SessionOutcome;
use super::SimulateError;

/// Everything a run depends on. Same values, same result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Simulation {
    /// Seed of every random draw.
    pub seed: u64,
    /// Number of live sessions.
    pub sessions: u32,
    /// Simulated time each session lives.
    pub duration: Duration,
    /// Crashes forked off each session, at instants drawn uniformly after
    /// the warm-up.
    pub crashes_per_session: u32,
    /// Time before the first crash, so that phi is judged with trained
    /// statistics.
    pub warm_up: Duration,
    /// The client and the network.
    pub model: NetworkModel,
    /// Phi's parameters besides the threshold.
    pub phi: PhiGuards,
    /// Worker threads; the result is the same for any number.
    pub threads: usize,
}

impl Default for Simulation {
    /// 5,000 sessions of an hour with 5 crashes each: 5,000 session-hours
    /// and 25,000 detections per policy, about 20 s on two cores in release.
    fn default() -> Self {
        Self {
            seed: 1,
            sessions: 5000,
            duration: Duration::from_secs(3600),
            crashes_per_session: 5,
            warm_up: Duration::from_secs(60),
            model: NetworkModel::default(),
            phi: PhiGuards::default(),
            threads: 1,
        }
    }
}

/// Everything measured for one policy, in exact integers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// `Dead` verdicts on live sessions.
    pub false_positives: u64,
    /// Sessions with at least one false positive.
    pub sessions_dropped: u64,
    /// Detection delays, sorted.
    pub detections: Vec<Duration>,
    /// Detections that came from the hard ceiling.
    pub at_ceiling: u64,
    /// Sum over detections of the silence at the crash, in nanoseconds.
    pub silence_at_crash_ns: i128,
    /// Crashes that fell while the session was dropped.
    pub skipped: u64,
    /// Crashes never detected (a bug if not zero).
    pub undetected: u64,
}

impl Tally {
    fn add(&mut self, outcome: SessionOutcome) {
        self.false_positives += u64::from(outcome.false_positives);
        self.sessions_dropped += u64::from(outcome.false_positives > 0);
        self.skipped += u64::from(outcome.skipped);
        self.undetected += u64::from(outcome.undetected);
        for detection in outcome.detections {
            self.detections.push(detection.delay);
            self.at_ceiling += u64::from(detection.at_ceiling);
            self.silence_at_crash_ns += i128::from(detection.silence_at_crash_ns);
        }
    }

    fn merge(&mut self, other: Tally) {
        self.false_positives += other.false_positives;
        self.sessions_dropped += other.sessions_dropped;
        self.detections.extend(other.detections);
        self.at_ceiling += other.at_ceiling;
        self.silence_at_crash_ns += other.silence_at_crash_ns;
        self.skipped += other.skipped;
        self.undetected += other.undetected;
    }
}

impl Simulation {
    /// Checks the run's parameters and the model's.
    ///
    /// # Errors
    /// [`SimulateError`] naming the first value that cannot work.
    pub fn validate(&self) -> Result<(), SimulateError> {
        self.model.validate()?;
        if self.sessions == 0 || self.duration.is_zero() {
            return Err(SimulateError::Model(
                "sessions and duration must be positive".into(),
            ));
        }
        if self.crashes_per_session > 0 && self.warm_up >= self.duration {
            return Err(SimulateError::Model(
                "the warm-up must be shorter than the duration".into(),
            ));
        }
        Ok(())
    }

    /// Runs every policy of [`policy::all`] over the same sessions.
    ///
    /// # Errors
    /// [`SimulateError`] when a parameter cannot work.
    pub fn run(&self) -> Result<Vec<(Policy, Tally)>, SimulateError> {
        self.validate()?;
        let policies = policy::all();
        let judges = policies
            .iter()
            .map(|&policy| Judge::new(policy, self.phi))
            .collect::<Result<Vec<_>, _>>()?;
        let mut master = StdRng::seed_from_u64(self.seed);
        let seeds: Vec<SessionSeeds> = (0..self.sessions)
            .map(|_| SessionSeeds::draw(&mut master))
            .collect();
        let chunk = seeds.len().div_ceil(self.threads.max(1));
        let partials = std::thread::scope(|scope| {
            let workers: Vec<_> = seeds
                .chunks(chunk)
                .map(|chunk| scope.spawn(|| self.sessions_of(chunk, &judges)))
                .collect();
            workers
                .into_iter()
                .map(|worker| worker.join().expect("a simulation thread panicked"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut tallies = vec![Tally::default(); judges.len()];
        for partial in partials {
            for (tally, part) in tallies.iter_mut().zip(partial) {
                tally.merge(part);
            }
        }
        for tally in &mut tallies {
            tally.detections.sort_unstable();
        }
        Ok(policies.into_iter().zip(tallies).collect())
    }

    /// Simulates the sessions of `seeds` under every judge.
    fn sessions_of(
        &self,
        seeds: &[SessionSeeds],
        judges: &[Judge],
    ) -> Result<Vec<Tally>, SimulateError> {
        let mut tallies = vec![Tally::default(); judges.len()];
        for &seeds in seeds {
            let beats = model::heartbeats(&self.model, self.duration, seeds)?;
            let crashes = self.crash_instants(seeds.crashes);
            for (tally, judge) in tallies.iter_mut().zip(judges) {
                tally.add(judge.replay(self.model.interval, &beats, self.duration, &crashes));
            }
        }
        Ok(tallies)
    }

    /// Sorted crash instants, uniform between the warm-up and the end.
    fn crash_instants(&self, seed: u64) -> Vec<Duration> {
        let mut rng = StdRng::seed_from_u64(seed);
        let (from, to) = (self.warm_up.as_secs_f64(), self.duration.as_secs_f64());
        let mut crashes: Vec<Duration> = (0..self.crashes_per_session)
            .map(|_| Duration::from_secs_f64(rng.random_range(from..to)))
            .collect();
        crashes.sort_unstable();
        crashes
    }
}
