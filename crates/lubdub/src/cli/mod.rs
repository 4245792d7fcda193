//! Command-line interface of the `lubdub` binary: argument parsing and one
//! module per subcommand.

#[cfg(feature = "bench")]
mod admin_client;
mod bench;
mod chat;
mod config;
mod manual;
mod passwd;
mod reload;
mod serve;
mod sessions;
mod settings;
#[cfg(feature = "simulate")]
mod simulate;
mod systemd;
mod token;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Parser, Subcommand};

/// Default address of the heartbeat protocol.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default address of the admin HTTP API.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:7071";

/// lubdub keeps long-lived TCP connections honest: clients heartbeat, the
/// server tracks who is online and drops sessions that fall silent.
#[derive(Debug, Parser)]
#[command(name = "lubdub", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the heartbeat server (in-memory registry) and its admin HTTP API.
    /// Settings come from the flags, LUBDUB_AUTH_FILE, LUBDUB_TOKEN_SECRET,
    /// LUBDUB_TLS_KEY and a --config file, in that order of precedence;
    /// SIGHUP reloads them.
    Server(Box<serve::ServerArgs>),
    /// Check a configuration file and print the settings in effect
    /// (`check`), or print an example file with every key (`example`).
    Config(config::ConfigArgs),
    /// Keep a session with a server: chat from stdin, or run unattended
    /// as a device's agent.
    ///
    /// Chat: each stdin line is sent (`@bob hi` to bob, any other line to
    /// everyone, `quit` to leave); messages print as `[alice] hi`, or
    /// `[alice → bob] hi` when sent to you alone. Without input
    /// (--unattended, or stdin at /dev/null) the client heartbeats,
    /// reconnects and prints what arrives until a signal or a final
    /// refusal; the exit status says which.
    #[command(after_help = chat::STATUSES_HELP)]
    Client(chat::ClientArgs),
    /// List the sessions a server holds, from its admin API.
    Sessions(sessions::SessionsArgs),
    /// Watch names and rooms live: a snapshot of each, then every change
    /// (online, suspect, recovered, status, offline with its reason, joins
    /// and departures), in words or as JSON lines (--json) for scripts.
    #[command(after_help = chat::STATUSES_HELP)]
    Watch(chat::watch::WatchArgs),
    /// Load a running server with many sessions and measure it: detection
    /// error (silence), memory and idle CPU (hold), CPU per heartbeat and
    /// round trips (pump), evictions after a stop (stall); lubdub or MQTT.
    /// `plot` draws hold and pump reports.
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
    /// Simulate the failure detectors on modelled client and network
    /// behaviour: false positives per 1,000 session-hours and time to detect
    /// a crash, for the counter and for phi at each threshold. Deterministic.
    #[cfg(feature = "simulate")]
    Simulate(simulate::SimulateArgs),
    /// Mint a signed token granting a name (for servers run with
    /// --token-secret), or create a token secret file.
    Token(token::TokenArgs),
    /// Add or replace a name's line in an auth file (for servers run with
    /// --auth-file): generates a secret and prints it once, or reads one
    /// from stdin; only its argon2id hash is stored.
    Passwd(passwd::PasswdArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell) for lubdub to stdout.
    Completions(manual::CompletionsArgs),
    /// Print lubdub's man page (roff) to stdout, or the page of one
    /// subcommand with all its flags.
    Man(manual::ManArgs),
}

/// Runs the parsed command line; `matches` are what clap parsed it from
/// (the server's settings tell a flag given from a default by them).
///
/// # Errors
/// Whatever stopped the subcommand, for printing.
pub fn run(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let own = |name: &str| {
        matches
            .subcommand_matches(name)
            .ok_or_else(|| anyhow::anyhow!("no matches for `{name}`"))
    };
    match cli.command {
        Command::Server(args) => serve::run(*args, own("server")?),
        Command::Config(args) => config::run(args, own("config")?),
        Command::Client(args) => chat::run(args),
        Command::Sessions(args) => sessions::run(args),
        Command::Watch(args) => chat::watch::run(args),
        #[cfg(feature = "bench")]
        Command::Bench(args) => bench::run(args),
        #[cfg(feature = "simulate")]
        Command::Simulate(args) => simulate::run(args),
        Command::Token(args) => token::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Completions(args) => manual::completions(args),
        Command::Man(args) => manual::man(args),
    }
}

/// Parses durations written like `3s`, `500ms` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write durations like 3s, 500ms or 1m30s"))
}

/// Writes a duration as its flag would be written (`3s`, `1m 30s`), for
/// serde (`lubdub config check` prints settings with it).
pub fn duration_text<S: serde::Serializer>(
    duration: &Duration,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*duration))
}

/// A duration flag that can also be switched `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrOff(pub Option<Duration>);

impl serde::Serialize for DurationOrOff {
    /// As the flag is written: `off`, or a duration like `3s`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(duration) => duration_text(&duration, serializer),
            None => serializer.serialize_str("off"),
        }
    }
}

/// Parses a duration like [`parse_duration`], or `off`.
pub fn parse_duration_or_off(text: &str) -> Result<DurationOrOff, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(DurationOrOff(None));
    }
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err("must be positive; write `off` to disable".to_owned());
    }
    Ok(DurationOrOff(Some(duration)))
}

/// Parses a protocol address, `host:port` (a host name is resolved once,
/// to its first address), with a message that says the fix.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    lubdub::address::resolve(text, 7070).map_err(|error| error.to_string())
}

/// [`parse_addr`] for the admin API's address.
pub fn parse_admin_addr(text: &str) -> Result<SocketAddr, String> {
    lubdub::address::resolve(text, 7071).map_err(|error| error.to_string())
}

/// Checks a protocol address, `host:port`, leaving the host name to be
/// resolved at each connect.
pub fn check_server_addr(text: &str) -> Result<String, String> {
    lubdub::address::split(text, 7070)
        .map(|_| text.trim().to_owned())
        .map_err(|error| error.to_string())
}

/// Bytes the log writer gathers before a write(2); flushed whenever its queue is empty.
const LOG_BUFFER_BYTES: usize = 8 * 1024;
/// Lines queued for the log writer before logging blocks (it never drops).
/// The queue is a ring whose slots are touched as it fills: 128,000 by
/// default, or 5 MB of resident memory once every slot has been used.
const LOG_QUEUE_LINES: usize = 16_384;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event: time, level, target, message,
    /// `key=value` fields (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log collectors: `timestamp`, `level`,
    /// `target`, `message` and the event's fields, all at the top level.
    Json,
}

/// Sets up logging to stderr in `format`; `RUST_LOG` overrides the default level.
///
/// Lines are formatted on the logging thread but written by a dedicated
/// writer thread: a burst of thousands of presence events (a network cut
/// drops everyone at once) must not put a `write(2)` per line on the event
/// loop, where it would delay the next session's verdict. The queue blocks
/// rather than drops when full, so no event is ever lost. Keep the returned
/// guard alive until exit: dropping it flushes the queue.
#[must_use = "dropping the guard stops and flushes the log writer"]
pub fn init_logging(
    default_directive: &str,
    format: LogFormat,
) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_directive));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // The writer thread drains every queued line, then flushes: buffered,
    // a burst of lines costs a few large writes instead of one write(2)
    // each, so the queue (and the memory its lines hold) stays short.
    let stderr = std::io::BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("lubdub-log")
        .finish(stderr);
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => subscriber.with_ansi(ansi).init(),
        // No colour codes inside JSON strings, whatever stderr is.
        LogFormat::Json => subscriber
            .json()
            .flatten_event(true)
            .with_ansi(false)
            .init(),
    }
    guard
}
