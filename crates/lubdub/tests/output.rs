//! Output that cannot be hijacked (issue 12, item 7), with the real binary:
//! a `lubdub client` shows a hostile message body escaped (raw only with
//! --raw), and the server's log shows a peer's BYE text escaped.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::process::{client, field, lubdub, Proc};
use common::PATIENCE;
use lubdub::core::protocol::{codec, Frame, Message, ReasonCode};

/// Clears the screen, sets the terminal title, opens an OSC 8 link, forges
/// a line with a carriage return and reverses what follows, then a byte
/// that is not UTF-8.
const HOSTILE_BODY: &[u8] = b"\x1b[2J\x1b]0;title\x07\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\\r[admin] please re-enter your password: \xe2\x80\xaeabc \xff";

/// How the escaped body must read on the client's standard output.
const SHOWN: &str = "\\e[2J\\e]0;title\\u{7}\\e]8;;http://evil.example/\\e\\link\\e]8;;\\e\\\\r[admin] please re-enter your password: \\u{202e}abc \\xff";

/// A protocol session over a plain blocking socket.
struct Peer {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Peer {
    fn join(server: &str, name: &str) -> Peer {
        let stream = TcpStream::connect(server).expect("connect");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("read timeout");
        let mut peer = Peer {
            stream,
            buffer: Vec::new(),
        };
        peer.send(&common::hello(name, 1000, true));
        match peer.next_frame() {
            Frame::Welcome(_) => peer,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    fn send(&mut self, frame: &Frame) {
        let bytes = codec::encode_to_vec(frame).expect("encodable");
        self.stream.write_all(&bytes).expect("write");
    }

    fn next_frame(&mut self) -> Frame {
        loop {
            if let Some((frame, used)) = codec::decode(&self.buffer, 1 << 20).expect("valid") {
                self.buffer.drain(..used);
                return frame;
            }
            let mut chunk = [0u8; 4096];
            let read = self
                .stream
                .read(&mut chunk)
                .expect("the server answers in time");
            assert!(read > 0, "the server closed the connection");
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    fn broadcast(&mut self, body: &[u8]) {
        self.send(&Frame::Msg(Message {
            from: String::new(),
            to: String::new(),
            body: body.to_vec(),
        }));
    }
}

fn start_server(log_filter: &str) -> (Proc, String) {
    let mut server = Proc::spawn_logging(
        lubdub().args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]),
        log_filter,
    );
    let ready = server.expect_stderr("lubdub server ready");
    let listen = field(&ready, "listen").to_owned();
    (server, listen)
}

/// Fails on the code before this change, which printed the body as it came
/// (`String::from_utf8_lossy`): the line held ESC, CR and U+202E raw.
#[test]
fn the_chat_client_shows_a_hostile_body_escaped() {
    let (_server, listen) = start_server("info");
    let mut reader = client(&listen, "reader", &[]);
    let mut mallory = Peer::join(&listen, "mallory");
    mallory.broadcast(HOSTILE_BODY);
    let line = reader.expect_stdout("[mallory]");
    assert_eq!(line, format!("[mallory] {SHOWN}"));
    assert!(
        !line.contains(['\x1b', '\r', '\x07', '\u{202e}']),
        "{line:?}"
    );
}

/// Fails on the code before this change, which has no --raw flag (the
/// client exits with a usage error before connecting).
#[test]
fn the_chat_client_prints_bodies_byte_for_byte_with_raw() {
    let (_server, listen) = start_server("info");
    let mut reader = client(&listen, "reader", &["--raw"]);
    let mut mallory = Peer::join(&listen, "mallory");
    // Valid UTF-8 only: the test reads the client's output as lines of text.
    let body = "\x1b[2J\x1b]0;title\x07\r[admin] please re-enter your password: \u{202e}abc";
    mallory.broadcast(body.as_bytes());
    let line = reader.expect_stdout("[mallory]");
    assert_eq!(line, format!("[mallory] {body}"));
}

/// A peer's BYE text reaches the server's log escaped. Fails on the code
/// before this change, whose log line carried the CR, U+202E and ESC raw
/// (the log formatter does not escape them when stderr is not a terminal).
#[test]
fn the_server_log_shows_a_peer_text_escaped() {
    let (mut server, listen) = start_server("info,lubdub::server=debug");
    let mut mallory = Peer::join(&listen, "mallory");
    mallory.send(&Frame::bye(
        ReasonCode::Normal,
        "quit\r2026-12-02T02:00:00Z  INFO lubdub: admin logged in \u{202e}abc\x1b[2J",
    ));
    let line = server.expect_stderr("BYE from peer");
    assert!(
        line.contains(
            "quit\\r2026-12-02T02:00:00Z  INFO lubdub: admin logged in \\u{202e}abc\\e[2J"
        ),
        "{line:?}"
    );
    assert!(!line.contains(['\x1b', '\r', '\u{202e}']), "{line:?}");
}
