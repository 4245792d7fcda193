//! Why a client stopped for good, as a kind a program can act on: the
//! `lubdub client` command turns each into its own exit status, so that a
//! supervisor can tell a revoked credential from a stolen name.

use lubdub_core::protocol::ReasonCode;

use super::ConnectError;

/// Why the client stopped; carried by [`Status::Stopped`](super::Status::Stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The application closed the client.
    Closed,
    /// The first connect found no usable server within
    /// [`first_connect_patience`](super::ClientConfig::first_connect_patience).
    GaveUp,
    /// The server refused the credential for this name (`unauthorized`).
    Unauthorized,
    /// The server refused the name itself: against the naming rules, or
    /// confusable with a name online.
    NameRefused,
    /// Another client claimed the name (BYE `taken_over`); reconnecting
    /// would take it back, and the two would take it from each other for ever.
    TakenOver,
    /// TLS on one side and not the other, or certificates that do not fit:
    /// the server requires TLS, does not speak it, its certificate is not
    /// trusted or not valid for its name, or it refused the client's
    /// certificate.
    Tls,
    /// The client's own settings cannot work: an address without a port,
    /// TLS files that cannot be read or used. Nothing was dialled.
    Config,
    /// The server speaks another protocol version, or refused what this
    /// client sent as malformed.
    Incompatible,
}

impl StopCause {
    /// The cause of a final REJECT or BYE `code`.
    pub fn of_code(code: ReasonCode) -> StopCause {
        match code {
            ReasonCode::Normal => StopCause::Closed,
            ReasonCode::Unauthorized => StopCause::Unauthorized,
            ReasonCode::InvalidName | ReasonCode::ConfusableName => StopCause::NameRefused,
            ReasonCode::TakenOver => StopCause::TakenOver,
            ReasonCode::TlsRequired => StopCause::Tls,
            _ => StopCause::Incompatible,
        }
    }

    /// The cause of a connect that failed: [`GaveUp`](Self::GaveUp) for
    /// failures a later attempt could have cured (the first connect
    /// returns one only when its patience ran out).
    pub fn of_connect(error: &ConnectError) -> StopCause {
        if error.is_retryable() {
            return StopCause::GaveUp;
        }
        match error {
            ConnectError::InvalidName(_) => StopCause::NameRefused,
            ConnectError::InvalidAddress(_) | ConnectError::TlsSetup(_) => StopCause::Config,
            ConnectError::Rejected(reason) => StopCause::of_code(reason.code),
            ConnectError::CertificateNotTrusted { .. }
            | ConnectError::CertificateNameMismatch { .. }
            | ConnectError::NotTls { .. }
            | ConnectError::ClientCertificateRefused { .. } => StopCause::Tls,
            _ => StopCause::Incompatible,
        }
    }
}
