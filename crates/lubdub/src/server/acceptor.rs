//! The one thread that accepts connections for every event loop.
//!
//! It applies the process-wide admission limits (open connections, per
//! source address, accept rate: `admission.rs`), answers a refused
//! connection REJECT `server_full`, retries with backoff while accepting
//! fails (out of descriptors), and hands each admitted socket to the next
//! loop in turn (`Command::Adopt`). One acceptor rather than one
//! `SO_REUSEPORT` listener per loop: every loop gets the same share (round
//! robin, exact), and a second server started on the same port by mistake
//! fails with "address in use" instead of silently taking half the
//! connections (BENCHMARKS.md, "Choosing how loops get their connections", has the
//! measurements).

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use lubdub_core::protocol::codec;
use lubdub_core::protocol::{Frame, ReasonCode};
use mio::net::TcpListener;
use mio::{Events, Poll, Token};
use tracing::{debug, info, warn};

use super::admission::{Admission, AdmissionLimits, Refusal};
use super::event_loop::{Command, LoopHandle};
use super::metrics::ServerMetrics;

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const WAKER: Token = Token(1);

/// The first retry after a failed accept, and the longest delay between retries.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Reads of 4 KiB a refused connection's input gets before it is closed
/// (64 KiB: a HELLO and more; anything beyond is a flood, and is reset).
const REFUSED_INPUT_READS: usize = 16;

/// The admission limits of the whole process, shared by the acceptor
/// (which admits) and the loops (which tell it when a connection closed).
#[derive(Debug)]
pub(crate) struct SharedAdmission {
    admission: Mutex<Admission>,
    /// Connections admitted and not yet closed, over every loop.
    open: AtomicUsize,
    origin: Instant,
}

impl SharedAdmission {
    pub(crate) fn new(limits: AdmissionLimits, origin: Instant) -> Self {
        Self {
            admission: Mutex::new(Admission::new(limits)),
            open: AtomicUsize::new(0),
            origin,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Admission> {
        // A panic while holding it left plain counters, still usable.
        self.admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits a connection from `ip` at `now`, counting it as open.
    fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        let now_us = u64::try_from(now.saturating_duration_since(self.origin).as_micros())
            .unwrap_or(u64::MAX);
        let open = self.open.load(Ordering::Relaxed);
        self.lock().admit(ip, open, now_us)?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// An admitted connection from `ip` closed (or could not be started).
    pub(crate) fn closed(&self, ip: IpAddr) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.lock().closed(ip);
    }

    /// New limits for the connections that come from now on (a reload).
    pub(crate) fn set_limits(&self, limits: AdmissionLimits) {
        self.lock().set_limits(limits);
    }
}

/// What the acceptor is asked from other threads.
#[derive(Debug)]
pub(crate) enum AcceptorCommand {
    /// Close the port (connection attempts are refused by the kernel from
    /// now on, and clients back off), then tell every loop to drain.
    Stop,
}

/// A run of failed accepts: since when, the next delay, and when to retry.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    since: Instant,
    delay: Duration,
    retry_at: Instant,
}

/// The accepting thread; see the module documentation.
pub(crate) struct Acceptor {
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) commands: mpsc::Receiver<AcceptorCommand>,
    pub(crate) admission: Arc<SharedAdmission>,
    pub(crate) loops: Arc<[LoopHandle]>,
    /// Whether the server speaks plain lubdub: a TLS client cannot read a
    /// plain REJECT (it would report a server that does not speak TLS), so
    /// a TLS server refuses with the close alone, which clients retry.
    pub(crate) plain: bool,
    pub(crate) metrics: ServerMetrics,
}

impl Acceptor {
    /// Accepts until told to stop (or until no loop is left).
    ///
    /// # Errors
    /// The poll error that stopped it.
    pub(crate) fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(64);
        let mut next_loop = 0;
        let mut backoff: Option<Backoff> = None;
        loop {
            let timeout =
                backoff.map(|backoff| backoff.retry_at.saturating_duration_since(Instant::now()));
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // A shutdown asked for meanwhile still reaches the loops.
                if let Ok(AcceptorCommand::Stop) = self.commands.try_recv() {
                    self.close_then_drain();
                }
                return Err(error);
            }
            match self.commands.try_recv() {
                Ok(AcceptorCommand::Stop) => {
                    self.close_then_drain();
                    return Ok(());
                }
                // The server is gone: the listener closes here.
                Err(mpsc::TryRecvError::Disconnected) => return Ok(()),
                Err(mpsc::TryRecvError::Empty) => {}
            }
            let retry_due = backoff.is_some_and(|backoff| backoff.retry_at <= Instant::now());
            let readable = events.iter().any(|event| event.token() == LISTENER);
            if (readable || retry_due) && !self.accept_all(&mut next_loop, &mut backoff) {
                return Ok(());
            }
        }
    }

    /// Closes the port, and only then tells the loops to shut down: a
    /// client told BYE `shutdown` must find the port closed, or it would
    /// reconnect at once into a server that is going away.
    fn close_then_drain(self) {
        drop(self.listener);
        for handle in self.loops.iter() {
            // A loop already gone has nothing to drain.
            let _ = handle.send(Command::Shutdown);
        }
    }

    /// Accepts every waiting connection. Returns false when no loop is left.
    fn accept_all(&mut self, next_loop: &mut usize, backoff: &mut Option<Backoff>) -> bool {
        loop {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors or memory: the rest stay in the
                    // backlog. Readiness is edge-triggered, so no event
                    // will come for them unless a new connection arrives:
                    // retry on a timer, backing off.
                    let now = Instant::now();
                    let run = backoff.get_or_insert_with(|| {
                        warn!(%error, "cannot accept connections (out of file descriptors or memory?); they wait in the backlog, retried with backoff");
                        Backoff {
                            since: now,
                            delay: ACCEPT_RETRY_FIRST,
                            retry_at: now,
                        }
                    });
                    run.retry_at = now + run.delay;
                    run.delay = (run.delay * 2).min(ACCEPT_RETRY_MAX);
                    return true;
                }
            };
            if let Some(run) = backoff.take() {
                info!(
                    failed_for_ms = run.since.elapsed().as_millis() as u64,
                    "accepting connections again"
                );
            }
            if let Err(refusal) = self.admission.admit(peer.ip(), Instant::now()) {
                self.metrics.connection_refused(refusal.label());
                debug!(%peer, limit = refusal.label(), "connection refused");
                let text = self.plain.then(|| refusal.text());
                refuse(stream, text.as_deref());
                continue;
            }
            // Round robin over the loops still running.
            let mut adopt = Command::Adopt { stream, peer };
            let mut tried = 0;
            loop {
                let target = &self.loops[*next_loop % self.loops.len()];
                *next_loop = (*next_loop + 1) % self.loops.len();
                match target.send(adopt) {
                    Ok(()) => break,
                    Err(Command::Adopt { .. }) if tried + 1 >= self.loops.len() => {
                        self.admission.closed(peer.ip());
                        return false;
                    }
                    Err(returned) => {
                        adopt = returned;
                        tried += 1;
                    }
                }
            }
        }
    }
}

/// Answers a refused connection with REJECT `server_full` (when `text` is
/// given: plain servers) and closes it. The socket is fresh, so the REJECT
/// fits its send buffer; the input already there is read first, so that
/// the close sends FIN, not a reset that could destroy the REJECT before
/// the peer reads it. Under a flood of refused connects, each costs one
/// accept, one write and one close.
fn refuse(mut stream: mio::net::TcpStream, text: Option<&str>) {
    use std::io::{Read, Write};
    if let Some(text) = text {
        if let Ok(encoded) = codec::encode_to_vec(&Frame::reject(ReasonCode::ServerFull, text)) {
            // The peer may already be gone; nothing else to do for it then.
            let _ = stream.write(&encoded);
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // What the peer already sent is read and dropped, so that the close
    // does not reset the connection before the REJECT is read; but only so
    // much: a peer that keeps sending would otherwise hold the thread here.
    let mut discard = [0u8; 4096];
    for _ in 0..REFUSED_INPUT_READS {
        if !matches!(stream.read(&mut discard), Ok(n) if n > 0) {
            break;
        }
    }
}
