//! The configuration file (issue 13, item 3): `lubdub config check` on a
//! file gives the same settings as the same values given as flags, flags
//! and the secrets' variables override the file, errors name the file, the
//! line and the key, and `deploy/lubdub.toml` names every key and passes.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::process::{lubdub, run_ok};
use common::Scratch;

/// One value of a setting, written the file's way and the flag's way.
enum Value {
    /// A string in the file, the flag's argument as is.
    Text(String),
    /// A bare number in the file.
    Number(&'static str),
    /// `true` in the file, the flag alone.
    Switch,
}

/// A value other than the default for every key, valid together; the
/// files are made in `scratch`.
fn every_setting(scratch: &Scratch) -> Vec<(&'static str, Value)> {
    let path = |name: &str| scratch.path(name).to_str().expect("UTF-8").to_owned();
    run_ok(&["token", "--new-secret", &path("token.secret")]);
    run_ok(&["passwd", "--file", &path("auth"), "--name", "alice"]);
    std::fs::write(
        scratch.path("admin.token"),
        "7f3a9c1e5b2d8f604a1c3e5b7d9f2a4c\n",
    )
    .expect("written");
    std::fs::write(
        scratch.path("webhook.secret"),
        "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n",
    )
    .expect("written");
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    std::fs::write(scratch.path("tls.crt"), certified.cert.pem()).expect("written");
    std::fs::write(
        scratch.path("tls.key"),
        certified.signing_key.serialize_pem(),
    )
    .expect("written");
    let text = |value: &str| Value::Text(value.to_owned());
    vec![
        ("listen", text("127.0.0.1:17070")),
        ("admin", text("127.0.0.1:17071")),
        ("threads", Value::Number("3")),
        ("interval", text("4s")),
        ("min-interval", text("200ms")),
        ("max-interval", text("5m")),
        ("max-missed", Value::Number("7")),
        ("handshake-timeout", text("6s")),
        ("max-frame", Value::Number("100000")),
        ("detector", text("phi")),
        ("phi-threshold", Value::Number("9.5")),
        ("phi-min-std-dev", text("150ms")),
        ("phi-acceptable-pause", text("2s")),
        ("tcp-keepalive", text("1m")),
        ("tcp-user-timeout", text("30s")),
        ("max-connections", Value::Number("5000")),
        ("admin-max-connections", Value::Number("8")),
        ("admin-header-timeout", text("3s")),
        ("admin-connection-timeout", text("1m")),
        ("admin-token-file", Value::Text(path("admin.token"))),
        ("event-history", Value::Number("1024")),
        (
            "webhook",
            text("http://127.0.0.1:9/hook,https://example.com/hook"),
        ),
        ("webhook-secret-file", Value::Text(path("webhook.secret"))),
        ("webhook-batch", Value::Number("50")),
        ("webhook-timeout", text("2s")),
        ("max-connections-per-ip", Value::Number("50")),
        ("accept-rate-per-ip", Value::Number("20")),
        ("max-messages-per-sec", Value::Number("10")),
        ("max-pings-per-interval", Value::Number("6")),
        ("max-outbound", Value::Number("2097152")),
        ("slow-consumer-timeout", text("20s")),
        ("max-outbound-total", Value::Number("134217728")),
        ("max-deliveries-per-sec", Value::Number("500")),
        ("max-fanout-bytes-per-sec", Value::Number("1048576")),
        ("max-deliveries-per-sec-total", Value::Number("10000")),
        ("max-fanout-bytes-per-sec-total", Value::Number("33554432")),
        ("max-refusal-strikes", Value::Number("3")),
        ("log-format", text("json")),
        ("shutdown-timeout", text("2s")),
        ("auth-file", Value::Text(path("auth"))),
        ("token-secret", Value::Text(path("token.secret"))),
        ("verifier-threads", Value::Number("3")),
        ("verifier-queue", Value::Number("512")),
        ("verifier-queue-wait", text("1s")),
        ("tls-cert", Value::Text(path("tls.crt"))),
        ("tls-key", Value::Text(path("tls.key"))),
        ("tls-client-ca", Value::Text(path("tls.crt"))),
        ("tls-client-cert-names", Value::Switch),
    ]
}

/// `lubdub config check ARGS`: its stdout, or its stderr when it fails.
fn check(args: &[&str]) -> Result<String, String> {
    check_with(args, &[])
}

fn check_with(args: &[&str], environment: &[(&str, &str)]) -> Result<String, String> {
    let output = lubdub()
        .args(["config", "check"])
        .args(args)
        .envs(environment.iter().copied())
        .output()
        .expect("the binary runs");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).expect("UTF-8"))
    } else {
        assert_eq!(output.status.code(), Some(1), "a failed check exits 1");
        Err(String::from_utf8(output.stderr).expect("UTF-8"))
    }
}

/// The settings `config check` printed, its comments dropped.
fn table(printed: &str) -> toml::Table {
    printed.parse().expect("config check prints TOML")
}

/// Every key `config check` prints, set (`key = `) or not (`# key: `).
fn keys_printed(printed: &str) -> BTreeSet<String> {
    printed
        .lines()
        .filter_map(|line| {
            let line = line.strip_prefix("# ").unwrap_or(line);
            let end = line.find([' ', ':'])?;
            let key = &line[..end];
            let rest = &line[end..];
            (rest.starts_with(" = ") || rest.starts_with(": ")).then(|| key.to_owned())
        })
        .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect()
}

#[test]
fn a_file_and_the_same_values_as_flags_give_the_same_settings() {
    let scratch = Scratch::new("same");
    let settings = every_setting(&scratch);
    let defaults = check(&[]).expect("the defaults pass");
    // Every key has a value here: a new flag without one fails this test.
    let listed: BTreeSet<String> = settings.iter().map(|(key, _)| (*key).to_owned()).collect();
    assert_eq!(listed, keys_printed(&defaults), "keys without a test value");

    let mut file = String::new();
    let mut flags: Vec<String> = Vec::new();
    for (key, value) in &settings {
        match value {
            Value::Text(text) => {
                file.push_str(&format!("{key} = {text:?}\n"));
                flags.extend([format!("--{key}"), text.clone()]);
            }
            Value::Number(number) => {
                file.push_str(&format!("{key} = {number}\n"));
                flags.extend([format!("--{key}"), (*number).to_owned()]);
            }
            Value::Switch => {
                file.push_str(&format!("{key} = true\n"));
                flags.push(format!("--{key}"));
            }
        }
    }
    let path = scratch.path("lubdub.toml");
    std::fs::write(&path, &file).expect("written");
    let from_file = check(&[path.to_str().expect("UTF-8")]).expect("the file passes");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let from_flags = check(&flags).expect("the flags pass");
    assert_eq!(table(&from_file), table(&from_flags));
    // `--config FILE` is the same as FILE.
    let with_option = check(&["--config", path.to_str().expect("UTF-8")]).expect("passes");
    assert_eq!(with_option, from_file);
    // Every value went through: none is the default any more.
    let (effective, defaults) = (table(&from_file), table(&defaults));
    for (key, _) in &settings {
        assert_ne!(
            effective.get(*key),
            defaults.get(*key),
            "{key} kept its default"
        );
    }
    assert!(
        from_file.contains("max-missed = 7  # from line 7 of the configuration file"),
        "{from_file}"
    );
    assert!(
        from_flags.contains("max-missed = 7  # from the command line"),
        "{from_flags}"
    );
}

#[test]
fn flags_override_the_variables_which_override_the_file() {
    let scratch = Scratch::new("precedence");
    let secret = |name: &str| {
        let path = scratch.path(name);
        run_ok(&["token", "--new-secret", path.to_str().expect("UTF-8")]);
        path.to_str().expect("UTF-8").to_owned()
    };
    let (in_file, in_variable, in_flag) =
        (secret("a.secret"), secret("b.secret"), secret("c.secret"));
    let path = scratch.path("lubdub.toml");
    std::fs::write(
        &path,
        format!("max-missed = 9\ninterval = \"4s\"\ntoken-secret = {in_file:?}\n"),
    )
    .expect("written");
    let file = path.to_str().expect("UTF-8");

    let printed = check_with(
        &[file, "--max-missed", "7"],
        &[("LUBDUB_TOKEN_SECRET", &in_variable)],
    )
    .expect("passes");
    let settings = table(&printed);
    assert_eq!(settings["max-missed"].as_integer(), Some(7), "{printed}");
    assert_eq!(settings["interval"].as_str(), Some("4s"), "{printed}");
    assert_eq!(
        settings["token-secret"].as_str(),
        Some(in_variable.as_str()),
        "{printed}"
    );
    assert!(
        printed.contains("  # from $LUBDUB_TOKEN_SECRET"),
        "{printed}"
    );

    let printed = check_with(
        &[file, "--token-secret", &in_flag],
        &[("LUBDUB_TOKEN_SECRET", &in_variable)],
    )
    .expect("passes");
    assert_eq!(
        table(&printed)["token-secret"].as_str(),
        Some(in_flag.as_str())
    );
    // A flag left at its default hides nothing.
    assert_eq!(
        table(&check(&[file]).expect("passes"))["max-missed"].as_integer(),
        Some(9)
    );
}

#[test]
fn errors_name_the_file_the_line_and_the_key() {
    let scratch = Scratch::new("errors");
    let path = scratch.path("lubdub.toml");
    let file = path.to_str().expect("UTF-8");
    let cases = [
        (
            "interval = \"3s\"\nmax_missed = 5\n",
            format!("error: {file}, line 2: unknown key `max_missed`; did you mean `max-missed`?"),
        ),
        (
            "\n\nmax-missed = 0\n",
            format!("error: max-missed must be between 1 and 65535, got 0; max-missed comes from line 3 of {file}"),
        ),
        (
            "max-outbound = \"a lot\"\n",
            format!("error: {file}, line 1: max-outbound: invalid value 'a lot' for '--max-outbound <MAX_OUTBOUND>'"),
        ),
        (
            "auth-file = \"/nonexistent/auth\"\n",
            "error: lubdub server would not start: cannot read the auth file /nonexistent/auth".to_owned(),
        ),
        (
            "tls-key = \"/etc/key.pem\"\n",
            format!("error: tls-key is set but tls-cert is not: TLS needs the key's certificate (tls-key comes from line 1 of {file})"),
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).expect("written");
        let said = check(&[file]).expect_err("refused");
        assert!(said.starts_with(&expected), "{text:?}:\n{said}");
    }
    // The server refuses to start the same way, before binding anything.
    std::fs::write(&path, "max_missed = 5\n").expect("written");
    let output = lubdub()
        .args(["server", "--config", file])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 1: unknown key `max_missed`"),
        "{stderr}"
    );
}

/// The example, from the repository.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/lubdub.toml");

/// The keys an example line sets, whether commented out or not.
fn example_key(line: &str) -> Option<(&str, &str, bool)> {
    let (commented, line) = match line.strip_prefix("# ") {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let (key, value) = line.split_once(" = ")?;
    key.chars()
        .all(|c| c.is_ascii_lowercase() || c == '-')
        .then_some((key, value, commented))
}

#[test]
fn the_example_passes_and_names_every_key_with_its_default() {
    let printed = check(&[EXAMPLE]).expect("the example passes");
    let example = std::fs::read_to_string(EXAMPLE).expect("deploy/lubdub.toml");
    assert_eq!(run_ok(&["config", "example"]), example);

    let defaults = check(&[]).expect("the defaults pass");
    let named: BTreeSet<String> = example
        .lines()
        .filter_map(example_key)
        .map(|(key, ..)| key.to_owned())
        .collect();
    assert_eq!(named, keys_printed(&defaults), "the example's keys");
    assert_eq!(keys_printed(&printed), keys_printed(&defaults));

    // Its commented-out values are the defaults: uncommented, they change
    // nothing (keys without a default are samples, and stay out).
    let default_table = table(&defaults);
    let uncommented: String = example
        .lines()
        .filter_map(example_key)
        .filter(|(key, _, commented)| *commented && default_table.contains_key(*key))
        .map(|(key, value, _)| format!("{key} = {value}\n"))
        .collect();
    let scratch = Scratch::new("example");
    let path = scratch.path("uncommented.toml");
    std::fs::write(&path, &uncommented).expect("written");
    let stated = check(&[path.to_str().expect("UTF-8")]).expect("passes");
    assert_eq!(table(&stated), default_table, "{uncommented}");
    // Keys set in the example state their default in words.
    for (key, _, commented) in example.lines().filter_map(example_key) {
        if !commented {
            assert!(
                example.contains(&format!(
                    "Default: {}.",
                    default_table.get(key).expect("a default")
                )),
                "{key}: its default is not stated"
            );
        }
    }
    let _ = Path::new(EXAMPLE);
}
