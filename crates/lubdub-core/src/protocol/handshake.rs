//! Handshake rules: which names may be claimed and how the heartbeat interval
//! is negotiated. Pure functions, shared by the server (which enforces them)
//! and the client (which checks its own name before dialling).

use std::time::Duration;

use super::frame::MAX_NAME_LEN;

/// Why a name cannot be claimed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is the empty string.
    #[error("name is empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("name is {len} bytes, more than the maximum of {MAX_NAME_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The name holds whitespace, a control character or `@`, which would
    /// make `@name` addressing in chat ambiguous.
    #[error(
        "name contains {found:?}; names may not contain whitespace, control characters or '@'"
    )]
    ForbiddenCharacter {
        /// The first forbidden character.
        found: char,
    },
}

/// Checks that `name` may be claimed by a session.
///
/// # Errors
/// The first rule the name breaks, as a [`NameError`].
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong { len: name.len() });
    }
    if let Some(found) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '@')
    {
        return Err(NameError::ForbiddenCharacter { found });
    }
    Ok(())
}

/// The interval range a server grants and its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntervalPolicy {
    /// Granted when the client asks for 0 (no preference).
    pub default: Duration,
    /// Shortest interval granted; shorter requests are raised to it.
    pub min: Duration,
    /// Longest interval granted; longer requests are lowered to it.
    pub max: Duration,
}

impl IntervalPolicy {
    /// The interval granted for a request of `requested_ms` milliseconds
    /// (0 meaning no preference): the request clamped to `[min, max]`.
    pub fn grant(&self, requested_ms: u32) -> Duration {
        if requested_ms == 0 {
            return self.default.clamp(self.min, self.max);
        }
        Duration::from_millis(u64::from(requested_ms)).clamp(self.min, self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_rules() {
        assert_eq!(validate_name("alice"), Ok(()));
        assert_eq!(validate_name("sensor-42.eu_west"), Ok(()));
        assert_eq!(validate_name("zoë"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(64)), Ok(()));
        assert_eq!(
            validate_name(&"a".repeat(65)),
            Err(NameError::TooLong { len: 65 })
        );
        assert_eq!(
            validate_name("a b"),
            Err(NameError::ForbiddenCharacter { found: ' ' })
        );
        assert_eq!(
            validate_name("a@b"),
            Err(NameError::ForbiddenCharacter { found: '@' })
        );
        assert_eq!(
            validate_name("a\u{7}"),
            Err(NameError::ForbiddenCharacter { found: '\u{7}' })
        );
    }

    #[test]
    fn requests_are_clamped_to_the_policy() {
        let policy = IntervalPolicy {
            default: Duration::from_secs(3),
            min: Duration::from_millis(100),
            max: Duration::from_secs(60),
        };
        assert_eq!(policy.grant(0), Duration::from_secs(3));
        assert_eq!(policy.grant(10), Duration::from_millis(100));
        assert_eq!(policy.grant(500), Duration::from_millis(500));
        assert_eq!(policy.grant(u32::MAX), Duration::from_secs(60));
    }
}
