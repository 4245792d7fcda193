//! The first connection: a server that is there but busy (REJECT
//! `server_busy`, or no answer to HELLO) is retried with backoff and full
//! jitter until the client's patience runs out; any other failure is
//! reported at once. Reconnects after a session have their own loop.

use std::time::{Duration, Instant};

use super::transport::Established;
use super::{dial, ClientConfig, ConnectError, TlsConnector};

/// Dials until a session is established, `config.first_connect_patience`
/// has passed, or a failure other than a busy server occurs. `on_retry`
/// hears each busy answer and the delay before the next attempt.
///
/// # Errors
/// The last [`ConnectError`].
pub(super) async fn establish(
    config: &ClientConfig,
    tls: Option<&TlsConnector>,
    on_retry: &mut dyn FnMut(&ConnectError, Duration),
) -> Result<Established, ConnectError> {
    let give_up_at = Instant::now() + config.first_connect_patience;
    let mut attempt = 0;
    loop {
        match dial(config, tls).await {
            Err(error) if error.is_busy() => {
                let delay = config.backoff.delay(attempt, rand::random::<f64>());
                if Instant::now() + delay >= give_up_at {
                    return Err(error);
                }
                attempt = attempt.saturating_add(1);
                on_retry(&error, delay);
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
