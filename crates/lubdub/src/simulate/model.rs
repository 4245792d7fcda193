//! The heartbeat stream of one simulated session: when its PINGs are sent
//! and when they reach the server, from a seeded model of client pauses,
//! network delay, loss bursts and TCP retransmission.
//!
//! Pure arithmetic on `Duration` offsets from the session's start; the
//! replay (`replay.rs`) turns them into instants and feeds a detector.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Exp, LogNormal, Pareto};

use super::SimulateError;

/// Linux's `TCP_RTO_MAX`: retransmission back-off stops doubling here.
const RTO_MAX: Duration = Duration::from_secs(120);

/// Every parameter of the client and network model. See `docs/DETECTION.md`
/// for where the defaults come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetworkModel {
    /// Granted heartbeat interval; the client sends a PING every
    /// `ping_after(interval)` (80 % of it) when idle, as the real client does.
    pub interval: Duration,
    /// Fixed part of the one-way delay (propagation and serialisation).
    pub base_delay: Duration,
    /// Median of the log-normal queueing jitter added to every delivery.
    /// Zero turns jitter off.
    pub jitter_median: Duration,
    /// Shape (σ of the underlying normal) of the jitter: 1.0 puts its p99
    /// at about 10× the median.
    pub jitter_sigma: f64,
    /// Probability that one transmission of a segment is lost on its own,
    /// outside any outage.
    pub loss: f64,
    /// First retransmission timeout; doubles after every further loss of the
    /// same segment (RFC 6298 §5.5), up to Linux's 120 s.
    pub rto: Duration,
    /// Mean number of outages (loss bursts: every segment sent during one is
    /// lost) per hour of session.
    pub outages_per_hour: f64,
    /// Pareto scale (the shortest) of outage durations.
    pub outage_scale: Duration,
    /// Pareto shape of outage durations: smaller is heavier-tailed.
    pub outage_shape: f64,
    /// Mean number of bad periods per hour: stretches (congestion, a weak
    /// radio link) during which outages come at `bad_outages_per_hour`
    /// instead, so that loss bursts cluster in time as measured paths show.
    pub bad_periods_per_hour: f64,
    /// Mean length of a bad period (exponentially distributed).
    pub bad_period_length: Duration,
    /// Additional outages per hour inside a bad period.
    pub bad_outages_per_hour: f64,
    /// Mean number of client pauses (GC, scheduler, VM steal) per hour.
    pub pauses_per_hour: f64,
    /// Pareto scale (the shortest) of pause durations.
    pub pause_scale: Duration,
    /// Pareto shape of pause durations.
    pub pause_shape: f64,
}

impl Default for NetworkModel {
    /// An ordinary Internet client; the reasons for each value are in
    /// `docs/DETECTION.md`.
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            base_delay: Duration::from_millis(20),
            jitter_median: Duration::from_millis(5),
            jitter_sigma: 1.0,
            loss: 0.005,
            rto: Duration::from_millis(200),
            outages_per_hour: 1.0,
            outage_scale: Duration::from_millis(100),
            outage_shape: 1.5,
            bad_periods_per_hour: 0.25,
            bad_period_length: Duration::from_secs(600),
            bad_outages_per_hour: 30.0,
            pauses_per_hour: 6.0,
            pause_scale: Duration::from_millis(50),
            pause_shape: 2.0,
        }
    }
}

impl NetworkModel {
    /// A model without jitter, loss, outages or pauses: PINGs arrive exactly
    /// `base_delay` after they are sent.
    pub fn calm(interval: Duration, base_delay: Duration) -> Self {
        Self {
            interval,
            base_delay,
            jitter_median: Duration::ZERO,
            loss: 0.0,
            outages_per_hour: 0.0,
            bad_periods_per_hour: 0.0,
            pauses_per_hour: 0.0,
            ..Self::default()
        }
    }

    /// The period of an idle client's PINGs.
    pub fn ping_period(&self) -> Duration {
        lubdub_core::client::ping_after(self.interval)
    }

    /// Checks every value before a long run starts.
    ///
    /// # Errors
    /// [`SimulateError::Model`] naming the first value that cannot work.
    pub fn validate(&self) -> Result<(), SimulateError> {
        let bad = |what: &str| Err(SimulateError::Model(what.to_owned()));
        if self.ping_period().is_zero() {
            return bad("the interval must be positive");
        }
        if !(self.jitter_sigma.is_finite() && self.jitter_sigma >= 0.0) {
            return bad("jitter sigma must be a finite number >= 0");
        }
        if !(0.0..1.0).contains(&self.loss) {
            return bad("loss must be a probability in [0, 1)");
        }
        if self.rto.is_zero() {
            return bad("the retransmission timeout must be positive");
        }
        for (name, rate, scale, shape) in [
            (
                "outage",
                self.outages_per_hour,
                self.outage_scale,
                self.outage_shape,
            ),
            (
                "pause",
                self.pauses_per_hour,
                self.pause_scale,
                self.pause_shape,
            ),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return bad(&format!("{name}s per hour must be a finite number >= 0"));
            }
            if rate > 0.0 && (scale.is_zero() || !(shape.is_finite() && shape > 0.0)) {
                return bad(&format!("{name} scale and shape must be positive"));
            }
        }
        for (name, rate) in [
            ("bad periods", self.bad_periods_per_hour),
            ("outages in bad periods", self.bad_outages_per_hour),
        ] {
            if !(rate.is_finite() && rate >= 0.0) {
                return bad(&format!("{name} per hour must be a finite number >= 0"));
            }
        }
        if self.bad_periods_per_hour > 0.0 && self.bad_period_length.is_zero() {
            return bad("bad periods must have a positive mean length");
        }
        Ok(())
    }
}

/// One PING: when the client sent it and when the server read it, as
/// offsets from the session's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// When the client sent it.
    pub sent: Duration,
    /// When the server read it: never before an earlier PING, because TCP
    /// delivers in order (head-of-line blocking).
    pub arrived: Duration,
}

/// Seeds of a session's independent random streams. Kept apart so that
/// changing one part of the model (say, the jitter) leaves the others (the
/// pauses, the outages, the crash instants) exactly as they were: runs with
/// different flags compare like with like.
#[derive(Debug, Clone, Copy)]
pub struct SessionSeeds {
    pauses: u64,
    outages: u64,
    network: u64,
    /// Seed of the crash instants, drawn by the caller.
    pub crashes: u64,
}

impl SessionSeeds {
    /// Draws the seeds of one session from the run's master stream.
    pub fn draw(master: &mut StdRng) -> Self {
        Self {
            pauses: master.random(),
            outages: master.random(),
            network: master.random(),
            crashes: master.random(),
        }
    }
}

/// A stretch of time `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: Duration,
    end: Duration,
}

/// The PINGs of one session whose client sends until `horizon`, in order.
///
/// The first heartbeat stands for the HELLO that opens the session, sent at
/// offset zero.
///
/// # Errors
/// [`SimulateError::Model`] when the model does not validate.
pub fn heartbeats(
    model: &NetworkModel,
    horizon: Duration,
    seeds: SessionSeeds,
) -> Result<Vec<Heartbeat>, SimulateError> {
    model.validate()?;
    let pauses = spans(
        &mut StdRng::seed_from_u64(seeds.pauses),
        &[(Duration::ZERO, horizon, model.pauses_per_hour)],
        model.pause_scale,
        model.pause_shape,
    )?;
    let outages = outages(model, horizon, &mut StdRng::seed_from_u64(seeds.outages))?;
    let sends = send_times(model.ping_period(), horizon, &pauses);
    let mut network = Delivery::new(model, &outages, StdRng::seed_from_u64(seeds.network))?;
    let mut previous = Duration::ZERO;
    Ok(sends
        .into_iter()
        .map(|sent| {
            let arrived = network.deliver(sent).max(previous);
            previous = arrived;
            Heartbeat { sent, arrived }
        })
        .collect())
}

/// Send times of an idle client whose PING timer fires every `period`. A
/// pause covering a due PING holds it until the pause ends, and the next
/// one is due a full period later, as with the real client's idle timer.
fn send_times(period: Duration, horizon: Duration, pauses: &[Span]) -> Vec<Duration> {
    let mut sends = Vec::with_capacity(
        usize::try_from(horizon.as_nanos() / period.as_nanos() + 2).unwrap_or(0),
    );
    let mut pauses = pauses.iter().peekable();
    let mut due = Duration::ZERO;
    while due <= horizon {
        while pauses.next_if(|pause| pause.end <= due).is_some() {}
        if let Some(pause) = pauses.peek().filter(|pause| pause.start <= due) {
            due = pause.end;
        }
        sends.push(due);
        due += period;
    }
    sends
}

/// Outages over the whole session at the background rate, plus more inside
/// each bad period.
fn outages(
    model: &NetworkModel,
    horizon: Duration,
    rng: &mut StdRng,
) -> Result<Vec<Span>, SimulateError> {
    let mut rates = vec![(Duration::ZERO, horizon, model.outages_per_hour)];
    if model.bad_periods_per_hour > 0.0 && model.bad_outages_per_hour > 0.0 {
        let lengths = Exp::new(1.0 / model.bad_period_length.as_secs_f64())
            .map_err(|e| SimulateError::Model(e.to_string()))?;
        for start in poisson(rng, Duration::ZERO, horizon, model.bad_periods_per_hour)? {
            let end = (start + Duration::from_secs_f64(lengths.sample(rng))).min(horizon);
            rates.push((start, end, model.bad_outages_per_hour));
        }
    }
    spans(rng, &rates, model.outage_scale, model.outage_shape)
}

/// Poisson arrivals at `per_hour` in each stretch of `rates`, each lasting a
/// Pareto(`scale`, `shape`) time, merged where they overlap, sorted.
fn spans(
    rng: &mut StdRng,
    rates: &[(Duration, Duration, f64)],
    scale: Duration,
    shape: f64,
) -> Result<Vec<Span>, SimulateError> {
    let mut starts = Vec::new();
    for &(from, to, per_hour) in rates {
        starts.extend(poisson(rng, from, to, per_hour)?);
    }
    if starts.is_empty() {
        return Ok(Vec::new());
    }
    starts.sort_unstable();
    let lengths =
        Pareto::new(scale.as_secs_f64(), shape).map_err(|e| SimulateError::Model(e.to_string()))?;
    let mut merged: Vec<Span> = Vec::new();
    for start in starts {
        // Pareto's tail is unbounded; a day is longer than any session here.
        let length = Duration::from_secs_f64(lengths.sample(rng).min(86_400.0));
        let span = Span {
            start,
            end: start + length,
        };
        match merged.last_mut() {
            Some(last) if span.start <= last.end => last.end = last.end.max(span.end),
            _ => merged.push(span),
        }
    }
    Ok(merged)
}

/// Instants of a Poisson process at `per_hour` in `[from, to)`.
fn poisson(
    rng: &mut StdRng,
    from: Duration,
    to: Duration,
    per_hour: f64,
) -> Result<Vec<Duration>, SimulateError> {
    if per_hour == 0.0 {
        return Ok(Vec::new());
    }
    let gaps = Exp::new(per_hour / 3600.0).map_err(|e| SimulateError::Model(e.to_string()))?;
    let mut instants = Vec::new();
    let mut at = from.as_secs_f64();
    loop {
        at += gaps.sample(rng);
        if at >= to.as_secs_f64() {
            return Ok(instants);
        }
        instants.push(Duration::from_secs_f64(at));
    }
}

/// One direction of a TCP connection: loss, retransmission and delay.
struct Delivery<'a> {
    base: Duration,
    jitter: Option<LogNormal<f64>>,
    loss: f64,
    rto: Duration,
    outages: &'a [Span],
    rng: StdRng,
}

impl<'a> Delivery<'a> {
    fn new(model: &NetworkModel, outages: &'a [Span], rng: StdRng) -> Result<Self, SimulateError> {
        let jitter = if model.jitter_median.is_zero() {
            None
        } else {
            Some(
                LogNormal::new(model.jitter_median.as_secs_f64().ln(), model.jitter_sigma)
                    .map_err(|e| SimulateError::Model(e.to_string()))?,
            )
        };
        Ok(Self {
            base: model.base_delay,
            jitter,
            loss: model.loss,
            rto: model.rto,
            outages,
            rng,
        })
    }

    /// When a segment sent at `sent` reaches the server on its own (before
    /// head-of-line blocking): retransmitted after the RTO, doubling, until
    /// one copy is neither lost at random nor sent into an outage.
    fn deliver(&mut self, sent: Duration) -> Duration {
        let mut attempt = sent;
        let mut rto = self.rto;
        while self.in_outage(attempt) || (self.loss > 0.0 && self.rng.random_bool(self.loss)) {
            attempt += rto;
            rto = (rto * 2).min(RTO_MAX);
        }
        let jitter = self.jitter.map_or(Duration::ZERO, |jitter| {
            Duration::from_secs_f64(jitter.sample(&mut self.rng).min(3600.0))
        });
        attempt + self.base + jitter
    }

    fn in_outage(&self, at: Duration) -> bool {
        let after = self.outages.partition_point(|outage| outage.start <= at);
        after > 0 && at < self.outages[after - 1].end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seeds(n: u64) -> SessionSeeds {
        SessionSeeds::draw(&mut StdRng::seed_from_u64(n))
    }

    #[test]
    fn a_calm_network_delivers_every_ping_after_the_base_delay() {
        let model = NetworkModel::calm(Duration::from_secs(1), 20 * MS);
        let beats = heartbeats(&model, Duration::from_secs(10), seeds(1)).expect("valid model");
        assert_eq!(beats.len(), 13, "0, 0.8, …, 9.6 s");
        for (i, beat) in beats.iter().enumerate() {
            assert_eq!(beat.sent, 800 * MS * u32::try_from(i).expect("13 fits"));
            assert_eq!(beat.arrived, beat.sent + 20 * MS);
        }
    }

    #[test]
    fn a_pause_holds_the_due_ping_and_restarts_the_period() {
        let pauses = [Span {
            start: 1000 * MS,
            end: 2500 * MS,
        }];
        let sends = send_times(800 * MS, 4000 * MS, &pauses);
        let expected: Vec<Duration> = [0, 800, 2500, 3300].iter().map(|&ms| ms * MS).collect();
        assert_eq!(sends, expected, "1.6 s was due inside the pause");
    }

    #[test]
    fn a_segment_sent_into_an_outage_is_retransmitted_with_doubling_timeouts() {
        let model = NetworkModel::calm(Duration::from_secs(1), 20 * MS);
        let outages = [Span {
            start: Duration::ZERO,
            end: 700 * MS,
        }];
        let mut network =
            Delivery::new(&model, &outages, StdRng::seed_from_u64(0)).expect("valid model");
        // Copies at 0, 200 and 600 ms are lost; the one at 1400 ms gets through.
        assert_eq!(network.deliver(Duration::ZERO), 1420 * MS);
        assert_eq!(network.deliver(700 * MS), 720 * MS);
    }

    #[test]
    fn later_pings_wait_behind_a_retransmitted_one() {
        let model = NetworkModel {
            outages_per_hour: 3600.0,
            outage_scale: 500 * MS,
            ..NetworkModel::default()
        };
        let beats = heartbeats(&model, Duration::from_secs(600), seeds(7)).expect("valid model");
        assert!(beats.windows(2).all(|w| w[0].arrived <= w[1].arrived));
        assert!(beats.iter().all(|beat| beat.arrived >= beat.sent + 20 * MS));
        let blocked = beats
            .windows(2)
            .filter(|w| w[0].arrived == w[1].arrived)
            .count();
        assert!(blocked > 0, "outages must make PINGs arrive together");
    }

    #[test]
    fn spans_merge_where_they_overlap() {
        let mut rng = StdRng::seed_from_u64(3);
        let rates = [(Duration::ZERO, Duration::from_secs(3600), 3600.0)];
        let spans = spans(&mut rng, &rates, 2000 * MS, 1.0).expect("valid model");
        assert!(spans.windows(2).all(|w| w[0].end < w[1].start));
    }

    #[test]
    fn bad_periods_bring_outages_in_clusters() {
        let model = NetworkModel {
            outages_per_hour: 0.0,
            bad_periods_per_hour: 1.0,
            bad_period_length: Duration::from_secs(60),
            bad_outages_per_hour: 600.0,
            ..NetworkModel::default()
        };
        let mut rng = StdRng::seed_from_u64(5);
        let outages = outages(&model, Duration::from_secs(36_000), &mut rng).expect("valid model");
        // About 10 periods × 10 outages each, in few tight groups.
        assert!((50..200).contains(&outages.len()), "{}", outages.len());
        let close = outages
            .windows(2)
            .filter(|w| w[1].start - w[0].start < Duration::from_secs(60))
            .count();
        assert!(
            close * 10 > outages.len() * 7,
            "{close} of {}",
            outages.len()
        );
    }

    #[test]
    fn bad_models_are_refused() {
        let loss = NetworkModel {
            loss: 1.0,
            ..NetworkModel::default()
        };
        assert!(matches!(loss.validate(), Err(SimulateError::Model(_))));
        let shape = NetworkModel {
            pause_shape: 0.0,
            ..NetworkModel::default()
        };
        assert!(matches!(shape.validate(), Err(SimulateError::Model(_))));
    }
}
