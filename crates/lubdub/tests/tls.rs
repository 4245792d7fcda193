//! TLS end to end over real sockets: sessions inside TLS, the two
//! mismatches (plain client on a TLS server, TLS client on a plain server),
//! client certificates, an untrusted CA, a TLS consumer that never reads,
//! and the binary serving TLS to the binary client. Certificates are
//! generated at run time with rcgen; no private key is committed.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::process::{client as spawn_client, start_server};
use common::{fast_config, hello, TestServer, PATIENCE};
use lubdub::client::{Client, ClientConfig, ClientEvent, ClientTls, ConnectError, Status};
use lubdub::core::protocol::{codec, Frame, Message, ReasonCode};
use lubdub::server::{DropReason, PresenceKind, ServerConfig, TlsFiles};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// One test's certificates in a directory of its own: a CA, a server
/// certificate for `localhost` and 127.0.0.1 signed by it, a client
/// certificate signed by it, a device certificate with subject CN and DNS
/// SAN `dev1` signed by it, and an unrelated CA.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    device_cert: PathBuf,
    device_key: PathBuf,
    other_ca: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let certificate = params.self_signed(&key).expect("CA signs itself");
    (certificate, Issuer::new(params, key))
}

fn leaf(names: &[&str], issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
        .expect("leaf params");
    let certificate = params.signed_by(&key, issuer).expect("CA signs the leaf");
    (certificate.pem(), key.serialize_pem())
}

/// A client certificate for a device: subject CN `name`, DNS SAN `name`.
fn device(name: &str, issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("device key");
    let mut params = CertificateParams::new(vec![name.to_owned()]).expect("device params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    let certificate = params.signed_by(&key, issuer).expect("CA signs the device");
    (certificate.pem(), key.serialize_pem())
}

fn pki(test: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("lubdub-tls-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    };
    let (ca_cert, issuer) = ca("lubdub test CA");
    let (server_cert, server_key) = leaf(&["localhost", "127.0.0.1"], &issuer);
    let (client_cert, client_key) = leaf(&["client.lubdub.test"], &issuer);
    let (device_cert, device_key) = device("dev1", &issuer);
    let (other_ca, _) = ca("some other CA");
    Pki {
        ca: write("ca.pem", &ca_cert.pem()),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server.key", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client.key", &client_key),
        device_cert: write("dev1.pem", &device_cert),
        device_key: write("dev1.key", &device_key),
        other_ca: write("other-ca.pem", &other_ca.pem()),
        dir,
    }
}

fn tls_server_config(pki: &Pki, client_ca: bool) -> ServerConfig {
    ServerConfig {
        tls: Some(TlsFiles {
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
            client_ca: client_ca.then(|| pki.ca.clone()),
            client_cert_names: false,
        }),
        ..fast_config()
    }
}

fn tls_client_config(addr: SocketAddr, name: &str, ca: &Path) -> ClientConfig {
    let mut config = ClientConfig::new(addr.to_string(), name);
    config.interval = Some(Duration::from_millis(100));
    config.tls = Some(ClientTls {
        ca: Some(ca.to_owned()),
        ..ClientTls::default()
    });
    config
}

async fn next_matching(
    client: &mut Client,
    what: &str,
    predicate: impl Fn(&ClientEvent) -> bool,
) -> ClientEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, client.next_event()).await {
            Ok(Some(event)) if predicate(&event) => return event,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!("client stopped while waiting for {what}; saw {seen:#?}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}; saw {seen:#?}"),
        }
    }
}

/// A TLS connection that sends exactly what the test says, trusting `ca`.
async fn raw_tls(addr: SocketAddr, ca: &Path) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in lubdub::pem::load_certificates(ca, "CA").expect("CA loads") {
        roots.add(certificate).expect("CA is usable");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("a DNS name"), tcp)
        .await
        .expect("TLS handshake")
}

async fn send_frame(stream: &mut TlsStream<TcpStream>, frame: &Frame) {
    let bytes = codec::encode_to_vec(frame).expect("encodable");
    stream.write_all(&bytes).await.expect("write");
    stream.flush().await.expect("flush");
}

/// Completes HELLO over a raw TLS connection and reads the WELCOME. The
/// interval is long (10 s): these sessions send nothing unless told to.
async fn raw_tls_join(addr: SocketAddr, ca: &Path, name: &str) -> TlsStream<TcpStream> {
    let mut stream = raw_tls(addr, ca).await;
    send_frame(&mut stream, &hello(name, 10_000, true)).await;
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some((frame, _)) = codec::decode(&buffer, 1 << 20).expect("valid frames") {
            assert!(
                matches!(frame, Frame::Welcome(_)),
                "expected WELCOME, got {frame:?}"
            );
            return stream;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .expect("WELCOME in time")
            .expect("read");
        assert!(n > 0, "closed before WELCOME");
        buffer.extend_from_slice(&chunk[..n]);
    }
}

fn message(to: &str, body: impl Into<Vec<u8>>) -> Frame {
    Frame::Msg(Message {
        from: String::new(),
        to: to.to_owned(),
        body: body.into(),
    })
}

#[tokio::test]
async fn tls_sessions_heartbeat_and_exchange_messages() {
    let pki = pki("sessions");
    let mut server = TestServer::start(tls_server_config(&pki, false)).await;
    let mut alice = Client::connect(tls_client_config(server.addr, "alice", &pki.ca))
        .await
        .expect("alice connects over TLS");
    let mut bob = Client::connect(tls_client_config(server.addr, "bob", &pki.ca))
        .await
        .expect("bob connects over TLS");
    server.expect("alice", "joined").await;
    server.expect("bob", "joined").await;
    // Over two deadlines (5 × 100 ms): only heartbeats keep them listed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let listed = server.sessions().await;
    for name in ["alice", "bob"] {
        assert!(
            listed.iter().any(|s| s.name == name && s.missed == 0),
            "{name} alive: {listed:?}"
        );
    }
    alice.send_to("bob", "hello over TLS").await.expect("sent");
    let received = next_matching(&mut bob, "alice's message", |event| {
        matches!(event, ClientEvent::Message(_))
    })
    .await;
    let ClientEvent::Message(received) = received else {
        unreachable!("matched a message")
    };
    assert_eq!(received.from, "alice");
    assert_eq!(received.body, b"hello over TLS");
    bob.broadcast("and back").await.expect("sent");
    next_matching(
        &mut alice,
        "bob's broadcast",
        |event| matches!(event, ClientEvent::Message(m) if m.body == b"and back"),
    )
    .await;
    assert!(!server
        .seen()
        .iter()
        .any(|e| common::kind_label(&e.kind) == "dropped"));
    alice.close().await;
    bob.close().await;
}

#[tokio::test]
async fn a_plain_client_on_a_tls_server_is_told_tls_is_required() {
    let pki = pki("plain-on-tls");
    let server = TestServer::start(tls_server_config(&pki, false)).await;
    let mut config = ClientConfig::new(server.addr.to_string(), "plain");
    config.interval = Some(Duration::from_millis(100));
    let error = Client::connect(config).await.expect_err("refused");
    let ConnectError::Rejected(reason) = &error else {
        panic!("expected a REJECT, got {error:?}");
    };
    assert_eq!(reason.code, ReasonCode::TlsRequired);
    assert!(
        error
            .to_string()
            .contains("this server requires TLS; connect with --tls / --tls-ca"),
        "{error}"
    );
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_tls_client_on_a_plain_server_is_told_it_does_not_speak_tls() {
    let pki = pki("tls-on-plain");
    let mut server = TestServer::start(fast_config()).await;
    let error = Client::connect(tls_client_config(server.addr, "tls", &pki.ca))
        .await
        .expect_err("not TLS");
    assert!(matches!(error, ConnectError::NotTls { .. }), "{error:?}");
    assert!(
        error.to_string().contains("does not seem to speak TLS"),
        "{error}"
    );
    // The plain server still serves plain clients.
    let (_conn, _, _) = common::RawConn::join(server.addr, "plain", 100, true).await;
    server.expect("plain", "joined").await;
}

#[tokio::test]
async fn a_required_client_certificate_is_checked() {
    let pki = pki("client-cert");
    let server = TestServer::start(tls_server_config(&pki, true)).await;
    let error = Client::connect(tls_client_config(server.addr, "anonymous", &pki.ca))
        .await
        .expect_err("no certificate, no session");
    assert!(
        matches!(error, ConnectError::ClientCertificateRefused { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("requires a client certificate"),
        "{error}"
    );
    assert!(!error.is_retryable());

    let mut config = tls_client_config(server.addr, "known", &pki.ca);
    if let Some(tls) = &mut config.tls {
        tls.cert = Some(pki.client_cert.clone());
        tls.key = Some(pki.client_key.clone());
    }
    let mut known = Client::connect(config).await.expect("certificate accepted");
    next_matching(&mut known, "connected", |event| {
        matches!(event, ClientEvent::Status(Status::Connected { .. }))
    })
    .await;
    known.close().await;
}

/// A client presenting the `dev1` device certificate, claiming `name`.
fn device_client_config(pki: &Pki, addr: SocketAddr, name: &str) -> ClientConfig {
    let mut config = tls_client_config(addr, name, &pki.ca);
    if let Some(tls) = &mut config.tls {
        tls.cert = Some(pki.device_cert.clone());
        tls.key = Some(pki.device_key.clone());
    }
    config
}

/// With names bound to client certificates, the `dev1` certificate cannot
/// claim `notdev1` (REJECT unauthorized, saying which names it grants, not
/// retried, counted) and can claim `dev1`.
#[tokio::test]
async fn with_names_bound_a_client_certificate_claims_only_its_own_names() {
    let pki = pki("cert-names");
    let mut config = tls_server_config(&pki, true);
    if let Some(tls) = &mut config.tls {
        tls.client_cert_names = true;
    }
    let mut server = TestServer::start(config).await;
    let error = Client::connect(device_client_config(&pki, server.addr, "notdev1"))
        .await
        .expect_err("not the certificate's name");
    let ConnectError::Rejected(reason) = &error else {
        panic!("expected a REJECT, got {error:?}");
    };
    assert_eq!(reason.code, ReasonCode::Unauthorized);
    assert_eq!(
        reason.text,
        "name notdev1 is not in the client certificate, which grants dev1"
    );
    assert!(!error.is_retryable());
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("lubdub_auth_failures_total{reason=\"certificate_name\"} 1"),
        "{metrics}"
    );

    let dev1 = Client::connect(device_client_config(&pki, server.addr, "dev1"))
        .await
        .expect("the certificate's own name");
    server.expect("dev1", "joined").await;
    assert!(!server.seen().iter().any(|event| event.name == "notdev1"));
    dev1.close().await;
}

/// Without the flag a client certificate proves membership of the CA only,
/// as before: `dev1`'s certificate may claim any free name.
#[tokio::test]
async fn without_names_bound_a_client_certificate_may_claim_any_name() {
    let pki = pki("cert-any-name");
    let mut server = TestServer::start(tls_server_config(&pki, true)).await;
    let other = Client::connect(device_client_config(&pki, server.addr, "notdev1"))
        .await
        .expect("any name");
    server.expect("notdev1", "joined").await;
    other.close().await;
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_not_trusted() {
    let pki = pki("wrong-ca");
    let server = TestServer::start(tls_server_config(&pki, false)).await;
    let error = Client::connect(tls_client_config(server.addr, "wary", &pki.other_ca))
        .await
        .expect_err("not trusted");
    assert!(
        matches!(error, ConnectError::CertificateNotTrusted { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("is not trusted"), "{error}");
    assert!(!error.is_retryable());
}

/// A TLS client refused at accept (a connection limit) gets the close
/// alone, which it may retry: a plain REJECT would read as "the server does
/// not speak TLS", a final error. Catches a plain REJECT written on a TLS
/// server's refused connections.
#[tokio::test]
async fn a_tls_client_over_a_connection_limit_is_refused_retryably() {
    let pki = pki("limit");
    let server = TestServer::start(ServerConfig {
        max_connections: Some(1),
        ..tls_server_config(&pki, false)
    })
    .await;
    let _first = Client::connect(tls_client_config(server.addr, "first", &pki.ca))
        .await
        .expect("the first connects");
    let mut second = tls_client_config(server.addr, "second", &pki.ca);
    // A refusal for being over the limit is retried (a place may free);
    // the default patience would keep trying for a minute.
    second.first_connect_patience = Some(Duration::from_millis(500));
    let error = Client::connect(second).await.expect_err("over the limit");
    assert!(
        !matches!(error, ConnectError::NotTls { .. }),
        "not mistaken for a plain server: {error:?}"
    );
    assert!(error.is_retryable(), "{error:?}");
}

/// Messages the flood below sends at most: far more than fit in a second.
const FLOOD_LIMIT: usize = 1_000_000;

#[tokio::test]
async fn a_tls_consumer_that_never_reads_is_dropped_and_others_go_on() {
    let pki = pki("slow-consumer");
    let mut server = TestServer::start(ServerConfig {
        // The smallest queue allowed: one frame of the largest size.
        max_outbound_bytes: 128 * 1024,
        // The flood below is the point; the rate limit and the fan-out
        // budgets would blunt it.
        max_messages_per_sec: 0,
        max_deliveries_per_sec: 0,
        max_fanout_bytes_per_sec: 0,
        max_deliveries_per_sec_total: 0,
        max_fanout_bytes_per_sec_total: 0,
        // The sink's queue stops at its share of messages (the flooder is
        // told recipient_busy); it is dropped once they waited this long.
        slow_consumer_timeout: std::time::Duration::from_secs(1),
        ..tls_server_config(&pki, false)
    })
    .await;
    let mut watcher = Client::connect(tls_client_config(server.addr, "watcher", &pki.ca))
        .await
        .expect("watcher connects");
    // Joins, then never reads again.
    let _sink = raw_tls_join(server.addr, &pki.ca, "sink").await;
    let mut flooder = raw_tls_join(server.addr, &pki.ca, "flooder").await;
    server.expect("sink", "joined").await;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flood = {
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        tokio::spawn(async move {
            let body = vec![b'x'; 60_000];
            // Until the sink is dropped: its queue takes its share, the rest
            // is refused (recipient_busy), and the sink is dropped once what
            // it was sent has waited the slow-consumer timeout.
            for _ in 0..FLOOD_LIMIT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                send_frame(&mut flooder, &message("sink", body.clone())).await;
                sent.fetch_add(1, Ordering::Relaxed);
            }
            flooder
        })
    };
    let dropped = server
        .expect_event("sink dropped as a slow consumer", |event| {
            event.name == "sink"
                && matches!(
                    event.kind,
                    PresenceKind::Dropped {
                        reason: DropReason::SlowConsumer,
                        ..
                    }
                )
        })
        .await;
    stop.store(true, Ordering::Relaxed);
    let mut flooder = flood.await.expect("flooder task");
    assert!(
        sent.load(Ordering::Relaxed) < FLOOD_LIMIT,
        "dropped only after the flood ended: {dropped:?}"
    );
    // The others are unaffected: the watcher is alive and still gets mail.
    send_frame(&mut flooder, &message("watcher", "still here")).await;
    next_matching(
        &mut watcher,
        "the message after the drop",
        |event| matches!(event, ClientEvent::Message(m) if m.body == b"still here"),
    )
    .await;
    let listed = server.sessions().await;
    assert!(
        listed.iter().any(|s| s.name == "watcher"),
        "watcher listed: {listed:?}"
    );
    assert!(!server
        .seen()
        .iter()
        .any(|e| e.name == "watcher" && common::kind_label(&e.kind) == "dropped"));
    watcher.close().await;
}

#[test]
fn the_binary_serves_tls_to_the_binary_client() {
    let pki = pki("binary");
    let cert = pki.server_cert.to_str().expect("UTF-8 path");
    let key = pki.server_key.to_str().expect("UTF-8 path");
    let ca = pki.ca.to_str().expect("UTF-8 path");
    let (mut server, listen, _admin) = start_server(&["--tls-cert", cert, "--tls-key", key]);
    assert!(
        server.transcript.iter().any(|line| line.contains("TLS on")),
        "{:?}",
        server.transcript
    );
    let mut alice = spawn_client(&listen, "alice", &["--tls-ca", ca]);
    let mut bob = spawn_client(&listen, "bob", &["--tls-ca", ca]);
    server.expect_stderr("joined name=bob");
    alice.type_line("@bob hello over TLS");
    bob.expect_stdout("[alice → bob] hello over TLS");

    // A plain binary client is told why it cannot join.
    let refused = common::process::lubdub()
        .args(["client", "--server", &listen, "--name", "plain"])
        .output()
        .expect("client runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("this server requires TLS; connect with --tls / --tls-ca"),
        "{stderr}"
    );
}

#[test]
fn the_binary_binds_names_to_client_certificates() {
    let pki = pki("binary-cert-names");
    let path = |path: &Path| path.to_str().expect("UTF-8 path").to_owned();
    let (cert, key, ca) = (path(&pki.server_cert), path(&pki.server_key), path(&pki.ca));
    let refused = common::process::lubdub()
        .args(["server", "--tls-cert", &cert, "--tls-key", &key])
        .arg("--tls-client-cert-names")
        .output()
        .expect("server runs");
    // Refused after the settings' layers are merged (the pair may come
    // from a configuration file), not by clap: status 1, not 2.
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("tls-client-cert-names is set but tls-client-ca is not"),
        "{stderr}"
    );

    let (mut server, listen, _admin) = start_server(&[
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-client-ca",
        &ca,
        "--tls-client-cert-names",
    ]);
    let device = [
        "--tls-ca",
        &ca,
        "--tls-cert",
        &path(&pki.device_cert),
        "--tls-key",
        &path(&pki.device_key),
    ];
    let impostor = common::process::lubdub()
        .args(["client", "--server", &listen, "--name", "notdev1"])
        .args(device)
        .output()
        .expect("client runs");
    assert!(!impostor.status.success());
    let stderr = String::from_utf8_lossy(&impostor.stderr);
    assert!(
        stderr.contains(
            "server rejected the session: name notdev1 is not in the client certificate, which grants dev1 (unauthorized)"
        ),
        "{stderr}"
    );
    server.expect_stderr("handshake refused: name notdev1 is not in the client certificate");
    let _dev1 = spawn_client(&listen, "dev1", &device);
    server.expect_stderr("joined name=dev1");
}
