//! Helpers for integration tests: a real server on 127.0.0.1 ephemeral ports
//! with its admin API, its presence events, and a raw protocol connection for
//! sending exactly the bytes a test needs.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lubdub::core::protocol::frame::flags;
use lubdub::core::protocol::{codec, Frame, Hello, ReasonCode, Welcome, PROTOCOL_VERSION};
use lubdub::server::{
    self, DropReason, FeedItem, InMemoryRegistry, PresenceEvent, PresenceFeed, PresenceHub,
    PresenceKind, ServerConfig, ServerControl, ServerHandle, SessionInfo,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A scratch directory of one test's own, removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    /// An empty directory named after the test binary, `test` and the process.
    pub fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "lubdub-{}-{test}-{}",
            env!("CARGO_CRATE_NAME"),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    /// `file` in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Longest a test waits for something that should happen; only reached on failure.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Lateness allowed for timing assertions. Tests run in parallel on a
/// shared 2-core machine; the precise bound (deadline + 10 ms p99) is
/// measured in the benchmark, not here.
pub const TOLERANCE: Duration = Duration::from_millis(80);

/// Event loops the servers of the tests run: `LUBDUB_TEST_THREADS`, or 1.
/// The suite runs once with each of 1 and 2 (`scripts/test.sh`), so that
/// every path between two loops is exercised on every run.
pub fn test_threads() -> usize {
    std::env::var("LUBDUB_TEST_THREADS")
        .ok()
        .and_then(|threads| threads.parse().ok())
        .unwrap_or(1)
}

/// A configuration with short intervals for tests: 100 ms × 5.
pub fn fast_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        threads: Some(test_threads()),
        interval: Duration::from_millis(100),
        min_interval: Duration::from_millis(10),
        max_missed: 5,
        handshake_timeout: Duration::from_secs(2),
        ..ServerConfig::default()
    }
}

/// A running server with its admin API and its presence events.
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub events: PresenceFeed,
    seen: Vec<PresenceEvent>,
    stop_admin: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig) -> TestServer {
        TestServer::start_with_registry(config, Arc::new(InMemoryRegistry::new())).await
    }

    /// A server whose registry the test holds too (to claim names as a
    /// session elsewhere would).
    pub async fn start_with_registry(
        config: ServerConfig,
        registry: Arc<InMemoryRegistry>,
    ) -> TestServer {
        // A ring large enough that no test loses an event it waits for.
        let hub = Arc::new(PresenceHub::new(1 << 16));
        let events = hub.subscribe();
        let handle = server::start_with_hub(config, registry, hub).expect("server starts");
        let admin_listener = lubdub::admin::bind("127.0.0.1:0".parse().expect("valid"))
            .await
            .expect("admin binds");
        let admin = admin_listener.local_addr().expect("admin address");
        let (stop_admin, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(lubdub::admin::serve(
            admin_listener,
            handle.control(),
            lubdub::admin::AdminConfig::default(),
            None,
            async {
                let _ = stopped.await;
            },
        ));
        TestServer {
            addr: handle.local_addr(),
            handle: Some(handle),
            admin,
            events,
            seen: Vec::new(),
            stop_admin: Some(stop_admin),
        }
    }

    pub fn control(&self) -> ServerControl {
        self.handle.as_ref().expect("server running").control()
    }

    /// Stops the server (BYE `shutdown` to everyone) and waits for its loop.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop_admin.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            tokio::task::spawn_blocking(move || handle.stop())
                .await
                .expect("join")
                .expect("loop ends cleanly");
        }
    }

    /// Waits for the first event matching `predicate`, returning it.
    pub async fn expect_event(
        &mut self,
        what: &str,
        predicate: impl Fn(&PresenceEvent) -> bool,
    ) -> PresenceEvent {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(FeedItem::Event(event))) => {
                    self.seen.push((*event).clone());
                    if predicate(&event) {
                        return (*event).clone();
                    }
                }
                Ok(Some(FeedItem::Gap { missed })) => {
                    panic!("{missed} events lost while waiting for {what}")
                }
                Ok(None) => panic!(
                    "event stream ended while waiting for {what}; saw {:#?}",
                    self.seen
                ),
                Err(_) => panic!("no {what} within {PATIENCE:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Waits for the event of `kind` (by discriminant) about `name`.
    pub async fn expect(&mut self, name: &str, kind: &str) -> PresenceEvent {
        let wanted = kind.to_owned();
        let name = name.to_owned();
        self.expect_event(&format!("{kind} of {name}"), move |event| {
            event.name == name && kind_label(&event.kind) == wanted
        })
        .await
    }

    /// Waits for the end of session `session_id` as taken over.
    pub async fn expect_taken_over(&mut self, session_id: u64) -> PresenceEvent {
        self.expect_event(
            &format!("session {session_id} ended as taken over"),
            |event| {
                event.session_id == session_id
                    && matches!(
                        event.kind,
                        PresenceKind::Dropped {
                            reason: DropReason::TakenOver,
                            ..
                        }
                    )
            },
        )
        .await
    }

    /// Every event the server has sent so far: expect_event's history and
    /// whatever arrived since. The loop sends an event when it happens, so
    /// after a round trip with the server every earlier event of that
    /// connection's loop is here (with two loops, not always the other's:
    /// a check that something did *not* happen elsewhere may then be early).
    pub fn seen(&mut self) -> &[PresenceEvent] {
        while let Some(item) = self.events.try_recv() {
            match item {
                FeedItem::Event(event) => self.seen.push((*event).clone()),
                FeedItem::Gap { missed } => panic!("{missed} events lost"),
            }
        }
        &self.seen
    }

    /// `GET path` on the admin API: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.admin);
        tokio::task::spawn_blocking(move || {
            let mut response = ureq::get(&url).call().expect("admin answers");
            let status = response.status().as_u16();
            (
                status,
                response.body_mut().read_to_string().expect("a text body"),
            )
        })
        .await
        .expect("join")
    }

    /// `GET /sessions` over real HTTP, sorted by name (the server streams
    /// them in slab order).
    pub async fn sessions(&self) -> Vec<SessionInfo> {
        let url = format!("http://{}/sessions", self.admin);
        let mut sessions = tokio::task::spawn_blocking(move || {
            ureq::get(&url)
                .call()
                .expect("admin answers")
                .body_mut()
                .read_json::<Vec<SessionInfo>>()
                .expect("a JSON list of sessions")
        })
        .await
        .expect("join");
        sessions.sort_by(|a, b| a.name.cmp(&b.name));
        sessions
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.control().shutdown();
        }
    }
}

pub fn kind_label(kind: &PresenceKind) -> &'static str {
    match kind {
        PresenceKind::Joined { .. } => "joined",
        PresenceKind::Suspected { .. } => "suspect",
        PresenceKind::StatusChanged => "status",
        PresenceKind::Recovered => "recovered",
        PresenceKind::Dropped { .. } => "dropped",
        PresenceKind::RoomJoined => "room_joined",
        PresenceKind::RoomLeft => "room_left",
    }
}

pub fn hello(name: &str, interval_ms: u32, acks_wanted: bool) -> Frame {
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: if acks_wanted { flags::ACKS_WANTED } else { 0 },
        requested_interval_ms: interval_ms,
        name: name.to_owned(),
        credential: Vec::new(),
        status: None,
    })
}

/// A protocol connection that sends exactly what the test says.
pub struct RawConn {
    pub stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        RawConn::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> RawConn {
        stream.set_nodelay(true).expect("nodelay");
        RawConn {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Connects and completes a HELLO; returns the WELCOME and when HELLO was sent.
    pub async fn join(
        addr: SocketAddr,
        name: &str,
        interval_ms: u32,
        acks_wanted: bool,
    ) -> (RawConn, Welcome, Instant) {
        let mut conn = RawConn::connect(addr).await;
        let sent_at = Instant::now();
        conn.send(&hello(name, interval_ms, acks_wanted)).await;
        match conn.next_frame().await {
            Some(Frame::Welcome(welcome)) => (conn, welcome, sent_at),
            other => panic!("expected WELCOME for {name}, got {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        let bytes = codec::encode_to_vec(frame).expect("encodable");
        self.send_bytes(&bytes).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame, or `None` when the server closed the connection.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(PATIENCE, self.read_frame())
            .await
            .expect("the server answered in time")
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some((frame, used)) =
                codec::decode(&self.buffer, 1 << 20).expect("server sends valid frames")
            {
                self.buffer.drain(..used);
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Sends PING `seq` and returns every frame received before its PONG:
    /// all the server's answers to the frames sent before it.
    pub async fn frames_until_pong(&mut self, seq: u32) -> Vec<Frame> {
        self.send(&Frame::Ping { seq, rtt_us: 0 }).await;
        let mut before = Vec::new();
        loop {
            match self.next_frame().await {
                Some(Frame::Pong { seq: answered }) if answered == seq => return before,
                Some(frame) => before.push(frame),
                None => panic!("closed while waiting for PONG {seq}"),
            }
        }
    }

    /// Asserts that the next frame is BYE with `code`.
    pub async fn expect_bye(&mut self, code: ReasonCode) {
        match self.next_frame().await {
            Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, code),
            other => panic!("expected BYE {code}, got {other:?}"),
        }
    }

    /// Asserts that the server closes the connection next, without sending more.
    pub async fn expect_closed(&mut self) {
        if let Some(frame) = self.next_frame().await {
            panic!("expected the server to close, got {frame:?}");
        }
    }
}
