//! `lubdub bench`: run a load scenario against a running server and print
//! its report (text, or JSON with `--json`); progress goes to stderr.
//!
//! The scenarios themselves live in the library (`lubdub::bench`), so that
//! integration tests run them in-process; this module only maps flags and
//! prints.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use lubdub::bench::{silence, SilenceConfig, SilenceReport, Stage};

use super::{parse_addr, parse_duration};

/// Exit status when the scenario ran but the requirement was missed.
const EXIT_MISSED: u8 = 2;

/// Flags of `lubdub bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the requirement was met, 2 when it was measured \
and missed, 1 when the scenario could not run."
)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Detection error (issue 4): sessions fall silent at once; how late is each dropped?
    ///
    /// N sessions heartbeat, then all fall silent at one instant. Each
    /// records when it last wrote a PING and when it saw the server end it
    /// (BYE or EOF); its detection error is
    /// end − (last PING + granted interval × max missed).
    /// Requirement: p99 at most 10 ms, and none before the deadline.
    ///
    /// Times are taken by this client, on the same machine as the server, so
    /// the client's own delay in noticing a drop is included: the figures are
    /// upper bounds of the server's.
    Silence(SilenceArgs),
}

/// Flags every scenario shares.
#[derive(Debug, Args)]
struct Target {
    /// Address of the lubdub server under test (its protocol port, not the admin API).
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    server: SocketAddr,
    /// Sessions to open, one TCP connection each. This process needs one open
    /// file per session and refuses up front when its limit (`ulimit -n`) is too low.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Heartbeat interval every HELLO asks for; the server clamps it to its
    /// --min-interval..--max-interval. 0s asks for the server's default.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    interval: Duration,
    /// Handshakes (connect, HELLO, WELCOME) in flight at once.
    #[arg(long, default_value_t = 500)]
    connect_concurrency: usize,
    /// Time one handshake may take before it is retried.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Attempts per session before it is reported as a failed handshake and
    /// left out (a REJECT is not retried).
    #[arg(long, default_value_t = 3)]
    connect_attempts: u32,
    /// Print the report as JSON on stdout instead of the text summary.
    #[arg(long)]
    json: bool,
}

/// Flags of `lubdub bench silence`.
#[derive(Debug, Args)]
struct SilenceArgs {
    #[command(flatten)]
    target: Target,
    /// Heartbeating after the last handshake, before the silence.
    /// Default: 5 granted intervals.
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Every session sends its last PING at the same instant, so that all
    /// deadlines coincide (the server's worst case). By default each session
    /// stops at its own random phase, spreading the deadlines over 4/5 of an
    /// interval.
    #[arg(long)]
    synchronized: bool,
    /// How long past its deadline a session is waited for; one still open
    /// then is reported as never dropped.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    grace: Duration,
    /// Ask for a PONG to every PING, as the interactive client does (more
    /// load during the warm-up; no difference once silent).
    #[arg(long)]
    acks: bool,
}

impl SilenceArgs {
    fn config(&self) -> SilenceConfig {
        SilenceConfig {
            server: self.target.server,
            sessions: self.target.sessions,
            interval: self.target.interval,
            warmup: self.warmup,
            synchronized: self.synchronized,
            grace: self.grace,
            connect_concurrency: self.target.connect_concurrency,
            handshake_timeout: self.target.handshake_timeout,
            connect_attempts: self.target.connect_attempts,
            acks_wanted: self.acks,
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let _log_writer = super::init_logging("warn");
    match args.scenario {
        Scenario::Silence(args) => run_silence(&args),
    }
}

fn run_silence(args: &SilenceArgs) -> anyhow::Result<ExitCode> {
    let config = args.config();
    // Multi-threaded: with thousands of drops landing together, two workers
    // notice them sooner than one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lubdub-bench")
        .build()
        .context("cannot start the benchmark runtime")?;
    let report = runtime.block_on(silence::run(&config, print_stage))?;
    print_report(&report, args.target.json)?;
    Ok(if report.verdict.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISSED)
    })
}

fn print_stage(stage: Stage) {
    match stage {
        Stage::Connecting {
            sessions,
            concurrency,
        } => eprintln!("connecting {sessions} sessions, {concurrency} at a time"),
        Stage::WarmingUp {
            established,
            failed,
            connect_time,
            warmup,
        } => eprintln!(
            "{established} sessions open ({failed} failed) after {:.2} s; heartbeating for {}",
            connect_time.as_secs_f64(),
            humantime::format_duration(warmup)
        ),
        Stage::Silent { wait_at_most } => eprintln!(
            "silence: waiting up to {:.2} s for the server to drop every session",
            wait_at_most.as_secs_f64()
        ),
    }
}

fn print_report(report: &SilenceReport, json: bool) -> anyhow::Result<()> {
    if json {
        let text = serde_json::to_string_pretty(report).context("cannot encode the report")?;
        println!("{text}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
