//! `lubdub bench`: load scenarios that check lubdub's promises against a
//! running server over real sockets, from a separate client.
//!
//! Two families of scenarios:
//!
//! - **silence** (detection error), in this process: [`session`] drives one
//!   raw protocol session, [`silence`] runs the scenario, [`outcome`] holds
//!   what happened to each session and the error arithmetic, [`report`]
//!   aggregates outcomes into counts, percentiles, a verdict, text and JSON.
//! - **hold, pump, stall** (capacity and cost), over worker processes:
//!   [`fleet`] plans and coordinates them and reads the server's costs
//!   through [`process_stats`], [`worker`] is one worker process,
//!   [`dialect`] is the lubdub or MQTT bytes it speaks, [`load_report`]
//!   derives memory per session and CPU per heartbeat, and `plot` (feature
//!   `plot`) draws those figures from several reports against N.
//!
//! [`limits`] tells how many sockets a process may hold.

pub mod dialect;
pub mod fleet;
pub mod limits;
pub mod load_report;
pub mod outcome;
#[cfg(feature = "plot")]
pub mod plot;
pub mod presence;
pub mod process_stats;
pub mod report;
pub mod session;
pub mod silence;
pub mod worker;

use std::net::SocketAddr;

pub use dialect::Dialect;
pub use fleet::{FleetEvent, LoadConfig, LoadScenario, StallPlan};
pub use limits::OpenFiles;
pub use load_report::LoadReport;
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
        "no session could be opened with {server}: {error} (is the server listening there, \
         and does it speak the --protocol chosen?)"
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
    /// A worker process could not be started or failed.
    #[error("load generator worker: {0}")]
    Worker(String),
    /// The server's process could not be read or signalled.
    #[error("server process: {0}")]
    Server(String),
}
