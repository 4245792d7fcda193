//! One raw protocol session as a load generator drives it: HELLO, then PINGs
//! exactly when told, and every inbound frame stamped with the instant its
//! read completed.
//!
//! It deliberately bypasses [`crate::client::Client`]: that client decides
//! for itself when to ping and reconnects after a drop, and a benchmark must
//! control the first and observe the drop instead of the second.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lubdub_core::protocol::frame::flags;
use lubdub_core::protocol::{codec, DecodeError, Frame, Hello, Reason, Welcome, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest frame accepted from the server; BYE and PONG are tiny, and a
/// bigger prefix means the benchmark talks to something that is not lubdub.
const MAX_FRAME_LEN: usize = codec::DEFAULT_MAX_FRAME_LEN;
/// Bytes asked for per read: a heartbeating session gets a few frames at
/// a time, a watcher thousands in a burst.
const READ_CHUNK: usize = 16 * 1024;

/// Why a session could not be opened or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TCP connect failed.
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// No WELCOME (or REJECT) within the handshake timeout.
    #[error("no WELCOME within {0:?}")]
    HandshakeTimeout(Duration),
    /// The server refused the HELLO.
    #[error("HELLO rejected: {} ({})", .0.code, .0.text)]
    Rejected(Reason),
    /// The server answered the HELLO with something other than WELCOME or REJECT.
    #[error("expected WELCOME, got {0:?}")]
    UnexpectedFrame(lubdub_core::protocol::FrameKind),
    /// The server closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    ClosedDuringHandshake,
    /// The server sent bytes that are not a valid frame.
    #[error("invalid frame from the server: {0}")]
    Decode(#[from] DecodeError),
    /// A read or write failed.
    #[error("socket error: {0}")]
    Io(#[from] io::Error),
}

/// What a read produced, with the instant the read completed.
#[derive(Debug)]
pub enum Received {
    /// A complete frame.
    Frame(Frame),
    /// The server closed its side (EOF).
    Closed,
}

/// An established raw session.
#[derive(Debug)]
pub struct RawSession {
    wire: Wire,
    welcome: Welcome,
    next_seq: u32,
}

impl RawSession {
    /// Connects, sends HELLO asking for `requested_interval` and waits for
    /// WELCOME. Returns the session and the instant HELLO was written, which
    /// is the server's first proof of life from it.
    ///
    /// # Errors
    /// [`SessionError`] for a failed connect, a REJECT, a timeout or a socket error.
    pub async fn open(
        server: SocketAddr,
        name: &str,
        requested_interval: Duration,
        acks_wanted: bool,
        timeout: Duration,
    ) -> Result<(Self, Instant), SessionError> {
        let hello = Frame::Hello(Hello {
            version: PROTOCOL_VERSION,
            flags: if acks_wanted { flags::ACKS_WANTED } else { 0 },
            requested_interval_ms: u32::try_from(requested_interval.as_millis())
                .unwrap_or(u32::MAX),
            name: name.to_owned(),
            credential: Vec::new(),
            status: None,
        });
        let hello = codec::encode_to_vec(&hello)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        let handshake = async {
            let stream = TcpStream::connect(server)
                .await
                .map_err(SessionError::Connect)?;
            // Heartbeats are 13 bytes: without NODELAY, Nagle would hold one
            // back behind an unacknowledged predecessor and shift last_sent.
            stream.set_nodelay(true)?;
            let mut wire = Wire {
                stream,
                inbox: Vec::new(),
                start: 0,
                inbox_read_at: Instant::now(),
            };
            let hello_sent = Instant::now();
            wire.stream.write_all(&hello).await?;
            match wire.next().await? {
                (Received::Frame(Frame::Welcome(welcome)), _) => {
                    let session = Self {
                        wire,
                        welcome,
                        next_seq: 1,
                    };
                    Ok((session, hello_sent))
                }
                (Received::Frame(Frame::Reject(reason)), _) => Err(SessionError::Rejected(reason)),
                (Received::Frame(other), _) => Err(SessionError::UnexpectedFrame(other.kind())),
                (Received::Closed, _) => Err(SessionError::ClosedDuringHandshake),
            }
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .map_err(|_| SessionError::HandshakeTimeout(timeout))?
    }

    /// What the server granted.
    pub fn welcome(&self) -> Welcome {
        self.welcome
    }

    /// The heartbeat interval the server granted.
    pub fn granted_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.welcome.granted_interval_ms))
    }

    /// Silence after which the server must drop this session:
    /// granted interval × max missed.
    pub fn deadline(&self) -> Duration {
        self.granted_interval() * u32::from(self.welcome.max_missed)
    }

    /// Writes one frame (a JOIN, a WATCH).
    ///
    /// # Errors
    /// The socket error, or a frame that cannot be encoded.
    pub async fn send(&mut self, frame: &Frame) -> io::Result<()> {
        let bytes = codec::encode_to_vec(frame)
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        self.wire.stream.write_all(&bytes).await
    }

    /// Writes one PING and returns the instant taken just before the write.
    ///
    /// Before, not after: the server cannot have seen the PING earlier than
    /// that, so a drop measured against it is never made to look early.
    ///
    /// # Errors
    /// The socket error.
    pub async fn ping(&mut self) -> io::Result<Instant> {
        let bytes = codec::ping_bytes(self.next_seq, 0);
        self.next_seq = self.next_seq.wrapping_add(1);
        let sent_at = Instant::now();
        self.wire.stream.write_all(&bytes).await?;
        Ok(sent_at)
    }

    /// The next frame or the end of the stream, with the instant the read
    /// that completed it returned. Cancel-safe: bytes already read stay
    /// buffered for the next call.
    ///
    /// # Errors
    /// A socket error or an undecodable frame.
    pub async fn next(&mut self) -> Result<(Received, Instant), SessionError> {
        self.wire.next().await
    }
}

/// The socket and its inbound bytes, before and after the handshake.
#[derive(Debug)]
struct Wire {
    stream: TcpStream,
    /// Bytes read; those from `start` on are not yet decoded into a frame.
    inbox: Vec<u8>,
    start: usize,
    /// Instant of the read that delivered the last bytes in `inbox`.
    inbox_read_at: Instant,
}

impl Wire {
    async fn next(&mut self) -> Result<(Received, Instant), SessionError> {
        loop {
            // Decoded from an offset, not drained frame by frame: a burst
            // of thousands of frames in one read would be moved as often.
            if let Some((frame, used)) = codec::decode(&self.inbox[self.start..], MAX_FRAME_LEN)? {
                self.start += used;
                if self.start == self.inbox.len() {
                    self.inbox.clear();
                    self.start = 0;
                }
                return Ok((Received::Frame(frame), self.inbox_read_at));
            }
            self.inbox.drain(..self.start);
            self.start = 0;
            let mut chunk = [0u8; READ_CHUNK];
            let read = self.stream.read(&mut chunk).await;
            // Stamp first: this instant is what the measurement is about.
            let read_at = Instant::now();
            match read? {
                0 => return Ok((Received::Closed, read_at)),
                n => {
                    self.inbox.extend_from_slice(&chunk[..n]);
                    self.inbox_read_at = read_at;
                }
            }
        }
    }
}
