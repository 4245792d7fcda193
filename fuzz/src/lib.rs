//! Support for lubdub's fuzz targets (`fuzz_targets/`) and the seed-corpus
//! generator (`examples/seed_corpus.rs`).
//!
//! # Layout
//! - [`inputs`]: the targets' input formats, parsed with `arbitrary` and
//!   written back by the seed generator.
//! - [`machine`]: the core's real connection machine driven as the server
//!   drives it, its outputs read back into one verdict per frame.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod inputs;
pub mod machine;
