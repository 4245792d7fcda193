//! Writes the fuzz targets' seed corpus: the test vectors of
//! `docs/PROTOCOL.md` for `frame_decoder`, and hand-made sessions (HELLO then
//! PINGs, a PING flood, a MSG burst, …) for `session_machine`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus [-- DIR]`
//! writes `DIR/frame_decoder/*` and `DIR/session_machine/*` (default
//! `fuzz/seeds`). Every seed is parsed back with the target's own input
//! format before it is written, so a layout change cannot leave stale seeds.

use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use lubdub_core::protocol::codec::{encode_to_vec, ping_bytes};
use lubdub_core::protocol::frame::flags;
use lubdub_core::protocol::rooms::Watch;
use lubdub_core::protocol::{
    Bye, Frame, Hello, Message, Reason, ReasonCode, Will, PROTOCOL_VERSION,
};
use lubdub_fuzz::inputs::{
    DecoderInput, SessionConfig, SessionInput, Step, DEFAULT_MAX_FRAME_EXTRA,
};

const PROTOCOL_MD: &str = include_str!("../../docs/PROTOCOL.md");

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("seeds"));
    let vectors = vectors();
    assert!(vectors.len() >= 20, "found only {} vectors", vectors.len());

    let mut decoder = Vec::new();
    for (name, bytes) in &vectors {
        decoder.push((name.clone(), decoder_seed(bytes, bytes.len() / 2)));
    }
    // Every valid vector back to back, as one stream split mid-frame.
    let stream: Vec<u8> = vectors
        .iter()
        .filter(|(name, _)| !name.starts_with("err_") && !name.starts_with("incomplete_"))
        .flat_map(|(_, bytes)| bytes.iter().copied())
        .collect();
    decoder.push(("stream_of_valid_vectors".into(), decoder_seed(&stream, 21)));
    write(&dir.join("frame_decoder"), &decoder);

    write(&dir.join("session_machine"), &session_seeds(&vectors));
}

/// `(name, bytes)` for every vector of PROTOCOL.md, read by the core's parser.
fn vectors() -> Vec<(String, Vec<u8>)> {
    lubdub_core::protocol::test_vectors::parse(PROTOCOL_MD)
}

fn decoder_seed(bytes: &[u8], split: usize) -> Vec<u8> {
    let input = DecoderInput {
        max_frame_extra: DEFAULT_MAX_FRAME_EXTRA,
        split: u16::try_from(split).expect("seeds are short"),
        bytes,
    };
    let raw = input.encode();
    let parsed = DecoderInput::arbitrary(&mut Unstructured::new(&raw)).expect("parses back");
    assert_eq!(parsed, input);
    raw
}

fn encoded(frame: &Frame) -> Vec<u8> {
    encode_to_vec(frame).expect("seed frames fit their fields")
}

fn hello(requested_interval_ms: u32) -> Vec<u8> {
    encoded(&Frame::Hello(Hello {
        version: PROTOCOL_VERSION,
        flags: flags::ACKS_WANTED,
        requested_interval_ms,
        name: "alice".into(),
        credential: Vec::new(),
        status: None,
    }))
}

fn msg(to: &str, body: &[u8]) -> Vec<u8> {
    encoded(&Frame::Msg(Message {
        from: String::new(),
        to: to.into(),
        body: body.to_vec(),
    }))
}

fn pings(first_seq: u32, count: u32) -> Vec<u8> {
    (first_seq..first_seq + count)
        .flat_map(|seq| ping_bytes(seq, 0))
        .collect()
}

/// One seed from reads of `(µs since the previous read, bytes)`.
fn session_seed(config: SessionConfig, reads: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let input = SessionInput {
        config,
        steps: reads
            .iter()
            .map(|(advance_us, chunk)| Step {
                advance_us: *advance_us,
                chunk,
            })
            .collect(),
    };
    let raw = input.encode();
    let parsed = SessionInput::arbitrary(&mut Unstructured::new(&raw)).expect("parses back");
    assert_eq!(parsed, input);
    raw
}

fn session_seeds(vectors: &[(String, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    let defaults = SessionConfig::default();
    let second = 1_000_000;
    let mut seeds = Vec::new();

    // HELLO, then PINGs on the client's schedule (every 4/5 of 3 s).
    let mut reads = vec![(second, hello(3_000))];
    reads.extend((1..=6).map(|seq| (2_400_000, pings(seq, 1))));
    reads.push((100_000, encoded(&Frame::bye(ReasonCode::Normal, "quit"))));
    seeds.push(("hello_then_pings".into(), session_seed(defaults, &reads)));

    // HELLO and a PING flood in one read: burst, warning, strikes, BYE.
    let mut flood = hello(3_000);
    flood.extend(pings(1, 12));
    seeds.push((
        "hello_ping_flood".into(),
        session_seed(defaults, &[(second, flood)]),
    ));

    // A flood that slows down to its rate after the warning, then floods again.
    let mut reads = vec![(second, [hello(1_000), pings(1, 6)].concat())];
    reads.extend((7..17).map(|seq| (500_000, pings(seq, 1))));
    reads.push((0, pings(17, 8)));
    seeds.push(("ping_flood_forgiven".into(), session_seed(defaults, &reads)));

    // A flood spread over time with a PING burst of 1 (session_machine's
    // second crash: it was forgiven at every answered PING, never ended).
    let burst_of_one = SessionConfig {
        ping_burst: 1,
        ..defaults
    };
    let mut reads = vec![(second, hello(1_000))];
    reads.extend((1..=40).map(|seq| (25_000, pings(seq, 1))));
    seeds.push((
        "ping_flood_burst_of_one".into(),
        session_seed(burst_of_one, &reads),
    ));

    // HELLO and a burst of MSGs beyond a small rate, then more after a pause.
    let tight = SessionConfig {
        messages_per_second: 10,
        message_burst: 2,
        ..defaults
    };
    let burst: Vec<u8> = (0..6).flat_map(|_| msg("", b"hi")).collect();
    let reads = vec![
        (second, [hello(0), burst.clone()].concat()),
        (100_000, burst),
        (second, msg("bob", b"later")),
    ];
    seeds.push(("hello_msg_burst".into(), session_seed(tight, &reads)));
    // The same burst against the default rate (100 a second, bursts of 100).
    let burst: Vec<u8> = (0..110).flat_map(|_| msg("bob", b"x")).collect();
    seeds.push((
        "hello_msg_burst_default".into(),
        session_seed(defaults, &[(second, [hello(0), burst].concat())]),
    ));

    // A HELLO and a PING arriving one byte per read.
    let bytes = [hello(3_000), pings(1, 1)].concat();
    let reads: Vec<(u32, Vec<u8>)> = bytes.iter().map(|&byte| (1_000, vec![byte])).collect();
    seeds.push(("byte_by_byte".into(), session_seed(defaults, &reads)));

    // The shortest interval and limits at their edges.
    let edges = SessionConfig {
        min_interval_ms: 1,
        default_interval_ms: 0,
        max_interval_ms: 1,
        pings_per_interval: 3,
        ping_burst: 0,
        ping_strikes: 1,
        messages_per_second: 3,
        message_burst: 0,
        ..defaults
    };
    let reads = vec![
        (
            0,
            [hello(0), pings(1, 2), msg("", b"a"), msg("", b"b")].concat(),
        ),
        (333, pings(3, 1)),
        (1_000, pings(4, 1)),
    ];
    seeds.push(("edge_limits".into(), session_seed(edges, &reads)));
    // More PINGs per interval than the interval has microseconds: a spacing
    // under 1 µs (session_machine's first crash: it used to mean unlimited).
    let sub_microsecond = SessionConfig {
        pings_per_interval: 2_000,
        ..edges
    };
    let reads = vec![(0, [hello(1), pings(1, 4)].concat()), (1, pings(5, 4))];
    seeds.push((
        "sub_microsecond_ping_spacing".into(),
        session_seed(sub_microsecond, &reads),
    ));

    // HELLO then each protocol vector: every kind, valid or not, on an
    // established session; and each vector as the first frame.
    for (name, bytes) in vectors {
        seeds.push((
            format!("hello_then_{name}"),
            session_seed(defaults, &[(second, hello(3_000)), (1_000, bytes.clone())]),
        ));
        seeds.push((
            format!("first_{name}"),
            session_seed(defaults, &[(second, bytes.clone())]),
        ));
    }
    // A BYE with a reconnect hint after a server-only frame.
    let reason = Reason::new(ReasonCode::Shutdown, "bye");
    let reads = vec![(
        0,
        [
            hello(100),
            encoded(&Frame::Bye(Bye {
                reason,
                retry_after_ms: 5,
            })),
            pings(1, 1),
        ]
        .concat(),
    )];
    seeds.push(("hello_bye_then_ping".into(), session_seed(defaults, &reads)));

    // Rooms and watches: one room too many, a leave, a room MSG, a will to
    // the room, watches of every mode, a status, then a bad room.
    let mut rooms = hello(3_000);
    for index in 0..33 {
        rooms.extend(encoded(&Frame::Join {
            room: format!("#r{index}"),
        }));
    }
    rooms.extend(encoded(&Frame::Leave { room: "#r0".into() }));
    rooms.extend(msg("#r1", b"hi room"));
    rooms.extend(encoded(&Frame::Will(Will {
        delay_ms: 1_000,
        to: "#r1".into(),
        body: b"gone".to_vec(),
    })));
    for (mode, target) in [(1, "bob"), (2, "#r1"), (3, "#r2"), (0, "bob"), (2, "bob"), (9, "#r1")] {
        rooms.extend(encoded(&Frame::Watch(Watch {
            mode,
            target: target.into(),
        })));
    }
    rooms.extend(encoded(&Frame::Status { text: "away".into() }));
    rooms.extend(encoded(&Frame::Join { room: "#bad room".into() }));
    let unlimited = SessionConfig {
        messages_per_second: 0,
        ..defaults
    };
    seeds.push((
        "hello_rooms_and_watches".into(),
        session_seed(unlimited, &[(second, rooms)]),
    ));
    seeds
}

fn write(dir: &std::path::Path, seeds: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).expect("create the seed directory");
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("write a seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}
