//! Running lubdub for real (issue 13, item 4): JSON logs for collectors,
//! shell completions and the man page, and `deploy/lubdub.service` run as
//! systemd would run it.

mod common;

use common::process::{client, lubdub, Proc};

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

/// Runs the binary with `args`, expecting success; returns its stdout.
fn stdout_of(args: &[&str]) -> String {
    let output = lubdub().args(args).output().expect("the binary runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// The subcommands a user sees in `lubdub --help`.
const SUBCOMMANDS: [&str; 9] = [
    "server",
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
    let help = stdout_of(&["--help"]);
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
        let script = stdout_of(&["completions", shell]);
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
    let page = stdout_of(&["man"]);
    assert!(page.contains(".TH lubdub 1"), "{page}");
    for subcommand in SUBCOMMANDS {
        assert!(
            page.contains(&format!("lubdub\\-{subcommand}(1)")),
            "lubdub(1) does not name {subcommand}:\n{page}"
        );
        let own = stdout_of(&["man", subcommand]);
        assert!(
            own.contains(&format!(".TH lubdub-{subcommand} 1")),
            "{subcommand}:\n{own}"
        );
    }
    let server = stdout_of(&["man", "server"]);
    for flag in [
        "\\-\\-listen",
        "\\-\\-log\\-format",
        "\\-\\-shutdown\\-timeout",
    ] {
        assert!(server.contains(flag), "lubdub-server(1) lacks {flag}");
    }
    let output = lubdub().args(["man", "serve"]).output().expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no subcommand \"serve\"") && stderr.contains("server, client"),
        "{stderr}"
    );
}
