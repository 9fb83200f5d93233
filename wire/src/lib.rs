//! The wire format of the store-and-forward messenger (seeds 000 and 003, fixed by
//! `docs/messenger.md`): NUL-terminated string fields, one-byte result codes, decimal numbers.
//!
//! This crate is the single source of truth for op names, field limits, push encodings and the
//! user-list entry format. It has no I/O policy of its own beyond small blocking helpers that the
//! client, the tests and the benchmark share; the server does its own non-blocking I/O and only
//! uses the pure scanning and encoding functions.

mod fields;
mod names;
mod ops;
mod push;
mod text;

pub use fields::{read_field, read_fields, scan_fields, write_fields, Scan, ScanError};
pub use names::{
    format_user_entry, looks_like_birth_date, parse_user_entry, validate_full_name, validate_name,
    NameError,
};
pub use ops::{FieldCount, Op, AUTH};
pub use push::{Push, PushKind, PushStyle, GET_FILE, GET_FILE_UNDERSCORE};
pub use text::{clean_text, clean_text_bytes, escape_controls, is_hidden};

/// Longest string a field may carry, in bytes, not counting its NUL (seed 000 section 2: 256
/// bytes including the terminator).
pub const MAX_FIELD_LEN: usize = 255;

/// Longest operation name we accept; the longest real one is `SEND MESS ATTACH ACK` (20 bytes).
pub const MAX_OP_LEN: usize = 32;

/// Result codes travel as one raw byte. Their meaning depends on the operation (docs/messenger.md).
pub mod code {
    pub const OK: u8 = 0;
    /// REGISTER: already registered; UNREGISTER/CONNECT/DISCONNECT/SEND: no such user;
    /// USERS: requester not connected.
    pub const ONE: u8 = 1;
    /// REGISTER/UNREGISTER/SEND/USERS: error; CONNECT: already connected;
    /// DISCONNECT: not connected.
    pub const TWO: u8 = 2;
    /// CONNECT/DISCONNECT: error.
    pub const THREE: u8 = 3;
}

/// Message ids are per sender, an unsigned 32-bit counter starting at 0 that skips 0 when it
/// wraps: after 4294967295 comes 1.
pub fn next_message_id(last: u32) -> u32 {
    match last.wrapping_add(1) {
        0 => 1,
        id => id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_start_at_one_and_wrap_past_u32_max_to_one() {
        assert_eq!(next_message_id(0), 1);
        assert_eq!(next_message_id(41), 42);
        assert_eq!(next_message_id(u32::MAX - 1), u32::MAX);
        assert_eq!(next_message_id(u32::MAX), 1);
    }
}
