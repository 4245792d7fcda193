//! A server out of file descriptors: the connections it cannot accept wait
//! in the kernel's backlog, and are accepted once descriptors are free
//! again, without waiting for a new connection to arrive.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::process::start_server_under;
use lubdub::core::protocol::{codec, Frame, DEFAULT_MAX_FRAME_LEN};

/// Connects and sends HELLO; the answer is read later.
fn hello(server: &str, name: &str) -> TcpStream {
    let mut stream = TcpStream::connect(server).expect("the kernel completes the connect");
    let hello = codec::encode_to_vec(&common::hello(name, 1_000, true)).expect("encodes");
    stream.write_all(&hello).expect("HELLO sent");
    stream
}

/// Whether a WELCOME arrives within `wait`.
fn welcomed(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).expect("timeout");
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        if let Ok(Some((frame, _))) = codec::decode(&buffer, DEFAULT_MAX_FRAME_LEN) {
            return matches!(frame, Frame::Welcome(_));
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

/// Fails on the code before issue 14 (item 6): after a failed accept the
/// loop waited for the listener's next readiness edge, which only a new
/// connection brings, so the backlog waited even with descriptors free.
#[test]
fn connections_left_in_the_backlog_are_accepted_once_descriptors_are_free() {
    // 256 descriptors, and a connection cap above them, so that accept(2)
    // itself fails (EMFILE) rather than the cap refusing.
    let (mut server, listen, _) = start_server_under(
        &["prlimit", "--nofile=256:256", "--"],
        &[
            "--max-connections",
            "10000",
            "--admin-max-connections",
            "1",
            "--accept-rate-per-ip",
            "0",
        ],
    );
    let mut streams: Vec<TcpStream> = (0..300)
        .map(|index| hello(&listen, &format!("d{index}")))
        .collect();
    let mut waiting = Vec::new();
    let mut accepted = Vec::new();
    for (index, mut stream) in streams.drain(..).enumerate() {
        // Accepts go in order: once one waits, the later ones need no long look.
        let wait = Duration::from_millis(if waiting.is_empty() { 500 } else { 20 });
        if welcomed(&mut stream, wait) {
            accepted.push(stream);
        } else {
            waiting.push((index, stream));
        }
    }
    assert!(
        !waiting.is_empty() && accepted.len() > 100,
        "{} accepted, {} waiting: the limit did not bite",
        accepted.len(),
        waiting.len()
    );
    // Free descriptors; no new connection arrives.
    let freed = waiting.len() + 20;
    accepted.truncate(accepted.len() - freed);
    for (index, stream) in &mut waiting {
        assert!(
            welcomed(stream, common::PATIENCE),
            "d{index} was never accepted, though descriptors were free"
        );
    }
    server.expect_stderr("cannot accept connections");
    server.expect_stderr("accepting connections again");
}
