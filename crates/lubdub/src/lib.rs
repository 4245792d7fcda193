//! lubdub keeps long-lived TCP connections honest: clients heartbeat, the
//! server keeps the registry of who is online and drops sessions that fall
//! silent, and clients notice a dead or hung server and reconnect.
//!
//! # Layout
//! - [`server`]: the event loop that owns every connection, the registry and
//!   the server's configuration.
//! - [`client`]: connect, send, receive and a stream of status changes, with
//!   heartbeats and reconnection handled in the background.
//! - [`address`]: `host:port` as people write it, checked (with the fix
//!   in the message) and resolved.
//! - [`escape`]: names and bodies a peer sent, made safe to print on a
//!   terminal or in a log (control, format and invisible characters escaped).
//! - [`report`]: an error and its causes as one line, each said once.
//! - [`pem`]: the certificate and key files TLS reads (server and client).
//! - [`admin`]: the HTTP API (`/sessions`, `/healthz`).
//! - [`auth`]: credentials: signed tokens, the auth file of argon2id
//!   hashes, and the verifier threads that keep argon2 off the event loop.
//! - [`bench`] (feature `bench`, on by default): load scenarios run against a server by `lubdub bench`, and
//!   (feature `plot`, on by default) the SVG plot of their reports.
//! - [`simulate`] (feature `simulate`, on by default): a deterministic
//!   simulation of the failure detectors on modelled traffic, behind
//!   `lubdub simulate` and `docs/DETECTION.md`.
//!
//! The `lubdub` binary's subcommands live in `src/cli/`, outside the library.
//!
//! The protocol and detection rules live in the sans-IO crate
//! [`lubdub_core`], re-exported here as [`core`].

pub mod address;
pub mod admin;
pub mod auth;
#[cfg(feature = "bench")]
pub mod bench;
pub mod client;
pub mod escape;
pub mod pem;
pub mod report;
pub mod server;
#[cfg(feature = "simulate")]
pub mod simulate;
mod tcp_options;
pub mod webhook;

pub use lubdub_core as core;
