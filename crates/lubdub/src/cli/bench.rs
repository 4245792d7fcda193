//! `lubdub bench`: run a load scenario against a running server and print
//! its report (text, or JSON with `--json`); progress goes to stderr.
//!
//! The scenarios themselves live in the library (`lubdub::bench`), so that
//! integration tests run them in-process; this module only maps flags and
//! prints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
#[cfg(feature = "plot")]
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lubdub::bench::fleet::{self, DEFAULT_SESSIONS_PER_WORKER};
use lubdub::bench::worker::{self, WorkerConfig};
use lubdub::bench::{
    silence, Dialect, FleetEvent, LoadConfig, LoadReport, LoadScenario, SilenceConfig,
    SilenceReport, Stage, StallPlan,
};

use super::{parse_addr, parse_duration};

/// Exit status when the scenario ran but the requirement was missed (silence),
/// or sessions failed or were ended (hold, pump, stall).
const EXIT_MISSED: u8 = 2;

/// Flags of `lubdub bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 when the requirement was met (hold, pump, stall: every session \
opened and held through the window), 2 when it was measured and missed, 1 when the scenario \
could not run."
)]
pub struct BenchArgs {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Detection error: sessions fall silent at once; how late is each dropped?
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
    /// Rooms and watches: what they cost the server and what watchers get.
    ///
    /// Members join one room and heartbeat (leaving and joining again at
    /// --churn a second in all); full watchers watch --watch targets (by
    /// default the room), count watchers the room's count. Reports, as
    /// JSON, the server's memory per membership and per watch (with
    /// --server-pid), its CPU in the measured window, and what each kind
    /// of watcher received a second. With --expect-leaves the window ends
    /// once every full watcher has seen that many departures (made by
    /// `lubdub bench silence --rooms N` meanwhile).
    Presence(PresenceArgs),
    /// Memory and idle CPU: N sessions heartbeat at a slow period (default
    /// 2.4 s: lubdub's client at the default 3 s interval).
    ///
    /// Reports connections held, handshake errors, heartbeats acknowledged,
    /// round trips and, with --server-pid, the server's resident memory per
    /// session (growth from before the first connect) and CPU time per
    /// heartbeat and as a share of one core. Large N is spread over worker
    /// processes and source addresses (127.0.0.2, 127.0.0.3, …).
    Hold(LoadArgs),
    /// CPU per heartbeat and round trips under load: N sessions heartbeat at
    /// a fast period (default 100 ms). Same report as hold.
    Pump(LoadArgs),
    /// Evictions: N sessions heartbeat while the server is stopped (SIGSTOP)
    /// and resumed (SIGCONT) inside the window; reports how many sessions
    /// the server ended. Needs --server-pid.
    Stall(StallArgs),
    /// Draw hold and pump reports as an SVG: memory per session and CPU per
    /// heartbeat against N.
    ///
    /// Reads the --json output of hold and pump runs given --server-pid and
    /// draws two panels: the server's memory per session (hold runs) and its
    /// CPU time per heartbeat (hold and pump runs) against the number of
    /// sessions, one line per server, scenario and period; the median where
    /// several runs share a point. Other reports are left out.
    #[cfg(feature = "plot")]
    Plot(PlotArgs),
    /// One load-generator process (started by hold, pump and stall).
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Flags of hold, pump and stall.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Address of the server under test: lubdub's protocol port, or an MQTT
    /// broker's with --protocol mqtt.
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    server: SocketAddr,
    /// Protocol to speak: lubdub (every PING asks for a PONG), or mqtt
    /// (MQTT 3.1.1 CONNECT with a keep-alive, then PINGREQ answered by
    /// PINGRESP) to drive Mosquitto or another broker with the same load.
    #[arg(long, value_enum, default_value = "lubdub")]
    protocol: Dialect,
    /// Sessions to open in all (one TCP connection each).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Heartbeat period of every session. lubdub sessions ask for the
    /// interval at whose 80 % lubdub's own client pings (period × 5/4), MQTT
    /// sessions for a keep-alive of the period rounded up to whole seconds.
    /// Default: 2.4s for hold (the default 3 s interval), 100ms for pump,
    /// 1s for stall.
    #[arg(long, value_parser = parse_duration)]
    period: Option<Duration>,
    /// Heartbeating after the last handshake, before the measured window.
    /// Default: two periods, at least 1s.
    #[arg(long, value_parser = parse_duration)]
    warmup: Option<Duration>,
    /// Length of the measured window. Default: 30s for hold, 10s for pump, 20s for stall.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// lubdub only: heartbeats ask for no PONG (the one-way
    /// variant), so the server only reads; no round trip is measured.
    #[arg(long)]
    one_way: bool,
    /// Process id of the server, to read its memory and CPU time from
    /// /proc/<pid> (and to stop it, in the stall scenario).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most sessions per worker process. A process may hold only as many
    /// sockets as its open-file limit allows (`ulimit -n`); larger runs are
    /// split over several workers.
    #[arg(long, default_value_t = DEFAULT_SESSIONS_PER_WORKER)]
    sessions_per_worker: usize,
    /// Source address of the first worker; worker i connects from this
    /// address + i, so that no address runs out of ephemeral ports. `auto`:
    /// 127.0.0.2 for a loopback server, the kernel's choice otherwise;
    /// `none`: always the kernel's choice.
    #[arg(long, default_value = "auto", value_parser = parse_source)]
    source: Source,
    /// Handshakes in flight at once, per worker.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Time one handshake may take before it is retried.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Attempts per session before it counts as a handshake error (a refusal is final).
    #[arg(long, default_value_t = 3)]
    connect_attempts: u32,
    /// Print the report as JSON on stdout instead of the text summary.
    #[arg(long)]
    json: bool,
}

/// Flags of `lubdub bench stall`.
#[derive(Debug, Args)]
struct StallArgs {
    #[command(flatten)]
    load: LoadArgs,
    /// From the start of the window to SIGSTOP.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    stop_after: Duration,
    /// How long the server stays stopped.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    stop_for: Duration,
}

/// Flags of `lubdub bench plot`.
#[cfg(feature = "plot")]
#[derive(Debug, Args)]
struct PlotArgs {
    /// Where to write the SVG.
    #[arg(long, short)]
    output: PathBuf,
    /// JSON reports of `lubdub bench hold|pump --server-pid PID --json`.
    #[arg(required = true)]
    reports: Vec<PathBuf>,
}

/// Flags of the hidden worker subcommand.
#[derive(Debug, Args)]
struct WorkerArgs {
    /// The worker's configuration, as JSON.
    #[arg(long)]
    config: String,
}

/// Where workers connect from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Auto,
    Kernel,
    From(Ipv4Addr),
}

fn parse_source(text: &str) -> Result<Source, String> {
    match text {
        "auto" => Ok(Source::Auto),
        "none" => Ok(Source::Kernel),
        _ => text
            .parse()
            .map(Source::From)
            .map_err(|_| format!("{text:?} is not an IPv4 address, `auto` or `none`")),
    }
}

impl LoadArgs {
    fn config(
        &self,
        scenario: LoadScenario,
        stall: Option<StallPlan>,
    ) -> anyhow::Result<LoadConfig> {
        let (period, window) = match scenario {
            LoadScenario::Hold => (Duration::from_millis(2400), Duration::from_secs(30)),
            LoadScenario::Pump => (Duration::from_millis(100), Duration::from_secs(10)),
            LoadScenario::Stall => (Duration::from_secs(1), Duration::from_secs(20)),
        };
        let period = self.period.unwrap_or(period);
        let source_base = match self.source {
            Source::From(ip) => Some(ip),
            Source::Kernel => None,
            Source::Auto => self
                .server
                .ip()
                .is_loopback()
                .then_some(Ipv4Addr::new(127, 0, 0, 2))
                .filter(|_| matches!(self.server.ip(), IpAddr::V4(_))),
        };
        Ok(LoadConfig {
            scenario,
            server: self.server,
            dialect: self.protocol,
            sessions: self.sessions,
            period,
            acks: !self.one_way,
            warmup: self
                .warmup
                .unwrap_or_else(|| (period * 2).max(Duration::from_secs(1))),
            window: self.duration.unwrap_or(window),
            stall,
            server_pid: self.server_pid,
            sessions_per_worker: self.sessions_per_worker,
            source_base,
            connect_concurrency: self.connect_concurrency,
            handshake_timeout: self.handshake_timeout,
            connect_attempts: self.connect_attempts,
            worker_program: std::env::current_exe()
                .context("cannot find this executable to start workers")?,
            // Unique per run: names from an earlier run may still be held
            // by a server that has not dropped them yet.
            name_prefix: format!("bench{}", std::process::id()),
        })
    }
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
    /// Session i joins room `#fleet-{i mod N}` after its WELCOME, so that
    /// `lubdub bench presence` can watch the rooms fall silent (0: none).
    #[arg(long, default_value_t = 0)]
    rooms: usize,
}

/// Flags of `lubdub bench presence`.
#[derive(Debug, Args)]
struct PresenceArgs {
    /// Address of the lubdub server under test.
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = parse_addr)]
    server: SocketAddr,
    /// Interval every HELLO asks for.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Sessions that join --room and heartbeat.
    #[arg(long, default_value_t = 0)]
    members: usize,
    /// The members' room.
    #[arg(long, default_value = "#bench")]
    room: String,
    /// Members leaving and joining again, a second, in all.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Sessions watching every --watch target in full.
    #[arg(long, default_value_t = 0)]
    watchers: usize,
    /// Targets of the full watchers (comma-separated names or rooms); by
    /// default --room.
    #[arg(long, value_delimiter = ',')]
    watch: Vec<String>,
    /// Full watcher i watches only the (i mod n)-th --watch target.
    #[arg(long)]
    spread: bool,
    /// Sessions watching --room by count.
    #[arg(long, default_value_t = 0)]
    count_watchers: usize,
    /// The measured window (or its longest, with --expect-leaves).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// End the window once every full watcher has seen this many departures.
    #[arg(long)]
    expect_leaves: Option<u64>,
    /// The server's process id, for its memory and CPU.
    #[arg(long)]
    server_pid: Option<u32>,
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
            rooms: self.rooms,
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let _log_writer = super::init_logging("warn", super::LogFormat::Text);
    match args.scenario {
        Scenario::Silence(args) => run_silence(&args),
        Scenario::Presence(args) => run_presence(args),
        Scenario::Hold(args) => run_load(&args, LoadScenario::Hold, None),
        Scenario::Pump(args) => run_load(&args, LoadScenario::Pump, None),
        Scenario::Stall(args) => {
            let plan = StallPlan {
                after: args.stop_after,
                stopped_for: args.stop_for,
            };
            run_load(&args.load, LoadScenario::Stall, Some(plan))
        }
        #[cfg(feature = "plot")]
        Scenario::Plot(args) => run_plot(&args),
        Scenario::Worker(args) => {
            let config: WorkerConfig = serde_json::from_str(&args.config)
                .context("the worker configuration is not valid JSON")?;
            worker::run_as_process(&config).context("the worker failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_load(
    args: &LoadArgs,
    scenario: LoadScenario,
    stall: Option<StallPlan>,
) -> anyhow::Result<ExitCode> {
    let config = args.config(scenario, stall)?;
    let bar = ProgressBar::new(config.sessions as u64).with_style(
        ProgressStyle::with_template(
            "connecting {bar:40} {pos}/{len} sessions ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let report = fleet::run(&config, |event| show_progress(&bar, event))?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the report")?;
        println!("{text}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(exit_status(&report))
}

#[cfg(feature = "plot")]
fn run_plot(args: &PlotArgs) -> anyhow::Result<ExitCode> {
    let reports = args
        .reports
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| {
                format!(
                    "{} is not a `lubdub bench hold|pump --json` report",
                    path.display()
                )
            })
        })
        .collect::<anyhow::Result<Vec<LoadReport>>>()?;
    let svg = lubdub::bench::plot::svg(&reports)?;
    std::fs::write(&args.output, svg)
        .with_context(|| format!("cannot write the plot to {}", args.output.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// 0 when every session was held through the window, else [`EXIT_MISSED`].
fn exit_status(report: &LoadReport) -> ExitCode {
    if report.handshake_failed == 0 && report.sessions_ended == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_MISSED)
    }
}

fn show_progress(bar: &ProgressBar, event: FleetEvent) {
    match event {
        FleetEvent::Planned {
            workers,
            per_worker,
            sources,
        } => {
            let sources: Vec<String> = sources
                .iter()
                .map(|source| source.map_or_else(|| "default".to_owned(), |ip| ip.to_string()))
                .collect();
            bar.println(format!(
                "{workers} worker process(es), up to {per_worker} sessions each, from {}",
                sources.join(", ")
            ));
        }
        FleetEvent::Connecting { done, .. } => bar.set_position(done as u64),
        FleetEvent::Connected {
            established,
            failed,
            took,
        } => {
            bar.finish_and_clear();
            eprintln!(
                "{established} sessions open ({failed} failed) after {:.1} s{}",
                took.as_secs_f64(),
                if established > 0 { "; warming up" } else { "" }
            );
        }
        FleetEvent::Measuring(window) => {
            eprintln!("measuring for {}", humantime::format_duration(window))
        }
        FleetEvent::Stopped(stopped_for) => eprintln!(
            "server stopped (SIGSTOP) for {}",
            humantime::format_duration(stopped_for)
        ),
        FleetEvent::Resumed => eprintln!("server resumed (SIGCONT)"),
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

fn run_presence(args: PresenceArgs) -> anyhow::Result<ExitCode> {
    let config = lubdub::bench::presence::PresenceConfig {
        server: args.server,
        interval: args.interval,
        members: args.members,
        room: args.room,
        churn_per_sec: args.churn,
        watchers: args.watchers,
        targets: args.watch,
        spread: args.spread,
        count_watchers: args.count_watchers,
        duration: args.duration,
        expect_leaves: args.expect_leaves,
        server_pid: args.server_pid,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lubdub-bench")
        .build()
        .context("cannot start the benchmark runtime")?;
    let report = runtime.block_on(lubdub::bench::presence::run(&config, |line| {
        eprintln!("{line}")
    }))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
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
