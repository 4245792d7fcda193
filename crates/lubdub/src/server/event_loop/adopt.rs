//! Taking on a connection the acceptor admitted: socket options, a TLS
//! session on a TLS server, a slot, the poll registration, and its
//! connection machine (which starts the handshake deadline).

use std::net::SocketAddr;

use lubdub_core::connection as machine;
use lubdub_core::detector::Detector;
use mio::{Interest, Token};
use tracing::{debug, warn};

use super::super::connection::Connection;
use super::super::tls_session::TlsSession;
use super::{EventLoop, Slot, FIRST_CONNECTION, MAX_SLOTS};

impl<D: Detector> EventLoop<D> {
    /// Registers an admitted connection and starts its machine; one that
    /// cannot be started is closed, and counted closed.
    pub(super) fn adopt(&mut self, mut stream: mio::net::TcpStream, peer: SocketAddr) {
        // Dated afresh, as for frames: a connection adopted late in a busy
        // turn (or one that arrived during it) would otherwise lose the
        // turn's length from its handshake timeout.
        let now = self.now();
        if self.draining_until.is_some() || self.slots.vacant_key() >= MAX_SLOTS {
            // Shutting down (or no slot a session id can name): closed, and
            // the client retries with backoff.
            self.admission.closed(peer.ip());
            return;
        }
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
