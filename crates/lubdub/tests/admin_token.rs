//! The admin API's bearer token (`--admin-token-file`): every route but
//! `/healthz` needs it, `lubdub sessions` presents it, and the server will
//! not open its admin API off the loopback address without one.

mod common;

use std::process::Command;

use common::process::{lubdub, start_server, Proc};
use common::Scratch;

const TOKEN: &str = "7f3a9c1e5b2d8f604a1c3e5b7d9f2a4c";

/// Status code and body of `GET path`, as curl sees them.
fn curl(admin: &str, path: &str, headers: &[&str]) -> (u16, String) {
    let mut command = Command::new("curl");
    command.args(["-sS", "-w", "\n%{http_code}"]);
    for header in headers {
        command.args(["-H", header]);
    }
    let output = command
        .arg(format!("http://{admin}{path}"))
        .output()
        .expect("curl runs");
    let text = String::from_utf8(output.stdout).expect("UTF-8");
    let (body, status) = text.rsplit_once('\n').expect("a status line");
    (status.parse().expect("a status"), body.to_owned())
}

#[test]
fn every_route_but_healthz_needs_the_token() {
    let scratch = Scratch::new("admin_token_routes");
    let token_file = scratch.path("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("written");
    let token_path = token_file.to_str().expect("UTF-8 path");
    let (_server, _, admin) = start_server(&["--admin-token-file", token_path]);

    assert_eq!(curl(&admin, "/healthz", &[]).0, 200);
    for path in ["/sessions", "/metrics", "/sessions?name=x"] {
        let (status, body) = curl(&admin, path, &[]);
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(body.contains("needs a token"), "{body}");
        let (status, body) = curl(
            &admin,
            path,
            &["Authorization: Bearer not-the-token-at-all"],
        );
        assert_eq!(status, 401, "{path} with a wrong token: {body}");
        let bearer = format!("Authorization: Bearer {TOKEN}");
        let (status, body) = curl(&admin, path, &[&bearer]);
        assert_eq!(status, 200, "{path} with the token: {body}");
    }

    // `lubdub sessions` says what is missing, then works with the file.
    let refused = lubdub()
        .args(["sessions", "--admin", &admin])
        .env_remove("LUBDUB_ADMIN_TOKEN_FILE")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("needs a token: give --admin-token-file"),
        "{stderr}"
    );
    let listed = lubdub()
        .args([
            "sessions",
            "--admin",
            &admin,
            "--admin-token-file",
            token_path,
        ])
        .output()
        .expect("runs");
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(String::from_utf8_lossy(&listed.stdout).contains("NAME"));
}

#[test]
fn an_admin_api_off_loopback_needs_a_token_and_a_bad_token_file_is_named() {
    let exposed = lubdub()
        .args(["server", "--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
        .env_remove("LUBDUB_ADMIN_TOKEN_FILE")
        .output()
        .expect("runs");
    assert!(!exposed.status.success());
    let stderr = String::from_utf8_lossy(&exposed.stderr);
    assert!(
        stderr.contains("admin is set but admin-token-file is not"),
        "{stderr}"
    );

    let scratch = Scratch::new("admin_token_bad_file");
    let short = scratch.path("short.token");
    std::fs::write(&short, "secret\n").expect("written");
    let mut server = Proc::spawn(lubdub().args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        short.to_str().expect("UTF-8 path"),
    ]));
    server.expect_stderr("shorter than 16 characters");
    assert!(!server.wait().success());
}
