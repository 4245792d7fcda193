//! What the client prints: messages on stdout (`[alice] hi` to everyone,
//! `[alice → bob] hi` to one), status on stderr, each line optionally
//! stamped with the time as the server's log writes it, so that the two
//! can be read side by side. What peers and the server sent is escaped
//! (see `lubdub::escape`) unless raw.

use std::io::Write;
use std::time::SystemTime;

use lubdub::client::Status;
use lubdub::core::protocol::Message;
use lubdub::escape::{Escaped, EscapedBytes};

/// How lines are printed.
#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Bytes exactly as received, for scripts.
    pub raw: bool,
    /// Each line starts with the UTC time, to the microsecond.
    pub timestamps: bool,
    /// One-way heartbeats: the client cannot judge the server by silence.
    pub one_way: bool,
}

impl Printer {
    fn stamp(&self) -> String {
        if self.timestamps {
            format!("{} ", humantime::format_rfc3339_micros(SystemTime::now()))
        } else {
            String::new()
        }
    }

    /// Prints one message.
    pub fn message(&self, message: &Message) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        write!(stdout, "{}", self.stamp())?;
        let direct = !message.to.is_empty();
        if self.raw {
            write!(stdout, "[{}", message.from)?;
            if direct {
                write!(stdout, " → {}", message.to)?;
            }
            write!(stdout, "] ")?;
            stdout.write_all(&message.body)?;
        } else {
            write!(stdout, "[{}", Escaped(&message.from))?;
            if direct {
                write!(stdout, " → {}", Escaped(&message.to))?;
            }
            write!(stdout, "] {}", EscapedBytes(&message.body))?;
        }
        writeln!(stdout)
    }

    /// Prints a presence update (a watched name or room), on stdout.
    pub fn presence(&self, update: &lubdub::client::PresenceUpdate) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let line = lubdub::client::presence::describe(update);
        writeln!(stdout, "{}* {line}", self.stamp())
    }

    /// Prints a line about the client itself, on stderr.
    pub fn say(&self, line: impl std::fmt::Display) {
        eprintln!("{}{line}", self.stamp());
    }

    /// Prints a status change; reasons can quote the server's texts, so
    /// they are shown escaped.
    pub fn status(&self, status: &Status) {
        match status {
            Status::Connected {
                server,
                session_id,
                epoch,
                interval,
                max_missed,
            } => {
                let judged = if self.one_way {
                    "one-way: only TCP errors reveal a dead server".to_owned()
                } else {
                    format!(
                        "server dead after {}",
                        humantime::format_duration(*interval * *max_missed)
                    )
                };
                self.say(format_args!(
                    "connected to {server} (session {session_id}, epoch {epoch}, heartbeat every {}, {judged})",
                    humantime::format_duration(*interval),
                ));
            }
            Status::ServerLost { reason } => {
                self.say(format_args!("server lost: {}", Escaped(reason)))
            }
            Status::Reconnecting { attempt, delay } => self.say(format_args!(
                "reconnecting in {} ms (attempt {attempt})",
                delay.as_millis()
            )),
            Status::Stopped { reason, .. } => {
                self.say(format_args!("stopped: {}", Escaped(reason)))
            }
        }
    }
}
