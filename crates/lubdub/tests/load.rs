//! The hold, pump and stall scenarios of `lubdub bench`, run for real:
//! worker processes of the `lubdub` binary against a `lubdub server`
//! process, and in the MQTT dialect against a real Mosquitto (installed by
//! `scripts/test.sh`). Figures are not judged here (that is BENCHMARKS.md's
//! business); what is asserted is that every session is opened and held,
//! heartbeats are acknowledged, the sessions come from the planned source
//! addresses, and the server's costs are read.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::{lubdub, sessions, start_server, LIFT_LIMITS};

use lubdub::bench::{fleet, Dialect, LoadConfig, LoadReport, LoadScenario, StallPlan};

fn load_config(server: SocketAddr, server_pid: u32, dialect: Dialect) -> LoadConfig {
    LoadConfig {
        scenario: LoadScenario::Pump,
        server,
        dialect,
        sessions: 200,
        period: Duration::from_millis(200),
        acks: true,
        warmup: Duration::from_millis(500),
        window: Duration::from_secs(2),
        stall: None,
        server_pid: Some(server_pid),
        // Two workers, so that the split and the source addresses are exercised.
        sessions_per_worker: 100,
        source_base: Some(Ipv4Addr::new(127, 0, 0, 2)),
        connect_concurrency: 50,
        handshake_timeout: Duration::from_secs(5),
        connect_attempts: 3,
        worker_program: PathBuf::from(env!("CARGO_BIN_EXE_lubdub")),
        name_prefix: format!("load{}", std::process::id()),
    }
}

fn run(config: &LoadConfig) -> LoadReport {
    let mut events = Vec::new();
    let report = fleet::run(config, |event| events.push(event)).expect("the scenario runs");
    assert!(
        matches!(
            events.first(),
            Some(fleet::FleetEvent::Planned { workers: 2, .. })
        ),
        "{events:?}"
    );
    report
}

/// Every session held through the window, acknowledged at about the
/// configured rate, with round trips and server costs reported.
fn assert_held_and_acknowledged(report: &LoadReport, config: &LoadConfig) {
    let text = report.to_text();
    assert_eq!(report.established, config.sessions, "{text}");
    assert_eq!(report.handshake_failed, 0, "{text}");
    assert_eq!(report.sessions_ended, 0, "{text}");
    assert_eq!(report.sessions_open, config.sessions, "{text}");
    let expected = config.sessions as f64 * report.window_s / config.period.as_secs_f64();
    // Generous: a shared 2-core machine may delay some beats, never add any.
    let acked = report.heartbeats_acked as f64;
    assert!(
        acked > 0.6 * expected && acked < 1.1 * expected,
        "{acked} acks, about {expected} expected: {text}"
    );
    assert!(report.round_trip.is_some(), "{text}");
    let cost = report.server.expect("--server-pid was given");
    assert!(cost.cpu_s > 0.0, "{text}");
    assert!(cost.cpu_us_per_heartbeat.is_some(), "{text}");
    assert!(cost.rss_after_kib > 0.0, "{text}");
    assert_eq!(
        report.settings.sources,
        ["127.0.0.2", "127.0.0.3"],
        "{text}"
    );
}

#[test]
fn pump_holds_every_lubdub_session_from_two_workers_and_source_addresses() {
    let (server, listen, _admin) =
        start_server(&[&LIFT_LIMITS[..], &["--min-interval", "100ms"]].concat());
    let config = load_config(
        listen.parse().expect("an address"),
        server.child.id(),
        Dialect::Lubdub,
    );
    let report = run(&config);
    assert_held_and_acknowledged(&report, &config);
}

#[test]
fn the_sessions_come_from_the_planned_source_addresses() {
    let (server, listen, admin) =
        start_server(&[&LIFT_LIMITS[..], &["--min-interval", "100ms"]].concat());
    let mut config = load_config(
        listen.parse().expect("an address"),
        server.child.id(),
        Dialect::Lubdub,
    );
    config.window = Duration::from_secs(3);
    let watcher = std::thread::spawn(move || {
        // Poll the admin API while the run holds its sessions.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let listing = sessions(&admin, true);
            let from_2 = listing.matches("\"127.0.0.2:").count();
            let from_3 = listing.matches("\"127.0.0.3:").count();
            if from_2 + from_3 == 200 {
                return (from_2, from_3);
            }
            assert!(
                Instant::now() < deadline,
                "never saw 200 sessions: {listing}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let report = run(&config);
    assert_eq!(report.established, 200, "{}", report.to_text());
    assert_eq!(
        watcher.join().expect("the watcher ends"),
        (100, 100),
        "each worker connects from its own address"
    );
}

#[test]
fn a_stopped_and_resumed_server_evicts_none_of_the_benchmark_sessions() {
    let (server, listen, _admin) =
        start_server(&[&LIFT_LIMITS[..], &["--min-interval", "100ms"]].concat());
    let mut config = load_config(
        listen.parse().expect("an address"),
        server.child.id(),
        Dialect::Lubdub,
    );
    config.scenario = LoadScenario::Stall;
    config.period = Duration::from_millis(100);
    config.window = Duration::from_secs(3);
    // Stopped for 2.4 deadlines (100 ms pings ask for 125 ms × 5 = 625 ms).
    config.stall = Some(StallPlan {
        after: Duration::from_millis(500),
        stopped_for: Duration::from_millis(1500),
    });
    let report = run(&config);
    let text = report.to_text();
    let stopped = report.stopped_s.expect("a stall run reports it");
    assert!(stopped >= 1.5, "{text}");
    assert_eq!(report.established, 200, "{text}");
    assert_eq!(report.sessions_ended, 0, "nobody evicted: {text}");
    let rtt = report.round_trip.expect("round trips");
    assert!(
        rtt.max_ms >= 1000.0,
        "PINGs sent during the stop were answered after it: {text}"
    );
}

/// A Mosquitto broker on a free loopback port, stopped when dropped.
struct Mosquitto {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: PathBuf,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("lubdub-mosquitto-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_connections -1\n\
                 persistence false\nlog_type error\n"
            ),
        )
        .expect("config written");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/test.sh installs it)");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[test]
fn the_mqtt_dialect_drives_a_real_mosquitto() {
    let broker = Mosquitto::start();
    let mut config = load_config(broker.addr, broker.child.id(), Dialect::Mqtt);
    // MQTT keep-alive is in whole seconds; a PINGREQ each second.
    config.period = Duration::from_secs(1);
    config.window = Duration::from_secs(3);
    let report = run(&config);
    assert_held_and_acknowledged(&report, &config);
}

#[test]
fn the_command_line_prints_a_json_report() {
    let (server, listen, _admin) = start_server(&LIFT_LIMITS);
    let output = lubdub()
        .args([
            "bench",
            "hold",
            "--server",
            &listen,
            "--sessions",
            "20",
            "--period",
            "500ms",
            "--warmup",
            "500ms",
            "--duration",
            "1s",
            "--server-pid",
            &server.child.id().to_string(),
            "--json",
        ])
        .output()
        .expect("lubdub bench runs");
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&json).expect("JSON on stdout");
    assert_eq!(report["established"], 20, "{json}");
    assert_eq!(report["settings"]["scenario"], "hold", "{json}");
    assert!(
        report["server"]["rss_per_session_bytes"].is_number(),
        "{json}"
    );
}
