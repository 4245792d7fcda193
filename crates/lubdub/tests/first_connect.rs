//! The first connect: against a busy server (issue 12, item 5), REJECT
//! `server_busy` and an unanswered HELLO are retried with backoff, by the
//! library and by `lubdub client`; so is a server that is not there yet
//! (issue 13, item 1); refusals that the same HELLO would get again still
//! end the first connect at once. The server is a scripted fake on a real
//! socket.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{lubdub, Proc};
use lubdub::client::{Client, ClientConfig, ConnectError};
use lubdub::core::protocol::{codec, Frame, ReasonCode, Welcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the fake server answers one HELLO.
#[derive(Debug, Clone)]
enum Answer {
    Frame(Frame),
    /// Holds the connection open and says nothing.
    Silence,
}

fn welcome() -> Answer {
    Answer::Frame(Frame::Welcome(Welcome {
        session_id: 7,
        epoch: 1,
        granted_interval_ms: 1_000,
        max_missed: 3,
    }))
}

fn busy() -> Answer {
    Answer::Frame(Frame::reject(
        ReasonCode::ServerBusy,
        "server busy: 8 credentials from this address are waiting to be verified; \
         retry in 200ms-1s",
    ))
}

/// A server answering the n-th HELLO with `script[n]` (the last answer
/// repeats); returns its address and the count of HELLOs it read.
async fn scripted_server(script: Vec<Answer>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    serve_script(listener, script)
}

/// [`scripted_server`] on a listener already bound.
fn serve_script(listener: TcpListener, script: Vec<Answer>) -> (SocketAddr, Arc<AtomicUsize>) {
    let addr = listener.local_addr().expect("address");
    let hellos = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&hellos);
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let count = Arc::clone(&count);
            let script = script.clone();
            tokio::spawn(async move {
                let mut socket = socket;
                if read_hello(&mut socket).await.is_none() {
                    return;
                }
                let number = count.fetch_add(1, Ordering::SeqCst);
                let answer = &script[number.min(script.len() - 1)];
                if let Answer::Frame(frame) = answer {
                    let bytes = codec::encode_to_vec(frame).expect("encodable");
                    let _ = socket.write_all(&bytes).await;
                }
                // Keep the connection (a session, or the silence) until the
                // client closes it.
                let mut sink = [0u8; 1024];
                while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, hellos)
}

async fn read_hello(socket: &mut TcpStream) -> Option<()> {
    let mut buffer = Vec::new();
    loop {
        if let Ok(Some((Frame::Hello(_), _))) = codec::decode(&buffer, 1 << 16) {
            return Some(());
        }
        let mut chunk = [0u8; 1024];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Fails on the code before this change (seen by reverting
/// `crates/lubdub/src/client`): the first REJECT `server_busy` ended the
/// process with "server rejected the session" and status 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_client_retries_server_busy_on_its_first_connect() {
    let (addr, hellos) = scripted_server(vec![busy(), busy(), welcome()]).await;
    let client =
        Proc::spawn(lubdub().args(["client", "--server", &addr.to_string(), "--name", "alice"]));
    tokio::task::spawn_blocking(move || {
        let mut client = client;
        let retry = client.expect_stderr("retrying in");
        assert!(retry.contains("server busy"), "{retry}");
        client.expect_stderr("connected to");
        assert!(
            client.child.try_wait().expect("try_wait").is_none(),
            "the client exited"
        );
    })
    .await
    .expect("the client retried and connected");
    assert_eq!(hellos.load(Ordering::SeqCst), 3);
}

/// Fails on the code before this change (seen by reverting
/// `crates/lubdub/src/client`): `Client::connect` returned
/// `HandshakeTimeout` after the first silence.
#[tokio::test]
async fn the_library_retries_an_unanswered_hello_on_its_first_connect() {
    let (addr, hellos) = scripted_server(vec![Answer::Silence, welcome()]).await;
    let mut config = ClientConfig::new(addr.to_string(), "alice");
    config.connect_timeout = Duration::from_millis(200);
    let mut retries = Vec::new();
    let client = Client::connect_reporting(config, |error, delay| {
        retries.push((error.to_string(), delay));
    })
    .await
    .expect("connects on the second attempt");
    assert_eq!(client.welcome().session_id, 7);
    assert_eq!(hellos.load(Ordering::SeqCst), 2);
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].0.contains("no answer to HELLO"), "{retries:?}");
    // Full jitter within the first window of the default backoff.
    assert!(retries[0].1 <= Duration::from_millis(200), "{retries:?}");
    client.close().await;
}

/// Only a busy server is retried: a refusal that the same HELLO would get
/// again ends the first connect at once, and a server that stays busy
/// ends it when the patience runs out.
#[tokio::test]
async fn other_refusals_end_the_first_connect_and_patience_bounds_the_retries() {
    let unauthorized = Answer::Frame(Frame::reject(
        ReasonCode::Unauthorized,
        "no valid credential for name alice",
    ));
    let (addr, hellos) = scripted_server(vec![unauthorized]).await;
    let error = Client::connect(ClientConfig::new(addr.to_string(), "alice"))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, ConnectError::Rejected(reason) if reason.code == ReasonCode::Unauthorized),
        "{error}"
    );
    assert_eq!(hellos.load(Ordering::SeqCst), 1);

    let (addr, hellos) = scripted_server(vec![busy()]).await;
    let mut config = ClientConfig::new(addr.to_string(), "alice");
    config.first_connect_patience = Some(Duration::from_secs(1));
    let started = Instant::now();
    let error = Client::connect(config).await.expect_err("always busy");
    let waited = started.elapsed();
    assert!(
        matches!(&error, ConnectError::Rejected(reason) if reason.code == ReasonCode::ServerBusy),
        "{error}"
    );
    // The last delay that fits ends before the patience does; one more
    // attempt follows it.
    assert!(waited <= Duration::from_millis(1_500), "{waited:?}");
    assert!(hellos.load(Ordering::SeqCst) >= 2, "never retried");
}

/// Fails on the code before issue 13 (seen: `Client::connect` returned
/// "cannot connect" at the first refused dial): a device that boots before
/// its server waits for it.
#[tokio::test]
async fn the_library_first_connect_waits_for_its_server_to_come_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port();
    let mut config = ClientConfig::new(format!("127.0.0.1:{port}"), "early");
    config.first_connect_patience = None;
    let (retried, mut retries) = tokio::sync::mpsc::unbounded_channel();
    let connecting = tokio::spawn(Client::connect_reporting(config, move |error, _| {
        let _ = retried.send(lubdub::report::chain(error));
    }));
    let first = tokio::time::timeout(common::PATIENCE, retries.recv())
        .await
        .expect("a retry reported")
        .expect("a reason");
    assert!(
        first.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
        "{first}"
    );
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the port is free");
    let (_, hellos) = serve_script(listener, vec![welcome()]);
    let client = tokio::time::timeout(common::PATIENCE, connecting)
        .await
        .expect("connected once the server came up")
        .expect("the task ran")
        .expect("connects");
    assert_eq!(client.welcome().session_id, 7);
    assert_eq!(hellos.load(Ordering::SeqCst), 1);
    client.close().await;
}
