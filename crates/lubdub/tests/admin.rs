//! The admin port against its own clients: `?name=` and pagination return
//! exactly the right sessions, and half-sent requests neither pile up on
//! the admin port nor take the descriptors the protocol port needs.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::process::{start_server_under, PATIENCE};
use common::{fast_config, RawConn, TestServer};
use lubdub::server::SessionInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One page of `/sessions?limit=N&after=CURSOR` (declared here, not taken
/// from `lubdub::server::SessionPage`, so that this test also builds, and
/// fails, against the code before pagination).
#[derive(Debug, serde::Deserialize)]
struct SessionPage {
    sessions: Vec<SessionInfo>,
    next: Option<u64>,
}

fn names(sessions: &[SessionInfo]) -> BTreeSet<String> {
    sessions
        .iter()
        .map(|session| session.name.clone())
        .collect()
}

/// `?name=` finds exactly the session holding the name (or none), and
/// paging with `?limit=N&after=CURSOR` visits every session exactly once,
/// over slots left vacant by sessions that ended. Fails on the code before
/// this change, which ignored the query and answered every session to
/// `?name=s07` (seen: 25 sessions instead of 1).
#[tokio::test]
async fn name_lookup_and_pages_return_exactly_the_right_sessions() {
    let mut server = TestServer::start(fast_config()).await;
    let mut conns = Vec::new();
    let mut ids = Vec::new();
    for i in 0..30 {
        let (conn, welcome, _) = RawConn::join(server.addr, &format!("s{i:02}"), 1000, true).await;
        conns.push(Some(conn));
        ids.push(welcome.session_id);
    }
    // Five sessions end, leaving holes among the slots.
    for i in [0, 3, 10, 11, 29] {
        drop(conns[i].take());
        server.expect(&format!("s{i:02}"), "dropped").await;
    }
    let expected: BTreeSet<String> = (0..30)
        .filter(|i| conns[*i].is_some())
        .map(|i| format!("s{i:02}"))
        .collect();

    let (status, body) = server.get("/sessions?name=s07").await;
    assert_eq!(status, 200, "{body}");
    let found: Vec<SessionInfo> = serde_json::from_str(&body).expect("a JSON array");
    assert_eq!(found.len(), 1, "sessions answered to ?name=s07");
    assert_eq!(found[0].name, "s07");
    assert_eq!(found[0].session_id, ids[7]);
    for absent in ["s03", "nobody", "s7"] {
        let (status, body) = server.get(&format!("/sessions?name={absent}")).await;
        assert_eq!((status, body.as_str()), (200, "[]"), "?name={absent}");
    }

    for limit in [1, 7, 25, 1000] {
        let mut seen = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let query = match after {
                Some(cursor) => format!("/sessions?limit={limit}&after={cursor}"),
                None => format!("/sessions?limit={limit}"),
            };
            let (status, body) = server.get(&query).await;
            assert_eq!(status, 200, "{query}: {body}");
            let page: SessionPage = serde_json::from_str(&body).expect("a page");
            assert!(page.sessions.len() <= limit, "{query}: {body}");
            seen.extend(page.sessions);
            pages += 1;
            assert!(pages <= 100, "paging does not end");
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(
            seen.len(),
            expected.len(),
            "limit {limit}: a session twice?"
        );
        assert_eq!(names(&seen), expected, "limit {limit}");
    }
    // The streamed whole list holds the same sessions.
    assert_eq!(names(&server.sessions().await), expected);

    for (query, complaint) in [
        ("limit=0", "limit must be 1 to 1000"),
        ("limit=abc", "is not a whole number"),
        ("name=s07&limit=2", "cannot be combined"),
        ("sort=name", "unknown parameter"),
    ] {
        let url = format!("http://{}/sessions?{query}", server.admin);
        let answer = tokio::task::spawn_blocking(move || {
            let mut response = ureq::get(&url)
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .expect("admin answers");
            (
                response.status().as_u16(),
                response.body_mut().read_to_string().expect("text"),
            )
        })
        .await
        .expect("join");
        assert_eq!(answer.0, 400, "{query}");
        assert!(answer.1.contains(complaint), "{query}: {}", answer.1);
    }
    server.stop().await;
}

/// Open descriptors of process `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("/proc is readable")
        .count()
}

/// How one half-sent admin request ended, seen from the attacker.
#[derive(Debug, Clone, Copy)]
struct Ended {
    /// Time from the request's first bytes to the server's close.
    after: Duration,
    /// Time from the connection attempt to the server's close: the server
    /// may accept (and start its header timer) before the connecting task
    /// runs again.
    since_connect: Duration,
    /// The server answered 503 (refused beyond the cap).
    refused: bool,
}

/// Connects to the admin port, sends half a request and waits until the
/// server closes the connection (`None` if it never connected or the
/// server kept it past `PATIENCE`).
async fn half_sent_request(admin: String) -> Option<Ended> {
    let connecting = Instant::now();
    let mut stream = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(&admin))
        .await
        .ok()?
        .ok()?;
    let sent = Instant::now();
    stream
        .write_all(b"GET /sessions HTTP/1.1\r\nHost: lubdub\r\nX-Never-Ends: ")
        .await
        .ok()?;
    let mut answer = Vec::new();
    // EOF or a reset: either way the server let go.
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .ok()?;
    Some(Ended {
        after: sent.elapsed(),
        since_connect: connecting.elapsed(),
        refused: answer.starts_with(b"HTTP/1.1 503"),
    })
}

/// `GET /metrics` once the attack is over.
async fn metrics_text(admin: &str) -> String {
    let url = format!("http://{admin}/metrics");
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("admin answers")
            .body_mut()
            .read_to_string()
            .expect("text")
    })
    .await
    .expect("join")
}

/// `GET /healthz` on a fresh connection: the status line's code, if any.
async fn healthz(admin: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(admin).await.ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: lubdub\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// 1,200 half-sent admin requests against a server limited to 1,024 open
/// files: the admin port holds at most its cap (64) of them, closes those
/// at the header timeout (5 s) and answers the rest 503 at once, so the
/// server's descriptors stay within its own budget; meanwhile 100 new
/// protocol sessions are welcomed, and `/healthz` answers 200 again once
/// the held requests time out (seen: 15 descriptors before, 79 during;
/// 64 held, 1,136 answered 503; `/healthz` 200 after 5.07 s).
///
/// Fails on the code before this change (seen: the server reached its
/// 1,024 descriptors and session p0 was not welcomed; with 1,000 requests
/// and 1 s of attack, it held 526 descriptors for the admin port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_admin_requests_cannot_starve_the_protocol_port() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    const CAP: usize = 64;
    const ATTACKERS: usize = 1_200;
    let (mut server, listen, admin) = start_server_under(
        &["prlimit", "--nofile=1024:1024", "--"],
        &["--max-connections-per-ip", "0", "--accept-rate-per-ip", "0"],
    );
    let listen: std::net::SocketAddr = listen.parse().expect("an address");
    let pid = server.child.id();
    let files_before = open_files(pid);

    let attack_started = Instant::now();
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| tokio::spawn(half_sent_request(admin.clone())))
        .collect();
    // While the attack is held: the protocol port still welcomes sessions.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let files_during = open_files(pid);
    let mut sessions = Vec::new();
    for i in 0..100 {
        let joined = tokio::time::timeout(
            Duration::from_secs(2),
            RawConn::join(listen, &format!("p{i}"), 1000, true),
        )
        .await;
        let Ok((conn, _, _)) = joined else {
            panic!(
                "session p{i} was not welcomed during the attack \
                 (server files: {files_before} before, {files_during} during)"
            );
        };
        sessions.push(conn);
    }
    assert!(
        files_during <= files_before + CAP + 2,
        "the admin port held {} descriptors beyond the {files_before} before the attack",
        files_during - files_before
    );
    // `/healthz` answers 200 once the held requests time out, if not before.
    let healthy_at = loop {
        if healthz(&admin).await == Some(200) {
            break attack_started.elapsed();
        }
        assert!(
            attack_started.elapsed() < HEADER_TIMEOUT + Duration::from_secs(3),
            "/healthz did not answer 200 within the header timeout and 3 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let mut held = 0;
    let mut refused = 0;
    for attacker in attackers {
        let ended = attacker
            .await
            .expect("join")
            .expect("the server closes every half-sent request");
        assert!(
            ended.after < HEADER_TIMEOUT + Duration::from_secs(2),
            "a half-sent request stayed open {:?}",
            ended.after
        );
        if ended.refused {
            refused += 1;
        } else {
            // Served, and closed for its late headers, not before.
            held += 1;
            assert!(
                ended.since_connect >= HEADER_TIMEOUT,
                "a half-sent request closed after {:?}",
                ended.since_connect
            );
        }
    }
    assert!(
        held <= CAP,
        "{held} half-sent requests held open (cap {CAP})"
    );
    assert!(refused > 0, "none refused with 503");
    // Also counted: refusals of this test's own `/healthz` polls.
    let metrics = metrics_text(&admin).await;
    let limited = |limit: &str| -> usize {
        let prefix = format!("lubdub_admin_connections_limited_total{{reason=\"{limit}\"}} ");
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {prefix:?} in:\n{metrics}"))
    };
    assert!(limited("max_connections") >= refused);
    assert_eq!(limited("header_timeout"), held);
    eprintln!(
        "files: {files_before} before, {files_during} during; {held} held to the \
         header timeout, {refused} answered 503; /healthz 200 after {healthy_at:?}"
    );
    drop(sessions);
    server.signal("-TERM");
    server.wait();
}

/// A kept-alive admin connection that goes quiet after its response is
/// closed at the header timeout (5 s by default), so idle clients cannot
/// sit on the connection cap. Fails on the code before this change, which
/// kept it open (seen: still open after 10 s).
#[tokio::test]
async fn an_idle_kept_alive_admin_connection_is_closed_at_the_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    let (mut server, _, admin) = common::process::start_server(&[]);
    let mut stream = TcpStream::connect(&admin).await.expect("admin connects");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: lubdub\r\n\r\n")
        .await
        .expect("request sent");
    let mut answer = vec![0; 4096];
    let read = stream.read(&mut answer).await.expect("answer read");
    assert!(answer[..read].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    let rest = tokio::time::timeout(HEADER_TIMEOUT * 2, stream.read(&mut answer))
        .await
        .expect("closed within twice the header timeout");
    let idle = answered.elapsed();
    assert!(matches!(rest, Ok(0) | Err(_)), "{rest:?}");
    assert!(
        idle >= HEADER_TIMEOUT - Duration::from_millis(100),
        "closed after {idle:?} of idleness"
    );
    server.signal("-TERM");
    server.wait();
}
