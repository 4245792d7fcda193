//! Who may open a connection: the cap on open connections, connections per
//! source and new connections per second per source.
//!
//! Sans-IO: the event loop passes the peer address, its count of open
//! connections and the time, and closes what this refuses. IPv6 sources
//! are counted by their /64, the block a single host or subscriber gets, so
//! that one machine cannot escape the limits by rotating addresses within it.

use std::collections::HashMap;
use std::net::IpAddr;

use lubdub_core::rate::{Gcra, Rate};

/// How often entries of sources with nothing open and no rate debt are dropped.
const PRUNE_EVERY_US: u64 = 10_000_000;

/// The limits, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Open connections of every kind (handshaking, established, closing).
    pub max_connections: usize,
    /// Open connections per source; 0 is unlimited.
    pub max_per_source: u32,
    /// New connections per second per source (bursts of as many); 0 is unlimited.
    pub accepts_per_second: u32,
}

/// Why a new connection is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    ServerFull {
        /// The limit.
        max: usize,
    },
    /// The source has `max` connections open.
    PerSource {
        /// The source, as counted (an IPv4 address or an IPv6 /64).
        source: String,
        /// The limit.
        max: u32,
    },
    /// The source opened connections faster than `per_second`.
    AcceptRate {
        /// The source, as counted.
        source: String,
        /// The limit.
        per_second: u32,
    },
}

impl Refusal {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::ServerFull { .. } => "max_connections",
            Refusal::PerSource { .. } => "max_connections_per_ip",
            Refusal::AcceptRate { .. } => "accept_rate_per_ip",
        }
    }

    /// The REJECT text: which limit, its value and the flag that sets it.
    pub fn text(&self) -> String {
        match self {
            Refusal::ServerFull { max } => {
                format!("server full: {max} connections open (--max-connections); retry later")
            }
            Refusal::PerSource { source, max } => format!(
                "too many connections from {source}: at most {max} (--max-connections-per-ip)"
            ),
            Refusal::AcceptRate { source, per_second } => format!(
                "too many new connections from {source}: at most {per_second} a second \
                 (--accept-rate-per-ip); retry later"
            ),
        }
    }
}

/// A source as the limits count it: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    V4(u32),
    /// The upper 64 bits of the address.
    V6(u64),
}

impl Source {
    /// The source `ip` counts against.
    pub(crate) fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6((u128::from(v6) >> 64) as u64),
        }
    }

    fn describe(self) -> String {
        match self {
            Source::V4(bits) => std::net::Ipv4Addr::from(bits).to_string(),
            Source::V6(prefix) => {
                format!("{}/64", std::net::Ipv6Addr::from(u128::from(prefix) << 64))
            }
        }
    }
}

#[derive(Debug, Default)]
struct SourceState {
    open: u32,
    accepts: Gcra,
}

/// Per-source counts and accept rates.
#[derive(Debug)]
pub struct Admission {
    limits: AdmissionLimits,
    sources: HashMap<Source, SourceState>,
    next_prune_us: u64,
}

impl Admission {
    /// No connections yet.
    pub fn new(limits: AdmissionLimits) -> Self {
        Self {
            limits,
            sources: HashMap::new(),
            next_prune_us: PRUNE_EVERY_US,
        }
    }

    /// Applies new limits to the connections that come from now on
    /// (a reload); connections already open stay, even beyond the new
    /// caps, and each source's accept rate keeps its debt.
    pub fn set_limits(&mut self, limits: AdmissionLimits) {
        self.limits = limits;
    }

    fn tracks_sources(&self) -> bool {
        self.limits.max_per_source != 0 || self.limits.accepts_per_second != 0
    }

    /// Decides on a new connection from `ip` while `open` connections are
    /// open; an admitted one is counted until [`closed`](Self::closed).
    ///
    /// # Errors
    /// The [`Refusal`] of the first limit it would break.
    pub fn admit(&mut self, ip: IpAddr, open: usize, now_us: u64) -> Result<(), Refusal> {
        if open >= self.limits.max_connections {
            return Err(Refusal::ServerFull {
                max: self.limits.max_connections,
            });
        }
        if !self.tracks_sources() {
            return Ok(());
        }
        if now_us >= self.next_prune_us {
            self.prune(now_us);
        }
        let source = Source::of(ip);
        let state = self.sources.entry(source).or_default();
        let max = self.limits.max_per_source;
        if max != 0 && state.open >= max {
            return Err(Refusal::PerSource {
                source: source.describe(),
                max,
            });
        }
        let per_second = self.limits.accepts_per_second;
        if !state
            .accepts
            .allow(now_us, Rate::per_second(per_second, per_second))
        {
            return Err(Refusal::AcceptRate {
                source: source.describe(),
                per_second,
            });
        }
        state.open += 1;
        Ok(())
    }

    /// An admitted connection from `ip` closed.
    pub fn closed(&mut self, ip: IpAddr) {
        if let Some(state) = self.sources.get_mut(&Source::of(ip)) {
            state.open = state.open.saturating_sub(1);
        }
    }

    /// Forgets sources with nothing open and no rate debt, so that the map
    /// holds only sources seen in the last few seconds or still connected.
    fn prune(&mut self, now_us: u64) {
        self.sources
            .retain(|_, state| state.open > 0 || !state.accepts.is_idle(now_us));
        self.next_prune_us = now_us + PRUNE_EVERY_US;
    }

    /// Sources currently remembered.
    #[cfg(test)]
    pub fn sources_tracked(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn limits(max: usize, per_source: u32, rate: u32) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: max,
            max_per_source: per_source,
            accepts_per_second: rate,
        }
    }

    #[test]
    fn the_total_cap_comes_first() {
        let mut admission = Admission::new(limits(2, 0, 0));
        assert!(admission.admit(ip("10.0.0.1"), 1, 0).is_ok());
        let refusal = admission
            .admit(ip("10.0.0.2"), 2, 0)
            .expect_err("at the cap");
        assert_eq!(refusal, Refusal::ServerFull { max: 2 });
        assert!(refusal.text().contains("--max-connections"));
        assert_eq!(
            admission.sources_tracked(),
            0,
            "no map without per-source limits"
        );
    }

    #[test]
    fn connections_per_source_are_counted_until_closed() {
        let mut admission = Admission::new(limits(100, 2, 0));
        let a = ip("10.0.0.1");
        assert!(admission.admit(a, 0, 0).is_ok());
        assert!(admission.admit(a, 1, 0).is_ok());
        let refusal = admission.admit(a, 2, 0).expect_err("third from one source");
        assert_eq!(refusal.label(), "max_connections_per_ip");
        assert!(refusal.text().contains("10.0.0.1"), "{}", refusal.text());
        assert!(
            admission.admit(ip("10.0.0.2"), 2, 0).is_ok(),
            "another source"
        );
        admission.closed(a);
        assert!(admission.admit(a, 2, 0).is_ok());
    }

    #[test]
    fn ipv6_sources_are_counted_by_their_64_and_mapped_v4_as_v4() {
        let mut admission = Admission::new(limits(100, 1, 0));
        assert!(admission.admit(ip("2001:db8:1:2::1"), 0, 0).is_ok());
        let refusal = admission
            .admit(ip("2001:db8:1:2:ffff::9"), 1, 0)
            .expect_err("same /64");
        assert!(
            refusal.text().contains("2001:db8:1:2::/64"),
            "{}",
            refusal.text()
        );
        assert!(admission.admit(ip("2001:db8:1:3::1"), 1, 0).is_ok());
        assert!(admission.admit(ip("192.0.2.7"), 2, 0).is_ok());
        assert!(admission.admit(ip("::ffff:192.0.2.7"), 3, 0).is_err());
    }

    #[test]
    fn the_accept_rate_allows_a_second_at_once_then_the_rate() {
        let mut admission = Admission::new(limits(1_000, 0, 10));
        let a = ip("10.0.0.1");
        for n in 0..10 {
            assert!(admission.admit(a, n, 1_000_000).is_ok(), "burst {n}");
        }
        let refusal = admission.admit(a, 10, 1_000_000).expect_err("11th at once");
        assert_eq!(refusal.label(), "accept_rate_per_ip");
        assert!(admission.admit(a, 10, 1_100_000).is_ok(), "100 ms later");
    }

    #[test]
    fn idle_sources_are_forgotten() {
        let mut admission = Admission::new(limits(1_000, 5, 10));
        for n in 0..50u32 {
            let source = IpAddr::from([10, 0, (n / 256) as u8, n as u8]);
            assert!(admission.admit(source, 0, 0).is_ok());
            admission.closed(source);
        }
        assert_eq!(admission.sources_tracked(), 50);
        let kept = ip("10.9.9.9");
        assert!(admission.admit(kept, 0, 0).is_ok());
        assert!(admission.admit(ip("10.9.9.10"), 0, 20_000_000).is_ok());
        assert_eq!(
            admission.sources_tracked(),
            2,
            "the open one and the new one"
        );
    }
}
