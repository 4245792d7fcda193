//! One TLS connection's rustls state, and the socket IO that goes through
//! it: ciphertext from the socket is decrypted into the event loop's
//! scratch buffer; plaintext to send, handshake answers and alerts are
//! sealed into ciphertext handed to the caller, which writes it or queues
//! it in the connection's own outbox like a plain connection's bytes. So
//! rustls never holds unsent bytes, and a queue's size is exact: the
//! server's fair-delivery share and outbound cap count it.
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

use super::connection::ReadOutcome;
use super::tls::is_tls_record_start;

/// A TLS connection's state beside its socket.
#[derive(Debug)]
pub struct TlsSession {
    tls: rustls::ServerConnection,
    /// The first byte was seen to open a TLS record; until then a peer
    /// speaking plain lubdub is told so in plain.
    sniffed: bool,
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
        }))
    }

    /// The client's leaf certificate, verified by rustls against
    /// `--tls-client-ca` during the handshake.
    pub fn peer_certificate(&self) -> Option<&rustls_pki_types::CertificateDer<'static>> {
        self.tls.peer_certificates()?.first()
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
        sealed: &mut Vec<u8>,
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
                self.seal_pending(sealed);
                warn!(%peer, %error, "TLS error, closing the connection");
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("TLS: {error}"),
                ));
            }
            // Handshake answers and session tickets go out at once (the
            // caller writes `sealed`): with edge-triggered readiness, room
            // the socket already has is never announced again.
            self.seal_pending(sealed);
        }
    }

    /// Encrypts `bytes` into records appended to `sealed`.
    ///
    /// # Errors
    /// What rustls says when it cannot encrypt (it cannot, for example,
    /// after a close_notify was sent).
    pub fn seal(&mut self, bytes: &[u8], sealed: &mut Vec<u8>) -> io::Result<()> {
        // Nothing stays in rustls: its buffer limit does not apply.
        self.tls.set_buffer_limit(None);
        self.tls.writer().write_all(bytes)?;
        self.seal_pending(sealed);
        Ok(())
    }

    /// Appends close_notify (once) to `sealed`: a FIN before it would look
    /// like a truncation to the peer.
    pub fn close_notify(&mut self, sealed: &mut Vec<u8>) {
        // rustls queues the alert only once however often this is called.
        self.tls.send_close_notify();
        self.seal_pending(sealed);
    }

    /// Moves every record rustls has ready into `sealed`.
    fn seal_pending(&mut self, sealed: &mut Vec<u8>) {
        while self.tls.wants_write() {
            // Writing into a Vec cannot fail.
            if !matches!(self.tls.write_tls(sealed), Ok(n) if n > 0) {
                break;
            }
        }
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
