//! Webhooks against a real HTTP server (Python's http.server, as a
//! receiver of webhooks would be written), which checks each signature the
//! way the README tells receivers to: signed changes in order, delivered
//! after the receiver was down and came back, and a `resync` marker when
//! it was down longer than the server keeps changes.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;

use common::process::{start_server, Proc};
use common::{RawConn, Scratch};
use lubdub::core::protocol::{Bye, Frame, Reason, ReasonCode};
use serde_json::Value;
use tokio::runtime::Runtime;

const SECRET: &str = "5e3c7a9b1d2f4e6a8c0b2d4f6a8c0e1f";

/// A webhook receiver: answers 200 to a correctly signed POST (401
/// otherwise) and prints `{"verified": …, "body": …}` per request.
const RECEIVER: &str = r#"
import sys, json, hmac, hashlib, http.server
port, secret = int(sys.argv[1]), sys.argv[2].encode()
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        fields = dict(part.split("=", 1) for part in self.headers.get("Lubdub-Signature", "").split(","))
        expected = hmac.new(secret, fields.get("t", "").encode() + b"." + body, hashlib.sha256).hexdigest()
        verified = hmac.compare_digest(expected, fields.get("v1", ""))
        self.send_response(200 if verified else 401)
        self.end_headers()
        print(json.dumps({"verified": verified, "body": json.loads(body)}), flush=True)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
"#;

/// A port nobody listens on now (the receiver starts there later).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binds");
    listener.local_addr().expect("an address").port()
}

struct Receiver {
    python: Proc,
}

impl Receiver {
    fn start(port: u16) -> Receiver {
        Receiver {
            python: Proc::spawn(Command::new("python3").args([
                "-c",
                RECEIVER,
                &port.to_string(),
                SECRET,
            ])),
        }
    }

    /// The changes of the next POST, whose signature must have verified.
    fn next_batch(&mut self) -> Vec<Value> {
        let line = self.python.expect_stdout("\"verified\"");
        let request: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(
            request["verified"], true,
            "a signature did not verify: {line}"
        );
        request["body"]["events"]
            .as_array()
            .expect("an events array")
            .clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.python.child.kill();
    }
}

fn server(port: u16, extra: &[&str]) -> (Proc, SocketAddr, String, Scratch) {
    let scratch = Scratch::new(&format!("webhooks_{port}"));
    let secret_file = scratch.path("webhook.secret");
    std::fs::write(&secret_file, SECRET).expect("written");
    let url = format!("http://127.0.0.1:{port}/hook");
    let mut args = vec![
        "--webhook",
        &url,
        "--webhook-secret-file",
        secret_file.to_str().expect("UTF-8"),
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

/// `count` sessions join and quit in turn: two changes each.
fn join_and_quit(addr: SocketAddr, names: impl Iterator<Item = String>) {
    runtime().block_on(async {
        for name in names {
            let (mut conn, _, _) = RawConn::join(addr, &name, 60_000, true).await;
            conn.send(&Frame::Bye(Bye {
                reason: Reason::new(ReasonCode::Normal, "done"),
                retry_after_ms: 0,
            }))
            .await;
            conn.expect_closed().await;
        }
    });
}

fn kinds_and_names(changes: &[Value]) -> Vec<String> {
    changes
        .iter()
        .map(|change| {
            format!(
                "{} {}",
                change["kind"].as_str().unwrap_or("?"),
                change["name"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// Fails on the code before this change, which had no --webhook flag (the
/// server did not start).
#[test]
fn signed_changes_arrive_in_order_after_the_receiver_was_down() {
    let port = free_port();
    let (_server, addr, admin, _scratch) = server(port, &[]);
    // Nobody listens yet: these are retried until the receiver is up.
    join_and_quit(addr, ["alice", "bob"].into_iter().map(str::to_owned));
    let mut receiver = Receiver::start(port);
    let mut received = Vec::new();
    while received.len() < 4 {
        received.extend(receiver.next_batch());
    }
    assert_eq!(
        kinds_and_names(&received),
        ["online alice", "offline alice", "online bob", "offline bob"]
    );
    assert_eq!(received[1]["reason"], "quit");
    let seqs: Vec<u64> = received
        .iter()
        .map(|change| change["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "{seqs:?}");

    // Up now: the next change comes on its own.
    join_and_quit(addr, std::iter::once("carol".to_owned()));
    let mut later = Vec::new();
    while later.len() < 2 {
        later.extend(receiver.next_batch());
    }
    assert_eq!(kinds_and_names(&later), ["online carol", "offline carol"]);

    // Counted once the receiver's answer is read, which may follow its
    // output by a moment.
    let deadline = std::time::Instant::now() + common::process::PATIENCE;
    let metrics = loop {
        let output = Command::new("curl")
            .args(["-sS", &format!("http://{admin}/metrics")])
            .output()
            .expect("curl runs");
        let metrics = String::from_utf8_lossy(&output.stdout).into_owned();
        if metrics.contains("lubdub_webhook_events_delivered_total 6") {
            break metrics;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let failed = metrics
        .lines()
        .find(|line| line.starts_with("lubdub_webhook_posts_total{outcome=\"failed\"}"))
        .expect("failed POSTs counted");
    assert!(!failed.ends_with(" 0"), "{failed}");
}

#[test]
fn a_receiver_down_longer_than_the_history_is_told_to_resync() {
    let port = free_port();
    let (_server, addr, _admin, _scratch) = server(port, &["--event-history", "16"]);
    // 80 changes while nobody listens: the 16 latest are kept. The
    // delivery task may take its first batch at any point (its thread
    // stands back from the loops): with at most 16 taken, at least 64
    // follow while it retries, and the ring loses some whichever it is.
    join_and_quit(addr, (0..40).map(|index| format!("n{index:02}")));
    let mut receiver = Receiver::start(port);
    let mut received = Vec::new();
    while !kinds_and_names(&received).contains(&"offline n39".to_owned()) {
        received.extend(receiver.next_batch());
    }
    // One marker, or more when the task started within the burst and fell
    // behind again while it retried; the changes after the last are whole.
    let resync = received
        .iter()
        .rposition(|change| change["kind"] == "resync")
        .expect("a resync marker");
    assert!(received[resync]["missed"].as_u64().expect("missed") >= 1);
    // After the marker, the changes still held, in order, to the last.
    let after: Vec<u64> = received[resync + 1..]
        .iter()
        .map(|change| change["seq"].as_u64().expect("seq"))
        .collect();
    assert!(
        after.windows(2).all(|pair| pair[1] == pair[0] + 1),
        "{after:?}"
    );
    assert_eq!(after.last(), Some(&80));
}
