//! One accepted TCP connection's IO: its socket, its partial inbound frame
//! and its unsent outbound bytes. Its rules are `lubdub_core::connection`.
//!
//! Bytes are read into the event loop's shared scratch buffer and only a
//! trailing partial frame is copied here. Unsent bytes wait in an
//! [`Outbox`] of chunks lent by the loop's [`ChunkPool`], which every
//! method that may queue bytes takes. Both buffers live in one box that
//! exists only while either holds bytes, so an idle connection carries one
//! null pointer instead of a `Vec` and an `Outbox` (72 bytes): every
//! byte per idle session counts against the target of 0.5 KiB.
//!
//! A TLS connection also holds a boxed [`TlsSession`], through which every
//! read and write goes; plain connections hold a null pointer there.
//!
//! Size: one job (a socket's bytes in and out, plain or TLS), about 450
//! lines of it plus tests; the queue itself lives in `outbox`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use lubdub_core::drain::DrainWatch;
use mio::net::TcpStream;

use super::outbox::{ChunkPool, Outbox};
use super::tls_session::TlsSession;

/// The instant and patience the outbound queue's [`DrainWatch`] is kept
/// by: ms since the loop's origin, and how long queued bytes may wait.
#[derive(Debug, Clone, Copy)]
pub struct QueueClock {
    /// Now, ms since the loop's origin.
    pub now_ms: u64,
    /// How long queued bytes may wait (the slow-consumer timeout), ms.
    pub patience_ms: u64,
}

/// What a read from the socket produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// `n` bytes were placed in the scratch buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Closed,
    /// A TLS connection's peer spoke plain lubdub. The connection is
    /// plain from now on, so that a REJECT `tls_required` reaches the peer
    /// in a form it can read.
    TlsRequired,
}

/// Outcome of queueing bytes for the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written or queued.
    Sent,
    /// The outbound queue would exceed its bound.
    QueueFull,
}

/// The bits of [`Flags`].
pub mod flag {
    /// FIN sent. Kept because on Linux every `shutdown` wakes the socket's
    /// pollers: repeating it on each writable edge made a peer that holds
    /// its end open spin the event loop (millions of calls a second).
    pub const WRITE_SHUT: u8 = 1;
    /// The last frame is queued: the write side is shut once it is out.
    pub const FAREWELL_WRITTEN: u8 = 1 << 1;
    /// Reading was cut short (or not begun) for the turn's read budget:
    /// the socket is in one of the loop's lists of reads for the next
    /// turn, once (see `EventLoop::defer_read`).
    pub const READ_PENDING: u8 = 1 << 2;
    /// With `READ_PENDING`: read on to the end of the stream.
    pub const READ_TO_EOF: u8 = 1 << 3;
    /// A wheel entry watches the queue's drain checkpoint: one at a time,
    /// however often the queue empties and fills.
    pub const DRAIN_TIMER_ARMED: u8 = 1 << 4;
}

/// A connection's flags (the bits of [`flag`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    /// Whether `bit` is set.
    pub fn get(self, bit: u8) -> bool {
        self.0 & bit != 0
    }

    /// Sets or clears `bit`.
    pub fn set(&mut self, bit: u8, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }

    /// Sets or clears `bit`, returning whether it was set before.
    pub fn replace(&mut self, bit: u8, on: bool) -> bool {
        let was = self.get(bit);
        self.set(bit, on);
        was
    }
}

/// The bytes a connection holds between reads or writes.
#[derive(Debug, Default)]
struct Buffers {
    /// Bytes of an inbound frame that is not complete yet.
    inbox: Vec<u8>,
    /// Bytes accepted for sending that the socket did not take yet.
    outbox: Outbox,
    /// Whether the queue drains (plain and TLS connections alike).
    watch: DrainWatch,
}

/// An accepted connection's IO state.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// Peer address, for logs and the admin API.
    pub peer: SocketAddr,
    /// Partial inbound frame and unsent outbound bytes; `None` when both are empty.
    buffers: Option<Box<Buffers>>,
    /// FIN sent, farewell queued, reads listed for the next turn, ... in
    /// one byte: see [`flag`]. Every idle session holds them, so they are
    /// bits rather than five `bool`s (which made the slot 8 bytes larger).
    pub flags: Flags,
    /// The turn of the loop (wrapping) in which the socket was last read:
    /// a socket read from the list of waiting reads is not read again for
    /// an event of the same turn, so that it gets one share a turn.
    pub read_turn: u8,
    /// rustls state of a TLS connection; `None` on plain ones.
    tls: Option<Box<TlsSession>>,
}

impl Connection {
    /// Wraps an accepted socket, with its TLS session on a TLS server.
    pub fn new(stream: TcpStream, peer: SocketAddr, tls: Option<Box<TlsSession>>) -> Self {
        Self {
            stream,
            peer,
            buffers: None,
            flags: Flags::default(),
            read_turn: 0,
            tls,
        }
    }

    /// The certificate the TLS client authenticated with (its leaf), once
    /// the handshake is done; `None` on plain connections and without
    /// client authentication.
    pub fn peer_certificate(&self) -> Option<&rustls_pki_types::CertificateDer<'static>> {
        self.tls.as_ref()?.peer_certificate()
    }

    /// Reads once into `scratch` (on TLS connections: decrypts into it,
    /// and queues handshake answers with chunks from `pool`).
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`; TLS errors.
    pub fn read_into(
        &mut self,
        scratch: &mut [u8],
        pool: &mut ChunkPool,
    ) -> io::Result<ReadOutcome> {
        if let Some(tls) = &mut self.tls {
            let mut sealed = Vec::new();
            let outcome = tls.read_into(&mut self.stream, self.peer, scratch, &mut sealed);
            // Handshake answers, tickets, alerts: after what is queued.
            let answered = self.write_or_queue(&sealed, pool);
            let outcome = outcome?;
            answered?;
            if matches!(outcome, ReadOutcome::TlsRequired) {
                self.tls = None;
            }
            return Ok(outcome);
        }
        loop {
            return match self.stream.read(scratch) {
                Ok(0) => Ok(ReadOutcome::Closed),
                Ok(n) => Ok(ReadOutcome::Data(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    Ok(ReadOutcome::WouldBlock)
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => Err(error),
            };
        }
    }

    /// Lends the partial inbound frame (empty when there is none) to
    /// `decode`; what it leaves there is kept for the next read, and an
    /// empty one frees its capacity, and the box too when nothing waits to
    /// be sent. Idle connections hold no inbound buffer at all.
    pub fn with_inbox<R>(&mut self, decode: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        let mut inbox = self
            .buffers
            .as_mut()
            .map(|buffers| std::mem::take(&mut buffers.inbox))
            .unwrap_or_default();
        let result = decode(&mut inbox);
        if inbox.is_empty() {
            if let Some(buffers) = &mut self.buffers {
                buffers.inbox = Vec::new();
            }
            self.drop_empty_buffers();
        } else {
            self.buffers.get_or_insert_with(Box::default).inbox = inbox;
        }
        result
    }

    /// Whether part of an inbound frame is waiting for the rest.
    pub fn has_partial_frame(&self) -> bool {
        self.buffers
            .as_ref()
            .is_some_and(|buffers| !buffers.inbox.is_empty())
    }

    fn outbox_len(&self) -> usize {
        self.buffers
            .as_ref()
            .map_or(0, |buffers| buffers.outbox.len())
    }

    /// Bytes accepted for sending that the socket has not taken yet (on
    /// TLS connections, sealed records: rustls holds none).
    pub fn queued_len(&self) -> usize {
        self.outbox_len()
    }

    /// Memory the outbound queue holds: its chunks, counted whole. The
    /// server-wide cap counts this, so that it bounds resident memory.
    pub fn held_bytes(&self) -> usize {
        self.buffers
            .as_ref()
            .map_or(0, |buffers| buffers.outbox.held_bytes())
    }

    /// How much [`held_bytes`](Self::held_bytes) would grow if `len` bytes
    /// were queued (on TLS connections, of plaintext: their records may
    /// take one chunk more).
    pub fn held_growth_for(&self, len: usize) -> usize {
        self.buffers.as_ref().map_or_else(
            || Outbox::default().growth_for(len),
            |buffers| buffers.outbox.growth_for(len),
        )
    }

    /// Gives the queue's chunks back to `pool`, when the connection is
    /// removed: what it did not send is dropped.
    pub fn release(&mut self, pool: &mut ChunkPool) {
        if let Some(buffers) = &mut self.buffers {
            buffers.outbox.release(pool);
        }
    }

    /// Whether bytes queued longer than the patience ago are still waiting.
    pub fn is_stuck(&self, now_ms: u64) -> bool {
        self.buffers
            .as_ref()
            .is_some_and(|buffers| buffers.watch.is_stuck(now_ms))
    }

    /// When the queue's current checkpoint falls due (ms since the loop's
    /// origin), if it holds bytes.
    pub fn drain_due_ms(&self) -> Option<u64> {
        self.buffers
            .as_ref()
            .and_then(|buffers| buffers.watch.due_ms())
    }

    /// How long no byte has left a non-empty queue, ms.
    pub fn idle_ms(&self, now_ms: u64) -> u64 {
        self.buffers
            .as_ref()
            .map_or(0, |buffers| buffers.watch.idle_ms(now_ms))
    }

    /// Updates the drain watch after `written` bytes left the queue and
    /// something may have been queued.
    fn watch(&mut self, clock: QueueClock, written: usize) {
        let queued = self.queued_len();
        if queued == 0 && self.buffers.is_none() {
            return;
        }
        let buffers = self.buffers.get_or_insert_with(Box::default);
        buffers
            .watch
            .written(clock.now_ms, written, queued, clock.patience_ms);
        buffers
            .watch
            .queued(clock.now_ms, queued, clock.patience_ms);
        if queued == 0 {
            buffers.watch = DrainWatch::new();
        }
        self.drop_empty_buffers();
    }

    fn drop_empty_buffers(&mut self) {
        if self.queued_len() == 0
            && self
                .buffers
                .as_ref()
                .is_some_and(|buffers| buffers.inbox.is_empty() && buffers.outbox.is_empty())
        {
            self.buffers = None;
        }
    }

    /// Sends `bytes`, queueing whatever the socket does not take now (in
    /// chunks from `pool`), up to `max_queued` bytes in the queue.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn send(
        &mut self,
        bytes: &[u8],
        max_queued: usize,
        clock: QueueClock,
        pool: &mut ChunkPool,
    ) -> io::Result<SendOutcome> {
        let outcome = self.send_unwatched(bytes, max_queued, pool);
        self.watch(clock, 0);
        outcome
    }

    fn send_unwatched(
        &mut self,
        bytes: &[u8],
        max_queued: usize,
        pool: &mut ChunkPool,
    ) -> io::Result<SendOutcome> {
        match &mut self.tls {
            Some(tls) => {
                let mut sealed = Vec::with_capacity(bytes.len() + 64);
                tls.seal(bytes, &mut sealed)?;
                // Refused here, the records are lost and the stream with
                // them; the caller closes the connection then anyway.
                self.queue_bytes(&sealed, max_queued, pool)
            }
            None => self.queue_bytes(bytes, max_queued, pool),
        }
    }

    /// Writes `bytes` after what is queued: at once when nothing is, and
    /// queues what the socket does not take, within `max_queued`.
    fn queue_bytes(
        &mut self,
        bytes: &[u8],
        max_queued: usize,
        pool: &mut ChunkPool,
    ) -> io::Result<SendOutcome> {
        let mut written = 0;
        let queued = self.outbox_len();
        if queued == 0 {
            written = self.write_some(bytes)?;
        }
        let rest = &bytes[written..];
        if rest.is_empty() {
            return Ok(SendOutcome::Sent);
        }
        if queued + rest.len() > max_queued {
            return Ok(SendOutcome::QueueFull);
        }
        self.buffers
            .get_or_insert_with(Box::default)
            .outbox
            .push(rest, pool);
        Ok(SendOutcome::Sent)
    }

    /// Writes queued bytes after the socket became writable, giving the
    /// chunks it empties back to `pool`.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn flush(&mut self, clock: QueueClock, pool: &mut ChunkPool) -> io::Result<()> {
        let before = self.queued_len();
        let flushed = self.flush_unwatched(pool);
        let written = before.saturating_sub(self.queued_len());
        self.watch(clock, written);
        flushed
    }

    /// Writes or queues records the connection itself produced (TLS
    /// handshake answers, alerts, close_notify): small, and never refused.
    fn write_or_queue(&mut self, bytes: &[u8], pool: &mut ChunkPool) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.queue_bytes(bytes, usize::MAX, pool).map(|_| ())
    }

    fn flush_unwatched(&mut self, pool: &mut ChunkPool) -> io::Result<()> {
        let Some(buffers) = self.buffers.as_mut() else {
            return Ok(());
        };
        let flushed = buffers.outbox.write_to(&mut self.stream, pool);
        self.drop_empty_buffers();
        flushed.map(|_| ())
    }

    /// Whether every accepted byte has been handed to the socket.
    pub fn is_flushed(&self) -> bool {
        self.outbox_len() == 0
    }

    /// Records that the last frame was queued: nothing else will be sent.
    pub fn mark_farewell_written(&mut self) {
        self.flags.set(flag::FAREWELL_WRITTEN, true);
    }

    /// Whether the last frame was queued.
    pub fn farewell_written(&self) -> bool {
        self.flags.get(flag::FAREWELL_WRITTEN)
    }

    /// Sends FIN after the bytes already written, once; reading goes on.
    /// On TLS connections close_notify goes first, and FIN waits until it
    /// is out (the next writable event calls this again), queued in chunks
    /// from `pool` if the socket does not take it.
    pub fn shutdown_write(&mut self, pool: &mut ChunkPool) {
        if self.flags.get(flag::WRITE_SHUT) {
            return;
        }
        if let Some(tls) = &mut self.tls {
            let mut sealed = Vec::new();
            tls.close_notify(&mut sealed);
            // A reset already: nothing more will go out, FIN or not.
            if self.write_or_queue(&sealed, pool).is_ok() && !self.is_flushed() {
                return;
            }
        }
        self.flags.set(flag::WRITE_SHUT, true);
        // Already reset: nothing more goes out either way.
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    fn write_some(&mut self, mut bytes: &[u8]) -> io::Result<usize> {
        let total = bytes.len();
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(total - bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_plain_connection_stays_small() {
        // Socket, peer address, buffer box, TLS box a byte of flags and a turn stamp: every
        // byte here is paid by every idle session (target: 0.5 KiB in all),
        // so nothing else may creep in. (mio's socket is 4 bytes in
        // release builds, 16 in debug ones.)
        let parts = std::mem::size_of::<TcpStream>()
            + std::mem::size_of::<SocketAddr>()
            + 2 * std::mem::size_of::<usize>()
            + 2;
        assert!(std::mem::size_of::<Connection>() <= parts.next_multiple_of(8));
    }

    #[test]
    fn a_drained_queue_gives_its_chunks_back() {
        use super::super::outbox::CHUNK_LEN;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
        let peer = listener.local_addr().expect("its address");
        let stream = std::net::TcpStream::connect(peer).expect("connects");
        stream.set_nonblocking(true).expect("non-blocking");
        let (mut reader, _) = listener.accept().expect("the connection");
        let mut conn = Connection::new(TcpStream::from_std(stream), peer, None);
        let mut pool = ChunkPool::new(1_000);
        let clock = QueueClock {
            now_ms: 0,
            patience_ms: 10_000,
        };
        // Nobody reads yet: the socket's buffers fill, then the queue.
        let message = vec![b'm'; 60_000];
        let mut sent = 0;
        while conn.queued_len() < 4 * CHUNK_LEN {
            let outcome = conn
                .send(&message, usize::MAX, clock, &mut pool)
                .expect("sends");
            assert_eq!(outcome, SendOutcome::Sent);
            sent += message.len();
            assert_eq!(
                conn.held_bytes(),
                conn.queued_len().div_ceil(CHUNK_LEN) * CHUNK_LEN,
                "whole chunks, as few as the bytes take (they start at a chunk's start)"
            );
        }
        let reading = std::thread::spawn(move || {
            let mut buffer = vec![0; 64 * 1024];
            let mut read = 0;
            while read < sent {
                read += reader.read(&mut buffer).expect("reads");
            }
            read
        });
        while !conn.is_flushed() {
            conn.flush(clock, &mut pool).expect("flushes");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(reading.join().expect("the reader"), sent);
        assert_eq!(conn.held_bytes(), 0);
        assert!(
            conn.buffers.is_none(),
            "an idle connection holds no buffers"
        );
    }
}
