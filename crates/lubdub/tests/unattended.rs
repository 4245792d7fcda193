//! `lubdub client` as a device agent or a service runs it: no standard
//! input, started before its server, kept through restarts, and ended only
//! by a signal or a refusal that reconnecting cannot cure, each with its
//! own exit status.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::{client, field, lubdub, sessions, start_server, Proc};

/// Time allowed between a refusal and the client's exit: "at once", on two
/// cores shared with other tests.
const AT_ONCE: Duration = Duration::from_secs(2);

fn unattended(server: &str, name: &str, extra: &[&str]) -> Proc {
    Proc::spawn_without_stdin(
        lubdub()
            .args(["client", "--server", server, "--name", name])
            .args(extra),
    )
}

fn server_on(listen: &str, extra: &[&str]) -> Proc {
    let mut server = Proc::spawn(
        lubdub()
            .args(["server", "--listen", listen, "--admin", "127.0.0.1:0"])
            .args(extra),
    );
    server.expect_stderr("lubdub server ready");
    server
}

/// A port nothing listens on (yet).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// The session id of `name` in the server's listing.
fn session_of(admin: &str, name: &str) -> u64 {
    let listing: serde_json::Value =
        serde_json::from_str(&sessions(admin, true)).expect("JSON listing");
    listing
        .as_array()
        .expect("an array")
        .iter()
        .find(|session| session["name"] == name)
        .and_then(|session| session["session_id"].as_u64())
        .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
}

#[test]
fn a_client_without_stdin_keeps_its_session_and_comes_back_after_a_restart() {
    let (mut server, listen, admin) = start_server(&["--interval", "100ms", "--max-missed", "3"]);
    let mut agent = unattended(&listen, "dev1", &["--interval", "100ms"]);
    agent.expect_stderr("running unattended as dev1");
    agent.expect_stderr("connected to");
    server.expect_stderr("joined name=dev1");
    let session = session_of(&admin, "dev1");
    // Ten intervals, three times the deadline: end of input is not `quit`.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        agent.child.try_wait().expect("try_wait").is_none(),
        "the client exited: {:?}",
        agent.transcript
    );
    assert_eq!(session_of(&admin, "dev1"), session, "the same session");
    let dropped: Vec<String> = server
        .lines_so_far()
        .into_iter()
        .filter(|line| line.contains("dropped name=dev1"))
        .collect();
    assert!(dropped.is_empty(), "{dropped:?}");

    server.signal("-KILL");
    server.wait();
    agent.expect_stderr("server lost");
    let mut restarted = server_on(&listen, &["--interval", "100ms", "--max-missed", "3"]);
    restarted.expect_stderr("joined name=dev1");
    agent.expect_stderr("connected to");

    agent.signal("-TERM");
    let status = agent.wait();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");
    let line = restarted.expect_stderr("dropped name=dev1");
    assert_eq!(field(&line, "reason"), "quit", "{line}");
}

#[test]
fn a_client_started_before_its_server_connects_when_it_comes_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut agent = unattended(&listen, "early", &[]);
    agent.expect_stderr("cannot connect to");
    agent.expect_stderr("retrying in");
    let mut server = server_on(&listen, &[]);
    server.expect_stderr("joined name=early");
    agent.expect_stderr("connected to");

    // With a limit, it gives up, with its own status.
    let nowhere = format!("127.0.0.1:{}", free_port());
    let mut impatient = unattended(&nowhere, "impatient", &["--give-up-after", "500ms"]);
    let started = Instant::now();
    let status = impatient.wait();
    assert_eq!(status.code(), Some(3), "{:?}", impatient.lines_so_far());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "gave up after {waited:?}, before its time"
    );
    assert!(waited < Duration::from_millis(500) + AT_ONCE, "{waited:?}");
    let said = impatient.expect_stderr("gave up");
    assert!(said.contains("cannot connect to"), "{said}");
}

/// Waits for `process` to exit and returns its status, asserting that it
/// came within [`AT_ONCE`] of `since`.
fn exits_at_once(process: &mut Proc, since: Instant) -> Option<i32> {
    let status = process.wait();
    assert!(
        since.elapsed() < AT_ONCE,
        "exited {:?} after the refusal",
        since.elapsed()
    );
    status.code()
}

#[test]
fn a_final_refusal_ends_the_client_at_once_with_its_exit_status() {
    let (mut server, listen, _) = start_server(&[]);

    // Taken over, in chat mode with standard input open: the client must
    // not wait for a line to notice it stopped.
    let mut first = client(&listen, "dev1", &[]);
    server.expect_stderr("joined name=dev1");
    let second = client(&listen, "dev1", &[]);
    let refused_at = Instant::now();
    first.expect_stderr("taken_over");
    assert_eq!(exits_at_once(&mut first, refused_at), Some(6));
    drop(second);

    // A name against the rules is refused before any connect.
    let mut bad = unattended(&listen, "no\u{202e}name", &[]);
    assert_eq!(exits_at_once(&mut bad, Instant::now()), Some(5));

    // A credential the server does not accept.
    let scratch = std::env::temp_dir().join(format!("lubdub-unattended-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("scratch directory");
    let auth = scratch.join("auth");
    let auth = auth.to_str().expect("UTF-8");
    let made = Command::new(lubdub().get_program())
        .args(["passwd", "--file", auth, "--name", "alice"])
        .output()
        .expect("passwd runs");
    assert!(made.status.success(), "{made:?}");
    let (guarded, guarded_listen, _) =
        common::process::start_server_saying(&["--auth-file", auth], "credentials required");
    let mut impostor = Proc::spawn_without_stdin(
        lubdub()
            .args(["client", "--server", &guarded_listen, "--name", "alice"])
            .env("LUBDUB_CREDENTIAL", "not-alice's-secret"),
    );
    let started = Instant::now();
    assert_eq!(exits_at_once(&mut impostor, started), Some(4));
    impostor.expect_stderr("unauthorized");
    guarded.signal("-TERM");
    let _ = std::fs::remove_dir_all(&scratch);
    server.signal("-TERM");
}
