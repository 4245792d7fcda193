//! SIGHUP (issue 13, item 3): the server reads its configuration and the
//! files it names again, applies what can change while running without
//! dropping a session, logs each change (and each change that needs a
//! restart), and keeps the running configuration when the new one is
//! invalid.

mod common;

use std::path::Path;

use common::process::{field, lubdub, run_ok, sessions, start_server, start_server_saying, Proc};
use common::Scratch;

/// A client of `name` with `secret`, connected.
fn client_with_secret(listen: &str, name: &str, secret: &str) -> Proc {
    let mut client = Proc::spawn(
        lubdub()
            .args(["client", "--server", listen, "--name", name])
            .env("LUBDUB_CREDENTIAL", secret),
    );
    client.expect_stderr("connected to");
    client
}

/// The session id `lubdub sessions --json` lists for `name`.
fn session_id(admin: &str, name: &str) -> u64 {
    let listing: serde_json::Value = serde_json::from_str(&sessions(admin, true)).expect("JSON");
    listing
        .as_array()
        .expect("an array")
        .iter()
        .find(|session| session["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not listed: {listing}"))["session_id"]
        .as_u64()
        .expect("a number")
}

fn path(path: &Path) -> &str {
    path.to_str().expect("UTF-8")
}

#[test]
fn sighup_applies_a_new_auth_file_keeps_sessions_and_keeps_the_old_file_when_broken() {
    let scratch = Scratch::new("auth-file");
    let auth = scratch.path("auth");
    let alice_secret = run_ok(&["passwd", "--file", path(&auth), "--name", "alice"]);
    let (mut server, listen, admin) =
        start_server_saying(&["--auth-file", path(&auth)], "credentials required");
    let mut alice = client_with_secret(&listen, "alice", alice_secret.trim());
    let joined = server.expect_stderr("joined name=alice");
    let alice_session: u64 = field(&joined, "session").parse().expect("a session id");

    // bob gets a line, but the running server has not read it yet.
    let bob_secret = run_ok(&["passwd", "--file", path(&auth), "--name", "bob"]);
    let refused = lubdub()
        .args(["client", "--server", &listen, "--name", "bob"])
        .env("LUBDUB_CREDENTIAL", bob_secret.trim())
        .output()
        .expect("the client runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("no valid credential for name bob"), "{said}");

    server.signal("-HUP");
    server.expect_stderr(&format!("auth file {} read: 2 names", auth.display()));
    server.expect_stderr("configuration reloaded");
    let bob = client_with_secret(&listen, "bob", bob_secret.trim());
    server.expect_stderr("joined name=bob");
    assert_eq!(
        session_id(&admin, "alice"),
        alice_session,
        "alice kept her session"
    );
    // A message still goes both ways over alice's session.
    alice.type_line("@bob still here");
    let mut bob = bob;
    assert_eq!(bob.expect_stdout("still here"), "[alice → bob] still here");

    // A broken file: the server says so and keeps the file it has.
    std::fs::write(&auth, "bob has no hash\n").expect("written");
    server.signal("-HUP");
    let kept = server.expect_stderr("reload failed, the running configuration is kept");
    assert!(
        kept.contains(&auth.display().to_string()) && kept.contains("line 1"),
        "{kept}"
    );
    drop(bob);
    let _bob_again = client_with_secret(&listen, "bob", bob_secret.trim());
    assert_eq!(session_id(&admin, "alice"), alice_session);
    assert!(
        !alice
            .lines_so_far()
            .iter()
            .any(|line| line.contains("lost")),
        "alice's client never lost the server: {:#?}",
        alice.transcript
    );
}

#[test]
fn sighup_rereads_the_config_file_applies_limits_and_leaves_restarts_alone() {
    let scratch = Scratch::new("limits");
    let config = scratch.path("lubdub.toml");
    std::fs::write(&config, "max-missed = 5\nmax-messages-per-sec = 100\n").expect("written");
    // --listen and --admin are flags (start_server's): they override the
    // file at start and at every reload.
    let (mut server, listen, admin) = start_server(&["--config", path(&config)]);
    let mut alice = common::process::client(&listen, "alice", &[]);
    let mut bob = common::process::client(&listen, "bob", &[]);
    server.expect_stderr("joined name=bob");
    let bob_session = session_id(&admin, "bob");

    std::fs::write(
        &config,
        "listen = \"127.0.0.1:1\"\nmax-missed = 7\nmax-messages-per-sec = 1\n",
    )
    .expect("written");
    server.signal("-HUP");
    let restart = server.expect_stderr("reload: max-missed: 5 → 7");
    assert!(restart.contains("needs a restart"), "{restart}");
    let applied = server.expect_stderr("reload: max-messages-per-sec: 100 → 1");
    assert!(!applied.contains("restart"), "{applied}");
    let done = server.expect_stderr("configuration reloaded");
    assert!(
        done.contains("changed=1") && done.contains("need_restart=1"),
        "{done}"
    );
    assert!(
        !server
            .transcript
            .iter()
            .any(|line| line.contains("reload: listen")),
        "the --listen flag still overrides the file: {:#?}",
        server.transcript
    );

    // One MSG a second now: the second of two at once is refused.
    alice.type_line("@bob one");
    alice.type_line("@bob two");
    alice.expect_stderr("at most 1 messages a second");
    assert_eq!(bob.expect_stdout("one"), "[alice → bob] one");
    assert_eq!(session_id(&admin, "bob"), bob_session);

    // An invalid file changes nothing.
    std::fs::write(&config, "max-messages-per-sec = 100\nmax-outbound = 10\n").expect("written");
    server.signal("-HUP");
    let kept = server.expect_stderr("reload failed, the running configuration is kept");
    assert!(
        kept.contains("max-outbound (10 bytes) must be at least max-frame")
            && kept.contains(&format!(
                "max-outbound comes from line 2 of {}",
                config.display()
            )),
        "{kept}"
    );
    // The next valid file is compared with the running settings: the
    // limit is still 1, not the invalid file's 100.
    std::fs::write(&config, "max-missed = 5\nmax-messages-per-sec = 2\n").expect("written");
    server.signal("-HUP");
    server.expect_stderr("reload: max-messages-per-sec: 1 → 2");
    let done = server.expect_stderr("configuration reloaded");
    assert!(
        done.contains("changed=1") && done.contains("need_restart=0"),
        "{done}"
    );
}

/// A CA's certificate and a server certificate for 127.0.0.1 it signed,
/// written as `ca-NAME.pem`, `server-NAME.pem` and `server-NAME.key`.
fn server_pki(scratch: &Scratch, name: &str) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("lubdub test CA {name}"));
    let ca_certificate = ca.self_signed(&ca_key).expect("CA signs itself");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let certificate = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("CA signs");
    let write = |file: String, contents: String| {
        std::fs::write(scratch.path(&file), contents).expect("written");
    };
    write(format!("ca-{name}.pem"), ca_certificate.pem());
    write(format!("server-{name}.pem"), certificate.pem());
    write(format!("server-{name}.key"), key.serialize_pem());
}

#[test]
fn sighup_serves_a_renewed_certificate_to_new_connections_and_keeps_sessions() {
    let scratch = Scratch::new("tls");
    server_pki(&scratch, "old");
    server_pki(&scratch, "new");
    let (cert, key) = (scratch.path("server.pem"), scratch.path("server.key"));
    std::fs::copy(scratch.path("server-old.pem"), &cert).expect("copied");
    std::fs::copy(scratch.path("server-old.key"), &key).expect("copied");
    let (mut server, listen, admin) =
        start_server(&["--tls-cert", path(&cert), "--tls-key", path(&key)]);
    let old_ca = scratch.path("ca-old.pem");
    let new_ca = scratch.path("ca-new.pem");
    let mut alice = common::process::client(&listen, "alice", &["--tls-ca", path(&old_ca)]);
    let alice_session = session_id(&admin, "alice");

    std::fs::copy(scratch.path("server-new.pem"), &cert).expect("renewed");
    std::fs::copy(scratch.path("server-new.key"), &key).expect("renewed");
    server.signal("-HUP");
    server.expect_stderr(&format!("TLS certificate {} and key", cert.display()));
    server.expect_stderr("configuration reloaded");
    let mut bob = common::process::client(&listen, "bob", &["--tls-ca", path(&new_ca)]);
    let refused = lubdub()
        .args(["client", "--server", &listen, "--name", "carol"])
        .args(["--tls-ca", path(&old_ca)])
        .output()
        .expect("the client runs");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("is not trusted"), "{said}");
    // alice's session, on the old certificate, goes on.
    assert_eq!(session_id(&admin, "alice"), alice_session);
    alice.type_line("@bob hello across certificates");
    assert_eq!(
        bob.expect_stdout("hello"),
        "[alice → bob] hello across certificates"
    );
}
