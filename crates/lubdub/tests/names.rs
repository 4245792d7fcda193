//! Names that cannot lie (issue 12, item 6), over real sockets: spoofing
//! names are refused at HELLO with `invalid_name` and a text naming the
//! character, a look-alike of an online name is refused with
//! `confusable_name` naming it until that name leaves, and a bystander
//! session is unaffected throughout.

mod common;

use common::{fast_config, hello, RawConn, TestServer};
use lubdub::client::{Client, ClientConfig};
use lubdub::core::protocol::{Frame, Message, Reason, ReasonCode};

/// Sends HELLO `name` on a fresh connection; returns the REJECT it got,
/// after checking that the server closed the connection.
async fn rejected_hello(server: &TestServer, name: &str) -> Reason {
    let mut conn = RawConn::connect(server.addr).await;
    conn.send(&hello(name, 1000, true)).await;
    let reason = match conn.next_frame().await {
        Some(Frame::Reject(reason)) => reason,
        other => panic!("expected REJECT for {name:?}, got {other:?}"),
    };
    conn.expect_closed().await;
    reason
}

async fn assert_bystander_unaffected(
    server: &mut TestServer,
    bystander: &mut RawConn,
    online: &[&str],
) {
    bystander.send(&Frame::Ping { seq: 7, rtt_us: 0 }).await;
    assert_eq!(bystander.next_frame().await, Some(Frame::Pong { seq: 7 }));
    let mut names: Vec<String> = server
        .sessions()
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    names.sort();
    assert_eq!(names, online);
    let seen = server.seen();
    assert!(
        seen.iter()
            .all(|e| e.name != "bystander" || common::kind_label(&e.kind) == "joined"),
        "{seen:#?}"
    );
}

/// Every spoofing name of issue 12 is refused at HELLO, the REJECT naming
/// the character by code point. Fails on the code before this change, which
/// answered each of these HELLOs with WELCOME.
#[tokio::test]
async fn spoofing_names_are_refused_at_hello_naming_the_character() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut bystander, _, _) = RawConn::join(server.addr, "bystander", 1000, true).await;
    server.expect("bystander", "joined").await;
    for (name, character) in [
        ("ali\u{202e}ce", "U+202E"),
        ("alice\u{200b}", "U+200B"),
        ("\u{feff}alice", "U+FEFF"),
        ("\u{2066}alice", "U+2066"),
        ("al\u{ad}ice", "U+00AD"),
        ("a\u{336}lice", "U+0336"),
        ("\u{3164}", "U+3164"),
        ("\u{2800}", "U+2800"),
        ("\u{ff41}\u{ff4c}\u{ff49}\u{ff43}\u{ff45}", "U+FF41"),
        // Cyrillic а: the name mixes scripts, refused before any claim.
        ("\u{430}lice", "U+006C 'l'"),
    ] {
        let reason = rejected_hello(&server, name).await;
        assert_eq!(
            reason.code,
            ReasonCode::InvalidName,
            "{name:?}: {}",
            reason.text
        );
        assert!(reason.text.contains(character), "{name:?}: {}", reason.text);
    }
    // A MSG to such a recipient is refused the same way.
    let (mut sender, _, _) = RawConn::join(server.addr, "sender", 1000, true).await;
    sender
        .send(&Frame::Msg(Message {
            from: String::new(),
            to: "bystander\u{200b}".to_owned(),
            body: b"hi".to_vec(),
        }))
        .await;
    match sender.next_frame().await {
        Some(Frame::Bye(bye)) => {
            assert_eq!(bye.reason.code, ReasonCode::InvalidName);
            assert!(bye.reason.text.contains("U+200B"), "{}", bye.reason.text);
        }
        other => panic!("expected BYE invalid_name, got {other:?}"),
    }
    sender.expect_closed().await;
    server.expect("sender", "dropped").await;
    assert_bystander_unaffected(&mut server, &mut bystander, &["bystander"]).await;
}

/// A valid name that looks like an online one is refused with
/// `confusable_name` naming it; the same name is still a takeover; once the
/// holder leaves, the look-alike may claim. Fails on the code before this
/// change, where `ALICE`, `Alice`, `a1ice` and Cyrillic `рое` were all
/// welcomed next to `alice` and `poe`.
#[tokio::test]
async fn look_alikes_of_an_online_name_are_refused_until_it_leaves() {
    let mut server = TestServer::start(fast_config()).await;
    let (mut bystander, _, _) = RawConn::join(server.addr, "bystander", 1000, true).await;
    let (_poe, _, _) = RawConn::join(server.addr, "poe", 1000, true).await;
    let (mut alice, _, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    server.expect("alice", "joined").await;
    for (look_alike, online) in [
        ("ALICE", "alice"),
        ("Alice", "alice"),
        ("a1ice", "alice"),
        // All Cyrillic, so a valid name, but it reads as Latin `poe`.
        ("\u{440}\u{43e}\u{435}", "poe"),
    ] {
        let reason = rejected_hello(&server, look_alike).await;
        assert_eq!(
            reason.code,
            ReasonCode::ConfusableName,
            "{look_alike:?}: {}",
            reason.text
        );
        assert!(
            reason.text.contains(&format!("{online:?}")),
            "{look_alike:?}: {}",
            reason.text
        );
    }
    // The client library reports it and does not retry.
    let error = match Client::connect(ClientConfig::new(
        server.addr.to_string(),
        "ALICE".to_owned(),
    ))
    .await
    {
        Ok(_) => panic!("ALICE was welcomed while alice is online"),
        Err(error) => error,
    };
    assert!(!error.is_retryable(), "{error}");
    assert!(error.to_string().contains("\"alice\""), "{error}");
    assert!(error.to_string().contains("confusable_name"), "{error}");

    // The very same name is a takeover, as before.
    let (mut new_alice, new_welcome, _) = RawConn::join(server.addr, "alice", 1000, true).await;
    match alice.next_frame().await {
        Some(Frame::Bye(bye)) => assert_eq!(bye.reason.code, ReasonCode::TakenOver),
        other => panic!("expected BYE taken_over, got {other:?}"),
    }
    assert_eq!(
        rejected_hello(&server, "ALICE").await.code,
        ReasonCode::ConfusableName
    );

    // Once alice leaves, the skeleton is free.
    new_alice
        .send(&Frame::bye(ReasonCode::Normal, "quit"))
        .await;
    new_alice.expect_closed().await;
    server
        .expect_event("the drop of alice's second session", |event| {
            event.session_id == new_welcome.session_id
                && common::kind_label(&event.kind) == "dropped"
        })
        .await;
    let (_capital, _, _) = RawConn::join(server.addr, "ALICE", 1000, true).await;
    assert_eq!(
        rejected_hello(&server, "alice").await.code,
        ReasonCode::ConfusableName
    );
    assert_bystander_unaffected(&mut server, &mut bystander, &["ALICE", "bystander", "poe"]).await;
}
