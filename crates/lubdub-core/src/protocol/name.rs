//! Names: what a session may call itself, and when two names look alike.
//! [`validate_name`] checks HELLO names, MSG recipients and the client's own
//! name before dialling; [`confusable_skeleton`] is what the server's
//! registry compares at claim, so that two look-alike names are never both
//! online. The rules and their test vectors are `docs/PROTOCOL.md`, *Names*.

use std::fmt;

use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCasePreserved;
use unicode_security::general_security_profile::IdentifierType;
use unicode_security::{GeneralSecurityProfile, RestrictionLevel, RestrictionLevelDetection};

use super::frame::MAX_NAME_LEN;

/// One character as an error text shows it: `U+0430 'а'` for a letter or
/// digit allowed in identifiers or printable ASCII, only `U+202E` for
/// anything else, so that an error text never carries an invisible or bidi
/// character back to the terminal showing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePoint(pub char);

impl fmt::Display for CodePoint {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "U+{:04X}", u32::from(self.0))?;
        if self.0.is_ascii_graphic() || (self.0.is_alphanumeric() && self.0.identifier_allowed()) {
            write!(formatter, " '{}'", self.0)?;
        }
        Ok(())
    }
}

/// Why a name cannot be claimed. Every variant that concerns a character
/// names it (as a code point) and says why it is refused.
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
        "name contains {}; names may not contain whitespace, control characters or '@'",
        CodePoint(*found)
    )]
    ForbiddenCharacter {
        /// The first forbidden character.
        found: char,
    },
    /// The name starts with `#`, which names a room.
    #[error("name starts with '#', which names a room; choose a name without it")]
    RoomPrefix,
    /// The name holds a character that Unicode's identifier profile (UTS
    /// #39 identifier status) restricts: invisible, format, compatibility,
    /// symbol or rarely used characters.
    #[error("name contains {}, which names may not hold: {}", CodePoint(*found), describe(*kind))]
    RestrictedCharacter {
        /// The first restricted character.
        found: char,
        /// Why UTS #39 restricts it.
        kind: RestrictionKind,
    },
    /// The PRECIS UsernameCasePreserved profile (RFC 8265) refuses the name,
    /// for a character it disallows or for its directionality rule.
    #[error("name breaks the PRECIS username profile (RFC 8265): {detail}")]
    NotInProfile {
        /// What the profile found, with the character when there is one.
        detail: String,
    },
    /// The name is allowed but not written in its canonical form (NFC, no
    /// full-width letters): refused rather than silently changed, so that a
    /// name is shown and compared exactly as it was sent.
    #[error(
        "name is not in canonical form (PRECIS UsernameCasePreserved, RFC 8265): {} is \
         written differently; send {canonical:?} instead",
        CodePoint(*found)
    )]
    NotCanonical {
        /// The first character that canonicalisation changes.
        found: char,
        /// The name in canonical form.
        canonical: String,
    },
    /// The name mixes scripts beyond what UTS #39 calls highly restrictive
    /// (one script, or Latin with Han and Japanese or Korean scripts).
    #[error(
        "name mixes scripts: {} is from a different script than the letters before it \
         (UTS #39 mixed-script rule; use one script per name)",
        CodePoint(*found)
    )]
    MixedScripts {
        /// The first character that takes the name out of one script.
        found: char,
    },
}

/// Why UTS #39 restricts a character from identifiers, in the words an
/// error text uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionKind {
    /// Invisible: zero-width, format, bidi control, filler (Default_Ignorable).
    Invisible,
    /// A compatibility variant of another character: full-width, ligature (Not_NFKC).
    Compatibility,
    /// Not a letter or digit: a symbol, space or format character (Not_XID).
    NotLetterOrDigit,
    /// Technical, obsolete, uncommon, limited-use, deprecated or excluded.
    Uncommon,
}

fn describe(kind: RestrictionKind) -> &'static str {
    match kind {
        RestrictionKind::Invisible => {
            "an invisible character (zero-width, format, bidi control or filler)"
        }
        RestrictionKind::Compatibility => {
            "a compatibility variant of another character (e.g. full-width or a ligature)"
        }
        RestrictionKind::NotLetterOrDigit => {
            "not a letter or digit (a symbol, blank or format character)"
        }
        RestrictionKind::Uncommon => {
            "a technical, obsolete or rarely used character (e.g. a combining overlay)"
        }
    }
}

impl RestrictionKind {
    fn of(character: char) -> Self {
        match character.identifier_type() {
            Some(IdentifierType::Default_Ignorable) => Self::Invisible,
            Some(IdentifierType::Not_NFKC) => Self::Compatibility,
            Some(IdentifierType::Not_XID) | None => Self::NotLetterOrDigit,
            Some(_) => Self::Uncommon,
        }
    }
}

/// Checks that `name` may be claimed by a session, refusing (never
/// rewriting) a name that breaks a rule:
/// 1. 1–[`MAX_NAME_LEN`] bytes, no whitespace, control character or `@`,
///    and not starting with `#` (a room);
/// 2. printable ASCII, or characters UTS #39 allows in identifiers;
/// 3. the PRECIS UsernameCasePreserved profile (RFC 8265), already in its
///    canonical form (NFC, no full-width letters);
/// 4. one script, or a highly restrictive mix (UTS #39).
///
/// Case is preserved: `Alice` is a valid name, but it is confusable with
/// `alice` (see [`confusable_skeleton`]), so both cannot be online at once.
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
    if name.starts_with('#') {
        return Err(NameError::RoomPrefix);
    }
    // Printable ASCII stays allowed as before (`host/1`, `a+b`), though UTS
    // #39 restricts its punctuation: every ASCII character is visible and
    // distinct, and the skeleton catches `1` for `l`. Such a name passes
    // every rule below (PRECIS maps none of it, one script), so they are
    // skipped: 3.8 µs → 0.15 µs per HELLO and direct MSG (`cargo bench`).
    if name.is_ascii() {
        return Ok(());
    }
    if let Some(found) = name
        .chars()
        .find(|c| !c.is_ascii() && !c.identifier_allowed())
    {
        return Err(NameError::RestrictedCharacter {
            found,
            kind: RestrictionKind::of(found),
        });
    }
    check_profile(name)?;
    check_scripts(name)
}

fn check_profile(name: &str) -> Result<(), NameError> {
    match UsernameCasePreserved::enforce(name) {
        Ok(canonical) if canonical == name => Ok(()),
        Ok(canonical) => {
            let found = name
                .chars()
                .zip(canonical.chars().map(Some).chain(std::iter::repeat(None)))
                .find(|(original, mapped)| Some(*original) != *mapped)
                .map_or_else(|| name.chars().last().unwrap_or(' '), |(c, _)| c);
            Err(NameError::NotCanonical {
                found,
                canonical: canonical.into_owned(),
            })
        }
        Err(precis_core::Error::BadCodepoint(info)) => Err(NameError::NotInProfile {
            detail: format!(
                "{} is {}",
                char::from_u32(info.cp).map_or_else(
                    || format!("U+{:04X}", info.cp),
                    |c| CodePoint(c).to_string()
                ),
                info.property
            ),
        }),
        Err(precis_core::Error::Invalid) => Err(NameError::NotInProfile {
            detail: "it breaks the directionality rule (right-to-left and \
                     left-to-right letters mixed, or a right-to-left name \
                     that starts or ends wrongly)"
                .to_owned(),
        }),
        Err(other) => Err(NameError::NotInProfile {
            detail: other.to_string(),
        }),
    }
}

/// ASCII punctuation is in no script and, restricted by UTS #39 though
/// allowed here, would make the crate's detection report `Unrestricted`:
/// the level is judged on the other characters.
fn restriction_level(name: &str) -> RestrictionLevel {
    let letters: String = name.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    letters.as_str().detect_restriction_level()
}

fn check_scripts(name: &str) -> Result<(), NameError> {
    if restriction_level(name) <= RestrictionLevel::HighlyRestrictive {
        return Ok(());
    }
    // Only on refusal: the shortest prefix that already mixes names the
    // character to blame (at most 64 prefixes of at most 64 characters).
    let found = name
        .char_indices()
        .map(|(at, c)| (&name[..at + c.len_utf8()], c))
        .find(|(prefix, _)| restriction_level(prefix) > RestrictionLevel::HighlyRestrictive)
        .map_or(' ', |(_, c)| c);
    Err(NameError::MixedScripts { found })
}

/// The key under which two names count as the same to a reader: the UTS #39
/// confusable skeleton of the lower-cased name. `alice`, `Alice`, `ALICE`,
/// `a1ice` and `аlice` (Cyrillic а) share one; a server holds at most one
/// online name per skeleton.
///
/// Lower-casing first makes case variants collide; it also means a
/// cross-case look-alike (capital `I` for small `l`) is judged by its small
/// letter (`i`), so `Ilya` and `llya` do not collide.
pub fn confusable_skeleton(name: &str) -> String {
    unicode_security::skeleton(&name.to_lowercase()).collect()
}

#[cfg(test)]
mod tests;
