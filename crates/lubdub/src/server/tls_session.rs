//! One TLS connection's rustls state, and the socket IO that goes through
//! it: ciphertext from the socket is decrypted into the event loop's
//! scratch buffer, plaintext to send is encrypted into a bounded queue.
//!
//! [`Connection`](super::connection::Connection) holds a boxed
//! [`TlsSession`] only on TLS connections, so plain sessions pay one null
//! pointer for it. The handshake runs inside these reads and writes while
//! the connection awaits HELLO, so the handshake timeout bounds it too.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use mio::net::TcpStream;
use tracing::warn;

use super::connection::{ReadOutcome, SendOutcome};
use super::tls::is_tls_record_start;

/// A TLS connection's state beside its socket.
#[derive(Debug)]
pub struct TlsSession {
    tls: rustls::ServerConnection,
    /// The first byte was seen to open a TLS record; until then a peer
    /// speaking plain lubdub is told so in plain.
    sniffed: bool,
    /// Plaintext accepted and ciphertext written since the queue was last
    /// empty: rustls does not say how much it holds, and the server's
    /// outbound cap counts every queue. Reset whenever nothing is left, so
    /// the estimate is off by at most the records' overhead since then.
    accepted_since_empty: u64,
    written_since_empty: u64,
}

impl TlsSession {
    /// A session for a just accepted connection.
    ///
    /// # Errors
    /// What rustls says when it cannot start a session with `config`.
    pub fn accept(config: &Arc<rustls::ServerConfig>) -> Result<Box<Self>, rustls::Error> {
        Ok(Box::new(Self {
            tls: rustls::ServerConnection::new(Arc::clone(config))?,
            sniffed: false,
            accepted_since_empty: 0,
            written_since_empty: 0,
        }))
    }

    /// Fills `scratch` with plaintext, reading and decrypting until it is
    /// full or the socket has nothing more. A short read therefore means
    /// the socket is drained, as on plain connections: the event loop
    /// relies on that with edge-triggered readiness.
    ///
    /// Returns [`ReadOutcome::TlsRequired`] when the peer's first byte is
    /// not a TLS record (plain lubdub starts with 0x00); nothing is
    /// consumed then.
    ///
    /// # Errors
    /// Socket errors, and TLS errors (logged here with the peer and the
    /// reason, after the alert rustls prepared is sent).
    pub fn read_into(
        &mut self,
        stream: &mut TcpStream,
        peer: SocketAddr,
        scratch: &mut [u8],
    ) -> io::Result<ReadOutcome> {
        if !self.sniffed {
            let mut first = [0u8; 1];
            match retry_interrupted(|| stream.peek(&mut first)) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(_) if !is_tls_record_start(first[0]) => return Ok(ReadOutcome::TlsRequired),
                Ok(_) => self.sniffed = true,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(ReadOutcome::WouldBlock)
                }
                Err(error) => return Err(error),
            }
        }
        let mut filled = 0;
        let data_or = |filled: usize, otherwise: ReadOutcome| {
            if filled > 0 {
                ReadOutcome::Data(filled)
            } else {
                otherwise
            }
        };
        loop {
            // Plaintext decrypted earlier comes first.
            match self.tls.reader().read(&mut scratch[filled..]) {
                // close_notify received and every byte before it read.
                Ok(0) => return Ok(data_or(filled, ReadOutcome::Closed)),
                Ok(n) => {
                    filled += n;
                    if filled == scratch.len() {
                        return Ok(ReadOutcome::Data(filled));
                    }
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                // TCP closed without close_notify: the end of the stream all the same.
                Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => {
                    return Ok(data_or(filled, ReadOutcome::Closed))
                }
                Err(error) => return Err(error),
            }
            match retry_interrupted(|| self.tls.read_tls(stream)) {
                // End of stream: processing below makes the reader report it.
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(data_or(filled, ReadOutcome::WouldBlock))
                }
                Err(error) => return Err(error),
            }
            if let Err(error) = self.tls.process_new_packets() {
                // The alert rustls queued tells the peer why; best effort,
                // the connection closes either way.
                let _ = self.write_tls(stream);
                warn!(%peer, %error, "TLS error, closing the connection");
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {error}"),
                ));
            }
            // Handshake answers and session tickets go out at once: with
            // edge-triggered readiness, room the socket already has is
            // never announced again.
            self.write_tls(stream)?;
        }
    }

    /// Encrypts `bytes` and writes what the socket takes; the rest waits in
    /// rustls, whose buffer is bounded by `max_queued` like a plain
    /// connection's queue, so a peer that does not read is dropped, not
    /// buffered for without bound.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn send(
        &mut self,
        stream: &mut TcpStream,
        bytes: &[u8],
        max_queued: usize,
    ) -> io::Result<SendOutcome> {
        self.tls.set_buffer_limit(Some(max_queued));
        let mut rest = bytes;
        loop {
            let accepted = self.tls.writer().write(rest)?;
            self.accepted_since_empty += accepted as u64;
            rest = &rest[accepted..];
            self.write_tls(stream)?;
            if rest.is_empty() {
                return Ok(SendOutcome::Sent);
            }
            // Still full after the socket took what it would: the peer is
            // not reading. (With room made, the next round accepts more.)
            if accepted == 0 || self.tls.wants_write() {
                return Ok(SendOutcome::QueueFull);
            }
        }
    }

    /// Writes queued records after the socket became writable.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        self.write_tls(stream)
    }

    /// Whether every encrypted byte has been handed to the socket.
    pub fn is_flushed(&self) -> bool {
        !self.tls.wants_write()
    }

    /// Bytes queued and not yet written, estimated (see the counters).
    pub fn queued_estimate(&self) -> usize {
        if self.is_flushed() {
            return 0;
        }
        usize::try_from(
            self.accepted_since_empty
                .saturating_sub(self.written_since_empty),
        )
        .unwrap_or(usize::MAX)
    }

    /// Queues close_notify (once) and writes what the socket takes. Returns
    /// whether nothing is left to write, so that FIN may follow: a FIN
    /// before close_notify would look like a truncation to the peer.
    pub fn close_notify(&mut self, stream: &mut TcpStream) -> bool {
        // rustls queues the alert only once however often this is called.
        self.tls.send_close_notify();
        match self.write_tls(stream) {
            Ok(()) => self.is_flushed(),
            // Reset already: nothing more will go out, FIN or not.
            Err(_) => true,
        }
    }

    fn write_tls(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while self.tls.wants_write() {
            match retry_interrupted(|| self.tls.write_tls(stream)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.written_since_empty += written as u64,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
        if !self.tls.wants_write() {
            self.accepted_since_empty = 0;
            self.written_since_empty = 0;
        }
        Ok(())
    }
}

fn retry_interrupted<T>(mut call: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}
