//! Which statuses a session may carry (`away`, `in match 42`): at most
//! [`MAX_STATUS_LEN`] bytes of UTF-8 and no control characters, since
//! statuses are shown in terminals, listings and every watcher's events.
//! Empty clears the status.

use super::frame::MAX_STATUS_LEN;

/// Why a status was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    /// More bytes than allowed.
    #[error("status is {len} bytes; at most {MAX_STATUS_LEN} are allowed")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A control character (a line break, an escape, ...).
    #[error("status holds the control character U+{code:04X} at byte {at}")]
    Control {
        /// The character's code point.
        code: u32,
        /// Its byte offset.
        at: usize,
    },
}

/// Checks `status` against the rules above.
///
/// # Errors
/// The first rule it breaks.
pub fn validate_status(status: &str) -> Result<(), StatusError> {
    if status.len() > MAX_STATUS_LEN {
        return Err(StatusError::TooLong { len: status.len() });
    }
    match status.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, c)) => Err(StatusError::Control {
            code: u32::from(c),
            at,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_short_printable_text() {
        assert_eq!(validate_status(""), Ok(()));
        assert_eq!(validate_status("in match 42 🎮"), Ok(()));
        assert_eq!(validate_status(&"a".repeat(MAX_STATUS_LEN)), Ok(()));
        assert_eq!(
            validate_status(&"a".repeat(MAX_STATUS_LEN + 1)),
            Err(StatusError::TooLong { len: 129 })
        );
        assert_eq!(
            validate_status("away\x1b[2J")
                .expect_err("an escape")
                .to_string(),
            "status holds the control character U+001B at byte 4"
        );
    }
}
