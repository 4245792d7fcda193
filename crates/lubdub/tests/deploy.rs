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
