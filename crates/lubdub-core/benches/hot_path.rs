//! Micro-benchmarks of what the server does per heartbeat and per expiry:
//! decode a PING, build its PONG, touch the session's detector state, and
//! insert and expire one wheel entry. Issue 5's target is at most 50 ns per
//! heartbeat touch. Also what a HELLO or a direct MSG costs in name checks
//! (issue 12): the profile, and the skeleton compared at claim. Run with
//! `cargo bench -p lubdub-core`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use lubdub_core::detector::{CounterConfig, CounterDetector, Detector, PhiConfig, PhiDetector};
use lubdub_core::protocol::codec::{self, ping_bytes, pong_bytes};
use lubdub_core::protocol::name::{confusable_skeleton, validate_name};
use lubdub_core::protocol::{Frame, DEFAULT_MAX_FRAME_LEN};
use lubdub_core::wheel::DeadlineWheel;

const INTERVAL: Duration = Duration::from_secs(3);

fn codec(c: &mut Criterion) {
    let ping = ping_bytes(7, 1234);
    c.bench_function("decode PING", |b| {
        b.iter(|| codec::decode(black_box(&ping), DEFAULT_MAX_FRAME_LEN))
    });
    let pong = pong_bytes(7);
    c.bench_function("decode PONG", |b| {
        b.iter(|| codec::decode(black_box(&pong), DEFAULT_MAX_FRAME_LEN))
    });
    c.bench_function("encode PONG (stack bytes)", |b| {
        b.iter(|| pong_bytes(black_box(7)))
    });
    let mut out = Vec::with_capacity(64);
    let frame = Frame::Ping {
        seq: 7,
        rtt_us: 1234,
    };
    c.bench_function("encode PING (into a reused Vec)", |b| {
        b.iter(|| {
            out.clear();
            codec::encode(black_box(&frame), &mut out)
        })
    });
}

fn detectors(c: &mut Criterion) {
    let t0 = Instant::now();
    let counter = CounterDetector::new(CounterConfig::default());
    let (mut state, _) = counter.start(t0, INTERVAL);
    let mut now = t0;
    c.bench_function("counter: heartbeat touch", |b| {
        b.iter(|| {
            now += Duration::from_millis(2400);
            counter.heartbeat(black_box(&mut state), now)
        })
    });
    let phi = PhiDetector::new(PhiConfig::default()).expect("default config is valid");
    let (mut state, _) = phi.start(t0, INTERVAL);
    let mut now = t0;
    c.bench_function("phi: heartbeat touch", |b| {
        b.iter(|| {
            now += Duration::from_millis(2400);
            phi.heartbeat(black_box(&mut state), now)
        })
    });
    let (state, first) = counter.start(t0, INTERVAL);
    c.bench_function("counter: check of a due session", |b| {
        b.iter_batched(
            || state,
            |mut state| counter.check(&mut state, black_box(first)),
            BatchSize::SmallInput,
        )
    });
    let (state, first) = phi.start(t0, INTERVAL);
    c.bench_function("phi: check of a due session", |b| {
        b.iter_batched(
            || state,
            |mut state| phi.check(&mut state, black_box(first)),
            BatchSize::SmallInput,
        )
    });
}

fn wheel(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut wheel = DeadlineWheel::new(t0);
    let mut due = Vec::with_capacity(16);
    let mut now = t0;
    c.bench_function("wheel: insert + expire one entry", |b| {
        b.iter(|| {
            now += Duration::from_millis(1);
            wheel.insert(now, black_box(1u64));
            due.clear();
            wheel.expire(now, &mut due);
            due.len()
        })
    });
}

fn names(c: &mut Criterion) {
    c.bench_function("validate_name: sensor-42.eu_west", |b| {
        b.iter(|| validate_name(black_box("sensor-42.eu_west")))
    });
    c.bench_function("validate_name: Алиса", |b| {
        b.iter(|| validate_name(black_box("Алиса")))
    });
    c.bench_function("confusable_skeleton: sensor-42.eu_west", |b| {
        b.iter(|| confusable_skeleton(black_box("sensor-42.eu_west")))
    });
}

criterion_group!(hot_path, codec, detectors, wheel, names);
criterion_main!(hot_path);
