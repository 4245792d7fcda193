//! Sans-IO core of lubdub: everything that decides, nothing that waits.
//!
//! No async runtime and no clock live here: callers pass bytes and instants
//! in and get frames, verdicts and deadlines out, so every rule can be
//! unit-tested with synthetic time and fuzzed without sockets.
//!
//! # Layout
//! - [`protocol`]: frames, the two-phase codec, reason codes, handshake rules.
//! - [`connection`]: one server-side connection's life as a state machine:
//!   bytes, deadlines and answers in; frames, events and requests out.
//! - [`session`]: which frame the server accepts at which phase, and how often.
//! - [`rate`]: rate limits in one `u64` per flow (GCRA).
//! - [`budget`]: fan-out work budgets (deliveries and bytes, not frames).
//! - [`drain`]: whether an outbound queue drains (the slow-consumer rule).
//! - [`detector`]: the [`Detector`](detector::Detector) trait and its policies.
//! - [`wheel`]: one timing wheel holding every session's next deadline.
//! - [`client`]: the client's heartbeat schedule and server-death detection.
//! - [`stall`]: the listening clock, which does not count a process's own
//!   stalls as its peers' silence.
//! - [`backlog`]: the PING allowance after a stall, which does not count
//!   heartbeats held up by it as a flood.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod backlog;
pub mod budget;
pub mod client;
pub mod connection;
pub mod detector;
pub mod drain;
pub mod protocol;
pub mod rate;
pub mod session;
pub mod stall;
pub mod wheel;
