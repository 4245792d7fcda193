//! The floor: the least any server can do per heartbeat, as a reference
//! for lubdub's costs (BENCHMARKS.md, "One server, every core"). One thread, one epoll
//! (mio), a slab of sockets; a HELLO is answered with a fixed WELCOME and
//! each PING with its PONG, one read and one write per PING. No registry,
//! no detector, no limits, no timers, no TLS, no admin API: what is left
//! is the kernel's work and the framing.
//!
//!     cargo run --release --example floor -- [127.0.0.1:0]
//!
//! Prints `floor server ready listen=ADDR` on stderr once it listens, like
//! `lubdub server`, so the same load generator drives both
//! (`bench/loops.sh`). Frames it does not know end their connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use lubdub::core::protocol::codec::{self, pong_bytes};
use lubdub::core::protocol::{Frame, Welcome};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// HELLO and PING kinds (docs/PROTOCOL.md).
const HELLO: u8 = 0x01;
const PING: u8 = 0x04;

/// One client: its socket and the bytes of a frame not complete yet (empty
/// while idle, as in lubdub, so the floor pays no buffer per idle socket).
struct Client {
    stream: TcpStream,
    partial: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, format!("{error}")))?;
    let welcome = codec::encode_to_vec(&Frame::Welcome(Welcome {
        session_id: 1,
        epoch: 1,
        granted_interval_ms: 3_000,
        max_missed: 5,
    }))
    .map_err(|error| io::Error::other(error.to_string()))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("floor server ready listen={}", listener.local_addr()?);
    let mut clients = slab::Slab::<Client>::new();
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)?;
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let entry = clients.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE,
                    )?;
                    entry.insert(Client {
                        stream,
                        partial: Vec::new(),
                    });
                }
                continue;
            }
            let index = event.token().0;
            let open = match clients.get_mut(index) {
                Some(client) => serve(client, &mut scratch, &welcome),
                None => continue,
            };
            if !open {
                let mut client = clients.remove(index);
                let _ = poll.registry().deregister(&mut client.stream);
            }
        }
    }
}

/// Reads what the socket holds and answers every whole frame. Returns
/// whether the connection stays open.
fn serve(client: &mut Client, scratch: &mut [u8], welcome: &[u8]) -> bool {
    loop {
        let n = match client.stream.read(scratch) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        // Frames are answered straight from the read; only an incomplete
        // tail is kept (rare: a PING is 13 bytes).
        let open = if client.partial.is_empty() {
            match answer_frames(&mut client.stream, &scratch[..n], welcome) {
                Some(used) => {
                    client.partial.extend_from_slice(&scratch[used..n]);
                    true
                }
                None => false,
            }
        } else {
            let mut bytes = std::mem::take(&mut client.partial);
            bytes.extend_from_slice(&scratch[..n]);
            match answer_frames(&mut client.stream, &bytes, welcome) {
                Some(used) => {
                    bytes.drain(..used);
                    if !bytes.is_empty() {
                        client.partial = bytes;
                    }
                    true
                }
                None => false,
            }
        };
        if !open {
            return false;
        }
        if n < scratch.len() {
            return true;
        }
    }
}

/// Answers every whole frame at the front of `bytes`: how many bytes they
/// took, or `None` when the connection must end.
fn answer_frames(stream: &mut TcpStream, bytes: &[u8], welcome: &[u8]) -> Option<usize> {
    let mut offset = 0;
    while bytes.len() - offset >= 5 {
        let frame = &bytes[offset..];
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if frame.len() < 4 + len {
            break;
        }
        match frame[4] {
            HELLO => stream.write_all(welcome).ok()?,
            PING if len == 9 => {
                let seq = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
                stream.write_all(&pong_bytes(seq)).ok()?;
            }
            _ => return None,
        }
        offset += 4 + len;
    }
    Some(offset)
}
