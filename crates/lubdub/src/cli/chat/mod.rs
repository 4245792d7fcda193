//! `lubdub client`: seed 000's chat over the embeddable client. Lines from
//! stdin are sent, messages go to stdout, status goes to stderr; what peers
//! and the server sent is shown escaped (see `lubdub::escape`) unless --raw.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use lubdub::auth::Credential;
use lubdub::client::{Client, ClientConfig, ClientEvent, ClientTls, Status};
use lubdub::core::protocol::Message;
use lubdub::escape::{Escaped, EscapedBytes};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::parse_duration;

/// Flags of `lubdub client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Server address, host:port.
    #[arg(long, default_value = super::DEFAULT_LISTEN)]
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
    /// Print names and message bodies exactly as received, for scripts.
    /// By default control, format and invisible characters are shown
    /// escaped (`\e`, `\r`, `\u{202e}`, `\xff` for a byte that is not
    /// UTF-8), so that a message cannot clear the screen, set the terminal
    /// title, forge a line or reorder text. Never use --raw on a terminal.
    #[arg(long)]
    raw: bool,

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
fn credential(args: &ClientArgs) -> anyhow::Result<Credential> {
    let from_environment = std::env::var(CREDENTIAL_VARIABLE)
        .ok()
        .filter(|value| !value.is_empty());
    match (&args.credential_file, from_environment) {
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

/// What one stdin line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Quit,
    Direct { to: &'a str, body: &'a str },
    Broadcast(&'a str),
    Nothing,
}

fn parse_line(line: &str) -> Line<'_> {
    let trimmed = line.trim_end_matches(['\r', '\n']);
    if trimmed.trim() == "quit" {
        return Line::Quit;
    }
    if trimmed.trim().is_empty() {
        return Line::Nothing;
    }
    if let Some(rest) = trimmed.strip_prefix('@') {
        let (to, body) = rest.split_once(' ').unwrap_or((rest, ""));
        return Line::Direct { to, body };
    }
    Line::Broadcast(trimmed)
}

pub fn run(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(chat(args))
}

async fn chat(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let mut config = ClientConfig::new(args.server.clone(), args.name.clone());
    config.interval = args.interval;
    config.one_way = args.one_way;
    config.credential = credential(&args)?;
    config.tls = args.tls();
    // A REJECT's text comes from the server: shown escaped like the rest.
    let mut client = Client::connect_reporting(config, |error, delay| {
        eprintln!(
            "{}; retrying in {} ms",
            Escaped(&error.to_string()),
            delay.as_millis()
        );
    })
    .await
    .map_err(|error| anyhow::anyhow!("{}", Escaped(&error.to_string())))?;
    eprintln!("ready to chat as {}: type a line to send it to everyone, `@name text` for one person, `quit` to leave", args.name);
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line? {
                None => {
                    client.close().await;
                    return Ok(ExitCode::SUCCESS);
                }
                Some(line) => match parse_line(&line) {
                    Line::Quit => {
                        client.close().await;
                        eprintln!("bye");
                        return Ok(ExitCode::SUCCESS);
                    }
                    Line::Direct { to, body } => {
                        if client.send_to(to, body).await.is_err() { break; }
                    }
                    Line::Broadcast(body) => {
                        if client.broadcast(body).await.is_err() { break; }
                    }
                    Line::Nothing => {}
                },
            },
            event = client.next_event() => match event {
                Some(ClientEvent::Message(message)) => print_message(&message, args.raw)?,
                Some(ClientEvent::Notice(reason)) => eprintln!("server: {}", Escaped(&reason.text)),
                Some(ClientEvent::Status(status)) => {
                    if let Some(code) = report(&status) {
                        return Ok(code);
                    }
                }
                None => break,
            },
        }
    }
    Ok(ExitCode::FAILURE)
}

/// Prints one message as `[from] body`: escaped, or byte for byte with `raw`.
fn print_message(message: &Message, raw: bool) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if raw {
        write!(stdout, "[{}] ", message.from)?;
        stdout.write_all(&message.body)?;
        writeln!(stdout)
    } else {
        writeln!(
            stdout,
            "[{}] {}",
            Escaped(&message.from),
            EscapedBytes(&message.body)
        )
    }
}

/// Prints a status line; returns the exit code when the client stopped.
/// Reasons can quote the server's texts, so they are shown escaped.
fn report(status: &Status) -> Option<ExitCode> {
    match status {
        Status::Connected { server, session_id, epoch, interval, max_missed } => eprintln!(
            "connected to {server} (session {session_id}, epoch {epoch}, heartbeat every {}, server dead after {})",
            humantime::format_duration(*interval),
            humantime::format_duration(*interval * *max_missed),
        ),
        Status::ServerLost { reason } => eprintln!("server lost: {}", Escaped(reason)),
        Status::Reconnecting { attempt, delay } => {
            eprintln!("reconnecting in {} ms (attempt {attempt})", delay.as_millis());
        }
        Status::Stopped { reason } => {
            eprintln!("stopped: {}", Escaped(reason));
            return Some(ExitCode::FAILURE);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_map_to_chat_actions() {
        assert_eq!(parse_line("quit"), Line::Quit);
        assert_eq!(parse_line("quit\r"), Line::Quit);
        assert_eq!(
            parse_line("@bob hi there"),
            Line::Direct {
                to: "bob",
                body: "hi there"
            }
        );
        assert_eq!(parse_line("hello all"), Line::Broadcast("hello all"));
        assert_eq!(parse_line("   "), Line::Nothing);
        assert_eq!(
            parse_line("quitting time"),
            Line::Broadcast("quitting time")
        );
    }
}
