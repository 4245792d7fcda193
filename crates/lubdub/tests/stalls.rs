//! Stall immunity and hung peers, with real processes and signals: the
//! server stopped and resumed keeps its healthy sessions and still drops
//! the dead; a client stopped and resumed reads before it judges; a hung
//! server is declared dead by its clients at their deadline.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{client, field, start_server, Proc, PATIENCE};
use common::RawConn;
use lubdub::client::{Client, ClientConfig, ClientEvent, Status};
use lubdub::core::protocol::codec::{self, ping_bytes};
use lubdub::core::protocol::{Frame, DEFAULT_MAX_FRAME_LEN};
use tokio::runtime::Runtime;

const INTERVAL: Duration = Duration::from_millis(100);
const MAX_MISSED: u32 = 5;
const DEADLINE: Duration = Duration::from_millis(500);
/// Lateness allowed when the verdict travels through another process's log
/// pipe or a signal: the tests share two cores with other tests.
const TOLERANCE: Duration = Duration::from_millis(100);

fn fast_server() -> (Proc, String, String) {
    start_server(&[
        "--interval",
        "100ms",
        "--max-missed",
        &MAX_MISSED.to_string(),
    ])
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// PINGs every 80 ms and reads everything, never judging the server;
/// returns when the server ends the connection.
async fn heartbeat_until_closed(conn: &mut RawConn) {
    let mut ticker = tokio::time::interval(INTERVAL * 4 / 5);
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                seq += 1;
                conn.send_bytes(&ping_bytes(seq, 0)).await;
            }
            frame = conn.next_frame() => if frame.is_none() { return },
        }
    }
}

/// Stand-ins for healthy devices: raw sessions that PING every 80 ms and
/// never judge the server, so that only the server's verdicts matter.
/// Returns how many of them saw their connection end.
fn healthy_sessions(runtime: &Runtime, server: SocketAddr, count: usize) -> Arc<AtomicUsize> {
    let ended = Arc::new(AtomicUsize::new(0));
    let joined = Arc::new(AtomicUsize::new(0));
    for i in 0..count {
        let ended = ended.clone();
        let joined = joined.clone();
        runtime.spawn(async move {
            let (mut conn, _, _) = RawConn::join(server, &format!("h{i}"), 100, true).await;
            joined.fetch_add(1, Ordering::SeqCst);
            heartbeat_until_closed(&mut conn).await;
            ended.fetch_add(1, Ordering::SeqCst);
        });
    }
    let deadline = Instant::now() + PATIENCE;
    while joined.load(Ordering::SeqCst) < count {
        assert!(
            Instant::now() < deadline,
            "healthy sessions did not all join"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    ended
}

/// A blocking raw session driven step by step by the test.
struct Paced {
    stream: std::net::TcpStream,
    buffer: Vec<u8>,
}

impl Paced {
    fn join(server: SocketAddr, name: &str) -> Paced {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(server).expect("connects");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        let hello = codec::encode_to_vec(&common::hello(name, 100, true)).expect("encodes");
        stream.write_all(&hello).expect("HELLO sent");
        let mut paced = Paced {
            stream,
            buffer: Vec::new(),
        };
        assert!(matches!(paced.next_frame(), Frame::Welcome(_)));
        paced
    }

    /// Sends PING `seq` and waits for its PONG: the server has read it.
    fn ping(&mut self, seq: u32) {
        use std::io::Write;
        self.stream
            .write_all(&ping_bytes(seq, 0))
            .expect("PING sent");
        assert_eq!(self.next_frame(), Frame::Pong { seq });
    }

    fn next_frame(&mut self) -> Frame {
        use std::io::Read;
        loop {
            if let Some((frame, used)) =
                codec::decode(&self.buffer, DEFAULT_MAX_FRAME_LEN).expect("valid frames")
            {
                self.buffer.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 512];
            let n = self.stream.read(&mut chunk).expect("reads");
            assert!(n > 0, "closed by the server");
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Waits for a line containing `needle` and returns it with when it arrived.
fn expect_timed(process: &mut Proc, needle: &str) -> (String, Instant) {
    let line = process.expect_stderr(needle);
    (line, Instant::now())
}

#[test]
fn a_stopped_server_keeps_its_healthy_sessions_and_still_drops_the_dead() {
    let (mut server, listen, admin) = fast_server();
    let addr: SocketAddr = listen.parse().expect("an address");
    let runtime = runtime();
    let ended = healthy_sessions(&runtime, addr, 200);
    let hung = client(&listen, "hung", &[]);
    let mut killed = client(&listen, "killed", &[]);
    server.expect_stderr("joined name=killed");
    // A session whose silence spans the stop without anything queued: its
    // last PING was answered just before the stop and its next comes 300 ms
    // after the resume. Counting the stop as its silence (1.3 s > 500 ms)
    // would drop it at the resume; counting listening time (about 300 ms)
    // keeps it.
    let mut paced = Paced::join(addr, "paced");
    let before = common::process::sessions(&admin, true);
    let before: Vec<serde_json::Value> = serde_json::from_str(&before).expect("JSON");
    assert_eq!(before.len(), 203);

    // The server is stopped for twice the deadline. Meanwhile one client
    // hangs (its kernel still holds the socket: only silence tells) and one
    // is killed (its kernel closes the socket).
    paced.ping(1);
    server.signal("-STOP");
    std::thread::sleep(DEADLINE / 2);
    hung.signal("-STOP");
    killed.signal("-KILL");
    killed.wait();
    std::thread::sleep(DEADLINE * 2 - DEADLINE / 2);
    server.signal("-CONT");
    let resumed = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    paced.ping(2);

    // From here on `paced` heartbeats from its own thread, so that how long
    // the test waits for log lines cannot stretch its silence.
    let pacing = Arc::new(AtomicBool::new(true));
    let pacer = {
        let pacing = pacing.clone();
        std::thread::spawn(move || {
            let mut seq = 2;
            while pacing.load(Ordering::SeqCst) {
                std::thread::sleep(INTERVAL);
                seq += 1;
                paced.ping(seq);
            }
            (paced, seq)
        })
    };

    let (stall, _) = expect_timed(&mut server, "could not run for");
    assert!(
        field(&stall, "stalled_ms").parse::<u64>().expect("ms") >= 900,
        "{stall}"
    );
    let mut drops = Vec::new();
    for _ in 0..2 {
        let (line, at) = expect_timed(&mut server, "dropped name=");
        drops.push((line, at));
    }
    let find = |name: &str| {
        drops
            .iter()
            .find(|(line, _)| line.contains(&format!("name={name} ")))
            .unwrap_or_else(|| panic!("{name} was not dropped; drops: {drops:?}"))
            .clone()
    };
    let (killed_line, killed_at) = find("killed");
    assert!(
        killed_line.contains("reason=closed_by_peer"),
        "{killed_line}"
    );
    assert!(
        killed_at - resumed < DEADLINE,
        "killed dropped {:?} after the resume",
        killed_at - resumed
    );
    let (hung_line, hung_at) = find("hung");
    assert!(hung_line.contains("reason=timeout"), "{hung_line}");
    let silent_ms: u64 = field(&hung_line, "silent_ms").parse().expect("ms");
    // Only listening time counts: the silence before the stop plus the time since the resume.
    assert!(
        (500..500 + TOLERANCE.as_millis() as u64).contains(&silent_ms),
        "hung dropped after {silent_ms} ms of listening-time silence"
    );
    assert!(
        hung_at - resumed <= DEADLINE + TOLERANCE,
        "hung dropped {:?} after the resume; must be within one deadline",
        hung_at - resumed
    );

    // By now (one deadline after the resume) any wrong verdict on the
    // healthy sessions would have been given; one more deadline passes to
    // be sure that none was. (`paced` keeps heartbeating meanwhile.)
    std::thread::sleep(DEADLINE);
    pacing.store(false, Ordering::SeqCst);
    let (mut paced, last_seq) = pacer.join().expect("paced kept its heartbeat");
    let wrongly_dropped: Vec<&String> = server
        .transcript
        .iter()
        .filter(|line| {
            (line.contains("dropped name=h") && !line.contains("name=hung"))
                || line.contains("dropped name=paced")
        })
        .collect();
    assert!(wrongly_dropped.is_empty(), "{wrongly_dropped:?}");
    assert_eq!(
        ended.load(Ordering::SeqCst),
        0,
        "a healthy connection was closed"
    );
    let after = common::process::sessions(&admin, true);
    let after: Vec<serde_json::Value> = serde_json::from_str(&after).expect("JSON");
    let ids = |listing: &[serde_json::Value]| {
        let mut ids: Vec<(String, u64)> = listing
            .iter()
            .filter(|s| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| (n.starts_with('h') && n != "hung") || n == "paced")
            })
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or_default().to_owned(),
                    s["session_id"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&after).len(), 201);
    assert_eq!(
        ids(&after),
        ids(&before),
        "the same 201 sessions, none re-joined"
    );
    paced.ping(last_seq + 1);
    hung.signal("-CONT");
}

/// What one heartbeating session saw: the highest PING answered and the
/// NOTICEs it was sent.
#[derive(Default)]
struct Heard {
    sent: AtomicU32,
    answered: AtomicU32,
    notices: std::sync::Mutex<Vec<String>>,
}

/// PINGs every 80 ms (the client's schedule at a 100 ms interval) through
/// anything, recording what comes back.
async fn heartbeat_and_listen(mut conn: RawConn, heard: Arc<Heard>) {
    let mut ticker = tokio::time::interval(INTERVAL * 4 / 5);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let seq = heard.sent.fetch_add(1, Ordering::SeqCst) + 1;
                conn.send_bytes(&ping_bytes(seq, 0)).await;
            }
            frame = conn.next_frame() => match frame {
                Some(Frame::Pong { seq }) => {
                    heard.answered.fetch_max(seq, Ordering::SeqCst);
                }
                Some(Frame::Notice(reason)) => {
                    heard.notices.lock().expect("not poisoned").push(reason.text);
                }
                Some(_) => {}
                None => return,
            },
        }
    }
}

/// The PINGs a client sends while the server cannot run are read together
/// at the resume: three seconds' worth here (37), where the rate rule
/// allows one deadline's (21) at once. They are no flood: nobody is warned.
#[test]
fn a_stalled_server_warns_no_one_about_the_pings_it_could_not_read() {
    let (mut server, listen, _) = fast_server();
    let addr: SocketAddr = listen.parse().expect("an address");
    let runtime = runtime();
    let sessions: Vec<Arc<Heard>> = (0..3)
        .map(|i| {
            let heard = Arc::new(Heard::default());
            let (conn, _, _) = runtime.block_on(RawConn::join(addr, &format!("s{i}"), 100, true));
            runtime.spawn(heartbeat_and_listen(conn, heard.clone()));
            heard
        })
        .collect();

    server.signal("-STOP");
    std::thread::sleep(Duration::from_secs(3));
    server.signal("-CONT");
    server.expect_stderr("could not run for");
    // A second of the schedule after the resume, every PING answered.
    for heard in &sessions {
        let due = heard.sent.load(Ordering::SeqCst) + 12;
        let deadline = Instant::now() + PATIENCE;
        while heard.answered.load(Ordering::SeqCst) < due {
            assert!(
                Instant::now() < deadline,
                "PINGs after the resume not answered; notices: {:?}",
                heard.notices.lock().expect("not poisoned")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    for heard in &sessions {
        let notices = heard.notices.lock().expect("not poisoned");
        assert!(
            notices.is_empty(),
            "a healthy session was warned: {notices:?}"
        );
    }
    let warned: Vec<String> = server
        .lines_so_far()
        .into_iter()
        .filter(|line| line.contains("PINGs too frequent"))
        .collect();
    assert!(warned.is_empty(), "the server logged: {warned:?}");
}

#[test]
fn a_client_declares_a_stopped_server_dead_at_its_deadline() {
    let (server, listen, _) = fast_server();
    let runtime = runtime();
    runtime.block_on(async {
        let mut client = Client::connect(ClientConfig::new(listen.clone(), "watcher"))
            .await
            .expect("connects");
        let (stopped_at, lost_at) = {
            server.signal("-STOP");
            let stopped_at = Instant::now();
            loop {
                match tokio::time::timeout(PATIENCE, client.next_event()).await {
                    Ok(Some(ClientEvent::Status(Status::ServerLost { reason }))) => {
                        assert!(reason.contains("no answer"), "{reason}");
                        break (stopped_at, Instant::now());
                    }
                    Ok(Some(_)) => continue,
                    other => panic!("expected the server to be declared lost, got {other:?}"),
                }
            }
        };
        // Its last PONG came at most one ping period (80 ms) plus a round
        // trip before the stop, so the verdict is due between 420 and 500 ms
        // after it.
        let after = lost_at - stopped_at;
        assert!(
            after >= DEADLINE - INTERVAL && after <= DEADLINE + TOLERANCE,
            "declared dead {after:?} after the server stopped"
        );
        server.signal("-CONT");
        loop {
            match tokio::time::timeout(PATIENCE, client.next_event()).await {
                Ok(Some(ClientEvent::Status(Status::Connected { .. }))) => break,
                Ok(Some(_)) => continue,
                other => panic!("expected a reconnect once the server resumed, got {other:?}"),
            }
        }
        client.close().await;
    });
}

/// A loaded server still judges: one client flooding it with messages must
/// neither keep the loop reading its socket for ever (a fast enough sender
/// did, until reads were capped per turn; this test fails without the cap)
/// nor make the listening clock count the loop's busy work as a stall (that
/// half is pinned down by `stall.rs`'s unit tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_still_drops_a_silent_session_at_its_deadline() {
    use lubdub::core::protocol::Message;
    use lubdub::server::{DropReason, PresenceKind};
    let mut server = common::TestServer::start(common::fast_config()).await;
    // Receivers that read everything, so that the flood costs the server
    // its sends rather than ending as slow consumers.
    for i in 0..50 {
        let (mut conn, _, _) = RawConn::join(server.addr, &format!("r{i}"), 100, false).await;
        tokio::spawn(async move { heartbeat_until_closed(&mut conn).await });
    }
    let (mut flooder, _, _) = RawConn::join(server.addr, "flooder", 100, false).await;
    // Direct messages, round robin over the receivers: the silent session
    // receives nothing, so only its silence can end it.
    let batch: Vec<u8> = (0..50)
        .flat_map(|i| {
            codec::encode_to_vec(&Frame::Msg(Message {
                from: String::new(),
                to: format!("r{i}"),
                body: vec![b'x'; 1000],
            }))
            .expect("encodes")
        })
        .collect();
    let flood = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while flooder.stream.write_all(&batch).await.is_ok() {}
    });
    let (_hung, _, joined) = RawConn::join(server.addr, "hung", 100, true).await;
    let dropped = server.expect("hung", "dropped").await;
    flood.abort();
    let PresenceKind::Dropped { reason, silent_for } = dropped.kind else {
        panic!("{dropped:?}");
    };
    assert_eq!(reason, DropReason::Timeout);
    let after = dropped.at - joined;
    // Generous: the flood loads both cores. Counting the busy loop's work as
    // a stall kept the session alive indefinitely.
    assert!(
        silent_for >= DEADLINE && after < DEADLINE * 4,
        "dropped {after:?} after joining, silent for {silent_for:?}"
    );
}
