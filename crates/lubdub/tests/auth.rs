//! Credentials over real sockets: tokens (right, forged, expired, for
//! another name), auth-file secrets (right, wrong, unknown name), takeover
//! only with the name's credential, the verification cache, frames sent
//! while a HELLO is being verified, and the binary end to end.

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::process::{lubdub, run_ok, start_server_saying, Proc};
use common::{fast_config, RawConn, Scratch, TestServer};
use lubdub::auth::{password, AuthConfig, TokenSecret};
use lubdub::client::{Client, ClientConfig, ConnectError};
use lubdub::core::protocol::frame::flags;
use lubdub::core::protocol::{codec, Frame, Hello, ReasonCode, PROTOCOL_VERSION};
use lubdub::server::{PresenceKind, ServerConfig};

const ALICE_SECRET: &str = "alice-has-a-long-secret";

/// A token secret file and an auth file granting alice [`ALICE_SECRET`].
fn credentials(scratch: &Scratch) -> (TokenSecret, AuthConfig) {
    let secret_path = scratch.path("token.secret");
    let secret = TokenSecret::create(&secret_path).expect("secret created");
    let hash = password::hash(ALICE_SECRET.as_bytes(), password::default_params()).expect("hash");
    let auth_path = scratch.path("auth");
    std::fs::write(&auth_path, format!("# test\nalice:{hash}\n")).expect("auth file");
    let config = AuthConfig {
        auth_file: Some(auth_path),
        token_secret_file: Some(secret_path),
        ..AuthConfig::default()
    };
    (secret, config)
}

fn config_with(auth: AuthConfig) -> ServerConfig {
    ServerConfig {
        auth,
        ..fast_config()
    }
}

fn hello_with(name: &str, credential: &[u8]) -> Frame {
    Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: flags::ACKS_WANTED,
        requested_interval_ms: 200,
        name: name.to_owned(),
        credential: credential.to_vec(),
        status: None,
    })
}

fn in_a_day() -> SystemTime {
    SystemTime::now() + Duration::from_secs(86_400)
}

/// Sends HELLO with `credential`; returns the connection and the answer.
async fn hello(server: &TestServer, name: &str, credential: &[u8]) -> (RawConn, Option<Frame>) {
    let mut conn = RawConn::connect(server.addr).await;
    conn.send(&hello_with(name, credential)).await;
    let answer = conn.next_frame().await;
    (conn, answer)
}

/// Asserts a REJECT `unauthorized` with `text`, then the close.
async fn expect_unauthorized(mut conn: RawConn, answer: Option<Frame>, text: &str) {
    match answer {
        Some(Frame::Reject(reason)) => {
            assert_eq!(reason.code, ReasonCode::Unauthorized);
            assert_eq!(reason.text, text);
        }
        other => panic!("expected REJECT unauthorized ({text}), got {other:?}"),
    }
    conn.expect_closed().await;
}

/// The value of an unlabelled metric, or of the labelled line containing `label`.
async fn metric(server: &TestServer, name: &str, label: &str) -> u64 {
    let (_, text) = server.get("/metrics").await;
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A client that connects as `name` with `credential`.
fn client_config(server: &TestServer, name: &str, credential: &str) -> ClientConfig {
    let mut config = ClientConfig::new(server.addr.to_string(), name);
    config.credential = credential.into();
    config
}

#[tokio::test]
async fn a_token_for_the_name_is_accepted() {
    let scratch = Scratch::new("token-ok");
    let (secret, auth) = credentials(&scratch);
    let mut server = TestServer::start(config_with(auth)).await;
    let token = secret.mint("alice", in_a_day()).expect("minted");
    let (_alice, answer) = hello(&server, "alice", token.as_bytes()).await;
    assert!(matches!(answer, Some(Frame::Welcome(_))), "{answer:?}");
    server.expect("alice", "joined").await;
    // The embeddable client too.
    let client = Client::connect(client_config(
        &server,
        "bob",
        &secret.mint("bob", in_a_day()).expect("minted"),
    ))
    .await
    .expect("bob connects with his token");
    server.expect("bob", "joined").await;
    client.close().await;
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused_with_their_reason() {
    let scratch = Scratch::new("token-bad");
    let (secret, auth) = credentials(&scratch);
    let server = TestServer::start(config_with(auth)).await;

    let forger = TokenSecret::from_bytes(vec![7; 32], Path::new("forged")).expect("32 bytes");
    let forged = forger.mint("alice", in_a_day()).expect("minted");
    let (conn, answer) = hello(&server, "alice", forged.as_bytes()).await;
    let forged_text =
        "token signature does not verify (altered, forged or minted with another secret)";
    expect_unauthorized(conn, answer, forged_text).await;

    let expired_at = SystemTime::now() - Duration::from_secs(60);
    let expired = secret.mint("alice", expired_at).expect("minted");
    let (conn, answer) = hello(&server, "alice", expired.as_bytes()).await;
    let expired_text = format!(
        "token expired at {}",
        humantime::format_rfc3339_seconds(expired_at)
    );
    expect_unauthorized(conn, answer, &expired_text).await;

    let bobs = secret.mint("bob", in_a_day()).expect("minted");
    let (conn, answer) = hello(&server, "alice", bobs.as_bytes()).await;
    expect_unauthorized(conn, answer, "token was issued for another name").await;

    let (conn, answer) = hello(&server, "alice", b"").await;
    expect_unauthorized(
        conn,
        answer,
        "no credential given for name alice; this server requires one",
    )
    .await;

    // The client's side says the same, and does not retry.
    let error = Client::connect(client_config(&server, "alice", &forged))
        .await
        .expect_err("refused");
    assert!(matches!(error, ConnectError::Rejected(_)), "{error:?}");
    assert!(!error.is_retryable());
    assert_eq!(
        error.to_string(),
        format!("server rejected the session: {forged_text} (unauthorized)")
    );
    let error = Client::connect(client_config(&server, "alice", &bobs))
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "server rejected the session: token was issued for another name (unauthorized)"
    );

    let failures = "lubdub_auth_failures_total";
    assert_eq!(metric(&server, failures, "token_bad_signature").await, 2);
    assert_eq!(metric(&server, failures, "token_expired").await, 1);
    assert_eq!(metric(&server, failures, "token_other_name").await, 2);
    assert_eq!(metric(&server, failures, "no_credential").await, 1);
    assert!(server.sessions().await.is_empty());
}

#[tokio::test]
async fn auth_file_secrets_grant_their_name_only() {
    let scratch = Scratch::new("file");
    let (_, auth) = credentials(&scratch);
    let mut server = TestServer::start(config_with(auth)).await;

    let (conn, answer) = hello(&server, "alice", b"not-alice's-secret-at-all").await;
    expect_unauthorized(conn, answer, "no valid credential for name alice").await;
    // A name without a line gets the very same answer: nobody learns who is in the file.
    let (conn, answer) = hello(&server, "mallory", ALICE_SECRET.as_bytes()).await;
    expect_unauthorized(conn, answer, "no valid credential for name mallory").await;

    let (_alice, answer) = hello(&server, "alice", ALICE_SECRET.as_bytes()).await;
    assert!(matches!(answer, Some(Frame::Welcome(_))), "{answer:?}");
    server.expect("alice", "joined").await;

    let error = Client::connect(client_config(&server, "alice", "a-wrong-but-long-secret"))
        .await
        .expect_err("refused");
    assert_eq!(
        error.to_string(),
        "server rejected the session: no valid credential for name alice (unauthorized)"
    );
    assert_eq!(
        metric(&server, "lubdub_auth_failures_total", "not_granted").await,
        3
    );
}

#[tokio::test]
async fn an_unauthorized_takeover_leaves_the_holder_alone_and_the_holder_can_take_over() {
    let scratch = Scratch::new("takeover");
    let (secret, auth) = credentials(&scratch);
    let mut server = TestServer::start(config_with(auth)).await;
    let token = secret.mint("alice", in_a_day()).expect("minted");
    let (mut holder, answer) = hello(&server, "alice", token.as_bytes()).await;
    let Some(Frame::Welcome(welcome)) = answer else {
        panic!("expected WELCOME, got {answer:?}");
    };
    server.expect("alice", "joined").await;

    // Wrong secret, forged token, someone else's token: all refused.
    let (conn, answer) = hello(&server, "alice", b"guessing-alice's-secret").await;
    expect_unauthorized(conn, answer, "no valid credential for name alice").await;
    let bobs = secret.mint("bob", in_a_day()).expect("minted");
    let (conn, answer) = hello(&server, "alice", bobs.as_bytes()).await;
    expect_unauthorized(conn, answer, "token was issued for another name").await;

    // The holder never noticed: same session, still answered.
    holder.send(&Frame::Ping { seq: 1, rtt_us: 0 }).await;
    assert_eq!(holder.next_frame().await, Some(Frame::Pong { seq: 1 }));
    let sessions = server.sessions().await;
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].session_id, welcome.session_id);
    assert!(
        !server
            .seen()
            .iter()
            .any(|event| matches!(event.kind, PresenceKind::Dropped { .. })),
        "{:?}",
        server.seen()
    );

    // The name's own secret takes it over.
    let (_successor, answer) = hello(&server, "alice", ALICE_SECRET.as_bytes()).await;
    let Some(Frame::Welcome(successor)) = answer else {
        panic!("expected WELCOME, got {answer:?}");
    };
    assert!(successor.epoch > welcome.epoch);
    match holder.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, ReasonCode::TakenOver),
        other => panic!("expected BYE taken_over, got {other:?}"),
    }
}

#[tokio::test]
async fn a_verified_secret_is_cached_and_a_changed_one_is_verified_again() {
    let scratch = Scratch::new("cache");
    let (_, auth) = credentials(&scratch);
    let mut server = TestServer::start(config_with(auth)).await;
    let runs = "lubdub_auth_password_verifications_total";
    let hits = "lubdub_auth_cache_hits_total";

    let (first, answer) = hello(&server, "alice", ALICE_SECRET.as_bytes()).await;
    assert!(matches!(answer, Some(Frame::Welcome(_))), "{answer:?}");
    server.expect("alice", "joined").await;
    drop(first);
    server.expect("alice", "dropped").await;
    assert_eq!(metric(&server, runs, "").await, 1);

    // The reconnect costs no argon2 run.
    for _ in 0..3 {
        let (again, answer) = hello(&server, "alice", ALICE_SECRET.as_bytes()).await;
        assert!(matches!(answer, Some(Frame::Welcome(_))), "{answer:?}");
        drop(again);
        server.expect("alice", "dropped").await;
    }
    assert_eq!(metric(&server, runs, "").await, 1);
    assert_eq!(metric(&server, hits, "").await, 3);

    // A different secret is not answered from the cache.
    let (conn, answer) = hello(&server, "alice", b"alice-has-a-long-secreT").await;
    expect_unauthorized(conn, answer, "no valid credential for name alice").await;
    assert_eq!(metric(&server, runs, "").await, 2);
    assert_eq!(metric(&server, hits, "").await, 3);
}

#[tokio::test]
async fn frames_sent_while_the_hello_is_verified_are_treated_as_before_the_handshake() {
    let scratch = Scratch::new("hostile");
    let (_, auth) = credentials(&scratch);
    let server = TestServer::start(config_with(auth)).await;
    // Wrong secrets: a right one, once verified, would be cached, and a
    // later HELLO answered from the cache without waiting.
    let wrong = b"alice-has-a-long-secreT";

    // HELLO and a PING in one write: the PING is read while the secret
    // is still being verified.
    let mut hostile = RawConn::connect(server.addr).await;
    let mut bytes = codec::encode_to_vec(&hello_with("alice", wrong)).expect("encodes");
    bytes.extend(codec::encode_to_vec(&Frame::Ping { seq: 1, rtt_us: 0 }).expect("encodes"));
    hostile.send_bytes(&bytes).await;
    match hostile.next_frame().await {
        Some(Frame::Reject(reason)) => assert_eq!(reason.code, ReasonCode::HelloRequired),
        other => panic!("expected REJECT hello_required, got {other:?}"),
    }
    hostile.expect_closed().await;

    // A second HELLO while the first is verified is refused too.
    let mut doubled = RawConn::connect(server.addr).await;
    let mut bytes = codec::encode_to_vec(&hello_with("alice", wrong)).expect("encodes");
    bytes.extend(codec::encode_to_vec(&hello_with("alice", wrong)).expect("encodes"));
    doubled.send_bytes(&bytes).await;
    match doubled.next_frame().await {
        Some(Frame::Reject(reason)) => assert_eq!(reason.code, ReasonCode::DuplicateHello),
        other => panic!("expected REJECT duplicate_hello, got {other:?}"),
    }
    doubled.expect_closed().await;

    // Both connections are gone: their verifications are cancelled or
    // their verdicts discarded, and nothing is established.
    assert!(server.sessions().await.is_empty());
    // The server is unharmed: alice can still join.
    let (_alice, answer) = hello(&server, "alice", ALICE_SECRET.as_bytes()).await;
    assert!(matches!(answer, Some(Frame::Welcome(_))), "{answer:?}");
}

#[tokio::test]
async fn a_server_with_a_broken_auth_file_does_not_start() {
    let scratch = Scratch::new("broken");
    let auth_path = scratch.path("auth");
    std::fs::write(&auth_path, "# ok\nalice:$argon2id$nonsense\n").expect("written");
    let config = config_with(AuthConfig {
        auth_file: Some(auth_path.clone()),
        ..AuthConfig::default()
    });
    let error = lubdub::server::start(
        config,
        std::sync::Arc::new(lubdub::server::InMemoryRegistry::new()),
    )
    .expect_err("refuses to start");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("{}, line 2: ", auth_path.display())),
        "{text}"
    );
}

#[test]
fn the_binary_mints_secrets_and_tokens_and_the_server_checks_them() {
    let scratch = Scratch::new("binary");
    let secret = scratch.path("token.secret");
    let auth = scratch.path("auth");
    let (secret, auth) = (
        secret.to_str().expect("UTF-8"),
        auth.to_str().expect("UTF-8"),
    );
    run_ok(&["token", "--new-secret", secret]);
    let token = run_ok(&[
        "token",
        "--secret-file",
        secret,
        "--name",
        "alice",
        "--ttl",
        "1h",
    ]);
    std::fs::write(scratch.path("alice.token"), &token).expect("written");
    let bob_secret = run_ok(&["passwd", "--file", auth, "--name", "bob"]);
    std::fs::write(scratch.path("bob.secret"), &bob_secret).expect("written");

    let (mut server, listen, _admin) = start_server_saying(
        &["--token-secret", secret, "--auth-file", auth],
        "credentials required",
    );
    let alice_file = scratch.path("alice.token");
    let mut alice = common::process::client(
        &listen,
        "alice",
        &["--credential-file", alice_file.to_str().expect("UTF-8")],
    );
    server.expect_stderr("joined name=alice");
    // bob's secret through the environment.
    let mut bob = Proc::spawn(
        lubdub()
            .args(["client", "--server", &listen, "--name", "bob"])
            .env("LUBDUB_CREDENTIAL", bob_secret.trim()),
    );
    bob.expect_stderr("connected to");
    server.expect_stderr("joined name=bob");
    alice.type_line("hello bob");
    assert_eq!(bob.expect_stdout("hello"), "[alice] hello bob");

    // alice's token does not make anyone bob, and bob stays.
    let mut impostor = Proc::spawn(
        lubdub()
            .args(["client", "--server", &listen, "--name", "bob"])
            .args(["--credential-file", alice_file.to_str().expect("UTF-8")]),
    );
    impostor.expect_stderr(
        "server rejected the session: token was issued for another name (unauthorized)",
    );
    assert!(!impostor.wait().success());
    server.expect_stderr("handshake refused: token was issued for another name");
    let mut wrong = Proc::spawn(
        lubdub()
            .args(["client", "--server", &listen, "--name", "bob"])
            .env("LUBDUB_CREDENTIAL", "a-long-but-wrong-secret"),
    );
    wrong.expect_stderr(
        "server rejected the session: no valid credential for name bob (unauthorized)",
    );
    server.expect_stderr("handshake refused: no valid credential for name bob");
    alice.type_line("still there?");
    assert_eq!(bob.expect_stdout("still"), "[alice] still there?");
}

/// One source cannot fill the verifier queue: beyond its share, its HELLOs
/// with secrets are answered REJECT `server_busy` at once, while a client
/// from another address is still verified. Catches a queue without a
/// per-source share, where one host could lock every auth-file user out.
#[tokio::test]
async fn one_source_cannot_fill_the_verifier_queue() {
    let scratch = Scratch::new("share");
    let (_, auth) = credentials(&scratch);
    let server = TestServer::start(config_with(AuthConfig {
        verifier_threads: 1,
        ..auth
    }))
    .await;
    // 16 HELLOs with wrong secrets from 127.0.0.1, all sent before any
    // answer is read: at most 8 (the share) are queued at once.
    let mut hostile = Vec::new();
    for _ in 0..16 {
        let mut conn = RawConn::connect(server.addr).await;
        conn.send(&hello_with("alice", b"alice-has-a-long-secreT"))
            .await;
        hostile.push(conn);
    }
    let mut busy = 0;
    for conn in &mut hostile {
        match conn.next_frame().await {
            Some(Frame::Reject(reason)) if reason.code == ReasonCode::ServerBusy => {
                assert!(reason.text.contains("from this address"), "{}", reason.text);
                assert!(reason.text.contains("retry in"), "{}", reason.text);
                busy += 1;
            }
            Some(Frame::Reject(reason)) => assert_eq!(reason.code, ReasonCode::Unauthorized),
            other => panic!("expected a REJECT, got {other:?}"),
        }
    }
    // Without a share all 16 would fit the queue (1,024) and none be
    // refused; with it, about 8 are (fewer if the thread finished some of
    // the first while the rest were sent: each takes about 12 ms).
    assert!(busy >= 1, "none refused for the share");
    // Another address is verified meanwhile.
    let other = tokio::net::TcpSocket::new_v4().expect("socket");
    other
        .bind("127.0.0.2:0".parse().expect("address"))
        .expect("bind 127.0.0.2");
    let stream = other.connect(server.addr).await.expect("connects");
    let mut alice = RawConn::from_stream(stream);
    alice
        .send(&hello_with("alice", ALICE_SECRET.as_bytes()))
        .await;
    assert!(
        matches!(alice.next_frame().await, Some(Frame::Welcome(_))),
        "verified although 127.0.0.1 kept its share busy"
    );
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .expect("exists")
        .permissions()
        .mode()
        & 0o777
}

/// Secret files come out of the binary with mode 0600, even under a umask
/// of 000 and when `passwd` rewrites a file that was 0644; a missing
/// directory is named with the command that makes it.
#[test]
fn the_binary_writes_secret_files_readable_by_their_owner_only() {
    let scratch = Scratch::new("modes");
    let secret = scratch.path("token.secret");
    let under_umask_000 = |command: &str| {
        let status = std::process::Command::new("sh")
            .args(["-c", &format!("umask 000 && exec \"$0\" {command}")])
            .arg(lubdub().get_program())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("sh runs");
        assert!(status.success(), "{command}");
    };
    under_umask_000(&format!("token --new-secret {}", secret.display()));
    assert_eq!(mode_of(&secret), 0o600);

    let auth = scratch.path("auth");
    std::fs::write(&auth, "# written by hand, world-readable\n").expect("written");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    under_umask_000(&format!("passwd --file {} --name bob", auth.display()));
    assert_eq!(mode_of(&auth), 0o600);
    assert!(std::fs::read_to_string(&auth)
        .expect("reads")
        .contains("# written by hand"));

    let nowhere = scratch.path("etc-lubdub").join("token.secret");
    let output = lubdub()
        .args(["token", "--new-secret", nowhere.to_str().expect("UTF-8")])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let directory = scratch.path("etc-lubdub");
    assert!(
        stderr.contains(&format!(
            "the directory {} does not exist; create it first, e.g. `install -d -m 0700 {}`",
            directory.display(),
            directory.display()
        )),
        "{stderr}"
    );
}

/// The server warns once at start about each secret file group or others
/// may read or write (naming it, its mode and the fix), and starts anyway;
/// a private file gets no warning.
#[test]
fn the_server_warns_about_secret_files_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let scratch = Scratch::new("exposed");
    let secret = scratch.path("token.secret");
    let auth = scratch.path("auth");
    run_ok(&["token", "--new-secret", secret.to_str().expect("UTF-8")]);
    run_ok(&[
        "passwd",
        "--file",
        auth.to_str().expect("UTF-8"),
        "--name",
        "bob",
    ]);
    let flags = [
        "--token-secret",
        secret.to_str().expect("UTF-8"),
        "--auth-file",
        auth.to_str().expect("UTF-8"),
    ];

    // Both 0600, as written: no warning before the start-up is done.
    let (server, _, _) = start_server_saying(&flags, "credentials required");
    assert!(
        !server.transcript.iter().any(|line| line.contains("chmod")),
        "{:#?}",
        server.transcript
    );
    drop(server);

    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let (server, _, _) = start_server_saying(&flags, "credentials required");
    let warnings: Vec<&String> = server
        .transcript
        .iter()
        .filter(|line| line.contains("WARN") && line.contains("chmod 600"))
        .collect();
    let secret = secret.display().to_string();
    let auth = auth.display().to_string();
    assert_eq!(warnings.len(), 2, "{:#?}", server.transcript);
    assert!(
        warnings.iter().any(|line| line.contains(&format!(
            "the --token-secret file {secret} is readable by group and others (mode 0644) and holds a secret; fix with chmod 600 {secret}"
        ))),
        "{warnings:#?}"
    );
    assert!(
        warnings.iter().any(|line| line.contains(&format!(
            "the --auth-file file {auth} is readable and writable by group (mode 0660) and holds a secret; fix with chmod 600 {auth}"
        ))),
        "{warnings:#?}"
    );
}
