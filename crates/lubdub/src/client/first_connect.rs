//! The first connection: failures that a later attempt can cure (no server
//! listening yet, unreachable, a busy server, no answer to HELLO) are
//! retried with backoff and full jitter, as every reconnect is, until the
//! client's patience runs out; a refusal that the same HELLO would get
//! again is reported at once. Reconnects after a session have their own
//! loop (`session`).

use std::time::{Duration, Instant};

use super::transport::Established;
use super::{dial, ClientConfig, ConnectError, TlsConnector};

/// Dials until a session is established, `config.first_connect_patience`
/// has passed, or a failure that retrying cannot cure occurs. `on_retry`
/// hears each failed attempt and the delay before the next one.
///
/// # Errors
/// The last [`ConnectError`].
pub(super) async fn establish(
    config: &ClientConfig,
    tls: Option<&TlsConnector>,
    on_retry: &mut (dyn FnMut(&ConnectError, Duration) + Send),
) -> Result<Established, ConnectError> {
    let give_up_at = config
        .first_connect_patience
        .map(|patience| Instant::now() + patience);
    let mut attempt = 0;
    loop {
        match dial(config, tls).await {
            Err(error) if error.is_retryable() => {
                let mut delay = config.backoff.delay(attempt, rand::random::<f64>());
                if let Some(give_up_at) = give_up_at {
                    // Tried until the patience is over: the last wait is
                    // cut to end with it, for one more attempt then.
                    let left = give_up_at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(error);
                    }
                    delay = delay.min(left);
                }
                attempt = attempt.saturating_add(1);
                on_retry(&error, delay);
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
