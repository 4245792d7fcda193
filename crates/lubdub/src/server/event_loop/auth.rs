//! Credentials in the event loop: a HELLO goes through the auth gate
//! before it may claim its name. Tokens and cached secrets are decided
//! inline; other secrets are verified on a verifier thread while the
//! connection waits in `State::Verifying`, and the verdict arrives through
//! the `WAKER` token. A secret still queued after the queue wait is
//! answered REJECT `server_busy` (a `Verification` timer).
//!
//! A claimant is judged before `registry.claim`, so a refused one never
//! disturbs the name's current holder; only a credential for the name can
//! take it over. With `--tls-client-cert-names`, the client certificate
//! must carry the name first (`auth::certificate`), whatever else is asked.

use std::time::{Instant, SystemTime};

use lubdub_core::detector::Detector;
use lubdub_core::protocol::{Hello, ReasonCode};

use super::super::auth_gate::{Admission, AuthGate};
use super::{EventLoop, State, TimerKey, TimerKind};
use crate::auth::certificate::{self, CertificateDenial, CertificateNames};
use crate::auth::Denial;

impl<D: Detector> EventLoop<D> {
    /// Requires credentials from now on (`None`: names are first come, first served).
    pub(crate) fn with_auth(mut self, gate: Option<AuthGate>) -> Self {
        self.auth = gate;
        self
    }

    /// Handles an admitted HELLO: establishes the session when the
    /// credential grants its name (or none is required), refuses it, or
    /// starts verifying. Returns whether the connection is still open.
    pub(super) fn authenticate(&mut self, index: usize, mut hello: Hello) -> bool {
        if let Err(denial) = self.certificate_grants(index, &hello.name) {
            let denial = Denial::from(denial);
            self.metrics.auth().failed(&denial);
            self.refuse(index, ReasonCode::Unauthorized, denial.to_string());
            return false;
        }
        let Some(gate) = self.auth.as_mut() else {
            return self.establish(index, hello);
        };
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        if matches!(slot.state, State::Verifying(_)) {
            let text = "HELLO again while the first HELLO's credential is being verified";
            self.refuse(index, ReasonCode::DuplicateHello, text.to_owned());
            return false;
        }
        // Only the gate sees the credential; the kept HELLO holds none.
        let credential = std::mem::take(&mut hello.credential);
        let admission = gate.admit(
            index,
            slot.generation,
            slot.conn.peer.ip(),
            &hello.name,
            &credential,
            SystemTime::now(),
        );
        match admission {
            Admission::Granted => self.establish(index, hello),
            Admission::Verifying => {
                slot.state = State::Verifying(hello);
                // The handshake timeout bounded the wait for the HELLO; the
                // queue's own wait bounds the wait for a verifier thread.
                let key = TimerKey {
                    index: index as u32,
                    generation: slot.generation,
                    kind: TimerKind::Verification,
                };
                let due = self.clock.listening(Instant::now()) + gate.queue_wait();
                self.wheel.insert(due, key);
                true
            }
            Admission::Denied(denial) => {
                self.refuse(index, ReasonCode::Unauthorized, denial.to_string());
                false
            }
            Admission::Busy(busy) => {
                self.refuse(index, ReasonCode::ServerBusy, busy.text());
                false
            }
        }
    }

    /// With `--tls-client-cert-names`, whether connection `index`'s client
    /// certificate carries `name` (checked before any other credential, so
    /// a mismatch costs no argon2 run); without it, always.
    fn certificate_grants(&self, index: usize, name: &str) -> Result<(), CertificateDenial> {
        let bound = self
            .config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_cert_names);
        if !bound {
            return Ok(());
        }
        let certificate = self
            .slots
            .get(index)
            .and_then(|slot| slot.conn.peer_certificate())
            .ok_or(CertificateDenial::NoCertificate)?;
        certificate::grants(&CertificateNames::read(certificate)?, name)
    }

    /// Establishes or refuses every connection whose verdict has arrived.
    /// A verdict for a connection that closed meanwhile (its slot empty,
    /// reused by another generation, or no longer verifying) is discarded.
    pub(super) fn finish_verifications(&mut self) {
        while let Some(verdict) = self.auth.as_mut().and_then(AuthGate::next_verdict) {
            let index = verdict.index;
            let Some(slot) = self.slots.get_mut(index) else {
                continue;
            };
            if slot.generation != verdict.generation || !matches!(slot.state, State::Verifying(_)) {
                continue;
            }
            let State::Verifying(hello) = std::mem::replace(&mut slot.state, State::AwaitingHello)
            else {
                unreachable!("checked just above");
            };
            match verdict.result {
                Ok(()) => {
                    // The session starts now, not when its HELLO was read.
                    self.arrival = self.clock.listening(Instant::now());
                    self.establish(index, hello);
                }
                Err(denial) => self.refuse(index, ReasonCode::Unauthorized, denial.to_string()),
            }
        }
    }

    /// The queue wait of connection `index` is over: refused with
    /// `server_busy` when its secret is still waiting (it is then never
    /// checked); when a thread is checking it, the verdict follows within
    /// one argon2 run, and the timer is set again in case it does not.
    pub(super) fn verification_overdue(&mut self, index: usize, generation: u32) {
        let Some(gate) = self.auth.as_mut() else {
            return;
        };
        match gate.overdue(index, generation) {
            Some(busy) => self.refuse(index, ReasonCode::ServerBusy, busy.text()),
            None => {
                let key = TimerKey {
                    index: index as u32,
                    generation,
                    kind: TimerKind::Verification,
                };
                let due = self.clock.listening(Instant::now()) + gate.queue_wait();
                self.wheel.insert(due, key);
            }
        }
    }
}
