//! Half-open connections: a server whose host vanishes without a FIN or a
//! RST. A one-way client never hears from the server, so silence proves
//! nothing to it; TCP_USER_TIMEOUT (set from the granted deadline) makes the
//! kernel abort the connection once its PINGs stay unacknowledged.
//!
//! The server runs in a network namespace joined to this one by a veth
//! pair; taking the server's end of the link down makes it vanish the way
//! a crashed host or a cut cable does. Needs root (`ip netns`).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{field, Proc, PATIENCE};
use lubdub::client::{Client, ClientConfig, ClientEvent, Status};

/// A namespace with a veth link to this one; removed on drop.
struct Namespace {
    name: String,
    host_link: String,
}

fn ip(args: &[&str]) {
    let output = Command::new("ip").args(args).output().expect("`ip` runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Namespace {
    /// `10.<a>.<b>.1` here, `.2` inside; both derived from the process id so
    /// that concurrent runs do not collide.
    fn create() -> (Namespace, String) {
        let id = std::process::id();
        let name = format!("lubdub-ho-{id}");
        let host_link = format!("lbh{}", id % 100_000);
        let inner_link = format!("lbi{}", id % 100_000);
        let subnet = format!("10.{}.{}", 100 + (id >> 8) % 100, id % 256);
        ip(&["netns", "add", &name]);
        let namespace = Namespace {
            name: name.clone(),
            host_link: host_link.clone(),
        };
        ip(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
        ]);
        ip(&["link", "set", &inner_link, "netns", &name]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            &inner_link,
        ]);
        ip(&["-n", &name, "link", "set", &inner_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        (namespace, format!("{subnet}.2"))
    }

    fn cut(&self) {
        let inner_link = self.host_link.replacen("lbh", "lbi", 1);
        ip(&["-n", &self.name, "link", "set", &inner_link, "down"]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[tokio::test]
async fn a_one_way_client_notices_a_vanished_server_through_tcp_user_timeout() {
    let (namespace, server_ip) = Namespace::create();
    let mut server = Proc::spawn(
        Command::new("ip")
            .args(["netns", "exec", &namespace.name])
            .arg(env!("CARGO_BIN_EXE_lubdub"))
            .args(["server", "--listen", &format!("{server_ip}:0")])
            .args(["--admin", "127.0.0.1:0", "--interval", "200ms"]),
    );
    let ready = server.expect_stderr("lubdub server ready");
    let listen = field(&ready, "listen").to_owned();

    let mut config = ClientConfig::new(listen, "oneway");
    config.one_way = true;
    let mut client = Client::connect(config).await.expect("connects");
    server.expect_stderr("joined name=oneway");

    namespace.cut();
    let cut_at = Instant::now();
    // Deadline 5 × 200 ms = 1 s: the kernel gives up at the first
    // retransmission after that (retransmissions back off from 200 ms).
    let lost = loop {
        match tokio::time::timeout(PATIENCE, client.next_event()).await {
            Ok(Some(ClientEvent::Status(Status::ServerLost { reason }))) => break reason,
            Ok(Some(_)) => continue,
            other => panic!("the vanished server was not noticed: {other:?}"),
        }
    };
    let after = cut_at.elapsed();
    assert!(lost.contains("timed out"), "{lost}");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "noticed {after:?} after the cut; TCP_USER_TIMEOUT is 1 s"
    );
    client.close().await;
}
