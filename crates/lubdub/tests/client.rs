//! The client library against real servers: a hung server is declared dead
//! at the deadline, a restarted server is reconnected to, a takeover stops
//! the loser, and messages flow through the embedding API.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{fast_config, TestServer, PATIENCE, TOLERANCE};
use lubdub::client::{Client, ClientConfig, ClientEvent, ConnectError, Status};
use lubdub::core::protocol::{codec, Frame, ReasonCode, Welcome};
use lubdub::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn config(addr: SocketAddr, name: &str) -> ClientConfig {
    let mut config = ClientConfig::new(addr.to_string(), name);
    config.interval = Some(Duration::from_millis(100));
    config
}

/// Waits for the first event matching `predicate`, returning it and when it arrived.
async fn next_matching(
    client: &mut Client,
    what: &str,
    predicate: impl Fn(&ClientEvent) -> bool,
) -> (ClientEvent, Instant) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(event)) if predicate(&event) => return (event, Instant::now()),
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("client stopped while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}; saw {seen:#?}"),
        }
    }
}

/// A server that completes the handshake with `welcome` and then reads
/// everything and answers nothing, like a hung process whose kernel still
/// acknowledges TCP. Returns its address and a receiver of the PINGs it saw.
async fn hung_server(welcome: Welcome) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (pings, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut buffer = Vec::new();
        let mut answered = false;
        loop {
            while let Ok(Some((frame, used))) = codec::decode(&buffer, 1 << 16) {
                buffer.drain(..used);
                match frame {
                    Frame::Hello(_) if !answered => {
                        answered = true;
                        let bytes =
                            codec::encode_to_vec(&Frame::Welcome(welcome)).expect("encodable");
                        socket.write_all(&bytes).await.expect("write WELCOME");
                    }
                    Frame::Ping { seq, .. } => {
                        let _ = pings.send(seq);
                    }
                    _ => {}
                }
            }
            let mut chunk = [0u8; 1024];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_server_that_stops_answering_is_declared_dead_at_the_deadline() {
    let welcome = Welcome {
        session_id: 1,
        epoch: 1,
        granted_interval_ms: 100,
        max_missed: 3,
    };
    let (addr, mut pings) = hung_server(welcome).await;
    let mut client = Client::connect(config(addr, "alice"))
        .await
        .expect("handshake completes");
    let connected = Instant::now();
    let (event, lost_at) = next_matching(&mut client, "server lost", |event| {
        matches!(event, ClientEvent::Status(Status::ServerLost { .. }))
    })
    .await;
    let after = lost_at - connected;
    let deadline = Duration::from_millis(300);
    assert!(
        after >= deadline && after <= deadline + TOLERANCE,
        "declared dead after {after:?}"
    );
    let ClientEvent::Status(Status::ServerLost { reason }) = event else {
        unreachable!("matched above");
    };
    assert!(reason.contains("no answer"), "{reason}");
    // It heartbeated while idle, at 4/5 of the interval: PINGs 1, 2, 3 by 240 ms.
    let mut seqs = Vec::new();
    while let Ok(seq) = pings.try_recv() {
        seqs.push(seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    // And it goes on to reconnect.
    next_matching(&mut client, "reconnecting", |event| {
        matches!(
            event,
            ClientEvent::Status(Status::Reconnecting { attempt: 1, .. })
        )
    })
    .await;
}

#[tokio::test]
async fn a_server_that_accepts_but_never_answers_hello_fails_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let holder = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        tokio::time::sleep(PATIENCE).await;
        drop(socket);
    });
    let mut config = config(addr, "alice");
    config.connect_timeout = Duration::from_millis(200);
    // No patience: the unanswered HELLO is not retried (tests/first_connect.rs
    // shows the retries).
    config.first_connect_patience = Some(Duration::ZERO);
    let started = Instant::now();
    let error = Client::connect(config)
        .await
        .expect_err("no WELCOME, no client");
    let waited = started.elapsed();
    assert!(
        matches!(error, ConnectError::HandshakeTimeout { .. }),
        "{error}"
    );
    assert!(
        waited >= Duration::from_millis(200) && waited <= Duration::from_millis(200) + TOLERANCE,
        "{waited:?}"
    );
    holder.abort();
}

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts_on_the_same_port() {
    let mut server = TestServer::start(fast_config()).await;
    let addr = server.addr;
    let mut client = Client::connect(config(addr, "alice"))
        .await
        .expect("connects");
    server.expect("alice", "joined").await;
    server.stop().await;
    let (event, _) = next_matching(&mut client, "server lost", |event| {
        matches!(event, ClientEvent::Status(Status::ServerLost { .. }))
    })
    .await;
    assert!(format!("{event:?}").contains("shutdown"), "{event:?}");

    let mut restarted = TestServer::start(ServerConfig {
        listen: addr,
        ..fast_config()
    })
    .await;
    let (event, _) = next_matching(&mut client, "connected again", |event| {
        matches!(event, ClientEvent::Status(Status::Connected { .. }))
    })
    .await;
    let ClientEvent::Status(Status::Connected { session_id, .. }) = event else {
        unreachable!("matched above");
    };
    let joined = restarted.expect("alice", "joined").await;
    assert_eq!(
        joined.session_id, session_id,
        "connected to the restarted server's new session"
    );
    assert_eq!(
        restarted.sessions().await[0].name,
        "alice",
        "the name is kept"
    );
}

#[tokio::test]
async fn a_client_whose_name_is_taken_over_stops_instead_of_fighting_back() {
    let mut server = TestServer::start(fast_config()).await;
    let mut first = Client::connect(config(server.addr, "alice"))
        .await
        .expect("connects");
    let second = Client::connect(config(server.addr, "alice"))
        .await
        .expect("connects");
    let (event, _) = next_matching(&mut first, "stopped", |event| {
        matches!(event, ClientEvent::Status(Status::Stopped { .. }))
    })
    .await;
    assert!(format!("{event:?}").contains("taken over"), "{event:?}");
    // The loser's task ended: no reconnect, no further events.
    assert_eq!(
        tokio::time::timeout(PATIENCE, first.next_event())
            .await
            .expect("ends"),
        None
    );
    server
        .expect_event("takeover drop", |e| {
            e.session_id != second.welcome().session_id && common::kind_label(&e.kind) == "dropped"
        })
        .await;
    let listed = server.sessions().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].session_id, second.welcome().session_id);
}

#[tokio::test]
async fn messages_and_notices_reach_an_embedding_program() {
    let server = TestServer::start(fast_config()).await;
    let alice = Client::connect(config(server.addr, "alice"))
        .await
        .expect("connects");
    let mut bob = Client::connect(config(server.addr, "bob"))
        .await
        .expect("connects");
    alice.broadcast("hello everyone").await.expect("sent");
    alice.send_to("bob", "hello bob").await.expect("sent");
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let (event, _) = next_matching(&mut bob, "a message", |e| {
            matches!(e, ClientEvent::Message(_))
        })
        .await;
        let ClientEvent::Message(message) = event else {
            unreachable!("matched above");
        };
        assert_eq!(message.from, "alice");
        bodies.push((message.to, String::from_utf8(message.body).expect("UTF-8")));
    }
    assert_eq!(
        bodies,
        [
            ("".to_owned(), "hello everyone".to_owned()),
            ("bob".to_owned(), "hello bob".to_owned())
        ]
    );

    let mut alice = alice;
    alice.send_to("nobody", "anyone?").await.expect("sent");
    let (event, _) = next_matching(&mut alice, "a notice", |e| {
        matches!(e, ClientEvent::Notice(_))
    })
    .await;
    let ClientEvent::Notice(reason) = event else {
        unreachable!("matched above");
    };
    assert_eq!(reason.code, ReasonCode::NoSuchSession);
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_healthy_client_is_never_suspected() {
    let mut server = TestServer::start(fast_config()).await;
    let client = Client::connect(config(server.addr, "steady"))
        .await
        .expect("connects");
    let mut one_way_config = config(server.addr, "steady-one-way");
    one_way_config.one_way = true;
    let one_way = Client::connect(one_way_config).await.expect("connects");
    // Twenty intervals of idling: the client's PINGs at 4/5 of the interval
    // keep both sessions alive without a single suspect event.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let listed = server.sessions().await;
    assert_eq!(listed.len(), 2);
    server.expect("steady", "joined").await;
    server.expect("steady-one-way", "joined").await;
    let closed = tokio::spawn(async move {
        client.close().await;
        one_way.close().await;
    });
    closed.await.expect("closed");
    // Both drops, in whichever order the server read the two BYEs.
    let mut dropped = std::collections::HashSet::new();
    while dropped.len() < 2 {
        let event = server
            .expect_event("steady and steady-one-way dropped", |event| {
                common::kind_label(&event.kind) == "dropped"
                    && (event.name == "steady" || event.name == "steady-one-way")
            })
            .await;
        dropped.insert(event.name);
    }
    let unexpected: Vec<_> = server
        .seen()
        .iter()
        .filter(|e| matches!(common::kind_label(&e.kind), "suspect" | "recovered"))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    let rtt_known = listed
        .iter()
        .find(|s| s.name == "steady")
        .and_then(|s| s.rtt_ms);
    assert!(
        rtt_known.is_some(),
        "the acked client reports its RTT: {listed:?}"
    );
    let mut config_missing = config(server.addr, "late");
    config_missing.interval = None;
    let mut late = Client::connect(config_missing).await.expect("connects");
    let (event, _) = next_matching(&mut late, "connected", |e| {
        matches!(e, ClientEvent::Status(Status::Connected { .. }))
    })
    .await;
    assert!(
        matches!(event, ClientEvent::Status(Status::Connected { interval, max_missed: 5, .. }) if interval == Duration::from_millis(100)),
        "no request takes the server's default: {event:?}"
    );
}

#[tokio::test]
async fn a_client_whose_application_does_not_read_keeps_heartbeating() {
    // The flood below is 3,000 messages at once: no rate limit or fan-out
    // budget here.
    let mut server = TestServer::start(lubdub::server::ServerConfig {
        max_messages_per_sec: 0,
        max_deliveries_per_sec: 0,
        max_fanout_bytes_per_sec: 0,
        max_deliveries_per_sec_total: 0,
        max_fanout_bytes_per_sec_total: 0,
        ..fast_config()
    })
    .await;
    let mut reader = Client::connect(config(server.addr, "slow-reader"))
        .await
        .expect("connects");
    let (mut flooder, _, _) = common::RawConn::join(server.addr, "flooder", 1000, true).await;
    for n in 0..3000 {
        flooder
            .send(&Frame::Msg(lubdub::core::protocol::Message {
                from: String::new(),
                to: "slow-reader".into(),
                body: format!("message {n}").into_bytes(),
            }))
            .await;
    }
    // Two whole deadlines without the application reading a single event.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let listed = server.sessions().await;
    assert!(
        listed
            .iter()
            .any(|s| s.name == "slow-reader" && s.missed == 0),
        "{listed:?}"
    );
    server.expect("flooder", "joined").await;
    assert!(!server
        .seen()
        .iter()
        .any(|e| e.name == "slow-reader" && common::kind_label(&e.kind) == "dropped"));
    let mut messages = 0;
    while messages < 3000 {
        let (_, _) = next_matching(&mut reader, "a message", |e| {
            matches!(e, ClientEvent::Message(_))
        })
        .await;
        messages += 1;
    }
    reader.close().await;
}

/// A server that completes every handshake with `welcome` and closes at once.
async fn dropping_server(welcome: Welcome) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut chunk = [0u8; 1024];
            let _ = socket.read(&mut chunk).await;
            let bytes = codec::encode_to_vec(&Frame::Welcome(welcome)).expect("encodable");
            let _ = socket.write_all(&bytes).await;
        }
    });
    addr
}

#[tokio::test]
async fn backoff_keeps_growing_against_a_server_that_drops_every_session_at_once() {
    let addr = dropping_server(Welcome {
        session_id: 1,
        epoch: 1,
        granted_interval_ms: 1000,
        max_missed: 5,
    })
    .await;
    let mut config = config(addr, "alice");
    config.backoff.initial = Duration::from_millis(5);
    let mut client = Client::connect(config).await.expect("handshake completes");
    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        let (event, _) = next_matching(&mut client, "reconnecting", |e| {
            matches!(e, ClientEvent::Status(Status::Reconnecting { .. }))
        })
        .await;
        if let ClientEvent::Status(Status::Reconnecting { attempt, .. }) = event {
            attempts.push(attempt);
        }
    }
    assert_eq!(
        attempts,
        [1, 2, 3, 4],
        "a session that did not last is no reason to reset the backoff"
    );
}

#[tokio::test]
async fn a_welcome_with_a_zero_interval_is_refused() {
    let addr = dropping_server(Welcome {
        session_id: 1,
        epoch: 1,
        granted_interval_ms: 0,
        max_missed: 5,
    })
    .await;
    let mut alice = config(addr, "alice");
    // A protocol error is retried (the stream may have been damaged); the
    // default patience would keep trying for a minute.
    alice.first_connect_patience = Some(Duration::from_millis(500));
    let error = Client::connect(alice).await.expect_err("unusable grant");
    assert!(matches!(error, ConnectError::Protocol(_)), "{error}");
}
