//! Carrying out what the connection machines ask for, in the order they
//! asked: frames to send, events to count, log and publish, requests to
//! the credential checker, the registry and the relay, deadlines for the
//! wheel, and closes. Nothing here decides a connection's life: a send
//! that fails or a full queue goes back to the machine as an input.

use std::io;
use std::time::Instant;

use lubdub_core::connection::{Close, Event, Now, Output, Request, Timer, Transmit};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::codec::{self, pong_bytes};
use lubdub_core::protocol::{Frame, ReasonCode};
use tracing::{debug, warn};

use super::super::connection::SendOutcome;
use super::super::presence::{DropReason, PresenceEvent, PresenceKind};
use super::timers::TimerKind;
use super::{session_id, ConnKey, EventLoop};
use crate::escape::Escaped;

impl<D: Detector> EventLoop<D> {
    /// Carries out every waiting output, those pushed meanwhile included.
    /// An output for a connection that is gone is dropped.
    pub(super) fn carry_out(&mut self, now: Now) {
        while let Some((key, output)) = self.outputs.poll() {
            if !self.is_current(key) {
                continue;
            }
            match output {
                Output::Transmit(transmit) => self.transmit(now, key, transmit),
                Output::Event(event) => self.observe(now, key, event),
                Output::Request(request) => self.request(now, key, request),
                Output::Timeout { timer, at, latest } => {
                    let kind = match timer {
                        Timer::Handshake => TimerKind::Handshake,
                        Timer::Liveness => TimerKind::Liveness,
                        Timer::Linger => TimerKind::Linger,
                    };
                    self.timers.schedule(key, kind, at, latest);
                }
                // A verdict's BYE waits its turn among the others (see
                // `timers.rs`); every other farewell is written now.
                Output::Close(Close::Farewell(Frame::Bye(bye)))
                    if bye.reason.code == ReasonCode::Timeout =>
                {
                    self.timers.queue_farewell(key, Frame::Bye(bye));
                }
                Output::Close(Close::Farewell(frame)) => self.bid_farewell(now, key, &frame),
                Output::Close(Close::Now) => self.remove(key.0),
            }
        }
    }

    pub(super) fn transmit(&mut self, now: Now, key: ConnKey, transmit: Transmit) {
        match transmit {
            Transmit::Pong { seq } => {
                self.send(now, key, &pong_bytes(seq));
            }
            Transmit::Welcome(welcome) => self.send_frame(now, key, &Frame::Welcome(welcome)),
            Transmit::Notice(reason) => {
                // A peer that does not read gets no pile of notices.
                let share = self.message_share();
                let unread = self
                    .slots
                    .get(key.0)
                    .is_some_and(|slot| slot.conn.queued_len() > share);
                if !unread {
                    self.send_frame(now, key, &Frame::Notice(reason));
                }
            }
        }
    }

    /// Counts, logs and publishes what happened to connection `key`.
    fn observe(&mut self, now: Now, key: ConnKey, event: Event) {
        // The heartbeat path: counted, nothing looked up.
        if let Event::Heard { rtt_us } = event {
            self.metrics.heartbeat();
            if rtt_us != 0 {
                self.metrics
                    .round_trip(std::time::Duration::from_micros(u64::from(rtt_us)));
            }
            return;
        }
        let Some(slot) = self.slots.get(key.0) else {
            return;
        };
        let peer = slot.conn.peer;
        let session = session_id(self.loop_index, key.0, key.1);
        let at = self.real_instant(now);
        match event {
            Event::Heard { .. } => {}
            Event::Joined {
                name,
                epoch,
                interval,
                one_way,
                replaced,
                status,
            } => {
                let kind = PresenceKind::Joined {
                    epoch,
                    interval,
                    replaced,
                };
                if let Some(status) = &status {
                    self.statuses.insert(key.0, status.as_str().into());
                }
                let event = PresenceEvent::new(at, name, session, peer, kind).with_status(status);
                self.presence.report(event, one_way.then_some("one-way"));
            }
            Event::Suspected {
                name,
                missed,
                phi,
                first,
            } => {
                let kind = PresenceKind::Suspected { missed, first };
                let mut event = PresenceEvent::new(at, name.into(), session, peer, kind);
                if first {
                    // Later suspicions are only logged (`Presence::report`).
                    event = event.with_rooms(self.rooms.rooms_of(key.0));
                }
                let detail = phi.map(|phi| format!("phi={phi:.2}"));
                self.presence.report(event, detail.as_deref());
            }
            Event::WillSet { will, .. } => self.will_set(key, will),
            Event::StatusChanged { name, status } => {
                if status.is_empty() {
                    self.statuses.remove(&key.0);
                } else {
                    self.statuses.insert(key.0, status.as_str().into());
                }
                let kind = PresenceKind::StatusChanged;
                let event = PresenceEvent::new(at, name.into(), session, peer, kind)
                    .with_status(Some(status))
                    .with_rooms(self.rooms.rooms_of(key.0));
                self.presence.report(event, None);
            }
            Event::Recovered { name } => {
                let event =
                    PresenceEvent::new(at, name.into(), session, peer, PresenceKind::Recovered)
                        .with_rooms(self.rooms.rooms_of(key.0));
                self.presence.report(event, None);
            }
            Event::Dropped {
                name,
                reason,
                silent_for,
                late_by,
                detail,
            } => {
                // Its release (just before) found the name taken over.
                let (reason, detail) = if self.superseded.take_if(|ended| *ended == key).is_some() {
                    let why = format!("{} after its name was taken over", reason.label());
                    (DropReason::TakenOver, Some(why))
                } else {
                    (reason, detail)
                };
                self.names.remove(&name, key.0);
                self.statuses.remove(&key.0);
                let rooms = self.rooms_ended(key, &name);
                self.session_ended(now, key, session, &name, reason, &rooms);
                self.watches_ended(key);
                // Dated afresh: with thousands of verdicts in one wake-up,
                // the reported instant, silence and delay must be those of
                // this drop, not of the wake-up's start.
                let real = Instant::now();
                let since = self
                    .clock
                    .listening(real)
                    .saturating_duration_since(now.listening);
                if let Some(late_by) = late_by {
                    self.metrics.detection_delay(late_by + since);
                }
                self.metrics.dropped(reason);
                let kind = PresenceKind::Dropped {
                    reason,
                    silent_for: silent_for + since,
                };
                let event =
                    PresenceEvent::new(real, name.into(), session, peer, kind).with_rooms(rooms);
                self.presence.report(event, detail.as_deref());
            }
            Event::HandshakeFailed { reason, detail } => {
                self.metrics.handshake_failed(reason);
                debug!(%peer, reason = reason.label(), detail, "connection closed before HELLO");
            }
            Event::Violated {
                code,
                text,
                established,
            } => {
                let what = if established {
                    "protocol error"
                } else {
                    "handshake refused"
                };
                warn!(%peer, %code, "{what}: {}", Escaped(&text));
            }
            Event::FrameRefused { code, notice } => {
                self.metrics.frame_refused(code);
                if let Some(text) = notice {
                    warn!(%peer, %code, "{}", Escaped(&text));
                }
            }
            Event::PeerLeft { reason } => {
                debug!(%peer, code = %reason.code, text = %Escaped(&reason.text), "BYE from peer");
            }
        }
    }

    fn request(&mut self, now: Now, key: ConnKey, request: Request) {
        match request {
            Request::Authenticate { name, credential } => {
                self.authenticate(now, key, &name, &credential);
            }
            Request::CancelAuthentication => {
                if let Some(gate) = self.auth.as_mut() {
                    gate.cancel(key.0, key.1);
                }
            }
            Request::Claim { name } => self.claim(now, key, name),
            Request::Release { name, epoch } => self.release(key, &name, epoch),
            Request::Relay(message) => self.relay(now, key, message),
            Request::Join { name, room } => self.join_room(now, key, &name, room),
            Request::Leave { name, room } => self.leave_room(now, key, &name, room),
            Request::Watch { name, mode, target } => self.watch(now, key, &name, mode, target),
        }
    }

    fn send_frame(&mut self, now: Now, key: ConnKey, frame: &Frame) {
        match codec::encode_to_vec(frame) {
            Ok(encoded) => {
                self.send(now, key, &encoded);
            }
            Err(error) => warn!(%error, "could not encode an outbound frame"),
        }
    }

    /// Sends bytes; a full queue or a failed socket goes back to the
    /// connection's machine. Returns whether the bytes were taken.
    pub(super) fn send(&mut self, now: Now, key: ConnKey, bytes: &[u8]) -> bool {
        let clock = self.queue_clock(now);
        let max_queued = self.config.max_outbound_bytes;
        let Some(slot) = self.slots.get(key.0) else {
            return false;
        };
        let was_empty = slot.conn.is_flushed();
        let Some(sent) = self.with_queue(key.0, |conn, chunks| {
            conn.send(bytes, max_queued, clock, chunks)
        }) else {
            return false;
        };
        if was_empty {
            // A no-op when the socket took everything.
            self.watch_drain(key);
        }
        match sent {
            Ok(SendOutcome::Sent) => true,
            Ok(SendOutcome::QueueFull) => {
                self.slow_consumer(now, key);
                false
            }
            Err(error) => {
                self.failed(now, key, &error);
                false
            }
        }
    }

    /// The peer of `key` does not read: its machine ends it.
    pub(super) fn slow_consumer(&mut self, now: Now, key: ConnKey) {
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_slow_consumer(now, rules, out)
        });
    }

    /// The socket of `key` failed: its machine ends it.
    pub(super) fn failed(&mut self, now: Now, key: ConnKey, error: &io::Error) {
        // A reset or a write to a socket the peer has closed is the peer
        // going away (killed, or closed with unread data), not a fault here.
        let by_peer = matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionAborted
        );
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_io_error(now, by_peer, error.to_string(), rules, out)
        });
    }

    /// Writes a farewell; the connection lingers (its machine pushed the
    /// linger timer), or is removed when the farewell cannot be queued.
    pub(super) fn bid_farewell(&mut self, now: Now, key: ConnKey, frame: &Frame) {
        if !self.is_current(key) {
            return;
        }
        if !self.write_farewell(now, key.0, frame) {
            self.remove(key.0);
        }
    }

    /// Queues the last frame and shuts the write side once it is out.
    /// Returns false when it could not be queued.
    fn write_farewell(&mut self, now: Now, index: usize, frame: &Frame) -> bool {
        let Ok(encoded) = codec::encode_to_vec(frame) else {
            return false;
        };
        let clock = self.queue_clock(now);
        let max_queued = self.config.max_outbound_bytes;
        self.with_queue(index, |conn, chunks| {
            let sent = matches!(
                conn.send(&encoded, max_queued, clock, chunks),
                Ok(SendOutcome::Sent)
            );
            if sent {
                conn.mark_farewell_written();
                if conn.is_flushed() {
                    conn.shutdown_write(chunks);
                }
            }
            sent
        }) == Some(true)
    }

    /// Deregisters and drops the socket.
    pub(super) fn remove(&mut self, index: usize) {
        self.grants.remove(&index);
        if let Some(mut slot) = self.slots.try_remove(index) {
            self.account(slot.conn.held_bytes(), 0);
            slot.conn.release(&mut self.chunks);
            self.admission.closed(slot.conn.peer.ip());
            if let Err(error) = self.poll.registry().deregister(&mut slot.conn.stream) {
                debug!(%error, "deregister failed");
            }
        }
    }
}
