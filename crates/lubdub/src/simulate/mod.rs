//! Deterministic simulation of the failure detectors: how often each policy
//! drops a live session, and how fast it notices a crashed one.
//!
//! Data flow: [`model`] generates each session's PINGs (client pauses,
//! delay, loss bursts, TCP retransmission) → [`replay`] feeds them to a
//! detector exactly as the server would → [`run`] does that for many
//! sessions and every [`policy`] → [`report`] and [`plot`] present it.
//! `docs/DETECTION.md` explains the model and the results.

pub mod model;
pub mod plot;
pub mod policy;
pub mod replay;
pub mod report;
pub mod run;

pub use model::NetworkModel;
pub use policy::{PhiGuards, Policy};
pub use report::Report;
pub use run::Simulation;

use lubdub_core::detector::PhiConfigError;

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    /// A parameter of the model or the run cannot work.
    #[error("invalid simulation parameter: {0}")]
    Model(String),
    /// The phi guards were refused by the detector.
    #[error(transparent)]
    Phi(#[from] PhiConfigError),
    /// The plot could not be drawn.
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}

/// Runs `simulation` and summarises it.
///
/// # Errors
/// [`SimulateError`] when a parameter cannot work.
pub fn simulate(simulation: &Simulation) -> Result<Report, SimulateError> {
    let tallies = simulation.run()?;
    Ok(Report::new(simulation, &tallies))
}

#[cfg(test)]
mod tests;
