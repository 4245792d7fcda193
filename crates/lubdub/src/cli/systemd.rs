//! systemd's readiness protocol (`sd_notify(3)`), in the few lines it
//! takes: a service started with `Type=notify` finds a Unix datagram socket
//! in `$NOTIFY_SOCKET` and sends it `READY=1` once it serves, `STOPPING=1`
//! when it begins to shut down. `lubdub server` does both (see `serve.rs`);
//! without the variable nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The environment variable a service manager sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Why the service manager cannot be notified.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The variable names no socket this code can reach.
    #[error("{NOTIFY_SOCKET}={shown:?} is neither an absolute path nor an abstract socket name starting with @")]
    Address {
        /// The variable's value.
        shown: String,
    },
    /// The socket could not be made or the datagram not sent.
    #[error("cannot notify the service manager at {shown}: {error}")]
    Send {
        /// The variable's value.
        shown: String,
        /// The OS error.
        error: io::Error,
    },
}

/// Where to send state changes: the service manager's socket.
#[derive(Debug)]
pub struct Notifier {
    address: SocketAddr,
    shown: String,
}

impl Notifier {
    /// The socket `$NOTIFY_SOCKET` names, or `None` when it is unset (no
    /// service manager asked for notifications).
    ///
    /// # Errors
    /// [`NotifyError::Address`] when the value is not a socket address.
    pub fn from_environment() -> Result<Option<Self>, NotifyError> {
        std::env::var_os(NOTIFY_SOCKET)
            .filter(|value| !value.is_empty())
            .map(|value| Self::for_address(&value))
            .transpose()
    }

    /// A notifier for a `$NOTIFY_SOCKET` value: an absolute path, or
    /// `@name` for a socket in Linux's abstract namespace.
    ///
    /// # Errors
    /// [`NotifyError::Address`] for anything else (relative paths, or the
    /// `vsock:` addresses newer systemd versions hand to virtual machines).
    pub fn for_address(value: &OsStr) -> Result<Self, NotifyError> {
        let shown = value.to_string_lossy().into_owned();
        let bytes = value.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(value),
            Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
            _ => return Err(NotifyError::Address { shown }),
        }
        .map_err(|_| NotifyError::Address {
            shown: shown.clone(),
        })?;
        Ok(Self { address, shown })
    }

    /// Sends `state`: newline-separated `KEY=value` assignments such as
    /// `READY=1` or `STOPPING=1`, optionally with a `STATUS=` line for
    /// `systemctl status`.
    ///
    /// # Errors
    /// [`NotifyError::Send`] with the OS error.
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        let send_error = |error| NotifyError::Send {
            shown: self.shown.clone(),
            error,
        };
        let socket = UnixDatagram::unbound().map_err(send_error)?;
        socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map_err(send_error)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout set");
        let mut buffer = [0u8; 256];
        let n = socket.recv(&mut buffer).expect("a datagram arrives");
        String::from_utf8(buffer[..n].to_vec()).expect("UTF-8")
    }

    #[test]
    fn states_reach_a_socket_at_a_path() {
        let dir = std::env::temp_dir().join(format!("lubdub-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bound");
        let notifier = Notifier::for_address(path.as_os_str()).expect("a path");
        notifier.notify("READY=1\nSTATUS=serving").expect("sent");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn states_reach_an_abstract_socket() {
        let name = format!("lubdub-notify-unit-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("a name");
        let socket = UnixDatagram::bind_addr(&address).expect("bound");
        let notifier = Notifier::for_address(OsStr::new(&format!("@{name}"))).expect("abstract");
        notifier.notify("STOPPING=1").expect("sent");
        assert_eq!(receive(&socket), "STOPPING=1");
    }

    #[test]
    fn other_addresses_are_refused_with_the_value() {
        for value in ["notify.sock", "vsock:2:1234", ""] {
            let error = Notifier::for_address(OsStr::new(value)).expect_err(value);
            assert!(error.to_string().contains(&format!("{value:?}")), "{error}");
        }
    }

    #[test]
    fn a_socket_that_is_gone_is_reported_with_its_address() {
        let notifier =
            Notifier::for_address(OsStr::new("/nonexistent/lubdub/notify")).expect("a path");
        let error = notifier.notify("READY=1").expect_err("nobody listens");
        assert!(
            error.to_string().contains("/nonexistent/lubdub/notify"),
            "{error}"
        );
    }
}
