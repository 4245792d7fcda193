//! TCP-level liveness options shared by server and client sockets.
//!
//! The application heartbeat catches a peer that is hung (its kernel still
//! acknowledges, its process does not answer). Two kernel mechanisms catch
//! what it cannot see from one side alone: keepalive probes notice an idle
//! connection whose peer host vanished, and `TCP_USER_TIMEOUT` aborts a
//! connection whose sent data stays unacknowledged, which is the only
//! signal a one-way client (that never hears from the server) gets when the
//! server's host disappears. See `docs/DETECTION.md`, "What each layer catches".

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

/// Probes sent, `keepalive` apart, before the kernel gives up on a silent
/// peer (unless `TCP_USER_TIMEOUT` decides first).
const KEEPALIVE_PROBES: u32 = 3;

/// Sets keepalive (idle time and probe spacing `keepalive`, in whole
/// seconds, at least 1) and `TCP_USER_TIMEOUT`; `None` leaves the
/// respective system default. Each option is set even if the other fails.
///
/// # Errors
/// The first `setsockopt` that failed.
pub fn apply(
    socket: SockRef<'_>,
    keepalive: Option<Duration>,
    user_timeout: Option<Duration>,
) -> io::Result<()> {
    let keepalive_result = keepalive.map_or(Ok(()), |idle| {
        // The kernel counts keepalive time in whole seconds and refuses 0.
        let idle = idle.max(Duration::from_secs(1));
        let params = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle)
            .with_retries(KEEPALIVE_PROBES);
        socket.set_tcp_keepalive(&params)
    });
    let user_timeout_result =
        user_timeout.map_or(Ok(()), |timeout| socket.set_tcp_user_timeout(Some(timeout)));
    keepalive_result.and(user_timeout_result)
}
