//! [`ServerControl`]: other threads' access to a running server (the admin
//! API, signal handlers, tests). Each request is a command to one loop or
//! to each in turn; listings go loop by loop, a cursor naming its loop.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use mio::Waker;

use super::acceptor::AcceptorCommand;
use super::event_loop::{Command, LoopHandle};
use super::{
    PresenceHub, Reload, ServerMetrics, SessionInfo, SessionPage, StateCounts,
    MAX_SESSIONS_PER_PAGE,
};

/// The server stopped before it could answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the server has stopped")]
pub struct ServerStopped;

/// Cloneable access to a running server from other threads.
#[derive(Debug, Clone)]
pub struct ServerControl {
    loops: Arc<[LoopHandle]>,
    acceptor: (mpsc::Sender<AcceptorCommand>, Arc<Waker>),
    metrics: ServerMetrics,
    hub: Arc<PresenceHub>,
}

/// A listing cursor's loop and, within it, the slab index after which to
/// go on (`None`: from the loop's start). Loop 0's cursors are plain slab
/// indices, as with one loop.
fn split_cursor(cursor: Option<u64>) -> (usize, Option<u64>) {
    match cursor {
        None => (0, None),
        Some(cursor) => {
            let within = cursor & 0xffff_ffff;
            (
                (cursor >> 32) as usize,
                (within != 0xffff_ffff).then_some(within),
            )
        }
    }
}

/// The cursor of the first page of loop `loop_index`.
fn start_of_loop(loop_index: usize) -> u64 {
    ((loop_index as u64) << 32) | 0xffff_ffff
}

impl ServerControl {
    pub(super) fn new(
        loops: Arc<[LoopHandle]>,
        acceptor: (mpsc::Sender<AcceptorCommand>, Arc<Waker>),
        metrics: ServerMetrics,
        hub: Arc<PresenceHub>,
    ) -> Self {
        Self {
            loops,
            acceptor,
            metrics,
            hub,
        }
    }

    fn command(&self, loop_index: usize, command: Command) -> Result<(), ServerStopped> {
        self.loops
            .get(loop_index)
            .ok_or(ServerStopped)?
            .send(command)
            .map_err(|_| ServerStopped)
    }

    /// How many event loops the server runs.
    pub fn loops(&self) -> usize {
        self.loops.len()
    }

    /// Every established session, loop by loop in slab order, gathered
    /// page by page: a loop is held for one page at a time, so sessions
    /// that come or go meanwhile may be missing or present (see [`SessionPage`]).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, ServerStopped> {
        let mut listing = Vec::new();
        let mut after = None;
        loop {
            let page = self.sessions_page(after, MAX_SESSIONS_PER_PAGE).await?;
            listing.extend(page.sessions);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(listing),
            }
        }
    }

    /// One page of established sessions: up to `limit` (at most
    /// [`MAX_SESSIONS_PER_PAGE`]) after the cursor `after` (`None`: from
    /// the start), answered by one loop in one bounded turn. The cursor
    /// names the loop too, so a page may hold fewer sessions than asked
    /// where one loop's sessions end. Its `seq` is the last presence
    /// event published before it was taken.
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn sessions_page(
        &self,
        after: Option<u64>,
        limit: usize,
    ) -> Result<SessionPage, ServerStopped> {
        let (loop_index, within) = split_cursor(after);
        // Read before the page is taken: the page reflects at least every
        // event up to it.
        let seq = self.hub.last_seq();
        if loop_index >= self.loops.len() {
            return Ok(SessionPage {
                sessions: Vec::new(),
                next: None,
                seq,
            });
        }
        let (reply, page) = tokio::sync::oneshot::channel();
        self.command(
            loop_index,
            Command::SessionPage {
                after: within,
                limit,
                reply,
            },
        )?;
        let mut page = page.await.map_err(|_| ServerStopped)?;
        page.next = match page.next {
            Some(next) => Some(((loop_index as u64) << 32) | next),
            None if loop_index + 1 < self.loops.len() => Some(start_of_loop(loop_index + 1)),
            None => None,
        };
        page.seq = seq;
        Ok(page)
    }

    /// The established session holding `name`, asked of each loop in turn
    /// (each looks in its own index of names, without looking at any
    /// other session).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn session_named(&self, name: &str) -> Result<Option<SessionInfo>, ServerStopped> {
        for loop_index in 0..self.loops.len() {
            let (reply, session) = tokio::sync::oneshot::channel();
            self.command(
                loop_index,
                Command::SessionNamed {
                    name: name.to_owned(),
                    reply,
                },
            )?;
            if let Some(found) = session.await.map_err(|_| ServerStopped)? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// How many connections are in each state, counted a few thousand slots
    /// per turn of each loop (not one instant, but no turn held for all).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    pub async fn state_counts(&self) -> Result<StateCounts, ServerStopped> {
        let mut total = StateCounts::default();
        for loop_index in 0..self.loops.len() {
            let mut from = 0;
            loop {
                let (reply, counts) = tokio::sync::oneshot::channel();
                self.command(loop_index, Command::Counts { from, reply })?;
                let (counts, next) = counts.await.map_err(|_| ServerStopped)?;
                // Every loop's last page reads the registry, which is the
                // process's: the last loop's reading counts, once.
                let registered = counts.registered;
                total.add(counts);
                total.registered = registered;
                match next {
                    Some(next) => from = next,
                    None => break,
                }
            }
        }
        Ok(total)
    }

    /// The hub every presence event is published to (the event stream
    /// and the listings' sequence numbers read it).
    pub fn presence(&self) -> &Arc<PresenceHub> {
        &self.hub
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &ServerMetrics {
        &self.metrics
    }

    /// Hands every loop a new configuration (see [`prepare_reload`]):
    /// they take on the live settings between two turns
    /// ([`ServerConfig::with_live_settings`]) and keep every session.
    /// Returns once they apply.
    ///
    /// # Errors
    /// [`ServerStopped`] when a loop is gone.
    pub async fn reload(&self, reload: Reload) -> Result<(), ServerStopped> {
        for loop_index in 0..self.loops.len() {
            let (reply, applied) = tokio::sync::oneshot::channel();
            self.command(
                loop_index,
                Command::Reload {
                    reload: Box::new(reload.clone()),
                    reply,
                },
            )?;
            applied.await.map_err(|_| ServerStopped)?;
        }
        Ok(())
    }

    /// Asks the server to shut down gracefully: the port closes, every
    /// loop sends its sessions BYE `shutdown` with a reconnect hint, and
    /// stops once the farewells are delivered and the peers closed, or
    /// after [`ServerConfig::shutdown_timeout`]. Returns at once; see
    /// [`ServerHandle::join`].
    pub fn shutdown(&self) {
        // The acceptor closes the port and then tells the loops, so that no
        // session hears BYE while the port is still open. Without an
        // acceptor (it stopped on an error) the loops are told here.
        let (acceptor, waker) = &self.acceptor;
        if acceptor.send(AcceptorCommand::Stop).is_ok() && waker.wake().is_ok() {
            return;
        }
        for loop_index in 0..self.loops.len() {
            // Already stopped is as good as stopped.
            let _ = self.command(loop_index, Command::Shutdown);
        }
    }

    /// Test hook: loop `loop_index` does nothing for `duration`, as if
    /// the process could not run it (its other loops go on).
    ///
    /// # Errors
    /// [`ServerStopped`] when the loop is gone.
    #[doc(hidden)]
    pub fn block_loop(&self, loop_index: usize, duration: Duration) -> Result<(), ServerStopped> {
        self.command(loop_index, Command::Block(duration))
    }
}
