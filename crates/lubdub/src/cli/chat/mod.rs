//! `lubdub client`: seed 000's chat over the embeddable client, or an
//! unattended agent that only heartbeats. Lines from stdin are sent (chat),
//! messages go to stdout, status goes to stderr (`output`); each way the
//! client can end has its exit status (`exit`).

mod exit;
mod input;
mod output;
pub mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lubdub::auth::Credential;
use lubdub::client::{Client, ClientConfig, ClientEvent, ClientTls, Status, StopCause};
use lubdub::escape::Escaped;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::signal::unix::{signal, SignalKind};

use self::input::{parse_line, Line, Mode};
use self::output::Printer;
use super::parse_duration;

pub use self::exit::STATUSES_HELP;

/// Flags of `lubdub client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address, host:port; a host name is resolved at each
    /// connect.
    #[arg(long, default_value = super::DEFAULT_LISTEN, value_parser = super::check_server_addr)]
    server: String,
    /// Name to go by; kept across reconnects. 1-64 bytes, no spaces or '@',
    /// nothing invisible, one script (docs/PROTOCOL.md, *Names*).
    #[arg(long)]
    name: String,
    /// Heartbeat interval to ask for (the server clamps it to its range);
    /// by default the server's own.
    #[arg(long, value_parser = parse_duration)]
    interval: Option<Duration>,
    /// One-way heartbeats: the server never answers them, so a dead server is
    /// noticed only through TCP errors, not by silence.
    #[arg(long)]
    one_way: bool,
    /// File holding the credential for --name, when the server requires
    /// one: a token from `lubdub token` or the secret `lubdub passwd`
    /// printed. The environment variable LUBDUB_CREDENTIAL may carry it
    /// instead. There is no flag taking the credential itself, on purpose:
    /// command lines are visible to every user of the machine in `ps`.
    #[arg(long, value_name = "FILE")]
    credential_file: Option<PathBuf>,
    /// Status to start with (e.g. `away`, `in match 42`; at most 128
    /// bytes), shown in `lubdub sessions`, GET /events and to watchers;
    /// `/status TEXT` changes it while chatting.
    #[arg(long, value_name = "TEXT")]
    status: Option<String>,
    /// Last will: if this client's session ends without its `quit` (it
    /// hangs, its network or host fails), the server sends TEXT as a
    /// message from it, to --will-to or everyone, after --will-delay
    /// unless the name is back online by then. At most 1 KiB.
    #[arg(long, value_name = "TEXT")]
    will: Option<String>,
    /// Recipient of the last will (a name); by default every session.
    #[arg(long, value_name = "NAME", requires = "will")]
    will_to: Option<String>,
    /// How long the server waits before sending the last will; the name
    /// back online meanwhile cancels it (at most 1h).
    #[arg(long, value_name = "DUR", default_value = "0s", value_parser = parse_duration, requires = "will")]
    will_delay: Duration,
    /// Print names and message bodies exactly as received, for scripts.
    /// By default control, format and invisible characters are shown
    /// escaped (`\e`, `\r`, `\u{202e}`, `\xff` for a byte that is not
    /// UTF-8), so that a message cannot clear the screen, set the terminal
    /// title, forge a line or reorder text. Never use --raw on a terminal.
    #[arg(long)]
    raw: bool,
    /// Start each printed line (messages and status) with the UTC time to
    /// the microsecond, as the server's log does, to read the two side by side.
    #[arg(long)]
    timestamps: bool,
    /// Do not read standard input: heartbeat, reconnect and print what
    /// arrives until SIGTERM or SIGINT, or a refusal that reconnecting
    /// cannot cure (see the exit statuses below). The default when
    /// standard input is /dev/null, closed or an empty file (a service, a
    /// container); otherwise lines are chat and end of input means `quit`.
    #[arg(long)]
    unattended: bool,
    /// Stop trying to connect after this long without a first session
    /// (exit status 3). By default the client keeps trying, with backoff,
    /// as it does after losing a session: a device may boot before its
    /// server.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    give_up_after: Option<Duration>,

    // TLS: any of these flags turns it on.
    /// Connect with TLS, trusting the system's root certificates (for a
    /// server whose certificate a public or company CA signed).
    #[arg(long)]
    tls: bool,
    /// Connect with TLS, trusting only the CA certificate(s) in this PEM
    /// file (e.g. the server's self-signed certificate); implies --tls.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// Name the server's certificate must be valid for; by default the host
    /// part of --server. Implies --tls.
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// Client certificate (PEM) for a server started with --tls-client-ca;
    /// needs --tls-key. Implies --tls.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert; needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// Environment variable that may carry the credential instead of a file.
const CREDENTIAL_VARIABLE: &str = "LUBDUB_CREDENTIAL";

/// The credential from --credential-file or LUBDUB_CREDENTIAL (an empty
/// variable counts as unset); none when neither is given.
fn credential(file: Option<&PathBuf>) -> anyhow::Result<Credential> {
    let from_environment = std::env::var(CREDENTIAL_VARIABLE)
        .ok()
        .filter(|value| !value.is_empty());
    match (file, from_environment) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both --credential-file and {CREDENTIAL_VARIABLE} are set; give the credential once"
        ),
        (Some(path), None) => Ok(Credential::from_file(path)?),
        (None, Some(text)) => Credential::from_text(&text).context(CREDENTIAL_VARIABLE),
        (None, None) => Ok(Credential::default()),
    }
}

impl ClientArgs {
    /// TLS settings when any TLS flag is given.
    fn tls(&self) -> Option<ClientTls> {
        let wanted = self.tls
            || self.tls_ca.is_some()
            || self.tls_server_name.is_some()
            || self.tls_cert.is_some();
        wanted.then(|| ClientTls {
            ca: self.tls_ca.clone(),
            server_name: self.tls_server_name.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
        })
    }
}

pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(chat(args));
    // Reading stdin blocks a thread that dropping the runtime would wait
    // for: a stopped client would hang until the next line.
    runtime.shutdown_background();
    result
}

async fn chat(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let mode = Mode::choose(args.unattended);
    let printer = Printer {
        raw: args.raw,
        timestamps: args.timestamps,
        one_way: args.one_way,
    };
    let mut config = ClientConfig::new(args.server.clone(), args.name.clone());
    config.interval = args.interval;
    config.one_way = args.one_way;
    config.status = args.status.clone().filter(|status| !status.is_empty());
    config.will = args.will.as_ref().map(|body| lubdub::core::protocol::Will {
        delay_ms: u32::try_from(args.will_delay.as_millis()).unwrap_or(u32::MAX),
        to: args.will_to.clone().unwrap_or_default(),
        body: body.as_bytes().to_vec(),
    });
    config.credential = credential(args.credential_file.as_ref())?;
    config.tls = args.tls();
    config.first_connect_patience = args.give_up_after;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // A REJECT's text comes from the server: shown escaped like the rest.
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
                let cause = StopCause::of_connect(&error);
                let said = Escaped(&lubdub::report::chain(&error)).to_string();
                match (cause, args.give_up_after) {
                    (StopCause::GaveUp, Some(after)) => printer.say(format_args!(
                        "gave up after {} without a session; the last attempt: {said}",
                        humantime::format_duration(after)
                    )),
                    _ => printer.say(format_args!("error: {said}")),
                }
                return Ok(exit::status(cause));
            }
        },
        _ = terminate.recv() => return Ok(ExitCode::SUCCESS),
        _ = interrupt.recv() => return Ok(ExitCode::SUCCESS),
    };
    match mode {
        Mode::Chat => printer.say(format_args!(
            "ready to chat as {}: type a line to send it to everyone, `@name text` for one person, `/join #room` then `#room text` for a room, `/watch NAME`, `/who #room`, `/status TEXT`, `quit` to leave",
            args.name
        )),
        Mode::Unattended => printer.say(format_args!(
            "running unattended as {}: standard input is not read; stop with SIGTERM or Ctrl-C",
            args.name
        )),
    }
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut reading = mode == Mode::Chat;
    // Lines typed while reconnecting are not kept for later (the client
    // drops them): the user is told so.
    let mut connected = true;
    loop {
        tokio::select! {
            line = lines.next_line(), if reading => match line? {
                // End of input in chat means `quit`, as scripts expect.
                None => {
                    client.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
                Some(line) => match parse_line(&line) {
                    Line::Quit => {
                        client.close().await;
                        printer.say("bye");
                        return Ok(ExitCode::SUCCESS);
                    }
                    Line::UnknownCommand(command) => {
                        printer.say(format_args!("unknown command /{command}; commands: {}", input::COMMANDS));
                    }
                    Line::Status(status) => {
                        if client.set_status(status).await.is_err() { reading = false; }
                    }
                    Line::Usage(usage) => printer.say(format_args!("usage: {usage}")),
                    Line::Join(room) => {
                        // Joined rooms are watched: their comings and goings print.
                        let done = client.join(room).await.and(client.watch(room).await);
                        if done.is_err() { reading = false; }
                    }
                    Line::Leave(room) => {
                        let done = client.unwatch(room).await.and(client.leave(room).await);
                        if done.is_err() { reading = false; }
                    }
                    Line::Watch(target) => {
                        if client.watch(target).await.is_err() { reading = false; }
                    }
                    Line::Unwatch(target) => {
                        if client.unwatch(target).await.is_err() { reading = false; }
                    }
                    Line::Who("") => printer.say("usage: /who #ROOM or /who NAME"),
                    Line::Who(target) => {
                        if client.who(target).await.is_err() { reading = false; }
                    }
                    Line::Direct { .. } | Line::Broadcast(_) if !connected => {
                        printer.say("not sent: not connected to the server (reconnecting); type it again once connected");
                    }
                    Line::Direct { to, body } => {
                        if client.send_to(to, body).await.is_err() { reading = false; }
                    }
                    Line::Broadcast(body) => {
                        if client.broadcast(body).await.is_err() { reading = false; }
                    }
                    Line::Nothing => {}
                },
            },
            _ = terminate.recv() => {
                client.close().await;
                printer.say("bye (SIGTERM)");
                return Ok(ExitCode::SUCCESS);
            }
            _ = interrupt.recv() => {
                client.close().await;
                printer.say("bye (SIGINT)");
                return Ok(ExitCode::SUCCESS);
            }
            event = client.next_event() => match event {
                Some(ClientEvent::Message(message)) => printer.message(&message)?,
                Some(ClientEvent::Presence(update)) => printer.presence(&update)?,
                Some(ClientEvent::Notice(reason)) => {
                    printer.say(format_args!("server: {}", Escaped(&reason.text)));
                }
                Some(ClientEvent::Status(status)) => {
                    printer.status(&status);
                    connected = matches!(status, Status::Connected { .. });
                    if let Status::Stopped { cause, .. } = status {
                        return Ok(exit::status(cause));
                    }
                }
                Some(_) => {}
                // The task ended without saying why: it cannot, but an
                // ending without a status is no success.
                None => return Ok(ExitCode::FAILURE),
            },
        }
    }
}
