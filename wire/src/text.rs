//! The text rules every front-end applies (`docs/text.md`): what a name may hold, what a text
//! may carry to another user, and how the server's own console shows what clients sent.
//!
//! - A name holds no control, format or separator character (Unicode Cc, Cf, Zl, Zp): `bob`
//!   and `b\u{200B}ob` would look the same in a user list, and a right-to-left override would
//!   turn the names after it around.
//! - A text reaches another user without C0 or C1 controls, DEL or bidirectional controls
//!   (an escape sequence would drive the recipient's terminal; a NUL or a line break would
//!   split the message in the recipient's framing): line breaks become spaces, the rest is
//!   dropped. A tab stays. Joiners stay (emoji sequences need them).
//! - Console and log lines show such characters escaped (`\x1b`, `\u{202e}`), so nothing a
//!   client sends can forge a line or drive the operator's terminal.

use std::borrow::Cow;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A control, format or line/paragraph separator character (Cc, Cf, Zl, Zp): invisible, or
/// acting on the text around it rather than being seen.
pub fn is_hidden(c: char) -> bool {
    // The common case without the table: ASCII's only such characters are its controls.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    matches!(
        c.general_category(),
        GeneralCategory::Control
            | GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator
    )
}

/// Bidirectional controls: marks, embeddings, overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Breaks a line: becomes a space in a text.
fn is_line_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{0085}' | '\u{2028}' | '\u{2029}')
}

/// What becomes of `c` in a text: kept, a space, or dropped.
fn clean_char(c: char) -> Option<char> {
    if is_line_break(c) {
        Some(' ')
    } else if (c.is_control() && c != '\t') || is_bidi_control(c) {
        None
    } else {
        Some(c)
    }
}

/// `text` as it may reach another user (borrowed when it is clean already).
pub fn clean_text(text: &str) -> Cow<'_, str> {
    if text.chars().all(|c| clean_char(c) == Some(c)) {
        return Cow::Borrowed(text);
    }
    Cow::Owned(text.chars().filter_map(clean_char).collect())
}

/// A messenger text, which may not be UTF-8 (old clients send Latin-1): UTF-8 is cleaned as
/// [`clean_text`]; other bytes lose their C0 controls (but tab) and DEL, line breaks becoming
/// spaces.
pub fn clean_text_bytes(bytes: &[u8]) -> Cow<'_, [u8]> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return match clean_text(text) {
            Cow::Borrowed(_) => Cow::Borrowed(bytes),
            Cow::Owned(text) => Cow::Owned(text.into_bytes()),
        };
    }
    let keep = |b: u8| -> Option<u8> {
        match b {
            b'\n' | b'\r' => Some(b' '),
            b'\t' => Some(b),
            0..=0x1F | 0x7F => None,
            _ => Some(b),
        }
    };
    if bytes.iter().all(|&b| keep(b) == Some(b)) {
        return Cow::Borrowed(bytes);
    }
    Cow::Owned(bytes.iter().filter_map(|&b| keep(b)).collect())
}

/// `text` with every hidden character ([`is_hidden`]) written as an escape, for the server's
/// console and logs (borrowed when there is none).
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_hidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_hidden(c) => out.push(c),
            c if (c as u32) < 0x100 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_characters_are_controls_formats_and_separators() {
        for c in [
            '\0',
            '\n',
            '\x1b',
            '\x7f',
            '\u{85}',
            '\u{9b}',
            '\u{200b}',
            '\u{202e}',
            '\u{2066}',
            '\u{feff}',
            '\u{2028}',
            '\u{2029}',
            '\u{e0041}',
        ] {
            assert!(is_hidden(c), "{c:?}");
        }
        for c in ['a', 'ñ', ' ', '¦', '€', '😀', '中'] {
            assert!(!is_hidden(c), "{c:?}");
        }
        // ASCII skips the table: the same answer for each of its characters.
        for c in (0u8..=0x7f).map(char::from) {
            let by_table = matches!(
                c.general_category(),
                GeneralCategory::Control
                    | GeneralCategory::Format
                    | GeneralCategory::LineSeparator
                    | GeneralCategory::ParagraphSeparator
            );
            assert_eq!(is_hidden(c), by_table, "{c:?}");
        }
    }

    #[test]
    fn texts_lose_controls_and_bidi_overrides_and_keep_tabs_and_emoji() {
        assert_eq!(clean_text("hola"), Cow::Borrowed("hola"));
        assert_eq!(clean_text("a\tb"), "a\tb");
        assert_eq!(clean_text("a\nb\r\nc"), "a b  c");
        assert_eq!(clean_text("\x1b[2Jrojo\x07"), "[2Jrojo");
        assert_eq!(clean_text("x\u{202e}y\u{2066}z\u{9b}"), "xyz");
        assert_eq!(clean_text("a\0b\x7f"), "ab");
        let family = "👨\u{200d}👩\u{200d}👧";
        assert_eq!(clean_text(family), family);
    }

    #[test]
    fn bytes_that_are_not_utf8_lose_c0_and_del_only() {
        assert_eq!(
            clean_text_bytes(b"caf\xe9\n\x1bx\x7f"),
            Cow::<[u8]>::Owned(b"caf\xe9 x".to_vec())
        );
        assert_eq!(clean_text_bytes(b"bien"), Cow::Borrowed(&b"bien"[..]));
        assert_eq!(clean_text_bytes("a\u{202e}b".as_bytes()).as_ref(), b"ab");
    }

    #[test]
    fn console_lines_show_what_they_escape() {
        assert_eq!(escape_controls("ana"), Cow::Borrowed("ana"));
        assert_eq!(
            escape_controls("x\nUNREGISTER forged OK"),
            "x\\x0aUNREGISTER forged OK"
        );
        assert_eq!(escape_controls("\x1b[31m"), "\\x1b[31m");
        assert_eq!(
            escape_controls("b\u{200b}ob\u{202e}"),
            "b\\u{200b}ob\\u{202e}"
        );
    }
}
