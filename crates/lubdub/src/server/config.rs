//! Server configuration: every value documented, defaults from seed 003.
//!
//! CLI flags map onto these fields one to one (`lubdub server --help`).
//!
//! Size: one job (the settings and what follows from them), about 470
//! lines, most of them documented fields and their checks.

use std::net::SocketAddr;
use std::time::Duration;

use lubdub_core::detector::{PhiConfig, PhiDetector};
use lubdub_core::protocol::handshake::IntervalPolicy;
use lubdub_core::protocol::DEFAULT_MAX_FRAME_LEN;

pub use super::config_error::ConfigError;
use crate::auth::AuthConfig;

/// Which failure-detection policy judges sessions.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum DetectorPolicy {
    /// Missed-beat count: suspect after one silent interval, dead after
    /// --max-missed.
    #[default]
    Counter,
    /// Phi accrual: suspect at half the phi threshold, dead at the threshold,
    /// and in any case after --max-missed intervals.
    Phi,
}

/// How a server listens, grants intervals and judges sessions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address the heartbeat protocol listens on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Event loops (threads) serving connections, each with its share of
    /// them; `None`: one per available core.
    pub threads: Option<usize>,
    /// Interval granted to clients that ask for none (seed 003: 3 s).
    pub interval: Duration,
    /// Shortest interval granted; shorter requests are raised to it.
    pub min_interval: Duration,
    /// Longest interval granted; longer requests are lowered to it.
    pub max_interval: Duration,
    /// Silent intervals after which a session is dead (seed 003: 5).
    pub max_missed: u32,
    /// Time a new connection has to complete HELLO.
    pub handshake_timeout: Duration,
    /// Largest frame accepted, kind byte and payload, in bytes.
    pub max_frame_len: usize,
    /// Unsent bytes queued for one session before it is dropped as a slow
    /// consumer. Messages from other sessions may fill only half of it:
    /// beyond that they are not queued and their senders are told
    /// (NOTICE `recipient_busy`), so a flood never fills a reader's queue.
    pub max_outbound_bytes: usize,
    /// How long bytes may wait in a session's queue: a session whose queue
    /// did not drain what it held this long ago (it does not read, or
    /// reads a trickle) is dropped as a slow consumer, whatever the size.
    pub slow_consumer_timeout: Duration,
    /// Unsent bytes queued for all sessions together; `None` takes 1/16 of
    /// the machine's memory (between 64 MiB and 4 GiB). At the cap new
    /// fan-out is refused (NOTICE `server_busy`) and the largest queues that
    /// are not draining are dropped as slow consumers.
    pub max_outbound_total: Option<usize>,
    /// Failure-detection policy.
    pub detector: DetectorPolicy,
    /// Phi at which a session is dead (phi policy only); suspect from half of it.
    pub phi_threshold: f64,
    /// Floor under the measured standard deviation of a session's gaps (phi policy only).
    pub phi_min_std_dev: Duration,
    /// Silence beyond the mean gap tolerated before phi rises (phi policy only).
    pub phi_acceptable_pause: Duration,
    /// Idle time before TCP keepalive probes start, and the time between
    /// probes; `None` (the default) disables keepalive. The heartbeat
    /// already catches a silent peer at its deadline on the server side.
    pub tcp_keepalive: Option<Duration>,
    /// `TCP_USER_TIMEOUT`: how long sent data may stay unacknowledged before
    /// the kernel aborts the connection; `None` (the default) leaves the
    /// system's (about 15 minutes of retransmissions).
    pub tcp_user_timeout: Option<Duration>,

    // Limits against hostile or broken peers (SECURITY.md lists them all).
    /// Open connections of every kind; `None` takes the process's open-file
    /// limit minus [`RESERVED_FILES`] minus [`Self::admin_connections`], so
    /// that accepting never fails for want of a descriptor and the admin
    /// API always has its own.
    pub max_connections: Option<usize>,
    /// Descriptors kept back from the default `max_connections` for the
    /// admin API's connections: its connection cap
    /// (`crate::admin::AdminConfig::max_connections`, default 64), so that
    /// neither port can take the descriptors the other needs.
    pub admin_connections: usize,
    /// Open connections per source address (IPv6: per /64); 0 is unlimited.
    pub max_connections_per_ip: u32,
    /// New connections per second per source address, with bursts of as
    /// many; 0 is unlimited.
    pub accept_rate_per_ip: u32,
    /// MSGs per second per session, with bursts of as many; 0 is unlimited.
    pub max_messages_per_sec: u32,
    /// Deliveries (a MSG written to one recipient: a broadcast is one per
    /// recipient) per second per session, with a second's worth at once;
    /// 0 is unlimited.
    pub max_deliveries_per_sec: u32,
    /// Bytes delivered to recipients per second per session (a broadcast
    /// counts its size once per recipient); 0 is unlimited.
    pub max_fanout_bytes_per_sec: u64,
    /// Deliveries per second of all sessions together, so that fan-out can
    /// never take the loop from heartbeats and verdicts; 0 is unlimited.
    pub max_deliveries_per_sec_total: u32,
    /// Bytes delivered per second by all sessions together; 0 is unlimited.
    pub max_fanout_bytes_per_sec_total: u64,
    /// Strikes for MSGs refused (over the session's rates or budgets)
    /// that close it with BYE `rate_limited`: one per second in which
    /// refusals go on, and one per 255 refused MSGs; 0 never closes.
    pub max_refusal_strikes: u8,
    /// PINGs per granted interval a session may send at the steady rate;
    /// 0 is unlimited.
    pub max_pings_per_interval: u32,
    /// How long a shutdown waits for farewells to be delivered and peers to
    /// close before it closes what is left.
    pub shutdown_timeout: Duration,
    /// Presence events kept for event streams that resume
    /// (`Last-Event-ID`) and for readers that fall behind; one that asks
    /// for older ones is told to resync. Default
    /// [`super::hub::DEFAULT_CAPACITY`].
    pub event_history: usize,
    // Credentials (`--auth-file`, `--token-secret`): kept in one field of
    // their own, documented in `crate::auth::AuthConfig`.
    /// Who may claim which name; by default nobody needs a credential.
    pub auth: AuthConfig,
    // TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`): kept apart from
    // the fields above, and loaded by `server::tls` at start.
    /// Serve TLS with this certificate and key; `None` (the default) serves
    /// plain lubdub.
    pub tls: Option<super::tls::TlsFiles>,
}

/// Descriptors kept back from `max_connections` by default for the
/// server's own files: the listener, the epoll instance, the waker, the
/// admin runtime and listener, the log, the file refused at accept. The
/// admin API's connections have their own share
/// ([`ServerConfig::admin_connections`]) on top.
pub const RESERVED_FILES: usize = 64;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            threads: None,
            interval: Duration::from_secs(3),
            min_interval: Duration::from_millis(100),
            max_interval: Duration::from_secs(600),
            max_missed: 5,
            handshake_timeout: Duration::from_secs(5),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_outbound_bytes: 1024 * 1024,
            slow_consumer_timeout: Duration::from_secs(10),
            max_outbound_total: None,
            detector: DetectorPolicy::Counter,
            phi_threshold: PhiConfig::default().threshold,
            phi_min_std_dev: PhiConfig::default().min_std_dev,
            phi_acceptable_pause: PhiConfig::default().acceptable_pause,
            // Off: the heartbeat convicts every silent session at its
            // deadline anyway, and on Linux keepalive probes were measured to
            // reset live (hung but acknowledging) sessions just before their
            // deadline, racing the BYE; see docs/DETECTION.md.
            tcp_keepalive: None,
            tcp_user_timeout: None,
            max_connections: None,
            admin_connections: 64,
            // A NAT gateway can hold thousands of devices; raise these for
            // fleets behind one (SECURITY.md).
            max_connections_per_ip: 1_000,
            accept_rate_per_ip: 200,
            max_messages_per_sec: 100,
            // Fan-out budgets: how they were chosen is in BENCHMARKS.md
            // (issue 12) and SECURITY.md.
            max_deliveries_per_sec: 2_000,
            max_fanout_bytes_per_sec: 2 * 1024 * 1024,
            max_deliveries_per_sec_total: 50_000,
            max_fanout_bytes_per_sec_total: 64 * 1024 * 1024,
            max_refusal_strikes: 5,
            max_pings_per_interval: 4,
            shutdown_timeout: Duration::from_secs(5),
            event_history: super::hub::DEFAULT_CAPACITY,
            // Credentials: none required unless configured.
            auth: AuthConfig::default(),
            tls: None,
        }
    }
}

impl ServerConfig {
    /// Checks that the values can work together.
    ///
    /// # Errors
    /// The first inconsistency found, as a [`ConfigError`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Intervals travel in whole milliseconds: a grant under 1 ms would
        // become 0, and with it every limit scaled to the interval.
        if self.min_interval < Duration::from_millis(1)
            || self.min_interval > self.interval
            || self.interval > self.max_interval
        {
            return Err(ConfigError::IntervalRange {
                min: self.min_interval,
                default: self.interval,
                max: self.max_interval,
            });
        }
        if self.max_interval.as_millis() > u128::from(u32::MAX) {
            return Err(ConfigError::IntervalTooLong(self.max_interval));
        }
        if self.max_missed == 0 || self.max_missed > u32::from(u16::MAX) {
            return Err(ConfigError::MaxMissed(self.max_missed));
        }
        if self.max_frame_len < 512 {
            return Err(ConfigError::MaxFrameLen(self.max_frame_len));
        }
        if self
            .tcp_keepalive
            .is_some_and(|keepalive| keepalive.is_zero())
        {
            return Err(ConfigError::ZeroTcpTimer("tcp-keepalive"));
        }
        if self
            .tcp_user_timeout
            .is_some_and(|timeout| timeout.is_zero())
        {
            return Err(ConfigError::ZeroTcpTimer("tcp-user-timeout"));
        }
        if self.max_outbound_bytes < self.max_frame_len + 4 {
            return Err(ConfigError::OutboundQueue {
                queue: self.max_outbound_bytes,
                frame: self.max_frame_len,
            });
        }
        if self.auth.verifier_queue == 0 {
            return Err(ConfigError::ZeroVerifierLimit("verifier-queue"));
        }
        if self.auth.verifier_queue_wait.is_zero() {
            return Err(ConfigError::ZeroVerifierLimit("verifier-queue-wait"));
        }
        if let Some(threads) = self.threads {
            if threads == 0 || threads > super::event_loop::MAX_LOOPS {
                return Err(ConfigError::Threads(threads));
            }
        }
        if self.max_connections == Some(0) {
            return Err(ConfigError::MaxConnections);
        }
        if self.slow_consumer_timeout.is_zero() {
            return Err(ConfigError::SlowConsumerTimeout);
        }
        if let Some(total) = self
            .max_outbound_total
            .filter(|total| *total < self.max_outbound_bytes)
        {
            return Err(ConfigError::OutboundTotal {
                total,
                queue: self.max_outbound_bytes,
            });
        }
        PhiDetector::new(self.phi_config())?;
        Ok(())
    }

    /// The connection cap: as configured, or the open-file limit minus
    /// [`RESERVED_FILES`] and [`Self::admin_connections`] (or 65,536 when
    /// the limit cannot be read).
    pub fn connection_cap(&self) -> usize {
        self.max_connections.unwrap_or_else(|| {
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_or(
                65_536,
                |(soft, _)| {
                    usize::try_from(soft)
                        .unwrap_or(usize::MAX)
                        .saturating_sub(RESERVED_FILES)
                        .saturating_sub(self.admin_connections)
                        .max(1)
                },
            )
        })
    }

    /// The server-wide cap on queued outbound bytes: as configured, or 1/16
    /// of the machine's memory between 64 MiB and 4 GiB (1 GiB when the
    /// memory cannot be read).
    pub fn outbound_total_cap(&self) -> usize {
        self.max_outbound_total.unwrap_or_else(|| {
            const MIB: u64 = 1024 * 1024;
            let total = machine_memory().map_or(1024 * MIB, |memory| {
                (memory / 16).clamp(64 * MIB, 4096 * MIB)
            });
            usize::try_from(total)
                .unwrap_or(usize::MAX)
                .max(self.max_outbound_bytes)
        })
    }

    /// What the queues (and the fan-outs waiting to be written) may hold
    /// together: 7/8 of [`outbound_total_cap`](Self::outbound_total_cap),
    /// at least one queue. The last eighth is for what the count cannot
    /// see but an attack makes grow with it: the senders' partial inbound
    /// frames and the allocator's holes between freed blocks. Held to the
    /// whole cap, a broadcast flood grew resident memory up to 4.5 MB past
    /// a 64 MiB cap (attack 3b in BENCHMARKS.md). Each event loop beyond
    /// the first takes 2 MiB more of it for what is its own (its read
    /// scratch, its free chunks, its fan-out lists, its holes): with two
    /// loops attack 3 peaked at 66.5 MB of a 67.1 MB cap without it.
    pub fn outbound_queue_cap(&self) -> usize {
        let per_loop = 2 * 1024 * 1024 * self.loops().saturating_sub(1);
        (self.outbound_total_cap() / 8 * 7)
            .saturating_sub(per_loop)
            .max(self.max_outbound_bytes)
    }

    /// One session's fan-out budget.
    pub fn sender_fanout_limits(&self) -> lubdub_core::budget::FanoutLimits {
        lubdub_core::budget::FanoutLimits {
            deliveries_per_sec: self.max_deliveries_per_sec,
            bytes_per_sec: self.max_fanout_bytes_per_sec,
            burst: Duration::from_secs(1),
        }
    }

    /// The whole loop's fan-out budget.
    pub fn loop_fanout_limits(&self) -> lubdub_core::budget::FanoutLimits {
        // The totals are the process's: each loop gets its share.
        let loops = u64::try_from(self.loops()).unwrap_or(1).max(1);
        let share = |total: u64| {
            if total == 0 {
                0
            } else {
                (total / loops).max(1)
            }
        };
        lubdub_core::budget::FanoutLimits {
            deliveries_per_sec: u32::try_from(share(u64::from(self.max_deliveries_per_sec_total)))
                .unwrap_or(u32::MAX),
            bytes_per_sec: share(self.max_fanout_bytes_per_sec_total),
            // A tenth of a second: a burst of all senders together is
            // written in one stretch of the loop.
            burst: Duration::from_millis(100),
        }
    }

    /// Event loops to run: `threads`, or one per available core.
    pub fn loops(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }

    /// What the connection machines are judged by (`lubdub_core::connection`).
    pub fn connection_config(&self) -> lubdub_core::connection::ConnectionConfig {
        lubdub_core::connection::ConnectionConfig {
            handshake_timeout: self.handshake_timeout,
            max_frame_len: self.max_frame_len,
            intervals: self.interval_policy(),
            max_missed: self.max_missed,
            phi_threshold: self.phi_threshold,
            conduct: self.conduct_limits(),
            // Certificate-bound names are a credential check too.
            authenticate: self.auth.is_enabled()
                || self.tls.as_ref().is_some_and(|tls| tls.client_cert_names),
            tls: self.tls.is_some(),
        }
    }

    /// What an established session may send, as the core's rules take it:
    /// the PING burst is one deadline's worth, since PINGs held up by a pause
    /// within the deadline arrive together (see `ConductLimits::ping_burst`).
    pub fn conduct_limits(&self) -> lubdub_core::session::ConductLimits {
        let per_interval = self.max_pings_per_interval;
        lubdub_core::session::ConductLimits {
            pings_per_interval: per_interval,
            ping_burst: per_interval
                .saturating_mul(self.max_missed)
                .saturating_add(1),
            ping_strikes: 3,
            messages: lubdub_core::rate::Rate::per_second(
                self.max_messages_per_sec,
                self.max_messages_per_sec,
            ),
            refusal_strikes: self.max_refusal_strikes,
        }
    }

    /// Who may connect, as the admission rules take it.
    pub fn admission_limits(&self) -> super::admission::AdmissionLimits {
        super::admission::AdmissionLimits {
            max_connections: self.connection_cap(),
            max_per_source: self.max_connections_per_ip,
            accepts_per_second: self.accept_rate_per_ip,
        }
    }

    /// The phi detector's parameters these values describe.
    pub fn phi_config(&self) -> PhiConfig {
        PhiConfig {
            threshold: self.phi_threshold,
            min_std_dev: self.phi_min_std_dev,
            acceptable_pause: self.phi_acceptable_pause,
            max_missed: self.max_missed,
        }
    }

    /// The interval negotiation policy these values describe.
    pub fn interval_policy(&self) -> IntervalPolicy {
        IntervalPolicy {
            default: self.interval,
            min: self.min_interval,
            max: self.max_interval,
        }
    }
}

/// Physical memory in bytes, from `/proc/meminfo`.
fn machine_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_millisecond_minimum_interval_is_refused() {
        let config = ServerConfig {
            min_interval: Duration::from_micros(500),
            ..ServerConfig::default()
        };
        let error = config.validate().expect_err("whole milliseconds only");
        assert!(error.to_string().contains("1ms <= min-interval"), "{error}");
    }

    #[test]
    fn the_outbound_queue_must_hold_one_largest_frame() {
        let config = ServerConfig {
            max_outbound_bytes: 1024,
            ..ServerConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::OutboundQueue { .. })
        ));
        assert_eq!(ServerConfig::default().validate(), Ok(()));
    }

    #[test]
    fn the_outbound_cap_defaults_to_a_sixteenth_of_memory() {
        let cap = ServerConfig::default().outbound_total_cap();
        assert!((64 << 20..=4096 << 20).contains(&cap), "{cap}");
        if let Some(memory) = machine_memory() {
            let expected = (memory / 16).clamp(64 << 20, 4096 << 20);
            assert_eq!(cap as u64, expected);
        }
        let too_small = ServerConfig {
            max_outbound_total: Some(1000),
            ..ServerConfig::default()
        };
        assert!(matches!(
            too_small.validate(),
            Err(ConfigError::OutboundTotal { .. })
        ));
    }
}
