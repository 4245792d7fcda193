//! Prints what `session_machine` sees for one input file: the configuration,
//! then each frame's arrival, phase, kind and verdict. For reading a crash.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example replay_session -- FILE`

use arbitrary::{Arbitrary, Unstructured};
use lubdub_fuzz::inputs::SessionInput;
use lubdub_fuzz::machine::Connection;

fn main() {
    let path = std::env::args().nth(1).expect("usage: replay_session FILE");
    let raw = std::fs::read(&path).expect("read the input");
    let input = SessionInput::arbitrary(&mut Unstructured::new(&raw)).expect("parses");
    let config = input.config;
    println!("{config:?}");
    println!("{:?}", config.policy());
    println!("{:?}", config.limits());
    let mut connection = Connection::new(config.max_frame_len(), config.policy(), config.limits());
    let mut outcomes = Vec::new();
    let mut now_us = 0u64;
    for step in &input.steps {
        now_us += u64::from(step.advance_us);
        connection.receive(step.chunk, now_us, &mut outcomes);
    }
    for outcome in &outcomes {
        println!(
            "{:>12} µs {:?} {:?} -> {:?}",
            outcome.now_us,
            outcome.phase,
            outcome.frame.kind(),
            outcome.verdict
        );
    }
    println!(
        "granted {:?}, ending {:?}",
        connection.granted_interval(),
        connection.ending()
    );
}
