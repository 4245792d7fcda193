//! One client connection: dial, TLS handshake when asked for, HELLO and
//! WELCOME, and frames in and out over tokio.
//!
//! [`FrameReader::read_frame`] is cancel-safe (bytes are kept in the reader
//! between calls), so the session loop can `select!` on it beside its timer.

use std::net::SocketAddr;
use std::time::Duration;

use lubdub_core::protocol::frame::flags;
use lubdub_core::protocol::{
    codec, DecodeError, Frame, Hello, Reason, ReasonCode, Welcome, PROTOCOL_VERSION,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::stream::{self, ReadHalf, Stream, WriteHalf};
use super::tls::TlsConnector;

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The name breaks the naming rules; no connection was attempted.
    #[error("invalid name")]
    InvalidName(#[from] lubdub_core::protocol::handshake::NameError),
    /// The server address is not `host:port`; nothing was dialled.
    #[error(transparent)]
    InvalidAddress(#[from] crate::address::AddressError),
    /// TCP could not connect.
    #[error("cannot connect to {addr}")]
    Connect {
        /// Server address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No WELCOME or REJECT arrived in time.
    #[error("no answer to HELLO from {addr} within {timeout:?}")]
    HandshakeTimeout {
        /// Server address.
        addr: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The server refused the session; retrying with the same HELLO will not help.
    #[error("server rejected the session: {} ({})", .0.text, .0.code)]
    Rejected(Reason),
    /// The server answered with something that is not lubdub.
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
    /// The connection failed during the handshake.
    #[error("connection failed during the handshake")]
    Io(#[from] std::io::Error),
    /// The TLS settings cannot be used (unreadable or empty CA, certificate
    /// or key file, no system roots, a bad server name); nothing was dialled.
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The server's certificate is not signed by a trusted CA, or is
    /// expired, revoked or malformed.
    #[error("the certificate of {addr} is not trusted: {detail}; pass the CA that signed it with --tls-ca")]
    CertificateNotTrusted {
        /// Server address.
        addr: String,
        /// What rustls said.
        detail: String,
    },
    /// The server's certificate is valid, but not for the name asked for.
    #[error("the certificate of {addr} is not valid for the name {name:?} ({detail}); connect by a name it was issued for, or set --tls-server-name")]
    CertificateNameMismatch {
        /// Server address.
        addr: String,
        /// The name the certificate was checked against.
        name: String,
        /// What rustls said.
        detail: String,
    },
    /// The server answered the TLS handshake with something that is not
    /// TLS (a plain lubdub server answers with a plain REJECT).
    #[error("the server at {addr} does not seem to speak TLS (it answered the TLS handshake with something else); connect without --tls")]
    NotTls {
        /// Server address.
        addr: String,
    },
    /// The server requires a client certificate and got none, or refused the one presented.
    #[error("the server at {addr} refused the client certificate: {detail}")]
    ClientCertificateRefused {
        /// Server address.
        addr: String,
        /// Why, as far as the server's alert tells.
        detail: String,
    },
    /// The TLS handshake failed otherwise (closed, reset, incompatible).
    #[error("TLS handshake with {addr} failed: {detail}")]
    TlsHandshake {
        /// Server address.
        addr: String,
        /// What happened.
        detail: String,
    },
}

impl ConnectError {
    /// Whether retrying later can succeed: false for a bad name or address and for
    /// rejections that the same HELLO would get again (invalid name,
    /// unauthorized, unsupported version, ...); true for temporary ones
    /// (server full, shutting down, handshake timeout) and codes this
    /// version does not know. TLS: certificate and setup errors and a
    /// server that does not speak TLS are final; a failed handshake is a
    /// connection failure and is retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectError::InvalidName(_)
            | ConnectError::InvalidAddress(_)
            | ConnectError::TlsSetup(_)
            | ConnectError::CertificateNotTrusted { .. }
            | ConnectError::CertificateNameMismatch { .. }
            | ConnectError::NotTls { .. }
            | ConnectError::ClientCertificateRefused { .. } => false,
            ConnectError::Rejected(reason) => matches!(
                reason.code,
                ReasonCode::ServerFull
                    | ReasonCode::ServerBusy
                    | ReasonCode::Shutdown
                    | ReasonCode::HandshakeTimeout
                    | ReasonCode::Unknown(_)
            ),
            _ => true,
        }
    }
}

/// Why reading a frame failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a valid frame.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The peer closed in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
}

/// Reads whole frames from a socket, plain or TLS.
#[derive(Debug)]
pub struct FrameReader {
    stream: ReadHalf,
    buffer: Vec<u8>,
    max_frame_len: usize,
}

impl FrameReader {
    /// Next frame; `Ok(None)` when the peer closed cleanly between frames.
    ///
    /// # Errors
    /// [`ReadError`] on socket errors, invalid bytes, or a close mid-frame.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ReadError> {
        read_frame_from(&mut self.stream, &mut self.buffer, self.max_frame_len).await
    }
}

/// Next frame from `stream`, keeping partial frames in `buffer` between
/// calls (so a cancelled call loses nothing).
async fn read_frame_from(
    stream: &mut (impl AsyncRead + Unpin),
    buffer: &mut Vec<u8>,
    max_frame_len: usize,
) -> Result<Option<Frame>, ReadError> {
    loop {
        if let Some((frame, used)) = codec::decode(buffer, max_frame_len)? {
            buffer.drain(..used);
            return Ok(Some(frame));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return if buffer.is_empty() {
                Ok(None)
            } else {
                Err(ReadError::Truncated)
            };
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
}

/// Writes frames to a socket, plain or TLS.
#[derive(Debug)]
pub struct FrameWriter {
    stream: WriteHalf,
    buffer: Vec<u8>,
}

impl FrameWriter {
    /// Encodes and writes one frame.
    ///
    /// # Errors
    /// Socket errors, or `InvalidInput` when a field does not fit the protocol.
    pub async fn write_frame(&mut self, frame: &Frame) -> std::io::Result<()> {
        write_frame_to(&mut self.stream, &mut self.buffer, frame).await
    }
}

/// Encodes `frame` into `buffer` and writes it out. The flush is what
/// sends TLS records rustls still holds; on plain TCP it costs nothing.
async fn write_frame_to(
    stream: &mut (impl AsyncWrite + Unpin),
    buffer: &mut Vec<u8>,
    frame: &Frame,
) -> std::io::Result<()> {
    buffer.clear();
    codec::encode(frame, buffer)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    stream.write_all(buffer).await?;
    stream.flush().await
}

/// A connection whose handshake completed.
#[derive(Debug)]
pub struct Established {
    /// What the server granted.
    pub welcome: Welcome,
    /// Address connected to.
    pub peer: SocketAddr,
    /// Inbound frames.
    pub reader: FrameReader,
    /// Outbound frames.
    pub writer: FrameWriter,
}

/// What a HELLO should say.
#[derive(Debug, Clone)]
pub struct HelloParams<'a> {
    /// Name to claim.
    pub name: &'a str,
    /// Requested interval; `None` for the server's default.
    pub interval: Option<Duration>,
    /// One-way heartbeats: the server never answers PINGs.
    pub one_way: bool,
    /// Credential for the name, empty when none.
    pub credential: &'a [u8],
    /// Set TCP keepalive and `TCP_USER_TIMEOUT` from the granted interval
    /// and deadline once WELCOME arrives.
    pub tcp_liveness: bool,
    /// The status to start with, if any.
    pub status: Option<&'a str>,
}

/// Dials `server`, runs the TLS handshake when `tls` is given, sends HELLO
/// and waits for WELCOME.
///
/// # Errors
/// [`ConnectError`]; see [`ConnectError::is_retryable`].
pub async fn connect(
    server: &str,
    hello: &HelloParams<'_>,
    timeout: Duration,
    max_frame_len: usize,
    tls: Option<&TlsConnector>,
) -> Result<Established, ConnectError> {
    lubdub_core::protocol::handshake::validate_name(hello.name)?;
    crate::address::split(server, 7070)?;
    let connect_error = |source| ConnectError::Connect {
        addr: server.to_owned(),
        source,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(server))
        .await
        .map_err(|_| connect_error(std::io::ErrorKind::TimedOut.into()))?
        .map_err(connect_error)?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let mut stream = match tls {
        None => Stream::Left(stream),
        Some(tls) => {
            let handshake = tokio::time::timeout(timeout, tls.handshake(server, stream))
                .await
                .map_err(|_| ConnectError::TlsHandshake {
                    addr: server.to_owned(),
                    detail: format!("no TLS handshake answer within {timeout:?}"),
                })??;
            Stream::Right(Box::new(handshake))
        }
    };
    // TLS errors surface on the first write or read too (a refused
    // client certificate arrives as an alert after the client's side of
    // the handshake completed): explain them the same way.
    let explain = |error: std::io::Error| match tls {
        Some(tls) => tls.explain(server, error),
        None => ConnectError::Io(error),
    };
    let mut write_buffer = Vec::new();
    let mut read_buffer = Vec::new();
    let requested_interval_ms = hello.interval.map_or(0, |interval| {
        u32::try_from(interval.as_millis())
            .unwrap_or(u32::MAX)
            .max(1)
    });
    let hello_frame = Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: if hello.one_way { 0 } else { flags::ACKS_WANTED },
        requested_interval_ms,
        name: hello.name.to_owned(),
        credential: hello.credential.to_vec(),
        status: hello.status.map(str::to_owned),
    });
    write_frame_to(&mut stream, &mut write_buffer, &hello_frame)
        .await
        .map_err(explain)?;
    let answer = tokio::time::timeout(
        timeout,
        read_frame_from(&mut stream, &mut read_buffer, max_frame_len),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimeout {
        addr: server.to_owned(),
        timeout,
    })?;
    match answer {
        Ok(Some(Frame::Welcome(welcome)))
            if welcome.granted_interval_ms == 0 || welcome.max_missed == 0 =>
        {
            Err(ConnectError::Protocol(format!(
                "WELCOME grants an unusable interval of {} ms × {}",
                welcome.granted_interval_ms, welcome.max_missed
            )))
        }
        Ok(Some(Frame::Welcome(welcome))) => {
            if hello.tcp_liveness {
                // Keepalive probes after one idle interval; sent data
                // unacknowledged for a whole deadline aborts the connection.
                let interval = Duration::from_millis(u64::from(welcome.granted_interval_ms));
                let deadline = interval * u32::from(welcome.max_missed);
                if let Err(error) = crate::tcp_options::apply(
                    socket2::SockRef::from(stream::tcp(&stream)),
                    Some(interval),
                    Some(deadline),
                ) {
                    // The heartbeat still works without them.
                    tracing::debug!(%error, "could not set TCP keepalive or user timeout");
                }
            }
            let (read_half, write_half) = stream::split(stream);
            Ok(Established {
                welcome,
                peer,
                reader: FrameReader {
                    stream: read_half,
                    buffer: read_buffer,
                    max_frame_len,
                },
                writer: FrameWriter {
                    stream: write_half,
                    buffer: write_buffer,
                },
            })
        }
        Ok(Some(Frame::Reject(reason))) => Err(ConnectError::Rejected(reason)),
        Ok(Some(Frame::Bye(bye))) => Err(ConnectError::Rejected(bye.reason)),
        Ok(Some(other)) => Err(ConnectError::Protocol(format!(
            "expected WELCOME, got {:?}",
            other.kind()
        ))),
        Ok(None) => Err(ConnectError::Protocol(
            "server closed the connection before answering HELLO".into(),
        )),
        Err(ReadError::Io(error)) => Err(explain(error)),
        Err(error) => Err(ConnectError::Protocol(error.to_string())),
    }
}
