//! Unit tests of the naming rules and the confusable skeleton, and of the
//! name vectors in `docs/PROTOCOL.md`. Every spoofing name below was
//! accepted before the profile (the old rule only refused whitespace,
//! controls and `@`): run against that rule, each `refused` assertion fails.

use super::*;

const PROTOCOL_MD: &str = include_str!("../../../../../docs/PROTOCOL.md");

fn refused(name: &str) -> NameError {
    validate_name(name).expect_err(name)
}

#[test]
fn ordinary_names_in_any_single_script_are_accepted() {
    for name in [
        "alice",
        "Alice",
        "zoë",
        "sensor-42.eu_west",
        "Алиса",
        "李雷",
        "host/1",
        "日本語のなまえ",
        "Ελένη",
    ] {
        assert_eq!(validate_name(name), Ok(()), "{name}");
    }
    assert_eq!(validate_name(&"a".repeat(64)), Ok(()));
}

#[test]
fn the_old_rules_still_hold() {
    assert_eq!(refused(""), NameError::Empty);
    assert_eq!(refused(&"a".repeat(65)), NameError::TooLong { len: 65 });
    assert_eq!(refused("a b"), NameError::ForbiddenCharacter { found: ' ' });
    assert_eq!(refused("a@b"), NameError::ForbiddenCharacter { found: '@' });
    assert_eq!(
        refused("a\u{7}"),
        NameError::ForbiddenCharacter { found: '\u{7}' }
    );
}

/// Each character the adversarial test of issue 12 slipped into a name,
/// refused with an error that names it by code point.
#[test]
fn invisible_format_and_look_alike_characters_are_refused() {
    for (name, character) in [
        ("ali\u{202e}ce", '\u{202e}'),
        ("alice\u{200b}", '\u{200b}'),
        ("\u{feff}alice", '\u{feff}'),
        ("\u{2066}alice", '\u{2066}'),
        ("al\u{ad}ice", '\u{ad}'),
        ("a\u{336}lice", '\u{336}'),
        ("\u{3164}", '\u{3164}'),
        ("alice\u{3164}", '\u{3164}'),
        ("\u{2800}", '\u{2800}'),
        ("ａｌｉｃｅ", 'ａ'),
        ("\u{200d}bob", '\u{200d}'),
        ("bob\u{fe0f}", '\u{fe0f}'),
    ] {
        let error = refused(name);
        let text = error.to_string();
        let code_point = format!("U+{:04X}", u32::from(character));
        assert!(
            text.contains(&code_point),
            "{name:?}: {text:?} names {code_point}"
        );
        assert!(
            !text.contains(character),
            "{name:?}: the error text does not carry the character itself: {text:?}"
        );
    }
}

#[test]
fn mixed_scripts_are_refused_naming_the_first_foreign_letter() {
    // Cyrillic а (U+0430) in a Latin name.
    assert_eq!(
        refused("\u{430}lice"),
        NameError::MixedScripts { found: 'l' },
        "the prefix `аl` is the first to mix"
    );
    assert_eq!(
        refused("ali\u{441}e"),
        NameError::MixedScripts { found: '\u{441}' }
    );
    assert!(refused("ali\u{441}e").to_string().contains("U+0441 'с'"));
    // Greek omicron among Latin letters.
    assert_eq!(
        refused("r\u{3bf}ot"),
        NameError::MixedScripts { found: '\u{3bf}' }
    );
    // Latin with Han and Japanese kana is a highly restrictive mix: allowed.
    assert_eq!(validate_name("tanaka田中さん"), Ok(()));
}

#[test]
fn a_name_not_in_canonical_form_is_refused_not_rewritten() {
    // `e` + combining diaeresis: NFC would make it `ë`.
    let error = refused("zoe\u{308}");
    assert_eq!(
        error,
        NameError::NotCanonical {
            found: 'e',
            canonical: "zoë".to_owned()
        }
    );
    assert!(error.to_string().contains("\"zoë\""));
}

#[test]
fn case_variants_and_look_alikes_share_a_skeleton() {
    let alice = confusable_skeleton("alice");
    for look_alike in ["Alice", "ALICE", "a1ice", "\u{430}lice", "ａｌｉｃｅ"] {
        assert_eq!(confusable_skeleton(look_alike), alice, "{look_alike}");
    }
    assert_ne!(confusable_skeleton("bob"), alice);
    assert_ne!(confusable_skeleton("alicia"), alice);
    assert_eq!(confusable_skeleton("rn"), confusable_skeleton("m"));
}

/// The *Names* table of PROTOCOL.md: each row is a name (Rust escapes
/// allowed), `accepted`, or `refused` with the variant it must be refused
/// with, or `confusable with NAME`.
#[test]
fn protocol_md_name_vectors_hold() {
    let start = PROTOCOL_MD
        .find("<!-- names:begin -->")
        .expect("PROTOCOL.md has a names:begin marker");
    let end = PROTOCOL_MD
        .find("<!-- names:end -->")
        .expect("PROTOCOL.md has a names:end marker");
    let mut checked = 0;
    for row in PROTOCOL_MD[start..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
    {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let name = unescape(cells[0].trim_matches('`'));
        let verdict = cells[1];
        let outcome = validate_name(&name);
        if verdict == "accepted" {
            assert_eq!(outcome, Ok(()), "{row}");
        } else if let Some(other) = verdict.strip_prefix("confusable with ") {
            assert_eq!(outcome, Ok(()), "{row}");
            let other = unescape(other.trim_matches('`'));
            assert_eq!(
                confusable_skeleton(&name),
                confusable_skeleton(&other),
                "{row}"
            );
        } else {
            let variant = verdict
                .strip_prefix("refused: ")
                .unwrap_or_else(|| panic!("verdict of {row}"));
            let error = outcome.expect_err(row);
            assert!(
                format!("{error:?}").starts_with(variant),
                "{row}: got {error:?}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 15, "the table has its vectors ({checked})");
}

/// `\u{…}` escapes to characters; everything else as written.
fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("\\u{") {
        out.push_str(&rest[..at]);
        let close = rest[at..].find('}').expect("closing brace") + at;
        let code = u32::from_str_radix(&rest[at + 3..close], 16).expect("hex");
        out.push(char::from_u32(code).expect("a character"));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// `validate_name` accepts printable ASCII without running the profile and
/// script rules; they must agree, for every printable ASCII character.
#[test]
fn the_ascii_shortcut_agrees_with_the_full_rules() {
    for byte in 0x21u8..=0x7e {
        let character = char::from(byte);
        if character == '@' {
            continue;
        }
        for name in [
            format!("{character}"),
            format!("a{character}b"),
            format!("Z9{character}"),
        ] {
            assert_eq!(check_profile(&name), Ok(()), "{name:?}");
            assert_eq!(check_scripts(&name), Ok(()), "{name:?}");
        }
    }
}
