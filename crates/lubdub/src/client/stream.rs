//! The bytes under a client connection: plain TCP, or TLS over it. The
//! handshake (HELLO, WELCOME) runs on the whole [`Stream`]; it is then split
//! into a read and a write half for the frame reader and writer.
//!
//! `Either` (tokio-util) rather than a boxed trait object: the plain path
//! keeps tokio's lock-free `into_split` halves and pays one `match` per
//! poll. TLS halves come from `tokio::io::split`, since one rustls session
//! serves both ways.

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

/// A connected stream, before it is split: plain TCP on the left, TLS on
/// the right (boxed: the rustls session is large).
pub type Stream = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// The read half of a [`Stream`].
pub type ReadHalf = Either<OwnedReadHalf, tokio::io::ReadHalf<Box<TlsStream<TcpStream>>>>;

/// The write half of a [`Stream`].
pub type WriteHalf = Either<OwnedWriteHalf, tokio::io::WriteHalf<Box<TlsStream<TcpStream>>>>;

/// The TCP socket underneath, for socket options.
pub fn tcp(stream: &Stream) -> &TcpStream {
    match stream {
        Either::Left(stream) => stream,
        Either::Right(stream) => stream.get_ref().0,
    }
}

/// Splits into halves that can be used from the two sides of a `select!`.
pub fn split(stream: Stream) -> (ReadHalf, WriteHalf) {
    match stream {
        Either::Left(stream) => {
            let (read, write) = stream.into_split();
            (Either::Left(read), Either::Left(write))
        }
        Either::Right(stream) => {
            let (read, write) = tokio::io::split(stream);
            (Either::Right(read), Either::Right(write))
        }
    }
}
