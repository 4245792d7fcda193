//! `lubdub bench`: load scenarios that check lubdub's promises against a
//! running server over real sockets, from a separate client.
//!
//! Layout: [`session`] drives one raw protocol session, [`silence`] is the
//! detection-error scenario (issue 4), [`outcome`] holds what happened to
//! each session and the error arithmetic, [`report`] aggregates outcomes
//! into counts, percentiles, a verdict, text and JSON, and [`limits`] tells
//! how many sessions this process can hold. It adds no dependency to the
//! crate: everything here already serves the server or the client.

pub mod limits;
pub mod outcome;
pub mod report;
pub mod session;
pub mod silence;

use std::net::SocketAddr;

pub use limits::OpenFiles;
pub use report::SilenceReport;
pub use silence::{SilenceConfig, Stage};

/// Why a scenario could not run (its measurements, good or bad, are a report).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// This process cannot hold that many sockets; nothing was opened.
    #[error(
        "{requested} sessions need {requested} open files, but this process may open {} and \
         {} are in use: it can hold at most {capacity} sessions (keeping {} files spare). \
         Lower --sessions, or raise the limit with `ulimit -n` where the hard limit allows",
        .files.limit, .files.in_use, limits::MARGIN
    )]
    TooManySessions {
        /// Sessions asked for.
        requested: usize,
        /// Sessions that fit.
        capacity: u64,
        /// The process's open-file budget.
        files: OpenFiles,
    },
    /// Not one handshake succeeded.
    #[error(
        "no session could be opened with {server}: {error} (is `lubdub server` listening there?)"
    )]
    NoSessions {
        /// Address tried.
        server: SocketAddr,
        /// The first failure.
        error: String,
    },
    /// The parameters cannot work.
    #[error("invalid benchmark settings: {0}")]
    InvalidConfig(String),
}
