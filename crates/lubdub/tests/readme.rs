//! The README's commands still run as written. Every ```sh block marked
//! `<!-- readme: run -->` runs, in order, in one bash in a scratch
//! directory, with this build's `lubdub` as the `lubdub` on the PATH. Two
//! things differ from a user's shell, each said here: `/etc/lubdub` is a
//! directory inside the scratch one, and `lubdub server` and `lubdub
//! client` (which run until stopped) are wrapped: the server starts in the
//! background on free ports and the next client is pointed at it; the
//! client must report `connected to` before both are stopped. The install
//! command is run by `scripts/test.sh` (it builds the binary).

mod common;

use std::process::Command;

const README: &str = include_str!("../../../README.md");

/// What a marked block is run inside: a `lubdub` function that runs this
/// build, with `server` and `client` wrapped as the module documentation says.
const PREAMBLE: &str = r#"
set -euo pipefail
listen=
server_pid=
wait_for() { # file, text, pid
    for _ in $(seq 1 300); do
        grep -q "$2" "$1" && return 0
        kill -0 "$3" 2>/dev/null || { echo "exited before '$2':"; cat "$1"; return 1; }
        sleep 0.05
    done
    echo "no '$2' in 15 s:"; cat "$1"; return 1
}
lubdub() {
    case "$1" in
        server)
            # Emptied here, not only by the redirection, which the forked
            # child makes later: wait_for must not find the last server's line.
            : > server.log
            "$LUBDUB_BIN" "$@" --listen 127.0.0.1:0 --admin 127.0.0.1:0 2>server.log &
            server_pid=$!
            wait_for server.log "lubdub server ready" "$server_pid"
            listen=$(grep -o 'listen=[^ ]*' server.log | head -n 1 | cut -d= -f2)
            echo "ran: lubdub $* (on $listen)"
            ;;
        client)
            : > client.log
            "$LUBDUB_BIN" "$@" --server "$listen" --unattended --give-up-after 10s 2>client.log &
            local client_pid=$!
            wait_for client.log "connected to" "$client_pid"
            echo "ran: lubdub $*"
            kill -TERM "$client_pid" "$server_pid"
            wait "$client_pid" "$server_pid"
            ;;
        *) "$LUBDUB_BIN" "$@" ;;
    esac
}
"#;

/// The marked blocks, in order, each with the README line it starts on.
fn marked_blocks(readme: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((_, line)) = lines.next() {
        if line.trim() != "<!-- readme: run -->" {
            continue;
        }
        let (number, fence) = lines.next().expect("a block after the marker");
        assert_eq!(
            fence.trim(),
            "```sh",
            "README line {}: the marker must precede a ```sh block",
            number + 1
        );
        let body: Vec<&str> = lines
            .by_ref()
            .map(|(_, line)| line)
            .take_while(|line| line.trim() != "```")
            .collect();
        blocks.push((number + 1, body.join("\n")));
    }
    blocks
}

#[test]
fn the_readme_recipes_run_as_written() {
    let blocks = marked_blocks(README);
    assert!(blocks.len() >= 8, "only {} marked blocks", blocks.len());
    let scratch = std::env::temp_dir().join(format!("lubdub-readme-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch directory");
    let etc = scratch.join("etc/lubdub");
    let mut script = String::from(PREAMBLE);
    for (line, body) in &blocks {
        script.push_str(&format!("echo '== README line {line}'\n"));
        script.push_str(&body.replace("/etc/lubdub", etc.to_str().expect("UTF-8")));
        script.push('\n');
    }
    script.push_str("stat -c 'mode %a %n' alice.token bob.secret\n");
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&scratch)
        .env("LUBDUB_BIN", common::process::lubdub().get_program())
        .output()
        .expect("bash runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(
        output.status.success(),
        "the README's commands failed:\n{said}"
    );
    // Each block's servers and clients really ran.
    assert!(said.matches("ran: lubdub client").count() >= 4, "{said}");
    for (line, _) in &blocks {
        assert!(said.contains(&format!("== README line {line}")), "{said}");
    }
    // The recipes keep the secrets they write private.
    assert!(said.contains("mode 600 alice.token"), "{said}");
    assert!(said.contains("mode 600 bob.secret"), "{said}");
}

#[test]
fn the_readme_installs_with_the_command_the_suite_runs() {
    assert!(
        README.contains("\ncargo install --locked --path crates/lubdub\n"),
        "the install command changed: change scripts/test.sh with it"
    );
    let suite = include_str!("../../../scripts/test.sh");
    assert!(
        suite.contains("cargo install --locked --path crates/lubdub "),
        "scripts/test.sh no longer runs the README's install"
    );
}
