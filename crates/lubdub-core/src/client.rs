//! The client's side of liveness: when to send a PING, and when the server is dead.
//!
//! Seed 000's rules, sans IO: traffic the client sends suppresses heartbeats,
//! a PONG (or any frame) from the server proves it alive, and a server silent
//! for `max_missed` intervals is dead. The IO layer reports what it sent and
//! received, sleeps until [`ClientSchedule::poll_timeout`], and calls
//! [`ClientSchedule::handle_timeout`].

use std::time::{Duration, Instant};

/// Fraction of the interval after which an idle client sends its PING, as
/// numerator over 5. A PING sent after exactly one interval would reach the
/// server just after the server's one-interval mark, so every healthy session
/// would flap to suspect and back each interval; sending at 80 % leaves 20 %
/// of the interval for delivery and scheduling delay.
const PING_AFTER_FIFTHS: u32 = 4;

/// Idle time after which a client with this granted interval sends a PING:
/// the gap the server should expect between frames of a healthy, quiet client.
pub fn ping_after(interval: Duration) -> Duration {
    interval * PING_AFTER_FIFTHS / 5
}

/// The interval to ask for so that a client pinging every `ping_period`
/// pings exactly as [`ping_after`] prescribes: the inverse of [`ping_after`].
pub fn interval_for_ping_period(ping_period: Duration) -> Duration {
    ping_period * 5 / PING_AFTER_FIFTHS
}

/// What the client must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAction {
    /// Nothing is due.
    Wait,
    /// Send `PING { seq, rtt_us }`.
    SendPing {
        /// Sequence number of the new PING.
        seq: u32,
        /// Last measured round trip in microseconds, 0 when unknown.
        rtt_us: u32,
    },
    /// Nothing arrived from the server for `max_missed` intervals.
    ServerDead {
        /// How long the server had been silent.
        silent_for: Duration,
    },
}

/// Heartbeat schedule and server-death detection for one session.
#[derive(Debug, Clone)]
pub struct ClientSchedule {
    interval: Duration,
    max_missed: u32,
    acks_wanted: bool,
    last_sent: Instant,
    last_ping_sent: Instant,
    last_received: Instant,
    next_seq: u32,
    outstanding: Option<(u32, Instant)>,
    rtt: Option<Duration>,
}

impl ClientSchedule {
    /// A schedule for a session whose WELCOME arrived at `now` with these grants.
    /// In one-way mode (`acks_wanted == false`) the server never answers, so
    /// silence proves nothing and the server is never declared dead here: the
    /// IO layer relies on TCP errors instead.
    pub fn new(now: Instant, interval: Duration, max_missed: u32, acks_wanted: bool) -> Self {
        Self {
            interval,
            max_missed: max_missed.max(1),
            acks_wanted,
            last_sent: now,
            last_ping_sent: now,
            last_received: now,
            next_seq: 1,
            outstanding: None,
            rtt: None,
        }
    }

    /// Granted interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Idle time after which a PING is sent.
    pub fn ping_after(&self) -> Duration {
        ping_after(self.interval)
    }

    /// Silence after which the server is dead.
    pub fn deadline_after(&self) -> Duration {
        self.interval * self.max_missed
    }

    /// The client sent a frame (any kind) at `now`.
    pub fn on_sent(&mut self, now: Instant) {
        self.last_sent = self.last_sent.max(now);
    }

    /// A frame arrived from the server at `now`; `pong_seq` is its sequence
    /// number when it is a PONG, which completes a round-trip measurement.
    pub fn on_received(&mut self, now: Instant, pong_seq: Option<u32>) {
        self.last_received = self.last_received.max(now);
        if let (Some(seq), Some((outstanding, sent_at))) = (pong_seq, self.outstanding) {
            if seq == outstanding {
                self.rtt = Some(now.saturating_duration_since(sent_at));
                self.outstanding = None;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub fn poll_timeout(&self) -> Instant {
        let mut next = self.last_sent + self.ping_after();
        if self.acks_wanted {
            // Also probe a server we have not heard from, even while our own
            // data traffic suppresses the idle PING.
            let probe = self.last_received.max(self.last_ping_sent) + self.ping_after();
            let dead_at = self.last_received + self.deadline_after();
            next = next.min(probe).min(dead_at);
        }
        next
    }

    /// Lateness of a wake-up that shows this process itself could not run
    /// (stopped, paused, starved): half an interval.
    pub fn stall_threshold(&self) -> Duration {
        self.interval / 2
    }

    /// Decides what is due at `now`. A returned PING counts as sent at `now`.
    ///
    /// A wake-up later than [`poll_timeout`](Self::poll_timeout) by at least
    /// [`stall_threshold`](Self::stall_threshold) means this process was not
    /// running: that time is not counted as the server's silence (the
    /// server's answers may be sitting unread in the socket), and a PING
    /// probes the server instead. A server that died meanwhile is still
    /// declared dead within one deadline after the stall.
    pub fn handle_timeout(&mut self, now: Instant) -> ClientAction {
        let lateness = now.saturating_duration_since(self.poll_timeout());
        if lateness >= self.stall_threshold() {
            self.last_received = (self.last_received + lateness).min(now);
        }
        if self.acks_wanted {
            let silent_for = now.saturating_duration_since(self.last_received);
            if silent_for >= self.deadline_after() {
                return ClientAction::ServerDead { silent_for };
            }
        }
        let idle = now.saturating_duration_since(self.last_sent) >= self.ping_after();
        let unanswered = self.acks_wanted
            && now.saturating_duration_since(self.last_received.max(self.last_ping_sent))
                >= self.ping_after();
        if !(idle || unanswered) {
            return ClientAction::Wait;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.outstanding = Some((seq, now));
        self.last_ping_sent = now;
        self.on_sent(now);
        let rtt_us = self.rtt.map_or(0, |rtt| {
            u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1)
        });
        ClientAction::SendPing { seq, rtt_us }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_interval_for_a_ping_period_inverts_ping_after() {
        assert_eq!(interval_for_ping_period(2400 * MS), 3000 * MS);
        assert_eq!(ping_after(interval_for_ping_period(80 * MS)), 80 * MS);
    }

    #[test]
    fn an_idle_client_pings_at_four_fifths_of_the_interval() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        assert_eq!(schedule.poll_timeout(), t0 + 80 * MS);
        assert_eq!(schedule.handle_timeout(t0 + 79 * MS), ClientAction::Wait);
        assert_eq!(
            schedule.handle_timeout(t0 + 80 * MS),
            ClientAction::SendPing { seq: 1, rtt_us: 0 }
        );
        schedule.on_received(t0 + 83 * MS, Some(1));
        assert_eq!(schedule.rtt(), Some(3 * MS));
        assert_eq!(schedule.poll_timeout(), t0 + 160 * MS);
        assert_eq!(
            schedule.handle_timeout(t0 + 160 * MS),
            ClientAction::SendPing {
                seq: 2,
                rtt_us: 3000
            }
        );
    }

    #[test]
    fn data_traffic_suppresses_the_idle_ping_while_the_server_answers() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        schedule.on_sent(t0 + 50 * MS);
        schedule.on_received(t0 + 60 * MS, None);
        assert_eq!(schedule.handle_timeout(t0 + 100 * MS), ClientAction::Wait);
        assert_eq!(schedule.poll_timeout(), t0 + 130 * MS);
    }

    #[test]
    fn a_busy_sender_still_probes_a_silent_server() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        schedule.on_sent(t0 + 70 * MS);
        assert_eq!(
            schedule.handle_timeout(t0 + 80 * MS),
            ClientAction::SendPing { seq: 1, rtt_us: 0 }
        );
    }

    #[test]
    fn a_silent_server_is_dead_at_exactly_max_missed_intervals() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        let dead_at = loop {
            let now = schedule.poll_timeout();
            match schedule.handle_timeout(now) {
                ClientAction::SendPing { .. } => continue,
                ClientAction::ServerDead { silent_for } => {
                    assert_eq!(silent_for, 500 * MS);
                    break now;
                }
                ClientAction::Wait => panic!("woken for nothing at {:?}", now - t0),
            }
        };
        assert_eq!(dead_at, t0 + 500 * MS);
    }

    #[test]
    fn a_stall_of_the_client_itself_is_not_blamed_on_the_server() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        // The process is stopped before its PING at 80 ms and resumed at 2 s,
        // far past the 500 ms deadline.
        let resumed = t0 + 2000 * MS;
        assert_eq!(
            schedule.handle_timeout(resumed),
            ClientAction::SendPing { seq: 1, rtt_us: 0 },
            "probe instead of declaring the server dead"
        );
        // The answer waiting in the socket is read next: all is well.
        schedule.on_received(resumed + MS, Some(1));
        assert!(matches!(
            schedule.handle_timeout(schedule.poll_timeout()),
            ClientAction::SendPing { seq: 2, .. }
        ));
    }

    #[test]
    fn a_server_that_died_during_the_stall_is_dead_within_one_deadline_of_the_resume() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        let resumed = t0 + 2000 * MS;
        assert!(matches!(
            schedule.handle_timeout(resumed),
            ClientAction::SendPing { .. }
        ));
        let dead_at = loop {
            let now = schedule.poll_timeout();
            match schedule.handle_timeout(now) {
                ClientAction::SendPing { .. } => continue,
                ClientAction::ServerDead { .. } => break now,
                ClientAction::Wait => panic!("woken for nothing"),
            }
        };
        // Only the 80 ms of silence before the stall and the time after it count.
        assert_eq!(dead_at, resumed + 500 * MS - 80 * MS);
    }

    #[test]
    fn ordinary_timer_lateness_is_not_a_stall() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, true);
        let mut now = t0;
        for _ in 0..6 {
            // Every wake-up 20 ms late, below the 50 ms stall threshold.
            now = schedule.poll_timeout() + 20 * MS;
            if let ClientAction::ServerDead { silent_for } = schedule.handle_timeout(now) {
                assert!(silent_for >= 500 * MS);
                return;
            }
        }
        panic!(
            "a silent server must be declared dead, last wake at {:?}",
            now - t0
        );
    }

    #[test]
    fn one_way_sessions_never_declare_the_server_dead() {
        let t0 = Instant::now();
        let mut schedule = ClientSchedule::new(t0, 100 * MS, 5, false);
        for step in 1..=20u32 {
            let now = schedule.poll_timeout();
            assert_eq!(now, t0 + 80 * MS * step);
            assert!(matches!(
                schedule.handle_timeout(now),
                ClientAction::SendPing { .. }
            ));
        }
    }
}
