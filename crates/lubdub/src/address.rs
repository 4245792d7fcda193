//! `host:port` addresses as people write them: checked with a message that
//! says the fix, and resolved (host names are accepted wherever an address
//! is).

use std::net::{SocketAddr, ToSocketAddrs};

/// What is wrong with an address.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// Nothing after the host.
    #[error("no port in {text:?}; write {host}:{example_port}")]
    NoPort {
        /// The address as given.
        text: String,
        /// Its host part, for the suggestion.
        host: String,
        /// The port the suggestion uses.
        example_port: u16,
    },
    /// The port is not a number from 0 to 65535.
    #[error("{port:?} in {text:?} is not a port (a number from 0 to 65535)")]
    BadPort {
        /// The address as given.
        text: String,
        /// What stood where the port goes.
        port: String,
    },
    /// Nothing before the port.
    #[error("no host in {text:?}; write 127.0.0.1{text} or a host name before the colon")]
    NoHost {
        /// The address as given.
        text: String,
    },
    /// The host name could not be resolved.
    #[error("cannot resolve {host:?}: {detail}")]
    Resolve {
        /// The host part.
        host: String,
        /// What the resolver said.
        detail: String,
    },
}

/// Splits `text` into host and port; `example_port` goes into the
/// suggestion when the port is missing. IPv6 literals go in brackets:
/// `[::1]:7070`.
///
/// # Errors
/// [`AddressError`] naming what is missing and how to write it.
pub fn split(text: &str, example_port: u16) -> Result<(&str, u16), AddressError> {
    let text = text.trim();
    let no_port = |host: &str| AddressError::NoPort {
        text: text.to_owned(),
        host: host.to_owned(),
        example_port,
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or_else(|| no_port(text))?;
        let port = after.strip_prefix(':').ok_or_else(|| no_port(text))?;
        (inside, port)
    } else {
        match text.rsplit_once(':') {
            // More than one colon without brackets: a bare IPv6 address.
            Some((host, _)) if host.contains(':') => return Err(no_port(&format!("[{text}]"))),
            Some(parts) => parts,
            None => return Err(no_port(text)),
        }
    };
    if port.is_empty() {
        return Err(no_port(text.trim_end_matches(':')));
    }
    if host.is_empty() {
        return Err(AddressError::NoHost {
            text: text.to_owned(),
        });
    }
    // Port 0 is allowed: to listen on, it asks for any free port.
    match port.parse::<u16>() {
        Ok(number) => Ok((host, number)),
        Err(_) => Err(AddressError::BadPort {
            text: text.to_owned(),
            port: port.to_owned(),
        }),
    }
}

/// Checks `text` like [`split`] and resolves it (blocking) to its first
/// address: for addresses to listen on or to connect to once.
///
/// # Errors
/// [`AddressError`], including a host name that does not resolve.
pub fn resolve(text: &str, example_port: u16) -> Result<SocketAddr, AddressError> {
    let (host, port) = split(text, example_port)?;
    let resolve_error = |detail: String| AddressError::Resolve {
        host: host.to_owned(),
        detail,
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|error| resolve_error(error.to_string()))?
        .next()
        .ok_or_else(|| resolve_error("no address found".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_people_write() {
        assert_eq!(split("127.0.0.1:7070", 1).expect("ok"), ("127.0.0.1", 7070));
        assert_eq!(split("localhost:9", 1).expect("ok"), ("localhost", 9));
        assert_eq!(split("[::1]:7070", 1).expect("ok"), ("::1", 7070));
        assert_eq!(resolve("localhost:7070", 1).expect("resolves").port(), 7070);
        assert_eq!(
            resolve("127.0.0.1:7071", 1).expect("an IP needs no lookup"),
            "127.0.0.1:7071".parse().expect("an address")
        );
    }

    #[test]
    fn each_mistake_gets_its_fix() {
        let said = |text: &str| split(text, 7070).expect_err("refused").to_string();
        assert_eq!(
            said("localhost"),
            "no port in \"localhost\"; write localhost:7070"
        );
        assert_eq!(
            said("localhost:"),
            "no port in \"localhost:\"; write localhost:7070"
        );
        assert_eq!(said("::1"), "no port in \"::1\"; write [::1]:7070");
        assert_eq!(said("[::1]"), "no port in \"[::1]\"; write [::1]:7070");
        assert_eq!(
            said("host:70x"),
            "\"70x\" in \"host:70x\" is not a port (a number from 0 to 65535)"
        );
        assert!(said("host:65536").contains("not a port"));
        assert_eq!(split("127.0.0.1:0", 1).expect("any free port").1, 0);
        assert!(said(":7070").starts_with("no host in \":7070\""));
        let unknown = resolve("no-such-host.invalid:7070", 7070).expect_err("no such host");
        assert!(
            unknown
                .to_string()
                .starts_with("cannot resolve \"no-such-host.invalid\": "),
            "{unknown}"
        );
    }
}
