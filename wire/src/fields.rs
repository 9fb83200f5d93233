//! NUL-terminated fields: a non-blocking scanner for the server and blocking helpers for peers.

use std::io::{self, Read, Write};
use std::ops::Range;

/// What a buffer holds so far: the byte ranges of its complete fields (without their NULs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub fields: Vec<Range<usize>>,
    /// Bytes after the last NUL: the start of a field still arriving.
    pub partial_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// Field number `index` (0 is the op name) is longer than its limit, whether or not its NUL
    /// has arrived.
    Oversized { index: usize },
}

/// Splits `buf` into complete fields, looking at no more than `max_fields` of them. The first
/// field may be at most `op_limit` bytes, the rest `field_limit` bytes. This is the cheap "is a
/// whole request buffered?" check: it never copies and stops at the first oversized field.
pub fn scan_fields(
    buf: &[u8],
    max_fields: usize,
    op_limit: usize,
    field_limit: usize,
) -> Result<Scan, ScanError> {
    let mut fields = Vec::new();
    let mut start = 0;
    while fields.len() < max_fields {
        let index = fields.len();
        let limit = if index == 0 { op_limit } else { field_limit };
        match buf[start..].iter().position(|&b| b == 0) {
            Some(len) if len > limit => return Err(ScanError::Oversized { index }),
            Some(len) => {
                fields.push(start..start + len);
                start += len + 1;
            }
            None if buf.len() - start > limit => return Err(ScanError::Oversized { index }),
            None => break,
        }
    }
    Ok(Scan {
        fields,
        partial_len: buf.len() - start,
    })
}

/// Reads one NUL-terminated field of at most `limit` bytes. A stream that ends before the NUL is
/// an `UnexpectedEof`; a longer field is `InvalidData`. Wrap the stream in a `BufReader`: this
/// reads a byte at a time, as the protocol has no lengths.
pub fn read_field(reader: &mut impl Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut field = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed inside a field after {} bytes",
                        field.len()
                    ),
                ))
            }
            Ok(_) if byte[0] == 0 => return Ok(field),
            Ok(_) if field.len() == limit => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("field longer than {limit} bytes"),
                ))
            }
            Ok(_) => field.push(byte[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads `count` fields of at most `limit` bytes each.
pub fn read_fields(reader: &mut impl Read, count: usize, limit: usize) -> io::Result<Vec<Vec<u8>>> {
    (0..count).map(|_| read_field(reader, limit)).collect()
}

/// Writes the fields, each followed by its NUL, in one `write_all` so that a request normally
/// leaves in one segment.
pub fn write_fields(writer: &mut impl Write, fields: &[&[u8]]) -> io::Result<()> {
    writer.write_all(&encode_fields(fields))
}

pub(crate) fn encode_fields(fields: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fields.iter().map(|f| f.len() + 1).sum());
    for field in fields {
        out.extend_from_slice(field);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scan_reports_complete_fields_and_the_partial_tail() {
        let scan = scan_fields(b"SEND\0alice\0bo", 4, 32, 255).unwrap();
        assert_eq!(scan.fields, vec![0..4, 5..10]);
        assert_eq!(scan.partial_len, 2);
    }

    #[test]
    fn scan_stops_at_max_fields() {
        let scan = scan_fields(b"A\0B\0C\0", 2, 32, 255).unwrap();
        assert_eq!(scan.fields.len(), 2);
        assert_eq!(scan.partial_len, 2);
    }

    #[test]
    fn scan_rejects_oversized_fields_with_or_without_nul() {
        let mut long = b"SEND\0".to_vec();
        long.extend(std::iter::repeat_n(b'x', 256));
        assert_eq!(
            scan_fields(&long, 4, 32, 255),
            Err(ScanError::Oversized { index: 1 })
        );
        long.push(0);
        assert_eq!(
            scan_fields(&long, 4, 32, 255),
            Err(ScanError::Oversized { index: 1 })
        );
        let exact = [b"SEND\0".as_slice(), &[b'x'; 255], b"\0"].concat();
        assert_eq!(scan_fields(&exact, 4, 32, 255).unwrap().fields.len(), 2);
    }

    #[test]
    fn read_field_detects_truncation_and_overflow() {
        let mut truncated: &[u8] = b"abc";
        assert_eq!(
            read_field(&mut truncated, 255).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut long: &[u8] = b"abcdef\0";
        assert_eq!(
            read_field(&mut long, 3).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut ok: &[u8] = b"hi\0there\0";
        assert_eq!(
            read_fields(&mut ok, 2, 255).unwrap(),
            vec![b"hi".to_vec(), b"there".to_vec()]
        );
    }

    proptest! {
        // The request scanner is the first thing hostile bytes reach: it must never panic, and
        // whatever it reports must be consistent with the input.
        #[test]
        fn scan_never_panics_and_is_consistent(buf in proptest::collection::vec(any::<u8>(), 0..2048), max in 0usize..6) {
            if let Ok(scan) = scan_fields(&buf, max, 32, 255) {
                prop_assert!(scan.fields.len() <= max);
                for (i, range) in scan.fields.iter().enumerate() {
                    prop_assert!(!buf[range.clone()].contains(&0));
                    prop_assert_eq!(buf[range.end], 0);
                    let limit = if i == 0 { 32 } else { 255 };
                    prop_assert!(range.len() <= limit);
                }
                let consumed = scan.fields.last().map_or(0, |r| r.end + 1);
                prop_assert_eq!(consumed + scan.partial_len, buf.len());
            }
        }

        #[test]
        fn encode_then_scan_round_trips(fields in proptest::collection::vec(proptest::collection::vec(1u8..=255, 0..255), 1..5)) {
            let slices: Vec<&[u8]> = fields.iter().map(|f| f.as_slice()).collect();
            let bytes = encode_fields(&slices);
            let scan = scan_fields(&bytes, fields.len(), 255, 255).unwrap();
            prop_assert_eq!(scan.partial_len, 0);
            let back: Vec<&[u8]> = scan.fields.iter().map(|r| &bytes[r.clone()]).collect();
            prop_assert_eq!(back, slices);
        }
    }
}
