//! What makes a server configuration unusable ([`ConfigError`], from
//! `ServerConfig::validate`), and which settings each error is about, so
//! that a caller can say where those settings came from (a file's line, a
//! flag).

use std::time::Duration;

use lubdub_core::detector::PhiConfigError;

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `min_interval` is zero or above `max_interval`, or `interval` is outside them.
    #[error("intervals must satisfy 1ms <= min-interval ({min:?}) <= interval ({default:?}) <= max-interval ({max:?}); the protocol grants whole milliseconds")]
    IntervalRange {
        /// Configured minimum.
        min: Duration,
        /// Configured default.
        default: Duration,
        /// Configured maximum.
        max: Duration,
    },
    /// An interval above what the wire format's u32 milliseconds can carry.
    #[error("max-interval {0:?} exceeds the protocol's limit of 49 days")]
    IntervalTooLong(Duration),
    /// `threads` is 0 or above what a session id can name.
    #[error("threads must be between 1 and 256, got {0}")]
    Threads(usize),
    /// `max_missed` is 0 or above the wire format's u16.
    #[error("max-missed must be between 1 and 65535, got {0}")]
    MaxMissed(u32),
    /// `max_frame_len` too small to hold a HELLO with a full name.
    #[error("max-frame must be at least 512 bytes, got {0}")]
    MaxFrameLen(usize),
    /// A phi parameter cannot work.
    #[error(transparent)]
    Phi(#[from] PhiConfigError),
    /// A TCP timer of zero (use `None` to disable it).
    #[error("{0} must be positive (or disabled)")]
    ZeroTcpTimer(&'static str),
    /// A verification queue of no room or no wait: every secret would be
    /// answered `server_busy`.
    #[error("{0} must be positive")]
    ZeroVerifierLimit(&'static str),
    /// The outbound queue cannot hold one frame of the largest size.
    #[error("max-outbound ({queue} bytes) must be at least max-frame ({frame} bytes) plus 4")]
    OutboundQueue {
        /// Configured queue bound.
        queue: usize,
        /// Configured frame maximum.
        frame: usize,
    },
    /// A connection cap of zero.
    #[error("max-connections must be at least 1")]
    MaxConnections,
    /// A slow-consumer timeout of zero.
    #[error("slow-consumer-timeout must be positive")]
    SlowConsumerTimeout,
    /// A server-wide outbound cap below one session's queue.
    #[error("max-outbound-total ({total} bytes) must be at least max-outbound ({queue} bytes)")]
    OutboundTotal {
        /// Configured server-wide cap.
        total: usize,
        /// Configured per-session queue.
        queue: usize,
    },
}

impl ConfigError {
    /// The settings (flag names, which are also the configuration file's
    /// keys) the error is about, most to blame first.
    pub fn keys(&self) -> &'static [&'static str] {
        match self {
            ConfigError::IntervalRange { .. } => &["min-interval", "interval", "max-interval"],
            ConfigError::IntervalTooLong(_) => &["max-interval"],
            ConfigError::Threads(_) => &["threads"],
            ConfigError::MaxMissed(_) | ConfigError::Phi(PhiConfigError::MaxMissed) => {
                &["max-missed"]
            }
            ConfigError::MaxFrameLen(_) => &["max-frame"],
            ConfigError::Phi(PhiConfigError::Threshold(_)) => &["phi-threshold"],
            ConfigError::Phi(PhiConfigError::MinStdDev) => &["phi-min-std-dev"],
            ConfigError::Phi(PhiConfigError::AcceptablePause) => &["phi-acceptable-pause"],
            ConfigError::ZeroTcpTimer("tcp-keepalive") => &["tcp-keepalive"],
            ConfigError::ZeroTcpTimer(_) => &["tcp-user-timeout"],
            ConfigError::ZeroVerifierLimit("verifier-queue") => &["verifier-queue"],
            ConfigError::ZeroVerifierLimit(_) => &["verifier-queue-wait"],
            ConfigError::OutboundQueue { .. } => &["max-outbound", "max-frame"],
            ConfigError::MaxConnections => &["max-connections"],
            ConfigError::SlowConsumerTimeout => &["slow-consumer-timeout"],
            ConfigError::OutboundTotal { .. } => &["max-outbound-total", "max-outbound"],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerConfig;

    #[test]
    fn each_error_names_the_settings_its_text_names() {
        let errors = [
            ServerConfig {
                min_interval: Duration::from_secs(5),
                ..ServerConfig::default()
            },
            ServerConfig {
                max_missed: 0,
                ..ServerConfig::default()
            },
            ServerConfig {
                max_outbound_bytes: 1000,
                ..ServerConfig::default()
            },
            ServerConfig {
                tcp_user_timeout: Some(Duration::ZERO),
                ..ServerConfig::default()
            },
            ServerConfig {
                phi_threshold: -1.0,
                ..ServerConfig::default()
            },
        ]
        .map(|config| config.validate().expect_err("invalid"));
        for error in errors {
            let text = error.to_string();
            let first = error.keys()[0];
            let said = text.contains(first) || text.contains(&first.replace('-', " "));
            assert!(said, "{first}: {text}");
        }
    }
}
