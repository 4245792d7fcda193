//! What a peer is told when its connection ends, and how a TLS
//! ClientHello is told from a lubdub frame: the texts of the machine's
//! farewells, kept in one place so that they stay consistent.

use std::time::Duration;

use crate::protocol::{Bye, Frame, Reason, ReasonCode};

/// REJECT `tls_required`: a TLS server read plain lubdub.
pub const TLS_REQUIRED_TEXT: &str = "this server requires TLS; connect with --tls / --tls-ca";

/// REJECT `malformed_frame` when a peer opens a TLS handshake on a plain server.
pub const TLS_ON_PLAIN_TEXT: &str =
    "peer started a TLS handshake but this server has no --tls-cert; connect without --tls";

/// REJECT `server_busy` when the registry cannot take a claim. What the
/// registry said (addresses, reasons) is for the operator's log only.
pub const REGISTRY_UNAVAILABLE_TEXT: &str =
    "the server cannot register names right now; retry in a few seconds";

/// Content type of a TLS handshake record, the first byte a TLS client
/// sends. A lubdub frame starts with its length prefix, whose first byte is
/// 0 for every frame a server accepts (at most 16 MiB), so one byte decides.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;
/// First byte of the record version (`03 01` .. `03 03`) after it.
const TLS_MAJOR_VERSION: u8 = 0x03;

/// Whether `bytes` start like a TLS ClientHello record.
pub fn looks_like_client_hello(bytes: &[u8]) -> bool {
    matches!(bytes, [TLS_HANDSHAKE_RECORD, TLS_MAJOR_VERSION, ..])
}

/// Durations rounded to whole milliseconds, for texts people read.
pub(super) fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

/// Milliseconds, saturating at `u32::MAX` (49 days).
pub(super) fn millis_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// REJECT `handshake_timeout`.
pub(super) fn handshake_timeout(timeout: Duration) -> String {
    format!(
        "no HELLO within the handshake timeout of {}",
        humantime::format_duration(timeout)
    )
}

/// BYE `timeout`: why a silent session was declared dead. `phi` is the
/// adaptive detector's value when it decided before the counter's ceiling.
pub(super) fn declared_dead(
    silent_for: Duration,
    phi: Option<f64>,
    phi_threshold: f64,
    max_missed: u32,
    interval: Duration,
) -> String {
    let ceiling = interval * max_missed;
    let verdict = match phi {
        Some(phi) if silent_for < ceiling => format!("phi {phi:.2} reached {phi_threshold}"),
        _ => format!(
            "{max_missed} × the {} interval",
            humantime::format_duration(interval)
        ),
    };
    format!(
        "no frame for {}: declared dead ({verdict})",
        humantime::format_duration(whole_millis(silent_for))
    )
}

/// BYE `taken_over`.
pub(super) fn taken_over(new_peer: &str) -> Frame {
    Frame::bye(
        ReasonCode::TakenOver,
        format!("name taken over by a new connection from {new_peer}"),
    )
}

/// BYE `shutdown` with its reconnect hint.
pub(super) fn shutdown_bye(retry_after: Duration) -> Frame {
    Frame::Bye(Bye {
        reason: Reason::new(
            ReasonCode::Shutdown,
            format!(
                "server shutting down; reconnect after {}",
                humantime::format_duration(whole_millis(retry_after))
            ),
        ),
        retry_after_ms: millis_u32(retry_after),
    })
}
