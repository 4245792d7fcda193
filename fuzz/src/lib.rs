//! Support for lubdub's fuzz targets (`fuzz_targets/`) and the seed-corpus
//! generator (`examples/seed_corpus.rs`).
//!
//! # Layout
//! - [`inputs`]: the targets' input formats, parsed with `arbitrary` and
//!   written back by the seed generator.
//! - [`connection`]: the server's per-connection composition of the core
//!   (partial-frame buffering, `decode`, `admit`, `Conduct`), without sockets.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod connection;
pub mod inputs;
