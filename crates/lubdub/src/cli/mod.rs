//! Command-line interface of the `lubdub` binary: argument parsing and one
//! module per subcommand.

mod bench;
mod chat;
mod serve;
mod sessions;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

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
    Server(serve::ServerArgs),
    /// Chat through a server: each stdin line is sent (`@bob hi` to bob, any
    /// other line to everyone, `quit` to leave); messages print as `[alice] hi`.
    Client(chat::ClientArgs),
    /// List the sessions a server holds, from its admin API.
    Sessions(sessions::SessionsArgs),
    /// Load a running server with many sessions and measure it against its
    /// requirements (scenarios: silence).
    Bench(bench::BenchArgs),
}

/// Runs the parsed command line.
///
/// # Errors
/// Whatever stopped the subcommand, for printing.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Server(args) => serve::run(args),
        Command::Client(args) => chat::run(args),
        Command::Sessions(args) => sessions::run(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Parses durations written like `3s`, `500ms` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("{error}; write durations like 3s, 500ms or 1m30s"))
}

/// Parses `host:port` socket addresses with a clear message.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP:port address, e.g. 127.0.0.1:7070"))
}

/// Sets up logging to stderr; `RUST_LOG` overrides the default level.
pub fn init_logging(default_directive: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_directive));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
