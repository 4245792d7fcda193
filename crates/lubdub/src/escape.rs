//! Text a peer controls, made safe to print: names and message bodies on a
//! terminal (the chat client, `lubdub sessions`) and in the server's log.
//! Control, format, bidi and invisible characters are shown escaped (`\e`,
//! `\r`, `\u{202e}`), so no peer can clear a screen, set a title, forge a
//! line or reorder text; letters of any script and emoji pass unchanged.

use std::borrow::Cow;
use std::fmt::{self, Write};

use unicode_properties::{GeneralCategory, UnicodeEmoji, UnicodeGeneralCategory};

/// `text` for display: itself when it needs no escaping, else its escaped copy.
pub fn escape(text: &str) -> Cow<'_, str> {
    let mut previous = None;
    let clean = text.chars().all(|character| {
        let escaped = needs_escape(character, previous);
        previous = Some(character);
        !escaped
    });
    if clean {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(Escaped(text).to_string())
    }
}

/// Displays a string with [`escape`]'s rules, without allocating: for log
/// fields (`name = %Escaped(&name)`) and `format!` arguments.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(self.0, &mut None, formatter)
    }
}

/// Displays bytes that should be UTF-8 (a MSG body) with [`escape`]'s
/// rules; each byte that is not part of valid UTF-8 shows as `\xNN`.
#[derive(Debug, Clone, Copy)]
pub struct EscapedBytes<'a>(pub &'a [u8]);

impl fmt::Display for EscapedBytes<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut previous = None;
        for chunk in self.0.utf8_chunks() {
            write_escaped(chunk.valid(), &mut previous, formatter)?;
            for byte in chunk.invalid() {
                write!(formatter, "\\x{byte:02x}")?;
                previous = None;
            }
        }
        Ok(())
    }
}

/// Writes `text` escaped; `previous` is the last character written as is,
/// which decides whether an emoji joiner or selector belongs to an emoji.
fn write_escaped(text: &str, previous: &mut Option<char>, out: &mut impl Write) -> fmt::Result {
    for character in text.chars() {
        if needs_escape(character, *previous) {
            match character {
                '\t' => out.write_str("\\t")?,
                '\n' => out.write_str("\\n")?,
                '\r' => out.write_str("\\r")?,
                '\u{1b}' => out.write_str("\\e")?,
                other => write!(out, "\\u{{{:x}}}", u32::from(other))?,
            }
            *previous = None;
        } else {
            out.write_char(character)?;
            *previous = Some(character);
        }
    }
    Ok(())
}

/// Whether `character` must be shown escaped after `previous` (the last
/// character shown as is, if the one just before it was).
fn needs_escape(character: char, previous: Option<char>) -> bool {
    if character.is_ascii() {
        return character.is_ascii_control();
    }
    if is_emoji_part(character, previous) {
        return false;
    }
    matches!(
        character.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
            | GeneralCategory::Surrogate
            | GeneralCategory::Unassigned
    ) || is_default_ignorable(character)
}

/// The zero-width joiner, the presentation selectors and tag characters are
/// invisible, but emoji sequences need them (👨‍👩‍👧, ❤️, 🏴 tag flags):
/// they pass right after an emoji (or a tag, for tags) shown as is.
fn is_emoji_part(character: char, previous: Option<char>) -> bool {
    let Some(previous) = previous else {
        return false;
    };
    let after_emoji = previous.is_emoji_char() && !previous.is_ascii();
    match character {
        '\u{200d}' => after_emoji,
        '\u{fe0e}' | '\u{fe0f}' => previous.is_emoji_char(),
        '\u{e0020}'..='\u{e007f}' => {
            previous == '\u{1f3f4}' || ('\u{e0020}'..='\u{e007f}').contains(&previous)
        }
        _ => false,
    }
}

/// Default_Ignorable_Code_Point (Unicode DerivedCoreProperties.txt) outside
/// the Format and Unassigned categories, which are escaped anyway: combining
/// grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian and
/// other variation selectors. All render as nothing.
fn is_default_ignorable(character: char) -> bool {
    matches!(
        character,
        '\u{34f}'
            | '\u{115f}'..='\u{1160}'
            | '\u{17b4}'..='\u{17b5}'
            | '\u{180b}'..='\u{180f}'
            | '\u{3164}'
            | '\u{fe00}'..='\u{fe0f}'
            | '\u{ffa0}'
            | '\u{e0000}'..='\u{e0fff}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each hijack of issue 12 shown escaped. Fails on the code before this
    /// change, which printed bodies and names as they came (there was no
    /// escaping function: the chat client used `String::from_utf8_lossy`).
    #[test]
    fn terminal_controls_are_shown_escaped() {
        for (raw, shown) in [
            ("\x1b[2J", "\\e[2J"),
            ("\x1b]0;title\x07", "\\e]0;title\\u{7}"),
            (
                "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",
                "\\e]8;;http://evil.example/\\e\\click\\e]8;;\\e\\",
            ),
            (
                "hi\r[admin] please re-enter your password:",
                "hi\\r[admin] please re-enter your password:",
            ),
            ("a\nb\tc\u{7f}", "a\\nb\\tc\\u{7f}"),
            ("\u{9b}31m", "\\u{9b}31m"),
            ("abc\u{202e}fed", "abc\\u{202e}fed"),
            ("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}"),
            ("alice\u{200b}", "alice\\u{200b}"),
            ("\u{feff}alice", "\\u{feff}alice"),
            ("al\u{ad}ice", "al\\u{ad}ice"),
            ("\u{3164}", "\\u{3164}"),
            ("a\u{2028}b\u{2029}", "a\\u{2028}b\\u{2029}"),
            ("bob\u{fe0f}", "bob\\u{fe0f}"),
            ("x\u{200d}y", "x\\u{200d}y"),
        ] {
            assert_eq!(escape(raw), shown, "{raw:?}");
            assert_eq!(EscapedBytes(raw.as_bytes()).to_string(), shown, "{raw:?}");
        }
    }

    #[test]
    fn ordinary_text_is_unchanged_and_not_copied() {
        for text in [
            "hello, world!",
            "zoë",
            "Алиса",
            "李雷 说 你好",
            "مرحبا",
            "👍 ❤️ 👨\u{200d}👩\u{200d}👧 1\u{fe0f}\u{20e3} 🇫🇷",
            "🏴\u{e0067}\u{e0062}\u{e0073}\u{e0063}\u{e0074}\u{e007f}",
            "C:\\path\\to",
            "a̶ strike", // combining overlay: visible, not a control
        ] {
            assert!(matches!(escape(text), Cow::Borrowed(_)), "{text:?}");
        }
    }

    #[test]
    fn bytes_that_are_not_utf8_show_as_hex() {
        assert_eq!(
            EscapedBytes(b"ok \xff\xfe then \xe2\x80\xae").to_string(),
            "ok \\xff\\xfe then \\u{202e}"
        );
        assert_eq!(EscapedBytes(b"\xe2\x80").to_string(), "\\xe2\\x80");
    }
}
