//! User names, birth dates and user-list entries.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    NotUtf8,
    ControlCharacter,
    /// White space, or one of the separators `:` `,` `|` (docs/messenger.md).
    Separator,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameError::Empty => "empty user name",
            NameError::TooLong => "user name longer than 255 bytes",
            NameError::NotUtf8 => "user name is not valid UTF-8",
            NameError::ControlCharacter => {
                "user name contains a control, format or separator character"
            }
            NameError::Separator => {
                "user name contains white space or one of the separators ':' ',' '|'"
            }
        })
    }
}

impl std::error::Error for NameError {}

/// A user name is 1 to 255 bytes of UTF-8 with no control characters, no white space and none
/// of `:` `,` `|` (docs/messenger.md): `::` separates the parts of a user-list entry, `,` the names
/// of the chat's user list, `|` the chat's fields, and console clients split on white space.
pub fn validate_name(bytes: &[u8]) -> Result<&str, NameError> {
    let name = validate_full_name(bytes)?;
    if name
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, ':' | ',' | '|'))
    {
        return Err(NameError::Separator);
    }
    Ok(name)
}

/// The full name of the three-field REGISTER: not a key, so spaces are allowed; still 1 to 255
/// bytes of UTF-8 without control, format or separator characters (`docs/text.md`: no
/// zero-width or right-to-left characters that make one name look like another).
pub fn validate_full_name(bytes: &[u8]) -> Result<&str, NameError> {
    if bytes.is_empty() {
        return Err(NameError::Empty);
    }
    if bytes.len() > crate::MAX_FIELD_LEN {
        return Err(NameError::TooLong);
    }
    let name = std::str::from_utf8(bytes).map_err(|_| NameError::NotUtf8)?;
    if name.chars().any(crate::is_hidden) {
        return Err(NameError::ControlCharacter);
    }
    Ok(name)
}

/// True for a real calendar date written `DD/MM/YYYY`, the third field of the 2022-23 REGISTER.
pub fn looks_like_birth_date(bytes: &[u8]) -> bool {
    let [d1, d2, b'/', m1, m2, b'/', y1, y2, y3, y4] = *bytes else {
        return false;
    };
    let digits = [d1, d2, m1, m2, y1, y2, y3, y4];
    if !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |ds: &[u8]| ds.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let (day, month, year) = (num(&[d1, d2]), num(&[m1, m2]), num(&[y1, y2, y3, y4]));
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days_in_month).contains(&day)
}

/// A `USERS` entry: `alias::IP::port`, with no spaces around `::` (docs/messenger.md).
pub fn format_user_entry(alias: &str, ip: &str, port: u16) -> String {
    format!("{alias}::{ip}::{port}")
}

/// Reads a user-list entry in any form real servers send: a plain alias (`CONNECTEDUSERS`),
/// `alias::IP::port` or `alias :: IP :: port`. Returns the alias and, when present, the address.
pub fn parse_user_entry(entry: &str) -> (String, Option<(String, u16)>) {
    let parts: Vec<&str> = entry.split("::").map(str::trim).collect();
    match parts.as_slice() {
        [alias, ip, port] => match port.parse() {
            Ok(port) => (alias.to_string(), Some((ip.to_string(), port))),
            Err(_) => (alias.to_string(), None),
        },
        _ => (entry.trim().to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_utf8_without_controls_and_bounded() {
        assert_eq!(validate_name("Núñez".as_bytes()), Ok("Núñez"));
        assert_eq!(
            validate_full_name("José Núñez".as_bytes()),
            Ok("José Núñez")
        );
        for bad in ["a::b", "a:b", "a,b", "a|b", "a b", "a\u{a0}b", "a\tb"] {
            assert!(validate_name(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(validate_name(b"a::b"), Err(NameError::Separator));
        assert_eq!(validate_name(b""), Err(NameError::Empty));
        assert_eq!(validate_name(&[b'a'; 256]), Err(NameError::TooLong));
        assert!(validate_name(&[b'a'; 255]).is_ok());
        assert_eq!(validate_name(b"\xff\xfe"), Err(NameError::NotUtf8));
        assert_eq!(validate_name(b"bob\n"), Err(NameError::ControlCharacter));
        assert_eq!(validate_name(b"a\x7fb"), Err(NameError::ControlCharacter));
    }

    #[test]
    fn birth_dates_must_be_real_dates() {
        assert!(looks_like_birth_date(b"29/02/2000"));
        assert!(looks_like_birth_date(b"31/12/1999"));
        assert!(!looks_like_birth_date(b"29/02/1900"));
        assert!(!looks_like_birth_date(b"31/04/2001"));
        assert!(!looks_like_birth_date(b"1/1/2000"));
        assert!(!looks_like_birth_date(b"00/01/2000"));
        assert!(!looks_like_birth_date(b"aa/bb/cccc"));
    }

    #[test]
    fn user_entries_parse_in_every_form() {
        assert_eq!(
            format_user_entry("ana", "127.0.0.1", 4000),
            "ana::127.0.0.1::4000"
        );
        let full = Some(("10.0.0.2".to_string(), 5000));
        assert_eq!(
            parse_user_entry("ana::10.0.0.2::5000"),
            ("ana".into(), full.clone())
        );
        assert_eq!(
            parse_user_entry("ana :: 10.0.0.2 :: 5000"),
            ("ana".into(), full)
        );
        assert_eq!(parse_user_entry("ana"), ("ana".into(), None));
    }
}
