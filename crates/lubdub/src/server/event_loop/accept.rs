//! Accepting connections: the admission limits (per process and per
//! source address), the REJECT `server_full` of a refused connection, and
//! retries with backoff while accepting fails (out of descriptors).

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lubdub_core::connection::{self as machine, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec;
use lubdub_core::protocol::{Frame, ReasonCode};
use mio::{Interest, Token};
use tracing::{debug, info, warn};

use super::super::connection::Connection;
use super::super::tls_session::TlsSession;
use super::{EventLoop, Slot, FIRST_CONNECTION};

/// A run of failed accepts: since when, the next delay, and when to retry.
#[derive(Debug, Clone, Copy)]
pub(super) struct AcceptBackoff {
    since: Instant,
    delay: Duration,
    pub(super) retry_at: Instant,
}

/// The first retry after a failed accept, and the longest delay between retries.
const ACCEPT_RETRY_FIRST: Duration = Duration::from_millis(10);
const ACCEPT_RETRY_MAX: Duration = Duration::from_secs(1);

/// Reads of 4 KiB a refused connection's input gets before it is closed
/// (64 KiB: a HELLO and more; anything beyond is a flood, and is reset).
const REFUSED_INPUT_READS: usize = 16;

/// Answers a connection refused at accept with REJECT `server_full` (when
/// `text` is given: plain servers) and closes it. The socket is fresh, so
/// the REJECT fits its send buffer; the input already there is read first,
/// so that the close sends FIN, not a reset that could destroy the REJECT
/// before the peer reads it. Not registered and not lingering: under a
/// flood of refused connects, each costs one accept, one write and one close.
fn refuse_at_accept(mut stream: mio::net::TcpStream, text: Option<&str>) {
    use std::io::{Read, Write};
    let mut encoded = Vec::new();
    if let Some(text) = text {
        if codec::encode(&Frame::reject(ReasonCode::ServerFull, text), &mut encoded).is_ok() {
            // The peer may already be gone; nothing else to do for it then.
            let _ = stream.write(&encoded);
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // What the peer already sent is read and dropped, so that the close
    // does not reset the connection before the REJECT is read; but only so
    // much: a peer that keeps sending would otherwise hold the loop here.
    let mut discard = [0u8; 4096];
    for _ in 0..REFUSED_INPUT_READS {
        if !matches!(stream.read(&mut discard), Ok(n) if n > 0) {
            break;
        }
    }
}

impl<D: Detector> EventLoop<D> {
    /// Accepts again when a failed accept's retry is due.
    pub(super) fn retry_accept(&mut self, now: Now) {
        let due = self
            .accept_backoff
            .as_ref()
            .is_some_and(|backoff| backoff.retry_at <= self.real_instant(now));
        if due {
            self.accept(now);
        }
    }

    /// Accepts every waiting connection, admitting or refusing each.
    pub(super) fn accept(&mut self, now: Now) {
        loop {
            let Some(listener) = &self.listener else {
                // Shutting down: nothing to retry.
                self.accept_backoff = None;
                return;
            };
            let (stream, peer) = match listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // Out of descriptors or memory: the rest stay in the
                    // backlog. Readiness is edge-triggered, so no event
                    // will come for them unless a new connection arrives:
                    // retry on a timer, backing off.
                    self.accept_failed(now, &error);
                    return;
                }
            };
            if let Some(backoff) = self.accept_backoff.take() {
                info!(
                    failed_for_ms = backoff.since.elapsed().as_millis() as u64,
                    "accepting connections again"
                );
            }
            match self
                .admission
                .admit(peer.ip(), self.slots.len(), now.real_us)
            {
                Ok(()) => self.register(stream, peer),
                Err(refusal) => {
                    self.metrics.connection_refused(refusal.label());
                    debug!(%peer, limit = refusal.label(), "connection refused");
                    // A TLS client cannot read a plain REJECT (it would
                    // report a server that does not speak TLS): it gets
                    // the close alone, which it retries with backoff.
                    let text = self.tls.is_none().then(|| refusal.text());
                    refuse_at_accept(stream, text.as_deref());
                }
            }
        }
    }

    /// Schedules the next accept after a failure: 10 ms, then twice as long
    /// each time up to a second, until one succeeds. Said once per run of
    /// failures, not per retry.
    fn accept_failed(&mut self, now: Now, error: &io::Error) {
        let real = self.real_instant(now);
        let backoff = self.accept_backoff.get_or_insert_with(|| {
            warn!(%error, "cannot accept connections (out of file descriptors or memory?); they wait in the backlog, retried with backoff");
            AcceptBackoff {
                since: real,
                delay: ACCEPT_RETRY_FIRST,
                retry_at: real,
            }
        });
        backoff.retry_at = real + backoff.delay;
        backoff.delay = (backoff.delay * 2).min(ACCEPT_RETRY_MAX);
    }

    /// Registers an admitted connection and starts its machine.
    fn register(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        // Dated afresh, as for frames: a connection accepted late in a busy
        // turn (or one that arrived during it) would otherwise lose the
        // turn's length from its handshake timeout.
        let now = self.now();
        let tls = match self.tls.as_ref().map(TlsSession::accept).transpose() {
            Ok(tls) => tls,
            Err(error) => {
                warn!(%peer, %error, "could not start a TLS session");
                self.admission.closed(peer.ip());
                return;
            }
        };
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        if let Err(error) = crate::tcp_options::apply(
            socket2::SockRef::from(&stream),
            self.config.tcp_keepalive,
            self.config.tcp_user_timeout,
        ) {
            debug!(%peer, %error, "could not set TCP keepalive or user timeout");
        }
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        let token = Token(index + FIRST_CONNECTION);
        if let Err(error) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!(%peer, %error, "could not register connection");
            self.admission.closed(peer.ip());
            return;
        }
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        let generation = self.next_generation;
        let machine =
            machine::Connection::new(now, &self.rules, &mut self.outputs.to((index, generation)));
        entry.insert(Slot {
            conn: Connection::new(stream, peer, tls),
            generation,
            machine,
        });
        self.carry_out(now);
        debug!(%peer, "connection accepted");
    }
}
