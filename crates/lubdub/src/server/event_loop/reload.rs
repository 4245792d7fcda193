//! The loop's side of a reload: a new configuration's live settings
//! (`ServerConfig::with_live_settings`) replace the running ones between
//! two turns. Nothing open is closed: the limits apply to the next
//! connection, frame or fan-out, the credentials to the next HELLO, the
//! TLS files to the next connection.

use lubdub_core::detector::Detector;

use super::super::Reload;
use super::EventLoop;

impl<D: Detector> EventLoop<D> {
    /// Takes on the live settings of `reload`.
    pub(super) fn reload(&mut self, reload: Reload) {
        let config = self.config.with_live_settings(&reload.config);
        self.admission.set_limits(config.admission_limits());
        let outbound_cap = config.outbound_queue_cap();
        self.rules.config = config.connection_config();
        self.outbound_cap = outbound_cap;
        // Credentials and TLS are swapped only while they stay on: turning
        // them on or off needs a restart (the live settings kept them).
        if let (Some(gate), Some(authenticator)) = (self.auth.as_mut(), reload.authenticator) {
            if config.auth.is_enabled() {
                gate.replace(authenticator, config.auth.verifier_queue_wait);
            }
        }
        if let (Some(running), Some(tls)) = (self.tls.as_mut(), reload.tls) {
            if config.tls.is_some() {
                *running = tls;
            }
        }
        self.config = config;
    }
}
