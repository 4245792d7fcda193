//! Room and watch permissions with credentials: a session joins and
//! watches only what its token grants (minted by `lubdub token --join
//! --watch`), so that watching cannot be used to find out who exists; a
//! token without grants, and an auth-file secret, grant none; without
//! credentials everything is open (the other tests of rooms and watches).

mod common;

use common::process::run_ok;
use common::{fast_config, RawConn, Scratch, TestServer};
use lubdub::auth::{password, AuthConfig, TokenSecret};
use lubdub::core::protocol::frame::flags;
use lubdub::core::protocol::rooms::{UpdateKind, Watch, WatchMode};
use lubdub::core::protocol::{Frame, Hello, PROTOCOL_VERSION};
use lubdub::server::ServerConfig;

const CAROL_SECRET: &str = "carol-has-a-long-secret";

async fn join_with(server: &TestServer, name: &str, credential: &str) -> RawConn {
    let mut conn = RawConn::connect(server.addr).await;
    conn.send(&Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: flags::ACKS_WANTED,
        requested_interval_ms: 60_000,
        name: name.to_owned(),
        credential: credential.as_bytes().to_vec(),
        status: None,
    }))
    .await;
    match conn.next_frame().await {
        Some(Frame::Welcome(_)) => conn,
        other => panic!("{name}: expected WELCOME, got {other:?}"),
    }
}

/// What the server answers to `request`, up to the PONG of a PING sent
/// after it: a NOTICE's code, or the kind of the first PRESENCE frame.
async fn answer(conn: &mut RawConn, request: Frame, seq: u32) -> String {
    conn.send(&request).await;
    conn.send(&Frame::Ping { seq, rtt_us: 0 }).await;
    let mut said = Vec::new();
    loop {
        match conn.next_frame().await {
            Some(Frame::Pong { seq: answered }) if answered == seq => break,
            Some(Frame::Notice(reason)) => said.push(reason.code.label().to_owned()),
            Some(Frame::Presence(update)) if update.kind == UpdateKind::Snapshot => {
                said.push("snapshot".to_owned());
            }
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    said.join(",")
}

fn join(room: &str) -> Frame {
    Frame::Join {
        room: room.to_owned(),
    }
}

fn watch(target: &str) -> Frame {
    Frame::Watch(Watch {
        mode: WatchMode::Full as u8,
        target: target.to_owned(),
    })
}

/// Fails without the permission checks (every JOIN and WATCH was open).
#[tokio::test]
async fn with_credentials_a_session_joins_and_watches_only_what_its_token_grants() {
    let scratch = Scratch::new("permissions");
    let secret_path = scratch.path("token.secret");
    TokenSecret::create(&secret_path).expect("secret created");
    let secret_arg = secret_path.to_str().expect("UTF-8 path");
    let token = |name: &str, extra: &[&str]| {
        let mut args = vec!["token", "--secret-file", secret_arg, "--name", name];
        args.extend_from_slice(extra);
        run_ok(&args).trim().to_owned()
    };
    let alice_token = token(
        "alice",
        &[
            "--join",
            "#lobby,#match:*",
            "--watch",
            "#lobby",
            "--watch",
            "bob",
        ],
    );
    let eve_token = token("eve", &[]);
    let hash = password::hash(CAROL_SECRET.as_bytes(), password::default_params()).expect("hash");
    let auth_path = scratch.path("auth");
    std::fs::write(&auth_path, format!("carol:{hash}\n")).expect("auth file");
    let config = ServerConfig {
        auth: AuthConfig {
            auth_file: Some(auth_path),
            token_secret_file: Some(secret_path.clone()),
            ..AuthConfig::default()
        },
        ..fast_config()
    };
    let server = TestServer::start(config).await;

    let mut alice = join_with(&server, "alice", &alice_token).await;
    assert_eq!(answer(&mut alice, join("#lobby"), 1).await, "");
    assert_eq!(answer(&mut alice, join("#match:42"), 2).await, "");
    assert_eq!(
        answer(&mut alice, join("#secret"), 3).await,
        "not_permitted"
    );
    assert_eq!(answer(&mut alice, watch("bob"), 4).await, "snapshot");
    assert_eq!(answer(&mut alice, watch("#lobby"), 5).await, "snapshot");
    assert_eq!(answer(&mut alice, watch("carol"), 6).await, "not_permitted");
    assert_eq!(
        answer(&mut alice, watch("#match:42"), 7).await,
        "not_permitted"
    );

    // A token without grants, and an auth-file secret: nothing.
    let mut eve = join_with(&server, "eve", &eve_token).await;
    assert_eq!(answer(&mut eve, watch("alice"), 1).await, "not_permitted");
    assert_eq!(answer(&mut eve, join("#lobby"), 2).await, "not_permitted");
    let mut carol = join_with(&server, "carol", CAROL_SECRET).await;
    assert_eq!(answer(&mut carol, watch("alice"), 1).await, "not_permitted");
    assert_eq!(answer(&mut carol, join("#lobby"), 2).await, "not_permitted");

    // Refusals are not held against the session's bounds: still 32 rooms' room.
    let (_, listing) = server.get("/rooms").await;
    let listing: serde_json::Value = serde_json::from_str(&listing).expect("JSON");
    assert_eq!(
        listing["rooms"],
        serde_json::json!([{"room": "#lobby", "members": 1}, {"room": "#match:42", "members": 1}])
    );
}
