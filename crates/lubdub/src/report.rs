//! Errors as one line for people: the message, then each cause, each said
//! once.
//!
//! lubdub's own errors leave their cause out of their message (it is
//! their `source`), so that printing the chain says each thing once. Other
//! crates' errors sometimes repeat their source in their message; a cause
//! whose text is already in the line is skipped, so that `cannot listen on
//! …: Address already in use` is never followed by the same words again.

use std::error::Error;

/// `error` and its causes joined by `": "`, none repeated.
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot listen on 127.0.0.1:7070")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect: {0}")]
    struct Repeating(#[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let in_use = || std::io::Error::from(std::io::ErrorKind::AddrInUse);
        assert_eq!(
            chain(&Outer(in_use())),
            format!("cannot listen on 127.0.0.1:7070: {}", in_use())
        );
        assert_eq!(
            chain(&Repeating(in_use())),
            format!("cannot connect: {}", in_use())
        );
    }
}
