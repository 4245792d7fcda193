//! Helpers for tests that run the `lubdub` binary as a user would: child
//! processes whose output lines are collected as they come, signals, and
//! the `sessions` subcommand.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const PATIENCE: Duration = Duration::from_secs(15);

/// Flags that lift the limits a load generator trips on purpose: it plays
/// many clients from few source addresses and PINGs faster than the
/// interval calls for (the limits themselves are tested in `faults.rs`).
pub const LIFT_LIMITS: [&str; 6] = [
    "--max-connections-per-ip",
    "0",
    "--accept-rate-per-ip",
    "0",
    "--max-pings-per-interval",
    "0",
];

/// Every fan-out budget lifted: the server-wide memory cap alone stands.
pub const NO_FANOUT_BUDGETS: [&str; 8] = [
    "--max-deliveries-per-sec",
    "0",
    "--max-fanout-bytes-per-sec",
    "0",
    "--max-deliveries-per-sec-total",
    "0",
    "--max-fanout-bytes-per-sec-total",
    "0",
];

/// The binary under test: this build's, or the one `LUBDUB_BIN` names (to
/// run a test against an older build and see it fail there).
pub fn lubdub() -> Command {
    match std::env::var_os("LUBDUB_BIN") {
        Some(binary) => Command::new(binary),
        None => Command::new(env!("CARGO_BIN_EXE_lubdub")),
    }
}

/// Runs the binary with `args` to its end, expecting success; returns its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let output = lubdub().args(args).output().expect("the binary runs");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

/// A child process whose stdout and stderr lines are collected as they come.
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    pub transcript: Vec<String>,
}

fn lines_of(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { return };
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    receiver
}

impl Proc {
    pub fn spawn(command: &mut Command) -> Proc {
        Proc::spawn_logging(command, "info")
    }

    /// Like [`Proc::spawn`], with standard input at /dev/null, as a
    /// service or a container without `-i` runs it.
    pub fn spawn_without_stdin(command: &mut Command) -> Proc {
        Proc::spawn_with(command, "info", Stdio::null())
    }

    /// Like [`Proc::spawn`], with `RUST_LOG` set to `filter`.
    pub fn spawn_logging(command: &mut Command, filter: &str) -> Proc {
        Proc::spawn_with(command, filter, Stdio::piped())
    }

    fn spawn_with(command: &mut Command, filter: &str, stdin: Stdio) -> Proc {
        let mut child = command
            .env("RUST_LOG", filter)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        Proc {
            stdin: child.stdin.take(),
            stdout: lines_of(child.stdout.take().expect("piped")),
            stderr: lines_of(child.stderr.take().expect("piped")),
            child,
            transcript: Vec::new(),
        }
    }

    pub fn expect(&mut self, from_stdout: bool, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let source = if from_stdout {
                &self.stdout
            } else {
                &self.stderr
            };
            match source.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.transcript.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line containing {needle:?}; saw:\n{}",
                    self.transcript.join("\n")
                ),
            }
        }
    }

    pub fn expect_stderr(&mut self, needle: &str) -> String {
        self.expect(false, needle)
    }

    pub fn expect_stdout(&mut self, needle: &str) -> String {
        self.expect(true, needle)
    }

    /// Every stderr line printed so far, without waiting for more.
    pub fn lines_so_far(&mut self) -> Vec<String> {
        while let Ok(line) = self.stderr.try_recv() {
            self.transcript.push(line);
        }
        self.transcript.clone()
    }

    pub fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to stdin");
        stdin.flush().expect("flush");
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "process did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Value of `key=` in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line.find(&format!("{key}=")).expect("field present") + key.len() + 1;
    line[start..].split_whitespace().next().expect("a value")
}

/// Starts `lubdub server` on ephemeral ports; returns it with its two addresses.
pub fn start_server(extra: &[&str]) -> (Proc, String, String) {
    start_server_saying(extra, "first come, first served")
}

/// Like [`start_server`], and waits for a start-up line containing
/// `credentials_line` (which tells whether credentials are required).
pub fn start_server_saying(extra: &[&str], credentials_line: &str) -> (Proc, String, String) {
    let (mut server, listen, admin) = start_server_under(&[], extra);
    server.expect_stderr(credentials_line);
    (server, listen, admin)
}

/// Like [`start_server`], run by `wrapper` (for example `taskset -c 0` or
/// `prlimit --nofile=1024:1024 --`; empty: directly); returns once the
/// server says it is ready.
pub fn start_server_under(wrapper: &[&str], extra: &[&str]) -> (Proc, String, String) {
    let mut command = match wrapper.split_first() {
        Some((program, arguments)) => {
            let mut command = Command::new(program);
            command.args(arguments).arg(lubdub().get_program());
            command
        }
        None => lubdub(),
    };
    command
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--threads",
            &super::test_threads().to_string(),
        ])
        .args(extra);
    let mut server = Proc::spawn(&mut command);
    let ready = server.expect_stderr("lubdub server ready");
    let listen = field(&ready, "listen").to_owned();
    let admin = field(&ready, "admin").to_owned();
    (server, listen, admin)
}

pub fn sessions(admin: &str, json: bool) -> String {
    let mut command = lubdub();
    command.args(["sessions", "--admin", admin]);
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("sessions runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

pub fn client(server: &str, name: &str, extra: &[&str]) -> Proc {
    let mut client = Proc::spawn(
        lubdub()
            .args(["client", "--server", server, "--name", name])
            .args(extra),
    );
    client.expect_stderr("connected to");
    client
}
