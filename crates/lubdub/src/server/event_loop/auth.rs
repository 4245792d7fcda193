//! Credentials in the event loop: a machine's `Authenticate` request goes
//! through the auth gate before its name may be claimed. Tokens and cached
//! secrets are decided inline; other secrets are verified on a verifier
//! thread while the machine waits, and the verdict arrives through the
//! `WAKER` token. A secret still queued after the queue wait is answered
//! REJECT `server_busy` (a `Verification` timer).
//!
//! A claimant is judged before its claim, so a refused one never disturbs
//! the name's current holder; only a credential for the name can take it
//! over. With `--tls-client-cert-names`, the client certificate must carry
//! the name first (`auth::certificate`), whatever else is asked.

use std::time::SystemTime;

use lubdub_core::connection::{Authentication, Now};
use lubdub_core::detector::Detector;
use lubdub_core::protocol::ReasonCode;

use super::super::auth_gate::{Admission, AuthGate};
use super::timers::TimerKind;
use super::{ConnKey, EventLoop};
use crate::auth::certificate::{self, CertificateDenial, CertificateNames};
use crate::auth::Denial;

impl<D: Detector> EventLoop<D> {
    /// Requires credentials from now on (`None`: names are first come,
    /// first served, unless client certificates bind them).
    pub(crate) fn with_auth(mut self, gate: Option<AuthGate>) -> Self {
        self.auth = gate;
        self
    }

    /// Checks `credential` for `name` on connection `key`: answers its
    /// machine now, or starts verifying off the loop.
    pub(super) fn authenticate(&mut self, now: Now, key: ConnKey, name: &str, credential: &[u8]) {
        if let Err(denial) = self.certificate_grants(key.0, name) {
            let denial = Denial::from(denial);
            self.metrics.auth().failed(&denial);
            let text = denial.to_string();
            return self.answer_authentication(now, key, refused(ReasonCode::Unauthorized, text));
        }
        let Some(gate) = self.auth.as_mut() else {
            return self.answer_authentication(now, key, Authentication::Granted);
        };
        let Some(peer) = self.slots.get(key.0).map(|slot| slot.conn.peer) else {
            return;
        };
        let admission = gate.admit(key.0, key.1, peer.ip(), name, credential, SystemTime::now());
        let answer = match admission {
            Admission::Granted(grants) => {
                if !grants.is_empty() {
                    self.grants
                        .insert(key.0, (key.1, std::sync::Arc::new(grants)));
                }
                Authentication::Granted
            }
            Admission::Verifying => {
                // The handshake timeout bounded the wait for the HELLO; the
                // queue's own wait bounds the wait for a verifier thread.
                let due = now.listening + gate.queue_wait();
                self.timers
                    .schedule(key, TimerKind::Verification, due, None);
                return;
            }
            Admission::Denied(denial) => refused(ReasonCode::Unauthorized, denial.to_string()),
            Admission::Busy(busy) => refused(ReasonCode::ServerBusy, busy.text()),
        };
        self.answer_authentication(now, key, answer);
    }

    fn answer_authentication(&mut self, now: Now, key: ConnKey, answer: Authentication) {
        self.tell_machine(key, |machine, rules, out| {
            machine.handle_authentication(now, answer, rules, out)
        });
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

    /// Answers every connection whose verdict has arrived. A verdict for a
    /// connection that closed meanwhile (its slot empty or reused by
    /// another generation) is discarded; its machine ignores one that
    /// comes after it stopped waiting.
    pub(super) fn finish_verifications(&mut self) {
        while let Some(verdict) = self.auth.as_mut().and_then(AuthGate::next_verdict) {
            let key = (verdict.index, verdict.generation);
            if !self.is_current(key) {
                continue;
            }
            // The session starts now, not when its HELLO was read.
            let now = self.now();
            let answer = match verdict.result {
                Ok(()) => Authentication::Granted,
                Err(denial) => refused(ReasonCode::Unauthorized, denial.to_string()),
            };
            self.answer_authentication(now, key, answer);
            self.carry_out(now);
        }
    }

    /// The queue wait of connection `key` is over: refused with
    /// `server_busy` when its secret is still waiting (it is then never
    /// checked); when a thread is checking it, the verdict follows within
    /// one argon2 run, and the timer is set again in case it does not.
    pub(super) fn verification_overdue(&mut self, now: Now, key: ConnKey) {
        let waiting = self
            .slots
            .get(key.0)
            .is_some_and(|slot| slot.machine.awaits_authentication());
        let Some(gate) = self.auth.as_mut().filter(|_| waiting) else {
            return;
        };
        match gate.overdue(key.0, key.1) {
            Some(busy) => {
                let answer = refused(ReasonCode::ServerBusy, busy.text());
                self.answer_authentication(now, key, answer);
                self.carry_out(now);
            }
            None => {
                let due = now.listening + gate.queue_wait();
                self.timers
                    .schedule(key, TimerKind::Verification, due, None);
            }
        }
    }
}

fn refused(code: ReasonCode, text: String) -> Authentication {
    Authentication::Refused { code, text }
}
