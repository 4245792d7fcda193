//! The `lubdub` binary as a user runs it: real processes, real ports.

mod common;

use std::time::{Duration, Instant};

use common::process::{client, field, lubdub, sessions, start_server, Proc};

#[test]
fn two_clients_chat_through_the_server_and_are_listed() {
    let (mut server, listen, admin) = start_server(&[]);
    let mut alice = client(&listen, "alice", &[]);
    let mut bob = client(&listen, "bob", &[]);
    let mut dave = client(&listen, "dave", &["--timestamps"]);
    server.expect_stderr("joined name=alice");
    server.expect_stderr("joined name=bob");
    server.expect_stderr("joined name=dave");

    let sent_at = std::time::SystemTime::now();
    alice.type_line("hello everyone");
    assert_eq!(bob.expect_stdout("hello"), "[alice] hello everyone");
    // Stamped as the server's log is: UTC, to the microsecond.
    let stamped = dave.expect_stdout("hello");
    let (stamp, line) = stamped.split_once(' ').expect("a stamp, then the line");
    assert_eq!(line, "[alice] hello everyone");
    let at = humantime::parse_rfc3339(stamp).expect("an RFC 3339 time");
    assert!(stamp.ends_with('Z') && stamp.len() == "2026-12-02T05:43:47.831639Z".len());
    assert!(at
        .duration_since(sent_at)
        .is_ok_and(|after| after < Duration::from_secs(5)));
    drop(dave);
    // Gone before the listing below, which must not show it.
    server.expect_stderr("dropped name=dave");
    // A direct message is marked as such; a broadcast is not.
    bob.type_line("@alice hi alice");
    assert_eq!(alice.expect_stdout("hi"), "[bob → alice] hi alice");
    bob.type_line("@carol are you there?");
    bob.expect_stderr("no session named carol");

    let table = sessions(&admin, false);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines[1].starts_with("alice") && lines[1].contains("alive"),
        "{table}"
    );
    assert!(lines[2].starts_with("bob"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&sessions(&admin, true)).expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(2));
    for key in [
        "name",
        "addr",
        "state",
        "missed",
        "last_seen_ms",
        "connected_at",
        "epoch",
    ] {
        assert!(json[0].get(key).is_some(), "missing {key} in {json}");
    }

    alice.type_line("quit");
    assert!(alice.wait().success());
    server.expect_stderr("dropped name=alice");
    let line = server.transcript.last().cloned().unwrap_or_default();
    assert!(line.contains("reason=quit"), "{line}");

    server.signal("-TERM");
    bob.expect_stderr("server lost");
    assert!(server.wait().success(), "SIGTERM is a clean exit");
}

#[test]
fn a_stopped_client_is_suspect_then_dropped_and_reconnects_when_resumed() {
    let (mut server, listen, admin) = start_server(&["--interval", "200ms", "--max-missed", "5"]);
    let mut hung = client(&listen, "hung", &[]);
    server.expect_stderr("joined name=hung");
    // Ctrl-Z: the process stops but its kernel keeps the socket open.
    hung.signal("-STOP");
    let stopped_at = Instant::now();
    server.expect_stderr("suspect name=hung");
    let table = sessions(&admin, false);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("hung") && l.contains("suspect")),
        "{table}"
    );
    let dropped = server.expect_stderr("dropped name=hung");
    assert!(dropped.contains("reason=timeout"), "{dropped}");
    let silent_ms: u64 = field(&dropped, "silent_ms").parse().expect("a number");
    assert!(
        (1000..1100).contains(&silent_ms),
        "dropped after {silent_ms} ms of silence"
    );
    assert!(stopped_at.elapsed() >= Duration::from_millis(1000) - Duration::from_millis(200));
    assert!(!sessions(&admin, false).contains("hung"));
    // Stopped for twice its own deadline (5 × 200 ms), then fg: it reads the
    // server's BYE before judging the server, and comes back under the same
    // name at once.
    std::thread::sleep(
        (stopped_at + Duration::from_secs(2)).saturating_duration_since(Instant::now()),
    );
    hung.signal("-CONT");
    let resumed = Instant::now();
    let lost = hung.expect_stderr("server lost");
    assert!(
        lost.contains("BYE") && lost.contains("timeout"),
        "reads the server's BYE before judging: {lost}"
    );
    hung.expect_stderr("connected to");
    server.expect_stderr("joined name=hung");
    assert!(
        resumed.elapsed() < Duration::from_millis(700),
        "rejoined {:?} after the resume; the first retry waits at most 200 ms",
        resumed.elapsed()
    );
    assert!(
        !hung
            .transcript
            .iter()
            .any(|line| line.contains("no answer")),
        "the client blamed the server for its own stall: {:?}",
        hung.transcript
    );
}

#[test]
fn a_client_reconnects_to_a_server_killed_and_restarted_on_the_same_port() {
    let (mut server, listen, _) = start_server(&["--interval", "100ms", "--max-missed", "3"]);
    let port = listen.rsplit(':').next().expect("a port").to_owned();
    let mut alice = client(&listen, "alice", &[]);
    server.expect_stderr("joined name=alice");
    server.signal("-KILL");
    server.wait();
    alice.expect_stderr("server lost");
    alice.expect_stderr("reconnecting in");
    // A line typed meanwhile is not kept for later, and the user is told.
    alice.type_line("anyone there?");
    alice.expect_stderr("not sent: not connected to the server");
    let mut restarted = Proc::spawn(lubdub().args([
        "server",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin",
        "127.0.0.1:0",
    ]));
    restarted.expect_stderr("lubdub server ready");
    restarted.expect_stderr("joined name=alice");
    alice.expect_stderr("connected to");
}

#[test]
fn every_subcommand_explains_its_flags() {
    for (subcommand, flags) in [
        (
            "server",
            &[
                "--listen",
                "--admin",
                "--interval",
                "--max-missed",
                "--handshake-timeout",
                "--detector",
                "--phi-threshold",
                "--phi-min-std-dev",
                "--phi-acceptable-pause",
                "--tcp-keepalive",
                "--tcp-user-timeout",
                "--log-format",
                "--tls-client-cert-names",
                "--config",
                "LUBDUB_AUTH_FILE",
                "LUBDUB_TOKEN_SECRET",
                "LUBDUB_TLS_KEY",
            ][..],
        ),
        (
            "client",
            &["--server", "--name", "--interval", "--one-way", "--raw"][..],
        ),
        ("sessions", &["--admin", "--json", "--raw"][..]),
        (
            "simulate",
            &[
                "--seed",
                "--interval",
                "--acceptable-pause",
                "--svg",
                "--json",
            ][..],
        ),
    ] {
        let output = lubdub()
            .args([subcommand, "--help"])
            .output()
            .expect("help runs");
        assert!(output.status.success());
        let help = String::from_utf8(output.stdout).expect("UTF-8");
        for flag in flags {
            assert!(
                help.contains(flag),
                "{subcommand} --help lacks {flag}:\n{help}"
            );
        }
    }
}

#[test]
fn bad_arguments_get_a_clear_error() {
    let output = lubdub()
        .args(["server", "--interval", "3 parsecs"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("3s, 500ms"), "{stderr}");

    let output = lubdub()
        .args(["client", "--name", "bad name", "--server", "127.0.0.1:1"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid name"), "{stderr}");

    // Each cause said once, with the fix where there is one.
    let output = lubdub()
        .args(["client", "--name", "alice", "--server", "127.0.0.1:1"])
        .args(["--give-up-after", "100ms"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(3), "gave up");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.contains("cannot connect to 127.0.0.1:1: "), "{stderr}");
    assert_eq!(last.matches("refused").count(), 1, "said once: {stderr}");

    let output = lubdub()
        .args(["client", "--name", "alice", "--server", "localhost"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no port in \"localhost\"; write localhost:7070"),
        "{stderr}"
    );

    let (_holder, listen, _) = start_server(&[]);
    let output = lubdub()
        .args(["server", "--listen", &listen, "--admin", "localhost:0"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {listen}: ")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("in use").count(), 1, "said once: {stderr}");

    let output = lubdub()
        .args(["server", "--min-interval", "5s", "--interval", "1s"])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("min-interval"));
}

/// CPU time (user + system) the process has used, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc readable");
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the whole line.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn a_peer_that_holds_its_socket_after_a_farewell_costs_the_server_no_cpu() {
    use std::io::Read;
    let (server, listen, _) = start_server(&["--handshake-timeout", "100ms"]);
    // Never says HELLO: gets REJECT, then holds its end open and reads
    // nothing more while the server lingers (2 s) waiting for its close.
    let mut silent = std::net::TcpStream::connect(&listen).expect("connects");
    let mut reject = [0u8; 5];
    silent.read_exact(&mut reject).expect("a REJECT arrives");
    assert_eq!(reject[4], 3, "REJECT kind");
    let before = cpu_ticks(server.child.id());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(server.child.id()) - before;
    // An idle server uses next to nothing; the bug this guards against (a
    // `shutdown` on every writable edge, each raising the next) used a
    // whole core: 100 ticks a second.
    assert!(
        used <= 20,
        "the server used {used} ticks of CPU in 1 s while lingering"
    );
    drop(silent);
}

/// A `lubdub bench hold --json` report with only the fields the plot reads
/// set to anything interesting.
#[cfg(feature = "plot")]
fn hold_report(dialect: &str, bytes_per_session: f64, us_per_heartbeat: f64) -> String {
    serde_json::json!({
        "settings": {
            "scenario": "hold", "dialect": dialect, "server": "127.0.0.1:1883",
            "sessions": 1000, "period_ms": 2400, "acks": true, "warmup_s": 4.8, "workers": 1,
            "sources": ["127.0.0.2"], "server_pid": 1
        },
        "established": 1000, "handshake_failed": 0, "handshake_errors": [],
        "connect_s": 0.5, "window_s": 5.0, "stopped_s": null,
        "heartbeats_sent": 2000, "heartbeats_acked": 2000, "acked_per_s": 400.0,
        "round_trip": { "p50_ms": 0.1, "p99_ms": 0.5, "max_ms": 1.0 },
        "sessions_ended": 0, "endings": [], "sessions_open": 1000,
        "server": {
            "rss_before_kib": 4000.0, "rss_after_kib": 9000.0,
            "rss_per_session_bytes": bytes_per_session, "cpu_s": 0.02,
            "cpu_percent_of_core": 0.4, "cpu_us_per_heartbeat": us_per_heartbeat
        }
    })
    .to_string()
}

#[cfg(feature = "plot")]
#[test]
fn bench_plot_writes_both_panels_from_report_files() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let lubdub_report = dir.join("hold-1000-lubdub-1.json");
    let mqtt_report = dir.join("hold-1000-mosquitto-1.json");
    std::fs::write(&lubdub_report, hold_report("lubdub", 700.0, 10.0)).expect("written");
    std::fs::write(&mqtt_report, hold_report("mqtt", 9000.0, 30.0)).expect("written");
    let svg = dir.join("plot.svg");

    let output = lubdub()
        .args(["bench", "plot", "--output"])
        .args([&svg, &lubdub_report, &mqtt_report])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).expect("the SVG is written");
    assert!(
        drawn.contains("Server memory per session (hold)"),
        "{drawn}"
    );
    assert!(drawn.contains("Server CPU per heartbeat"), "{drawn}");
    assert!(drawn.contains("Mosquitto (mqtt), hold: a heartbeat every 2.4 s"));

    // Anything but a report is refused with its name.
    let output = lubdub()
        .args(["bench", "plot", "--output"])
        .args([&svg, &svg])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plot.svg is not a"), "{stderr}");
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}
