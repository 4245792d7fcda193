//! `lubdub watch`: a session that only watches names and rooms, printing
//! each presence change as it happens, in words or as JSON lines for
//! scripts. Heartbeats and reconnects as any client (each reconnect
//! starts from a fresh snapshot); the exit statuses are the client's.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lubdub::client::{presence, Client, ClientConfig, ClientEvent, ClientTls, Status, WatchMode};
use lubdub::escape::Escaped;
use tokio::signal::unix::{signal, SignalKind};

use super::output::Printer;

/// Flags of `lubdub watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Names and rooms to watch: `bob`, `#lobby`. Each starts with a
    /// snapshot (who is there, their status, whether suspect), then every
    /// change: online, suspect, recovered, status, offline with its
    /// reason, joins and departures of a room.
    #[arg(required = true, value_name = "NAME|#ROOM")]
    targets: Vec<String>,
    /// Watch rooms by their member count only (for rooms of more than
    /// 10,000 members, which are not listed).
    #[arg(long)]
    count: bool,
    /// Print one JSON object per line (seq, kind, target, name, session,
    /// status or reason, count) instead of words.
    #[arg(long)]
    json: bool,
    /// Server address, host:port.
    #[arg(long, default_value = super::super::DEFAULT_LISTEN, value_parser = super::super::check_server_addr)]
    server: String,
    /// Name this watcher's session goes by; by default `watch-` and the
    /// process id.
    #[arg(long)]
    name: Option<String>,
    /// File holding the credential for --name, when the server requires
    /// one (or LUBDUB_CREDENTIAL).
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
    /// Connect with TLS, trusting the CA certificate(s) in this PEM file
    /// (or, with --tls alone, the system's roots).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Connect with TLS, trusting the system's root certificates.
    #[arg(long)]
    tls: bool,
}

pub fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(watch(args))
}

async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("watch-{}", std::process::id()));
    let mut config = ClientConfig::new(args.server.clone(), name);
    config.credential = super::credential(args.credential_file.as_ref())?;
    config.tls = (args.tls || args.tls_ca.is_some()).then(|| ClientTls {
        ca: args.tls_ca.clone(),
        server_name: None,
        cert: None,
        key: None,
    });
    config.watches = args
        .targets
        .iter()
        .map(|target| {
            let room = target.starts_with('#');
            let mode = if args.count && room {
                WatchMode::Count
            } else {
                WatchMode::Full
            };
            (target.clone(), mode)
        })
        .collect();
    let printer = Printer {
        raw: false,
        timestamps: false,
        one_way: false,
    };
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let connecting = Client::connect_reporting(config, |error, delay| {
        printer.say(format_args!(
            "{}; retrying in {} ms",
            Escaped(&lubdub::report::chain(error)),
            delay.as_millis()
        ));
    });
    let mut client = tokio::select! {
        connected = connecting => match connected {
            Ok(client) => client,
            Err(error) => {
                printer.say(format_args!("error: {}", Escaped(&lubdub::report::chain(&error))));
                return Ok(super::exit::status(lubdub::client::StopCause::of_connect(&error)));
            }
        },
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            event = client.next_event() => match event {
                Some(ClientEvent::Presence(update)) => {
                    let mut stdout = std::io::stdout().lock();
                    if args.json {
                        writeln!(stdout, "{}", presence::to_json(&update))?;
                    } else {
                        writeln!(stdout, "{}", presence::describe(&update))?;
                    }
                    stdout.flush()?;
                }
                Some(ClientEvent::Notice(reason)) => {
                    printer.say(format_args!("server: {}", Escaped(&reason.text)));
                }
                Some(ClientEvent::Status(status)) => {
                    printer.status(&status);
                    if let Status::Stopped { cause, .. } = status {
                        return Ok(super::exit::status(cause));
                    }
                }
                Some(_) => {}
                None => return Ok(ExitCode::FAILURE),
            },
        }
    }
    client.close().await;
    Ok(ExitCode::SUCCESS)
}
