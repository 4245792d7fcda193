//! The admin API's event stream (`GET /events`), read with curl as a
//! back-end would: each change of a name in order with its number as
//! `id`, the right reason for each way of ending, one continuous online
//! state under takeover, filters, resumption after `Last-Event-ID`, the
//! `resync` change when the history no longer holds what was asked for,
//! and the listing's `Lubdub-Seq`.

mod common;

use std::net::SocketAddr;
use std::process::Command;

use common::process::{start_server, Proc};
use common::{RawConn, Scratch};
use lubdub::core::protocol::{Bye, Frame, Reason, ReasonCode};
use serde_json::Value;
use tokio::runtime::Runtime;

/// An interval (ms) that no session of these tests outlives: silent, they
/// are never suspect.
const CALM: u32 = 60_000;

const TOKEN: &str = "0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a";

struct Stream {
    curl: Proc,
}

impl Stream {
    /// `curl -N` on `/events{query}` with the token and `headers`.
    fn open(admin: &str, query: &str, headers: &[&str]) -> Stream {
        let mut command = Command::new("curl");
        command.args(["-sS", "-N", "-H", &format!("Authorization: Bearer {TOKEN}")]);
        for header in headers {
            command.args(["-H", header]);
        }
        command.arg(format!("http://{admin}/events{query}"));
        let mut curl = Proc::spawn(&mut command);
        // Changes after this line are the stream's.
        curl.expect_stdout(": lubdub presence events");
        Stream { curl }
    }

    /// The next change: its `id` (none for `resync`) and its data.
    fn next(&mut self) -> (Option<u64>, Value) {
        let data = self.curl.expect_stdout("data: ");
        let json = serde_json::from_str(data.trim_start_matches("data: ")).expect("JSON data");
        let id = self
            .curl
            .transcript
            .iter()
            .rev()
            .nth(1)
            .and_then(|line| line.strip_prefix("id: "))
            .map(|id| id.parse().expect("a numeric id"));
        (id, json)
    }

    /// The next change, which must be `kind` of `name`; returns its id.
    fn expect(&mut self, kind: &str, name: &str) -> (u64, Value) {
        let (id, change) = self.next();
        assert_eq!(
            (change["kind"].as_str(), change["name"].as_str()),
            (Some(kind), Some(name)),
            "{change}"
        );
        let id = id.expect("an id");
        assert_eq!(change["seq"].as_u64(), Some(id), "{change}");
        (id, change)
    }
}

fn server(extra: &[&str]) -> (Proc, SocketAddr, String, Scratch) {
    let scratch = Scratch::new(&format!("events_{}", extra.len()));
    let token_file = scratch.path("admin.token");
    std::fs::write(&token_file, TOKEN).expect("written");
    let mut args = vec![
        "--interval",
        "100ms",
        "--max-missed",
        "3",
        "--admin-token-file",
        token_file.to_str().expect("UTF-8"),
    ];
    args.extend_from_slice(extra);
    let (server, listen, admin) = start_server(&args);
    (server, listen.parse().expect("an address"), admin, scratch)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn bye() -> Frame {
    Frame::Bye(Bye {
        reason: Reason::new(ReasonCode::Normal, "leaving"),
        retry_after_ms: 0,
    })
}

/// Fails on the code before this change, which had no `/events` route
/// (curl printed no data line: 404 with an empty body).
#[test]
fn each_change_comes_in_order_with_its_reason_and_a_takeover_never_goes_offline() {
    let (_server, addr, admin, _scratch) = server(&[]);
    let mut stream = Stream::open(&admin, "", &[]);
    let runtime = runtime();
    runtime.block_on(async {
        // Joins and quits.
        let (mut carol, _, _) = RawConn::join(addr, "carol", CALM, true).await;
        let (online, change) = stream.expect("online", "carol");
        assert_eq!(
            change["interval_ms"].as_u64(),
            Some(u64::from(CALM)),
            "{change}"
        );
        carol.send(&bye()).await;
        let (offline, change) = stream.expect("offline", "carol");
        assert_eq!(change["reason"].as_str(), Some("quit"), "{change}");
        assert!(offline > online);

        // Connection lost without a BYE.
        let (erin, _, _) = RawConn::join(addr, "erin", CALM, true).await;
        stream.expect("online", "erin");
        drop(erin);
        let (_, change) = stream.expect("offline", "erin");
        assert_eq!(change["reason"].as_str(), Some("closed_by_peer"));

        // Taken over: one continuous online state.
        let (_dave, welcome, _) = RawConn::join(addr, "dave", CALM, true).await;
        stream.expect("online", "dave");
        let (_dave_again, _, _) = RawConn::join(addr, "dave", CALM, true).await;
        let (_, change) = stream.expect("takeover", "dave");
        assert_eq!(change["replaced"].as_u64(), Some(welcome.session_id));

        // Silent: suspect once, then offline at the deadline.
        let (_bob, _, _) = RawConn::join(addr, "bob", 100, true).await;
        stream.expect("online", "bob");
        let mut seen = Vec::new();
        loop {
            let (_, change) = stream.next();
            if change["name"] == "bob" {
                seen.push(change["kind"].as_str().expect("a kind").to_owned());
                if change["kind"] == "offline" {
                    assert_eq!(change["reason"].as_str(), Some("timeout"), "{change}");
                    break;
                }
            } else {
                assert_ne!(
                    (change["name"].as_str(), change["reason"].as_str()),
                    (Some("dave"), Some("taken_over")),
                    "a takeover showed the name offline"
                );
            }
        }
        assert_eq!(seen, ["suspect", "offline"]);
    });
}

/// Also: a stream outlives the admin connection's time limit, and ends
/// when the server stops.
#[test]
fn filters_pass_only_the_names_and_kinds_asked_for() {
    let (server, addr, admin, _scratch) = server(&["--admin-connection-timeout", "300ms"]);
    let mut stream = Stream::open(&admin, "?names=bob,zed&kinds=offline", &[]);
    // Past the time limit of an ordinary admin connection.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let runtime = runtime();
    runtime.block_on(async {
        let (mut alice, _, _) = RawConn::join(addr, "alice", CALM, true).await;
        let (mut bob, _, _) = RawConn::join(addr, "bob", CALM, true).await;
        alice.send(&bye()).await;
        bob.send(&bye()).await;
        let (_, change) = stream.expect("offline", "bob");
        assert_eq!(change["reason"].as_str(), Some("quit"));
    });
    // Nothing else came before bob's offline: alice's and bob's online
    // and alice's offline were filtered out.
    let data: Vec<&String> = stream
        .curl
        .transcript
        .iter()
        .filter(|line| line.starts_with("data: "))
        .collect();
    assert_eq!(data.len(), 1, "{data:?}");

    let mut bad = Command::new("curl");
    let output = bad
        .args(["-sS", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://{admin}/events?kinds=gone"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("unknown kind \"gone\""), "{text}");

    server.signal("-TERM");
    assert!(stream.curl.wait().success(), "the stream ended cleanly");
}

#[test]
fn a_stream_resumes_after_its_last_id_or_is_told_to_resync() {
    let (_server, addr, admin, _scratch) = server(&["--event-history", "16"]);
    let runtime = runtime();
    let mut first = Stream::open(&admin, "", &[]);
    let last_seen = runtime.block_on(async {
        let (mut conn, _, _) = RawConn::join(addr, "n0", CALM, true).await;
        let (last_seen, _) = first.expect("online", "n0");
        conn.send(&bye()).await;
        last_seen
    });
    // Resumed after the online: the offline first, exactly.
    let mut resumed = Stream::open(&admin, "", &[&format!("Last-Event-ID: {last_seen}")]);
    let (id, change) = resumed.expect("offline", "n0");
    assert_eq!(id, last_seen + 1, "{change}");

    // Twenty more changes push the first ones out of a 16-event history.
    runtime.block_on(async {
        for index in 1..=10 {
            let (mut conn, _, _) = RawConn::join(addr, &format!("n{index}"), CALM, true).await;
            conn.send(&bye()).await;
            conn.expect_closed().await;
        }
    });
    let mut behind = Stream::open(&admin, &format!("?after={last_seen}"), &[]);
    let (id, change) = behind.next();
    assert_eq!(id, None, "{change}");
    assert_eq!(change["kind"].as_str(), Some("resync"), "{change}");
    let last_seq = change["last_seq"].as_u64().expect("last_seq");
    assert!(last_seq >= last_seen + 21, "{change}");
    // Then what the history still holds, in order.
    let (id, _) = behind.next();
    assert!(id.expect("an id") > last_seen + 1);

    // The listing names the last change it reflects.
    let output = Command::new("curl")
        .args(["-sS", "-i", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://{admin}/sessions"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_lowercase();
    assert!(text.contains(&format!("lubdub-seq: {last_seq}")), "{text}");
}

/// A status set at HELLO (`lubdub client --status`), changed with
/// `/status`, refused when invalid: shown in the changes, the listing and
/// `lubdub sessions`. Fails on the code before STATUS, whose client had
/// no --status flag.
#[test]
fn a_status_travels_with_the_join_its_changes_and_the_listing() {
    let (_server, addr, admin, scratch) = server(&[]);
    let mut stream = Stream::open(&admin, "?names=alice", &[]);
    let mut alice = common::process::client(&addr.to_string(), "alice", &["--status", "away"]);
    let (_, change) = stream.expect("online", "alice");
    assert_eq!(change["status"].as_str(), Some("away"), "{change}");
    alice.type_line("/status in match 42");
    let (_, change) = stream.expect("status", "alice");
    assert_eq!(change["status"].as_str(), Some("in match 42"), "{change}");

    let listed = Command::new("curl")
        .args(["-sS", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://{admin}/sessions?name=alice"))
        .output()
        .expect("curl runs");
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        listed[0]["status"].as_str(),
        Some("in match 42"),
        "{listed}"
    );
    let table = common::process::lubdub()
        .args(["sessions", "--admin", &admin, "--admin-token-file"])
        .arg(scratch.path("admin.token"))
        .output()
        .expect("runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.lines().next().expect("a header").ends_with("STATUS"),
        "{table}"
    );
    assert!(table.contains("in match 42"), "{table}");

    // Refused, with the reason; the session goes on and keeps its status.
    alice.type_line(&format!("/status {}", "x".repeat(129)));
    alice.expect_stderr("status not set: status is 129 bytes; at most 128 are allowed");
    alice.type_line("/shrug");
    alice.expect_stderr("unknown command /shrug");
    alice.type_line("/status");
    let (_, change) = stream.expect("status", "alice");
    assert_eq!(change["status"].as_str(), Some(""), "cleared: {change}");
}

fn get_json(admin: &str, path: &str) -> Value {
    let output = Command::new("curl")
        .args(["-sS", "-f", "-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("curl runs");
    assert!(output.status.success(), "GET {path}: {output:?}");
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// Fails on the code before rooms: `?rooms=` was an unknown parameter
/// (400), and there were no `join`/`leave` changes or `/rooms` routes.
#[test]
fn a_room_stream_and_listing_rebuild_the_room_exactly() {
    let (_server, addr, admin, _scratch) = server(&[]);
    let runtime = runtime();
    runtime.block_on(async {
        let (mut alice, _, _) = RawConn::join(addr, "alice", CALM, true).await;
        alice
            .send(&Frame::Join {
                room: "#lobby".into(),
            })
            .await;
        alice.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
        assert_eq!(alice.next_frame().await, Some(Frame::Pong { seq: 1 }));

        // The listing, then the changes after its seq.
        let listing = get_json(&admin, "/rooms/lobby");
        assert_eq!(listing["count"], 1, "{listing}");
        assert_eq!(listing["members"][0]["name"], "alice", "{listing}");
        let seq = listing["seq"].as_u64().expect("a seq");
        let rooms = get_json(&admin, "/rooms");
        assert_eq!(
            rooms["rooms"],
            serde_json::json!([{"room": "#lobby", "members": 1}])
        );
        let mut stream = Stream::open(&admin, &format!("?rooms=lobby&after={seq}"), &[]);

        // Not in the room: none of carol's changes pass.
        let (mut carol, _, _) = RawConn::join(addr, "carol", CALM, true).await;
        carol
            .send(&Frame::Status {
                text: "elsewhere".into(),
            })
            .await;
        let (mut bob, _, _) = RawConn::join(addr, "bob", CALM, true).await;
        bob.send(&Frame::Join {
            room: "#lobby".into(),
        })
        .await;
        bob.send(&Frame::Status {
            text: "away".into(),
        })
        .await;
        bob.send(&Frame::Leave {
            room: "#lobby".into(),
        })
        .await;
        bob.send(&Frame::Join {
            room: "#lobby".into(),
        })
        .await;
        drop(bob);

        let (_, change) = stream.expect("join", "bob");
        assert_eq!(
            (change["count"].as_u64(), &change["rooms"]),
            (Some(2), &serde_json::json!(["#lobby"]))
        );
        let (_, change) = stream.expect("status", "bob");
        assert_eq!(change["rooms"], serde_json::json!(["#lobby"]), "{change}");
        let (_, change) = stream.expect("leave", "bob");
        assert_eq!(change["count"].as_u64(), Some(1), "{change}");
        stream.expect("join", "bob");
        let (_, change) = stream.expect("offline", "bob");
        assert_eq!(
            (change["reason"].as_str(), &change["rooms"]),
            (Some("closed_by_peer"), &serde_json::json!(["#lobby"])),
            "{change}"
        );
        // Only now: with two loops, bob's close and alice's BYE are read
        // by different threads, in no set order.
        alice.send(&bye()).await;
        let (last, change) = stream.expect("offline", "alice");
        assert_eq!(change["reason"].as_str(), Some("quit"), "{change}");
        drop(carol);

        // Applied to the listing, the changes leave the room empty: as
        // the server says.
        let now = get_json(&admin, "/rooms/lobby");
        assert_eq!(now["count"], 0, "{now}");
        assert!(now["seq"].as_u64().expect("a seq") >= last, "{now}");
    });
}

/// The nice value of each of `pid`'s threads named `prefix…`.
fn nice_of_threads(pid: u32, prefix: &str) -> Vec<i64> {
    let mut nices = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc") {
        let task = task.expect("a task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).expect("stat");
        // After "(comm) ": state is field 3 of proc(5); nice is field 19.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .expect("a comm")
            .1
            .split(' ')
            .collect();
        nices.push(fields[16].parse().expect("a nice value"));
    }
    nices
}

/// The event streams and webhooks run on the admin threads; in a mass
/// verdict read by many streams, the loops must come first. Fails on the
/// code before this change, whose admin threads had the loops' priority.
#[test]
fn the_admin_threads_stand_back_from_the_event_loops() {
    let (server, _, _admin, _scratch) = server(&[]);
    let pid = server.child.id();
    let loops = nice_of_threads(pid, "lubdub-loop");
    let admin = nice_of_threads(pid, "lubdub-admin");
    assert!(
        !loops.is_empty() && !admin.is_empty(),
        "{loops:?} {admin:?}"
    );
    let base = loops[0];
    assert!(loops.iter().all(|nice| *nice == base), "{loops:?}");
    assert!(
        admin.iter().all(|nice| *nice == (base + 10).min(19)),
        "admin threads {admin:?}, loops {loops:?}"
    );
}
