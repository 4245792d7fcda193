//! What one sender may make the loop write: the sender's and the loop's
//! fan-out budgets (deliveries and bytes, `lubdub_core::budget`) and the
//! process-wide outbound cap, checked before a fan-out starts and charged
//! when it does; a refusal goes back to the sender's machine, which counts
//! a strike for its own budget only.

use std::time::Duration;

use lubdub_core::connection::{MessageRefusal, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::ReasonCode;

use super::relay::MAX_PENDING_DELIVERIES;
use super::{ConnKey, EventLoop};

impl<D: Detector> EventLoop<D> {
    /// Whether the sender's and the loop's fan-out budgets and the
    /// server-wide outbound cap let a fan-out start now. The budgets allow
    /// a start by the debt alone, whatever its size (see
    /// `lubdub_core::budget`), so this is decided before the recipients
    /// are counted.
    pub(super) fn check_fanout(&mut self, now: Now, index: usize) -> Result<(), FanoutRefusal> {
        let now_us = now.real_us;
        let sender_limits = self.config.sender_fanout_limits();
        let Some(session) = self
            .slots
            .get(index)
            .and_then(|slot| slot.machine.session())
        else {
            return Err(FanoutRefusal::Gone);
        };
        if let Err(wait) = session.fanout().check(now_us, &sender_limits) {
            return Err(FanoutRefusal::Sender { wait });
        }
        self.check_loop_fanout(now)
    }

    /// The loop's part of [`check_fanout`](Self::check_fanout): its own
    /// budget, the fan-outs waiting and the outbound cap.
    pub(super) fn check_loop_fanout(&mut self, now: Now) -> Result<(), FanoutRefusal> {
        let now_us = now.real_us;
        let loop_limits = self.config.loop_fanout_limits();
        if let Err(wait) = self.loop_fanout.check(now_us, &loop_limits) {
            return Err(FanoutRefusal::Loop { wait });
        }
        if self.pending_deliveries >= MAX_PENDING_DELIVERIES {
            return Err(FanoutRefusal::Loop {
                wait: Duration::from_millis(100),
            });
        }
        if self.outbound_held() >= self.outbound_cap {
            self.shed(now);
            if self.outbound_held() >= self.outbound_cap {
                return Err(FanoutRefusal::Memory);
            }
        }
        Ok(())
    }

    /// Charges a fan-out of `deliveries` writes of `len` bytes to the
    /// sender's and the loop's budgets.
    pub(super) fn charge_fanout(&mut self, now: Now, index: usize, deliveries: u32, len: usize) {
        let now_us = now.real_us;
        let sender_limits = self.config.sender_fanout_limits();
        let loop_limits = self.config.loop_fanout_limits();
        self.loop_fanout
            .charge(now_us, deliveries, len, &loop_limits);
        if let Some(session) = self
            .slots
            .get_mut(index)
            .and_then(|slot| slot.machine.session_mut())
        {
            session
                .fanout_mut()
                .charge(now_us, deliveries, len, &sender_limits);
        }
    }

    /// Tells the sender its MSG was not delivered; a strike when its own
    /// budget refused it.
    pub(super) fn refuse_fanout(&mut self, now: Now, key: ConnKey, refusal: FanoutRefusal) {
        let (budget, code, text) = match refusal {
            FanoutRefusal::Gone => return,
            FanoutRefusal::Sender { wait } => (
                "sender",
                ReasonCode::RateLimited,
                format!(
                    "message not delivered: this session may cause at most {} deliveries \
                     and {} bytes a second (a broadcast is one delivery per recipient); \
                     send again in {}",
                    self.config.max_deliveries_per_sec,
                    self.config.max_fanout_bytes_per_sec,
                    humantime::format_duration(round_up_ms(wait))
                ),
            ),
            FanoutRefusal::Loop { wait } => (
                "loop",
                ReasonCode::ServerBusy,
                format!(
                    "message not delivered: the server is relaying as many messages as \
                     it allows for all sessions together; send again in {}",
                    humantime::format_duration(round_up_ms(wait))
                ),
            ),
            FanoutRefusal::Memory => (
                "memory",
                ReasonCode::ServerBusy,
                "message not delivered: the server holds as many unsent bytes as it \
                 allows; send again later"
                    .to_owned(),
            ),
        };
        self.metrics.fanout_refused(budget);
        let refusal = MessageRefusal {
            code,
            text,
            strike: budget == "sender",
        };
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_message_refused(now, refusal, rules, out)
        });
    }
}

/// Why a fan-out was not made.
pub(super) enum FanoutRefusal {
    /// The sender closed meanwhile.
    Gone,
    /// The sender's own budget is spent for `wait`.
    Sender { wait: Duration },
    /// The loop's budget (all senders) is spent for `wait`.
    Loop { wait: Duration },
    /// The server-wide outbound cap is reached.
    Memory,
}

impl FanoutRefusal {
    /// How long until the budget that refused allows again, if known.
    pub(super) fn wait(&self) -> Option<Duration> {
        match self {
            FanoutRefusal::Sender { wait } | FanoutRefusal::Loop { wait } => Some(*wait),
            FanoutRefusal::Gone | FanoutRefusal::Memory => None,
        }
    }
}

/// A wait rounded up to whole milliseconds, for messages people read.
fn round_up_ms(wait: Duration) -> Duration {
    Duration::from_millis(u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX))
}
