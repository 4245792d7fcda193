//! Settings that need each other: a TLS key and its certificate, a
//! client CA and TLS, names bound to client certificates and a client CA.
//! Checked after the layers are merged, not by clap's `requires`: each of
//! a pair may come from a different layer (the file, a variable, a flag).

use super::ServerSettings;

/// Two settings that need each other, one without the other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key} is set but {needs} is not: {why}")]
pub struct MissingPair {
    /// The setting given.
    pub key: &'static str,
    /// The setting it needs.
    pub needs: &'static str,
    /// Why.
    pub why: &'static str,
}

impl ServerSettings {
    /// Checks the settings that need each other: a TLS key needs its
    /// certificate and the other way round, a client CA needs TLS, binding
    /// names to client certificates needs a client CA, an admin API off
    /// the loopback address needs a token. (Not clap's
    /// `requires`: each of a pair may come from a different layer.)
    ///
    /// # Errors
    /// The first [`MissingPair`].
    pub fn check_pairs(&self) -> Result<(), MissingPair> {
        let pairs = [
            (
                self.tls_cert.is_some() && self.tls_key.is_none(),
                "tls-cert",
                "tls-key",
                "TLS needs the certificate's private key",
            ),
            (
                self.tls_key.is_some() && self.tls_cert.is_none(),
                "tls-key",
                "tls-cert",
                "TLS needs the key's certificate",
            ),
            (
                self.tls_client_ca.is_some() && self.tls_cert.is_none(),
                "tls-client-ca",
                "tls-cert",
                "client certificates are asked for only by a TLS server",
            ),
            (
                self.tls_client_cert_names && self.tls_client_ca.is_none(),
                "tls-client-cert-names",
                "tls-client-ca",
                "without it clients present no certificate",
            ),
            (
                self.webhook.is_some() && self.webhook_secret_file.is_none(),
                "webhook",
                "webhook-secret-file",
                "webhook bodies are signed, so that receivers can tell them from forgeries",
            ),
            (
                !self.admin.ip().is_loopback() && self.admin_token_file.is_none(),
                "admin",
                "admin-token-file",
                "an admin API off the loopback address streams every session's \
                 presence to whoever reaches it; give it a bearer token \
                 (SECURITY.md) or listen on 127.0.0.1",
            ),
        ];
        match pairs.into_iter().find(|(missing, ..)| *missing) {
            Some((_, key, needs, why)) => Err(MissingPair { key, needs, why }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::from_flags as settings;

    #[test]
    fn an_admin_api_off_loopback_needs_a_token() {
        assert_eq!(settings(&["--admin=127.0.0.1:7071"]).check_pairs(), Ok(()));
        assert_eq!(settings(&["--admin=[::1]:7071"]).check_pairs(), Ok(()));
        let error = settings(&["--admin=0.0.0.0:7071"])
            .check_pairs()
            .expect_err("no token");
        assert_eq!((error.key, error.needs), ("admin", "admin-token-file"));
        let with_token = settings(&["--admin=0.0.0.0:7071", "--admin-token-file=t"]);
        assert_eq!(with_token.check_pairs(), Ok(()));
    }

    #[test]
    fn each_half_of_a_pair_needs_the_other() {
        assert_eq!(settings(&[]).check_pairs(), Ok(()));
        let error = settings(&["--tls-key=k.pem"])
            .check_pairs()
            .expect_err("no cert");
        assert_eq!(
            error.to_string(),
            "tls-key is set but tls-cert is not: TLS needs the key's certificate"
        );
        let error = settings(&["--tls-cert=c.pem"])
            .check_pairs()
            .expect_err("no key");
        assert_eq!((error.key, error.needs), ("tls-cert", "tls-key"));
        let names = settings(&["--tls-cert=c", "--tls-key=k", "--tls-client-cert-names"]);
        assert_eq!(
            names.check_pairs().expect_err("no CA").needs,
            "tls-client-ca"
        );
        let ca = settings(&["--tls-client-ca=ca.pem"]);
        assert_eq!(ca.check_pairs().expect_err("no TLS").needs, "tls-cert");
        let whole = settings(&["--tls-cert=c", "--tls-key=k", "--tls-client-ca=ca"]);
        assert_eq!(whole.check_pairs(), Ok(()));
    }
}
