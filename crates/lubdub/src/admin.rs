//! Admin HTTP API on its own port: `GET /sessions` (JSON listing),
//! `GET /metrics` (Prometheus text format) and `GET /healthz`. Served by axum on tokio; it asks the event loop for its
//! data through [`ServerControl`], so it never touches session state itself.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use crate::server::ServerControl;

/// The admin routes over a running server.
pub fn router(control: ServerControl) -> Router {
    Router::new()
        .route("/sessions", get(sessions))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(control)
}

async fn sessions(State(control): State<ServerControl>) -> Response {
    match control.sessions().await {
        Ok(mut listing) => {
            listing.sort_by(|a, b| a.name.cmp(&b.name));
            Json(listing).into_response()
        }
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, error.to_string()).into_response(),
    }
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

/// Serves the admin API on `listener` until `shutdown` completes.
///
/// # Errors
/// An IO error from the HTTP server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    control: ServerControl,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(control))
        .with_graceful_shutdown(shutdown)
        .await
}
