//! What other threads ask of a loop (the admin API, signals, the
//! acceptor, the other loops), and carrying it out between two turns:
//! admin pages at most one per turn, everything else at once.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use lubdub_core::connection::Now;
use lubdub_core::detector::Detector;
use mio::Waker;

use super::super::metrics::StateCounts;
use super::super::snapshot::{SessionInfo, SessionPage};
use super::{listing, EventLoop};

/// Requests from other threads (the admin API, signal handlers).
#[derive(Debug)]
pub(crate) enum Command {
    /// Reply with one page of established sessions (see `listing`).
    SessionPage {
        after: Option<u64>,
        limit: usize,
        reply: tokio::sync::oneshot::Sender<SessionPage>,
    },
    /// Reply with the established session holding `name`, if any.
    SessionNamed {
        name: String,
        reply: tokio::sync::oneshot::Sender<Option<SessionInfo>>,
    },
    /// Reply with how many connections are in each state among one range
    /// of slots, and where the next range starts.
    Counts {
        from: usize,
        reply: tokio::sync::oneshot::Sender<(StateCounts, Option<usize>)>,
    },
    /// Stop accepting, send every session BYE `shutdown` with a reconnect
    /// hint, and stop once the farewells are delivered (or at the shutdown
    /// timeout).
    Shutdown,
    /// Take on the live settings of a new configuration (see `reload.rs`),
    /// then reply.
    Reload {
        reload: Box<super::super::Reload>,
        reply: tokio::sync::oneshot::Sender<()>,
    },
    /// A connection the acceptor admitted, to be served by this loop.
    Adopt {
        stream: mio::net::TcpStream,
        peer: SocketAddr,
    },
    /// A session of another loop claimed the name of this loop's session
    /// `session_id`: it ends with BYE `taken_over` (no release: the name
    /// is its successor's).
    TakeOver { session_id: u64, new_peer: String },
    /// An encoded MSG for this loop's session `session_id` (a direct
    /// message to `to` from another loop's session `from`).
    Deliver {
        session_id: u64,
        from: u64,
        to: String,
        encoded: Arc<[u8]>,
    },
    /// A direct MSG of this loop's session `session_id` found `to`'s queue
    /// full on another loop: NOTICE `recipient_busy`.
    NotDelivered { session_id: u64, to: String },
    /// An encoded MSG for every established session of this loop (a
    /// broadcast from another loop's session).
    Broadcast { encoded: Arc<[u8]> },
    /// An encoded MSG for this loop's members of `room` (from another
    /// loop's member, or a will).
    RoomBroadcast { room: Arc<str>, encoded: Arc<[u8]> },
    /// Test hook: the loop does nothing for this long, as if stalled, so
    /// that tests can show a stalled loop convicts no healthy session.
    #[doc(hidden)]
    Block(Duration),
}

/// Another thread's way to a loop: its command channel and its waker.
#[derive(Debug, Clone)]
pub(crate) struct LoopHandle {
    commands: mpsc::Sender<Command>,
    waker: Arc<Waker>,
}

impl LoopHandle {
    pub(crate) fn new(commands: mpsc::Sender<Command>, waker: Arc<Waker>) -> Self {
        Self { commands, waker }
    }

    /// Hands the loop `command` and wakes it.
    ///
    /// # Errors
    /// The command back when the loop is gone.
    pub(crate) fn send(&self, command: Command) -> Result<(), Command> {
        self.commands.send(command).map_err(|error| error.0)?;
        // A loop whose poll is gone stops at its next turn anyway.
        let _ = self.waker.wake();
        Ok(())
    }
}

impl<D: Detector> EventLoop<D> {
    /// Carries out waiting commands, at most [`listing::PAGES_PER_TURN`]
    /// pages of them: 20 admin pollers each waiting for a page must not
    /// make one turn build 20 pages while every session waits.
    pub(super) fn handle_commands(&mut self, now: Now) {
        let mut pages = 0;
        self.commands_waiting = false;
        while let Ok(command) = self.commands.try_recv() {
            if matches!(
                command,
                Command::SessionPage { .. } | Command::Counts { .. }
            ) {
                pages += 1;
                // The rest wait for the next turn, which does not sleep.
                self.commands_waiting = pages >= listing::PAGES_PER_TURN;
            }
            match command {
                // The requester may have given up; nothing to do then.
                Command::SessionPage {
                    after,
                    limit,
                    reply,
                } => {
                    let _ = reply.send(self.session_page(now, after, limit));
                }
                Command::SessionNamed { name, reply } => {
                    let _ = reply.send(self.session_named(now, &name));
                }
                Command::Counts { from, reply } => {
                    let _ = reply.send(self.count_page(now, from));
                }
                Command::Shutdown => self.begin_shutdown(now),
                Command::Reload { reload, reply } => {
                    self.reload(*reload);
                    let _ = reply.send(());
                }
                Command::Adopt { stream, peer } => self.adopt(stream, peer),
                Command::TakeOver {
                    session_id,
                    new_peer,
                } => self.taken_over_elsewhere(now, session_id, &new_peer),
                Command::Deliver {
                    session_id,
                    from,
                    to,
                    encoded,
                } => self.deliver_from_elsewhere(now, Some((session_id, from, to)), &encoded),
                Command::Broadcast { encoded } => self.deliver_from_elsewhere(now, None, &encoded),
                Command::RoomBroadcast { room, encoded } => {
                    self.room_from_elsewhere(now, &room, &encoded);
                }
                Command::NotDelivered { session_id, to } => {
                    self.not_delivered_elsewhere(now, session_id, &to);
                }
                Command::Block(duration) => std::thread::sleep(duration),
            }
            if self.commands_waiting {
                return;
            }
        }
    }
}
