//! One accepted TCP connection: its socket, its partial inbound frame and its
//! unsent outbound bytes.
//!
//! Both buffers are empty `Vec`s without capacity while the connection is
//! idle; bytes are read into the event loop's shared scratch buffer and only
//! a trailing partial frame is copied here. That keeps an idle session at its
//! fixed size (the issue 5 target is 0.5 KiB per idle session).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

/// What a read from the socket produced.
#[derive(Debug)]
pub enum ReadOutcome {
    /// `n` bytes were placed in the scratch buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed its side.
    Closed,
}

/// Outcome of queueing bytes for the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Written or queued.
    Sent,
    /// The outbound queue would exceed its bound.
    QueueFull,
}

/// An accepted connection's IO state.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: TcpStream,
    /// Peer address, for logs and the admin API.
    pub peer: SocketAddr,
    /// Bytes of an inbound frame that is not complete yet.
    pub inbox: Vec<u8>,
    /// Bytes accepted for sending that the socket did not take yet.
    outbox: Vec<u8>,
    /// FIN sent. Kept because on Linux every `shutdown` wakes the socket's
    /// pollers: repeating it on each writable edge made a peer that holds
    /// its end open spin the event loop (millions of calls a second).
    write_shut: bool,
    /// The last frame is queued: the write side is shut once it is out.
    farewell_written: bool,
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, peer: SocketAddr) -> Self {
        Self {
            stream,
            peer,
            inbox: Vec::new(),
            outbox: Vec::new(),
            write_shut: false,
            farewell_written: false,
        }
    }

    /// Reads once into `scratch`.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn read_into(&mut self, scratch: &mut [u8]) -> io::Result<ReadOutcome> {
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

    /// Keeps `rest`, the unconsumed tail of what was read, until more bytes arrive.
    pub fn keep_partial(&mut self, rest: &[u8]) {
        if rest.is_empty() {
            // Free the capacity: an idle session holds no buffer.
            self.inbox = Vec::new();
        } else {
            self.inbox.clear();
            self.inbox.extend_from_slice(rest);
        }
    }

    /// Sends `bytes`, queueing whatever the socket does not take now, up to
    /// `max_queued` bytes in the queue.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn send(&mut self, bytes: &[u8], max_queued: usize) -> io::Result<SendOutcome> {
        let mut written = 0;
        if self.outbox.is_empty() {
            written = self.write_some(bytes)?;
        }
        let rest = &bytes[written..];
        if rest.is_empty() {
            return Ok(SendOutcome::Sent);
        }
        if self.outbox.len() + rest.len() > max_queued {
            return Ok(SendOutcome::QueueFull);
        }
        self.outbox.extend_from_slice(rest);
        Ok(SendOutcome::Sent)
    }

    /// Writes queued bytes after the socket became writable.
    ///
    /// # Errors
    /// Socket errors other than `WouldBlock` and `Interrupted`.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.outbox.is_empty() {
            return Ok(());
        }
        let outbox = std::mem::take(&mut self.outbox);
        let written = self.write_some(&outbox);
        let written = match written {
            Ok(written) => written,
            Err(error) => {
                self.outbox = outbox;
                return Err(error);
            }
        };
        if written < outbox.len() {
            self.outbox = outbox;
            self.outbox.drain(..written);
        }
        Ok(())
    }

    /// Whether every accepted byte has been handed to the socket.
    pub fn is_flushed(&self) -> bool {
        self.outbox.is_empty()
    }

    /// Records that the last frame was queued: nothing else will be sent.
    pub fn mark_farewell_written(&mut self) {
        self.farewell_written = true;
    }

    /// Whether the last frame was queued.
    pub fn farewell_written(&self) -> bool {
        self.farewell_written
    }

    /// Sends FIN after the bytes already written, once; reading goes on.
    pub fn shutdown_write(&mut self) {
        if std::mem::replace(&mut self.write_shut, true) {
            return;
        }
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
