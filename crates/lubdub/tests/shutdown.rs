//! Graceful shutdown of the real binary: SIGTERM closes the port, every
//! session gets BYE `shutdown` with a spread reconnect hint, a handshaking
//! connection gets REJECT `shutdown`, the process exits 0 within its
//! shutdown timeout even when a peer never closes, and the clients come
//! back, spread out, once a server listens on the port again.

mod common;

use std::time::{Duration, Instant};

use common::process::{start_server, Proc, PATIENCE};
use common::RawConn;
use lubdub::client::{Client, ClientConfig, ClientEvent, Status};
use lubdub::core::protocol::{Frame, ReasonCode};

const CLIENTS: usize = 20;

async fn next_status(client: &mut Client, what: &str, wanted: fn(&Status) -> bool) -> Status {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(ClientEvent::Status(status))) if wanted(&status) => return status,
            Ok(Some(_)) => {}
            Ok(None) => panic!("client stopped while waiting for {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }
}

/// Blocks the calling thread (not the runtime) until the process exits.
async fn wait_for_exit(mut server: Proc) -> (std::process::ExitStatus, Instant) {
    tokio::task::spawn_blocking(move || {
        let status = server.wait();
        (status, Instant::now())
    })
    .await
    .expect("waiter thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_says_bye_with_spread_hints_exits_in_time_and_clients_come_back() {
    // Shorter than the 2 s a closing connection lingers for its peer: the
    // stubborn peer below is cut off by the timeout, not by the linger.
    let shutdown_timeout = Duration::from_secs(1);
    let (server, listen, _admin) =
        start_server(&["--interval", "200ms", "--shutdown-timeout", "1s"]);
    let addr: std::net::SocketAddr = listen.parse().expect("address");
    let mut clients = Vec::new();
    for n in 0..CLIENTS {
        let mut config = ClientConfig::new(listen.clone(), format!("c{n}"));
        config.interval = Some(Duration::from_millis(200));
        clients.push(Client::connect(config).await.expect("connects"));
    }
    // Peers that read their BYE but never close: the server must not wait
    // for them beyond the shutdown timeout.
    let mut stubborn = Vec::new();
    for n in 0..5 {
        stubborn.push(
            RawConn::join(addr, &format!("stubborn{n}"), 200, true)
                .await
                .0,
        );
    }
    // A connection still in its handshake.
    let mut handshaking = RawConn::connect(addr).await;

    server.signal("-TERM");
    let signalled = Instant::now();
    let exit = tokio::spawn(wait_for_exit(server));

    let mut hints = Vec::new();
    for conn in &mut stubborn {
        let Some(Frame::Bye(bye)) = conn.next_frame().await else {
            panic!("expected BYE shutdown");
        };
        assert_eq!(bye.reason.code, ReasonCode::Shutdown);
        assert!(
            bye.reason.text.contains("reconnect after"),
            "the hint is in the text too: {}",
            bye.reason.text
        );
        assert!(
            (1_000..=11_000).contains(&bye.retry_after_ms),
            "hint between 1 s and 1 s + the spread: {}",
            bye.retry_after_ms
        );
        hints.push(bye.retry_after_ms);
    }
    hints.sort_unstable();
    hints.dedup();
    assert!(
        hints.len() > 1,
        "the server spreads its hints (five equal hints would bring the sessions back at once): {hints:?}"
    );
    match handshaking.next_frame().await {
        Some(Frame::Reject(reason)) => assert_eq!(reason.code, ReasonCode::Shutdown),
        other => panic!("expected REJECT shutdown, got {other:?}"),
    }
    // The BYE was sent after the port closed: no new connection gets in.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the port is closed during the drain");

    let mut delays = Vec::new();
    for client in &mut clients {
        let Status::ServerLost { reason } = next_status(client, "server lost", |status| {
            matches!(status, Status::ServerLost { .. })
        })
        .await
        else {
            unreachable!("matched above");
        };
        assert!(reason.contains("server shutting down"), "{reason}");
        let Status::Reconnecting { delay, .. } = next_status(client, "reconnecting", |status| {
            matches!(status, Status::Reconnecting { .. })
        })
        .await
        else {
            unreachable!("matched above");
        };
        assert!(
            delay >= Duration::from_secs(1),
            "honours the hint: {delay:?}"
        );
        delays.push(delay);
    }
    delays.sort();
    delays.dedup();
    assert!(
        delays.len() > CLIENTS / 2,
        "the reconnects are spread, not synchronised: {delays:?}"
    );

    let (status, exited) = exit.await.expect("waiter");
    assert!(status.success(), "a graceful shutdown exits 0: {status:?}");
    let took = exited - signalled;
    assert!(
        took <= shutdown_timeout + Duration::from_secs(1),
        "exit within the shutdown timeout (plus 1 s for process start-up noise): {took:?}"
    );

    // A server on the same port again: every client comes back by itself.
    let mut restarted = Proc::spawn(common::process::lubdub().args([
        "server",
        "--listen",
        &listen,
        "--admin",
        "127.0.0.1:0",
        "--interval",
        "200ms",
    ]));
    restarted.expect_stderr("lubdub server ready");
    for client in &mut clients {
        next_status(client, "connected again", |status| {
            matches!(status, Status::Connected { .. })
        })
        .await;
    }
    drop(stubborn);
}
