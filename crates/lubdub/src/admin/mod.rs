//! Admin HTTP API on its own port: `GET /sessions` (JSON listing, paged or
//! streamed, or one name), `GET /metrics` (OpenMetrics text) and
//! `GET /healthz`. Routed by axum, served by [`listener`] under a connection
//! cap and timeouts; it asks the event loop for its data through
//! [`ServerControl`], one bounded page per request to the loop. Every
//! route but `/healthz` is behind the bearer token, when one is set
//! ([`access`]).

mod access;
mod events;
mod listener;
mod rooms;
mod sessions;

pub use access::{AdminToken, TokenFileError};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::server::ServerControl;

pub use listener::serve;

/// Limits of the admin port, so that no client of it can take the
/// descriptors, memory or time the protocol port needs (SECURITY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    /// Admin connections open at once; a further one is answered 503
    /// (`Retry-After: 1`) and closed at once. The server keeps this many
    /// descriptors back from its protocol connections
    /// (`ServerConfig::admin_connections`). Default 64.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the
    /// server starts waiting for them (a new connection, or the end of the
    /// previous response on a kept-alive one); then the connection is
    /// closed. Default 5 s.
    pub header_timeout: Duration,
    /// Longest an admin connection stays open, whatever it does (a slow
    /// reader of a long listing, back-to-back requests); then it is closed,
    /// mid-response if need be. Default 30 s.
    pub connection_timeout: Duration,
}

/// Default of [`AdminConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(30),
        }
    }
}

/// The admin routes over a running server; with a `token`, all but
/// `/healthz` (which tells a load balancer no more than that the server
/// runs) need it.
pub fn router(control: ServerControl, token: Option<Arc<AdminToken>>) -> Router {
    Router::new()
        .route("/sessions", get(sessions::sessions))
        .route("/metrics", get(metrics))
        .route("/events", get(events::events))
        .route("/rooms", get(rooms::rooms))
        .route("/rooms/{room}", get(rooms::room))
        .route_layer(axum::middleware::from_fn_with_state(
            token,
            access::require_token,
        ))
        .route("/healthz", get(healthz))
        .with_state(control)
}

async fn metrics(State(control): State<ServerControl>) -> Response {
    match control.state_counts().await {
        Ok(counts) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            control.metrics().encode(counts),
        )
            .into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Binds the admin listener.
///
/// # Errors
/// The bind error, for example when the port is taken.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
