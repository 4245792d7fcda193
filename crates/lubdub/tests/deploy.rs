//! Running lubdub for real (issue 13, items 3 and 4): JSON logs for
//! collectors, shell completions and the man page, and
//! `deploy/lubdub.service` with `deploy/lubdub.toml` run as systemd would
//! run them, reload included.

mod common;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Instant;

use common::process::{client, lubdub, run_ok, sessions, Proc, PATIENCE};
use common::Scratch;

/// The first stderr line of `process` containing `needle`, parsed as JSON.
fn json_line(process: &mut Proc, needle: &str) -> serde_json::Value {
    let line = process.expect_stderr(needle);
    serde_json::from_str(&line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"))
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_fields_at_the_top() {
    let mut server = Proc::spawn(lubdub().args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]));
    let ready = json_line(&mut server, "lubdub server ready");
    assert_eq!(ready["level"], "INFO", "{ready}");
    assert_eq!(ready["message"], "lubdub server ready", "{ready}");
    assert!(ready["timestamp"].is_string(), "{ready}");
    assert!(ready["target"].is_string(), "{ready}");
    let listen = ready["listen"].as_str().expect("listen is a string");
    assert!(listen.starts_with("127.0.0.1:"), "{ready}");

    let _alice = client(listen, "alice", &[]);
    let joined = json_line(&mut server, "\"joined\"");
    assert_eq!(joined["name"], "alice", "{joined}");
    assert!(joined["session"].is_number(), "{joined}");

    server.signal("-TERM");
    assert!(server.wait().success(), "SIGTERM is a clean exit");
}

/// The subcommands a user sees in `lubdub --help`.
const SUBCOMMANDS: [&str; 10] = [
    "server",
    "config",
    "client",
    "sessions",
    "bench",
    "simulate",
    "token",
    "passwd",
    "completions",
    "man",
];

#[test]
fn completions_are_printed_for_every_shell_and_found_from_help() {
    let help = run_ok(&["--help"]);
    assert!(
        help.contains("completions") && help.contains("man"),
        "{help}"
    );
    for (shell, marker) in [
        ("bash", "_lubdub()"),
        ("zsh", "#compdef lubdub"),
        ("fish", "complete -c lubdub"),
        ("elvish", "edit:completion:arg-completer[lubdub]"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let script = run_ok(&["completions", shell]);
        assert!(
            script.contains(marker),
            "{shell} lacks {marker:?}:\n{script}"
        );
        // Flags of subcommands are completed too.
        assert!(script.contains("log-format"), "{shell}:\n{script}");
    }
    let output = lubdub()
        .args(["completions", "tcsh"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("possible values: bash"), "{stderr}");
}

#[test]
fn the_man_page_names_every_subcommand_and_each_has_a_page_of_its_own() {
    let page = run_ok(&["man"]);
    assert!(page.contains(".TH lubdub 1"), "{page}");
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("lubdub\\-{subcommand}(1)")),
            "lubdub(1) does not name {subcommand}:\n{page}"
        );
        let own = run_ok(&["man", subcommand]);
        assert!(
            own.contains(&format!(".TH lubdub-{subcommand} 1")),
            "{subcommand}:\n{own}"
        );
    }
    let server = run_ok(&["man", "server"]);
    for flag in [
        "\\-\\-listen",
        "\\-\\-log\\-format",
        "\\-\\-shutdown\\-timeout",
        "\\-\\-config",
    ] {
        assert!(server.contains(flag), "lubdub-server(1) lacks {flag}");
    }
    let output = lubdub().args(["man", "serve"]).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no subcommand \"serve\"") && stderr.contains("server, config, client"),
        "{stderr}"
    );
}

/// The unit under test, from the repository.
const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lubdub.service");

/// The installed binary's path in the unit, replaced by the binary under
/// test (`LUBDUB_BIN` or this build's).
const INSTALLED_BINARY: &str = "/usr/local/bin/lubdub";

/// The installed configuration file's path in the unit, replaced by a copy
/// of `deploy/lubdub.toml` with the addresses below.
const INSTALLED_CONFIG: &str = "/etc/lubdub/lubdub.toml";

/// The example configuration, installed as `INSTALLED_CONFIG`.
const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lubdub.toml");

/// The configuration's addresses, replaced by ephemeral loopback ports so
/// that the test runs beside other servers; nothing else changes.
const ADDRESSES: [(&str, &str); 2] = [
    ("listen = \"0.0.0.0:7070\"", "listen = \"127.0.0.1:0\""),
    ("admin = \"127.0.0.1:7071\"", "admin = \"127.0.0.1:0\""),
];

/// `deploy/lubdub.toml` as README installs it, with the addresses replaced
/// (each must appear once), written into `scratch`.
fn installed_config(scratch: &Scratch) -> String {
    let mut config = std::fs::read_to_string(CONFIG).expect("deploy/lubdub.toml exists");
    for (from, to) in ADDRESSES {
        assert_eq!(
            config.matches(from).count(),
            1,
            "{from} in deploy/lubdub.toml"
        );
        config = config.replace(from, to);
    }
    let path = scratch.path("lubdub.toml");
    std::fs::write(&path, config).expect("configuration written");
    path.to_str().expect("UTF-8 path").to_owned()
}

/// The `[Service]` settings of a unit file: continuation lines joined,
/// comments dropped, every value of a repeated key kept in order.
fn service_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    let mut logical = String::new();
    for line in unit.lines() {
        let line = line.trim();
        if logical.is_empty() && (line.starts_with('#') || line.starts_with(';')) {
            continue;
        }
        if let Some(continued) = line.strip_suffix('\\') {
            logical.push_str(continued);
            logical.push(' ');
            continue;
        }
        logical.push_str(line);
        let whole = std::mem::take(&mut logical);
        if whole.starts_with('[') {
            section = whole;
        } else if let Some((key, value)) = whole.split_once('=') {
            if section == "[Service]" {
                settings
                    .entry(key.trim().to_owned())
                    .or_default()
                    .push(value.trim().to_owned());
            }
        }
    }
    settings
}

/// The one value of `key`.
fn single<'a>(settings: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    match settings.get(key).map(Vec::as_slice) {
        Some([value]) => value,
        other => panic!("the unit should set {key}= once, found {other:?}"),
    }
}

/// `key=` (`ExecStart`, `ExecReload`) as the argument vector systemd would
/// run: `$CREDENTIALS_DIRECTORY` expanded to `credentials`, then the
/// substitutions given, each of which must apply to exactly one argument.
fn command_line(
    settings: &BTreeMap<String, Vec<String>>,
    key: &str,
    credentials: &Path,
    substitutions: &[(&str, &str)],
) -> Vec<String> {
    let exec_start = single(settings, key);
    assert!(
        !exec_start.contains(['"', '\'']),
        "the test splits ExecStart= on white space; quoting would need systemd's rules: {exec_start}"
    );
    let mut arguments: Vec<String> = exec_start
        .split_whitespace()
        .map(|word| {
            word.replace(
                "${CREDENTIALS_DIRECTORY}",
                credentials.to_str().expect("UTF-8 path"),
            )
        })
        .collect();
    for &(from, to) in substitutions {
        let matching: Vec<&mut String> =
            arguments.iter_mut().filter(|word| *word == from).collect();
        assert_eq!(
            matching.len(),
            1,
            "{from} should appear once in {key}={exec_start}"
        );
        for word in matching {
            *word = to.to_owned();
        }
    }
    arguments
}

/// Makes each `LoadCredential=ID:PATH` file in `credentials` as a user
/// following README would make PATH. A credential this test does not know
/// fails it, so that a new one in the unit gets a test.
fn make_credentials(settings: &BTreeMap<String, Vec<String>>, credentials: &Path) {
    for credential in settings.get("LoadCredential").into_iter().flatten() {
        let (id, source) = credential.split_once(':').expect("LoadCredential=ID:PATH");
        let path = credentials.join(id);
        match id {
            "token.secret" => {
                assert_eq!(source, "/etc/lubdub/token.secret");
                run_ok(&["token", "--new-secret", path.to_str().expect("UTF-8")]);
            }
            other => panic!("the unit loads a credential {other:?} this test does not make"),
        }
    }
}

/// Waits for the next datagram on the notify socket: the event the test
/// waits for, with PATIENCE as the bound only reached on failure.
fn next_notification(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(PATIENCE))
        .expect("timeout set");
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .unwrap_or_else(|error| panic!("no notification within {PATIENCE:?}: {error}"));
    String::from_utf8(buffer[..n].to_vec()).expect("UTF-8")
}

/// The address after `after` in a notification's `STATUS=` line.
fn status_address<'a>(notification: &'a str, after: &str) -> &'a str {
    let status = notification
        .lines()
        .find_map(|line| line.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= in {notification:?}"));
    let start = status
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {status:?}"))
        + after.len();
    status[start..]
        .split([',', ' '])
        .next()
        .expect("an address")
}

#[test]
fn the_systemd_unit_runs_notifies_ready_serves_and_stops_in_time() {
    let unit = std::fs::read_to_string(UNIT).expect("deploy/lubdub.service exists");
    let settings = service_settings(&unit);
    assert_eq!(single(&settings, "Type"), "notify");
    let stop_timeout =
        humantime::parse_duration(single(&settings, "TimeoutStopSec")).expect("a duration");

    let scratch = Scratch::new("unit");
    let credentials = scratch.path("credentials");
    std::fs::create_dir_all(&credentials).expect("credentials dir");
    make_credentials(&settings, &credentials);
    let config = installed_config(&scratch);
    let binary = lubdub()
        .get_program()
        .to_str()
        .expect("UTF-8 path")
        .to_owned();
    let arguments = command_line(
        &settings,
        "ExecStart",
        &credentials,
        &[(INSTALLED_BINARY, &binary), (INSTALLED_CONFIG, &config)],
    );
    // The server's own wait at shutdown must fit in the unit's: as the
    // command line and its configuration file set it together.
    assert_eq!(arguments[1], "server");
    let checked = lubdub()
        .args(["config", "check"])
        .args(&arguments[2..])
        .env("CREDENTIALS_DIRECTORY", &credentials)
        .output()
        .expect("config check runs");
    let effective = String::from_utf8_lossy(&checked.stdout);
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    let effective: toml::Table = effective.parse().expect("TOML");
    let shutdown_timeout = effective["shutdown-timeout"]
        .as_str()
        .map(|text| humantime::parse_duration(text).expect("a duration"))
        .expect("a shutdown timeout");
    assert!(
        shutdown_timeout * 2 <= stop_timeout,
        "TimeoutStopSec={stop_timeout:?} leaves too little room for --shutdown-timeout {shutdown_timeout:?}"
    );

    let notify_path = scratch.path("notify");
    let notify = UnixDatagram::bind(&notify_path).expect("notify socket bound");
    let mut server = Proc::spawn(
        std::process::Command::new(&arguments[0])
            .args(&arguments[1..])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("CREDENTIALS_DIRECTORY", &credentials),
    );
    let ready = next_notification(&notify);
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    // READY=1 means both ports serve: a client and the admin API at once.
    let listen = status_address(&ready, "serving on ").to_owned();
    let admin = status_address(&ready, "admin API on ").to_owned();
    let secret = credentials.join("token.secret");
    let token = run_ok(&[
        "token",
        "--secret-file",
        secret.to_str().expect("UTF-8"),
        "--name",
        "alice",
        "--ttl",
        "1h",
    ]);
    let token_file = scratch.path("alice.token");
    std::fs::write(&token_file, token).expect("token written");
    let mut alice = client(
        &listen,
        "alice",
        &["--credential-file", token_file.to_str().expect("UTF-8")],
    );
    server.expect_stderr("joined name=alice");
    assert!(sessions(&admin, false).contains("alice"));
    // `systemctl reload`: the server reads its configuration again and
    // keeps alice's session.
    let pid = server.child.id().to_string();
    let reload = command_line(&settings, "ExecReload", &credentials, &[("$MAINPID", &pid)]);
    let status = std::process::Command::new(&reload[0])
        .args(&reload[1..])
        .status()
        .expect("ExecReload= runs");
    assert!(status.success(), "{reload:?}");
    server.expect_stderr("configuration reloaded");
    assert!(sessions(&admin, false).contains("alice"));

    // A peer that never completes its handshake nor closes: the server
    // must not wait for it past its own timeouts.
    let _stubborn = std::net::TcpStream::connect(&listen).expect("connects");

    server.signal("-TERM");
    let signalled = Instant::now();
    let stopping = next_notification(&notify);
    assert!(
        stopping.lines().any(|line| line == "STOPPING=1"),
        "{stopping:?}"
    );
    alice.expect_stderr("server lost");
    let status = server.wait();
    let took = signalled.elapsed();
    assert_eq!(status.code(), Some(0), "a stop is a clean exit: {status:?}");
    assert!(
        took < stop_timeout,
        "stopped in {took:?}, TimeoutStopSec={stop_timeout:?}"
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(UNIT).expect("deploy/lubdub.service exists");
    // verify checks that the binary exists: point it at the one under test.
    assert!(unit.contains(INSTALLED_BINARY));
    let scratch = Scratch::new("verify");
    let copy = scratch.path("lubdub.service");
    std::fs::write(
        &copy,
        unit.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_lubdub")),
    )
    .expect("unit copied");
    // --man=no: the man page is installed with the binary, not here.
    let output = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (scripts/test.sh installs systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Unknown values are warnings with a zero exit: none is allowed.
    assert!(output.status.success() && said.trim().is_empty(), "{said}");
}
