//! `lubdub simulate`: flags onto a [`Simulation`], then the table (or JSON)
//! on stdout and, if asked, the SVG plot on disk.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use lubdub::simulate::{self, NetworkModel, PhiGuards, Simulation};

use super::parse_duration;

/// Flags of `lubdub simulate`. Defaults describe an ordinary Internet client
/// at a 1 s interval; docs/DETECTION.md explains each value.
#[derive(Debug, Args)]
#[command(
    after_help = "Policies compared: the counter at max_missed 1 to 5, phi at thresholds 1 to 16.\n\
    Same seed and flags, same output, whatever the number of threads (given the same build: \
    the random streams belong to the rand and rand_distr versions in Cargo.lock).\n\
    The model and the results are explained in docs/DETECTION.md."
)]
pub struct SimulateArgs {
    /// Seed of every random draw; the output depends only on it and the flags.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Number of simulated live sessions.
    #[arg(long, default_value_t = 5000)]
    sessions: u32,
    /// Simulated time each session lives, during which false positives are
    /// counted (e.g. 1h, 30m).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    duration: Duration,
    /// Crashes measured per session: each forks a copy of the live session
    /// whose client stops sending at an instant drawn uniformly after the
    /// warm-up, and times the `Dead` verdict.
    #[arg(long, default_value_t = 5)]
    crashes_per_session: u32,
    /// Time before the first crash, so that phi's statistics are trained.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    warm_up: Duration,

    /// Granted heartbeat interval; the client PINGs every 80 % of it when
    /// idle, and the counter's verdict comes after max_missed × interval.
    #[arg(long, default_value = "1s", value_parser = parse_duration, help_heading = "Model")]
    interval: Duration,
    /// Fixed one-way delay from client to server.
    #[arg(long, default_value = "20ms", value_parser = parse_duration, help_heading = "Model")]
    base_delay: Duration,
    /// Median of the log-normal jitter added to each delivery (0ms: none).
    #[arg(long, default_value = "5ms", value_parser = parse_duration, help_heading = "Model")]
    jitter_median: Duration,
    /// Sigma of the jitter's underlying normal: 1.0 puts its p99 near 10×
    /// the median, 2.0 near 100×.
    #[arg(long, default_value_t = 1.0, help_heading = "Model")]
    jitter_sigma: f64,
    /// Probability that any one transmission is lost on its own (outside
    /// outages); each loss costs a retransmission timeout.
    #[arg(long, default_value_t = 0.005, help_heading = "Model")]
    loss: f64,
    /// First TCP retransmission timeout (Linux's minimum is 200ms); it
    /// doubles with each further loss of the same segment.
    #[arg(long, default_value = "200ms", value_parser = parse_duration, help_heading = "Model")]
    rto: Duration,
    /// Mean number of outages per session-hour: loss bursts during which
    /// every transmission is lost (Poisson arrivals).
    #[arg(long, default_value_t = 1.0, help_heading = "Model")]
    outages_per_hour: f64,
    /// Shortest outage: the scale of their Pareto-distributed durations.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, help_heading = "Model")]
    outage_scale: Duration,
    /// Pareto shape of outage durations: P(longer than x) = (scale/x)^shape,
    /// so smaller means a heavier tail.
    #[arg(long, default_value_t = 1.5, help_heading = "Model")]
    outage_shape: f64,
    /// Mean number of bad periods per session-hour (congestion, a weak radio
    /// link): stretches during which outages also come at
    /// --bad-outages-per-hour, so that loss bursts cluster in time (0: none).
    #[arg(long, default_value_t = 0.25, help_heading = "Model")]
    bad_periods_per_hour: f64,
    /// Mean length of a bad period (exponentially distributed).
    #[arg(long, default_value = "10m", value_parser = parse_duration, help_heading = "Model")]
    bad_period_length: Duration,
    /// Additional outages per hour inside a bad period (same durations as
    /// the others).
    #[arg(long, default_value_t = 30.0, help_heading = "Model")]
    bad_outages_per_hour: f64,
    /// Mean number of client pauses (GC, scheduler, VM steal) per
    /// session-hour; a PING due during a pause is sent when it ends.
    #[arg(long, default_value_t = 6.0, help_heading = "Model")]
    pauses_per_hour: f64,
    /// Shortest pause: the scale of their Pareto-distributed durations.
    #[arg(long, default_value = "50ms", value_parser = parse_duration, help_heading = "Model")]
    pause_scale: Duration,
    /// Pareto shape of pause durations (smaller: heavier tail).
    #[arg(long, default_value_t = 2.0, help_heading = "Model")]
    pause_shape: f64,

    /// Phi's floor under the measured standard deviation of the gaps
    /// (default: the core's PhiConfig::default()).
    #[arg(long, value_parser = parse_duration, help_heading = "Phi")]
    min_std_dev: Option<Duration>,
    /// Phi's tolerated silence beyond the mean gap (default: the core's
    /// PhiConfig::default()).
    #[arg(long, value_parser = parse_duration, help_heading = "Phi")]
    acceptable_pause: Option<Duration>,
    /// Phi's hard ceiling in intervals: dead after this much silence
    /// whatever phi says (default: the core's PhiConfig::default()).
    #[arg(long, help_heading = "Phi")]
    phi_max_missed: Option<u32>,

    /// Print the parameters and results as JSON instead of a table.
    #[arg(long, help_heading = "Output")]
    json: bool,
    /// Also write the trade-off plot (mean detection time against false
    /// positives per 1,000 session-hours, log scale) as SVG to this path.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    svg: Option<PathBuf>,
    /// Worker threads (default: the number of cores); the output does not
    /// depend on it.
    #[arg(long, help_heading = "Output")]
    threads: Option<usize>,
}

impl SimulateArgs {
    fn simulation(&self) -> Simulation {
        let guards = PhiGuards::default();
        let threads = self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Simulation {
            seed: self.seed,
            sessions: self.sessions,
            duration: self.duration,
            crashes_per_session: self.crashes_per_session,
            warm_up: self.warm_up,
            model: NetworkModel {
                interval: self.interval,
                base_delay: self.base_delay,
                jitter_median: self.jitter_median,
                jitter_sigma: self.jitter_sigma,
                loss: self.loss,
                rto: self.rto,
                outages_per_hour: self.outages_per_hour,
                outage_scale: self.outage_scale,
                outage_shape: self.outage_shape,
                bad_periods_per_hour: self.bad_periods_per_hour,
                bad_period_length: self.bad_period_length,
                bad_outages_per_hour: self.bad_outages_per_hour,
                pauses_per_hour: self.pauses_per_hour,
                pause_scale: self.pause_scale,
                pause_shape: self.pause_shape,
            },
            phi: PhiGuards {
                min_std_dev: self.min_std_dev.unwrap_or(guards.min_std_dev),
                acceptable_pause: self.acceptable_pause.unwrap_or(guards.acceptable_pause),
                max_missed: self.phi_max_missed.unwrap_or(guards.max_missed),
            },
            threads: threads.max(1),
        }
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let simulation = args.simulation();
    let started = Instant::now();
    let report = simulate::simulate(&simulation)?;
    // Wall time goes to stderr only: stdout must not depend on the machine.
    eprintln!(
        "simulated {} session-hours per policy in {:.1} s on {} threads",
        report.parameters.session_hours,
        started.elapsed().as_secs_f64(),
        simulation.threads
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("cannot serialise the report")?
        );
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = &args.svg {
        let svg = simulate::plot::svg(&report)?;
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write the plot to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn the_flags_default_to_the_library_defaults() {
        let args = Wrapper::parse_from(["simulate", "--threads", "1"]).args;
        assert_eq!(args.simulation(), Simulation::default());
    }

    #[test]
    fn every_flag_reaches_the_simulation() {
        let args = Wrapper::parse_from([
            "simulate",
            "--seed=9",
            "--interval=3s",
            "--jitter-median=0ms",
            "--bad-periods-per-hour=0",
            "--acceptable-pause=2s",
            "--phi-max-missed=3",
        ])
        .args;
        let simulation = args.simulation();
        assert_eq!(simulation.seed, 9);
        assert_eq!(simulation.model.interval, Duration::from_secs(3));
        assert_eq!(simulation.model.jitter_median, Duration::ZERO);
        assert_eq!(simulation.model.bad_periods_per_hour, 0.0);
        assert_eq!(simulation.phi.acceptable_pause, Duration::from_secs(2));
        assert_eq!(simulation.phi.max_missed, 3);
        assert_eq!(simulation.phi.min_std_dev, PhiGuards::default().min_std_dev);
    }
}
