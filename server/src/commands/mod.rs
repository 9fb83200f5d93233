//! The front-end of seeds 000/003: one operation per TCP connection, NUL-terminated fields,
//! a one-byte result code. `frame` decides whether a whole request is buffered; each command
//! module parses its fields and applies them to the core, producing the answer bytes and the
//! console line of seed 000 section 7.

mod connect;
mod disconnect;
mod register;
mod send;
mod unregister;
mod users;

use std::net::IpAddr;
use std::ops::Range;

use wire::{scan_fields, FieldCount, Op, ScanError, MAX_FIELD_LEN, MAX_OP_LEN};

use crate::messenger::Messenger;

/// Which REGISTER form to expect; `auto` waits a grace period after the first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegisterForm {
    Auto,
    /// Later edition: `REGISTER name`. Answers at once.
    One,
    /// 2022-23 edition: `REGISTER full-name alias DD/MM/YYYY`.
    Three,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed.
    Incomplete,
    /// The request is whole in its short form, but the long form may still be arriving: wait
    /// for the grace period before deciding.
    AwaitGrace,
    /// A whole request: the op and the byte ranges of its fields after the op name.
    Complete { op: Op, fields: Vec<Range<usize>> },
    /// A request the server will not serve.
    Reject(Rejection),
}

#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The op name is not one we know (or is longer than any op name).
    UnknownOp,
    /// A field is over its limit: answered with the op's error code.
    Oversized(Op),
    /// The client closed its side before the request was whole.
    Truncated,
}

/// The cheap "is a whole request buffered?" check. `eof` means the client will send nothing
/// more; `grace_over` that the grace period of `AwaitGrace` has passed.
pub fn frame(buf: &[u8], eof: bool, grace_over: bool, register_form: RegisterForm) -> Framing {
    let op = match scan_fields(buf, 1, MAX_OP_LEN, MAX_FIELD_LEN) {
        Err(ScanError::Oversized { .. }) => return Framing::Reject(Rejection::UnknownOp),
        Ok(scan) if scan.fields.is_empty() => return incomplete(eof),
        Ok(scan) => match Op::from_name(&buf[scan.fields[0].clone()]) {
            Some(op) => op,
            None => return Framing::Reject(Rejection::UnknownOp),
        },
    };
    let scan = match scan_fields(buf, 1 + op.fields().max(), MAX_OP_LEN, MAX_FIELD_LEN) {
        Err(ScanError::Oversized { .. }) => return Framing::Reject(Rejection::Oversized(op)),
        Ok(scan) => scan,
    };
    let arriving = scan.partial_len > 0;
    let fields: Vec<Range<usize>> = scan.fields[1..].to_vec();
    let complete = Framing::Complete {
        op,
        fields: fields.clone(),
    };
    let short_form_done = !arriving && (eof || grace_over);
    match (op.fields(), fields.len()) {
        (FieldCount::Exactly(n), got) if got == n => complete,
        (FieldCount::OneOrThree, 3) | (FieldCount::ZeroOrOne, 1) => complete,
        (FieldCount::OneOrThree, 1) => match register_form {
            RegisterForm::One => complete,
            RegisterForm::Auto if short_form_done => complete,
            RegisterForm::Auto if !arriving && !eof => Framing::AwaitGrace,
            _ => incomplete(eof),
        },
        (FieldCount::ZeroOrOne, 0) if short_form_done => complete,
        (FieldCount::ZeroOrOne, 0) if !arriving && !eof => Framing::AwaitGrace,
        _ => incomplete(eof),
    }
}

fn incomplete(eof: bool) -> Framing {
    if eof {
        Framing::Reject(Rejection::Truncated)
    } else {
        Framing::Incomplete
    }
}

/// An answer to a client: the bytes, the console line (without `s> `) and a diagnostic for
/// stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub answer: Vec<u8>,
    pub console: Option<String>,
    pub diagnostic: Option<String>,
}

impl Reply {
    pub fn code(code: u8) -> Reply {
        Reply {
            answer: vec![code],
            ..Reply::default()
        }
    }

    pub fn console(mut self, line: impl Into<String>) -> Reply {
        self.console = Some(line.into());
        self
    }

    pub fn diagnostic(mut self, text: impl Into<String>) -> Reply {
        self.diagnostic = Some(text.into());
        self
    }
}

/// A command's result. Answers that report a write hold back until the turn's transaction is
/// committed; if it is not, the client gets `if_not_committed` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    pub if_not_committed: Option<Reply>,
}

impl Applied {
    /// An answer that does not depend on the commit.
    pub fn read_only(reply: Reply) -> Applied {
        Applied {
            reply,
            if_not_committed: None,
        }
    }

    pub fn written(reply: Reply, if_not_committed: Reply) -> Applied {
        Applied {
            reply,
            if_not_committed: Some(if_not_committed),
        }
    }
}

/// Who is asking, as far as the front-end knows.
pub struct Caller {
    pub ip: IpAddr,
}

/// Parses and applies one whole request.
pub fn execute(op: Op, fields: &[&[u8]], caller: &Caller, messenger: &mut Messenger) -> Applied {
    match op {
        Op::Register => register::apply(fields, messenger),
        Op::Unregister => unregister::apply(fields, messenger),
        Op::Connect => connect::apply(fields, caller, messenger),
        Op::Disconnect => disconnect::apply(fields, caller, messenger),
        Op::Send | Op::SendAttach => send::apply(fields, messenger),
        Op::ConnectedUsers | Op::Users => users::apply(op, fields, caller, messenger),
    }
}

/// The answer to a request whose field is over its limit.
pub fn oversized(op: Op) -> Applied {
    Applied::read_only(Reply::code(op.error_code()).diagnostic(format!(
        "{} rejected: a field is over {MAX_FIELD_LEN} bytes",
        op.name()
    )))
}

/// A name as the console shows it, even when it is not valid UTF-8.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(buf: &[u8]) -> Framing {
        frame(buf, false, false, RegisterForm::Auto)
    }

    #[test]
    fn exact_ops_are_complete_with_all_their_fields() {
        assert_eq!(ranges(b"SEND\0a\0b\0"), Framing::Incomplete);
        assert_eq!(
            ranges(b"SEND\0a\0b\0hi\0"),
            Framing::Complete {
                op: Op::Send,
                fields: vec![5..6, 7..8, 9..11]
            }
        );
        assert_eq!(
            frame(b"SEND\0a\0", true, false, RegisterForm::Auto),
            Framing::Reject(Rejection::Truncated)
        );
    }

    #[test]
    fn register_waits_for_grace_unless_pinned() {
        assert_eq!(ranges(b"REGISTER\0ana\0"), Framing::AwaitGrace);
        assert_eq!(ranges(b"REGISTER\0ana\0Ana"), Framing::Incomplete);
        let one = Framing::Complete {
            op: Op::Register,
            fields: vec![Range { start: 9, end: 12 }],
        };
        assert_eq!(
            frame(b"REGISTER\0ana\0", false, true, RegisterForm::Auto),
            one
        );
        assert_eq!(
            frame(b"REGISTER\0ana\0", true, false, RegisterForm::Auto),
            one
        );
        assert_eq!(
            frame(b"REGISTER\0ana\0", false, false, RegisterForm::One),
            one
        );
        assert_eq!(
            frame(b"REGISTER\0ana\0", false, true, RegisterForm::Three),
            Framing::Incomplete
        );
        assert!(matches!(
            ranges(b"REGISTER\0Ana B\0ana\x0001/01/2000\0"),
            Framing::Complete { .. }
        ));
    }

    #[test]
    fn users_may_come_without_an_alias() {
        assert_eq!(ranges(b"USERS\0"), Framing::AwaitGrace);
        assert_eq!(
            frame(b"USERS\0", false, true, RegisterForm::Auto),
            Framing::Complete {
                op: Op::Users,
                fields: vec![]
            }
        );
        assert!(matches!(
            ranges(b"CONNECTEDUSERS\0ana\0"),
            Framing::Complete { .. }
        ));
    }

    proptest::proptest! {
        // The request parser sees every hostile byte first: it must never panic, and a whole
        // request must name fields that lie inside the buffer and hold no NUL.
        #[test]
        fn frame_never_panics_on_arbitrary_bytes(
            prefix in proptest::sample::select(vec![&b""[..], b"REGISTER\0", b"SEND\0", b"SENDATTACH\0", b"USERS\0", b"CONNECT\0"]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200),
            eof: bool,
            grace_over: bool,
        ) {
            let buf = [prefix, tail.as_slice()].concat();
            for form in [RegisterForm::Auto, RegisterForm::One, RegisterForm::Three] {
                if let Framing::Complete { op, fields } = frame(&buf, eof, grace_over, form) {
                    proptest::prop_assert!(fields.len() <= op.fields().max());
                    for range in fields {
                        proptest::prop_assert!(range.end < buf.len() && !buf[range].contains(&0));
                    }
                }
            }
        }
    }

    #[test]
    fn unknown_and_oversized_requests_are_rejected() {
        assert_eq!(ranges(b"HELLO\0"), Framing::Reject(Rejection::UnknownOp));
        assert_eq!(ranges(&[b'X'; 40]), Framing::Reject(Rejection::UnknownOp));
        let long = [b"SEND\0a\0b\0".as_slice(), &[b'x'; 256]].concat();
        assert_eq!(
            ranges(&long),
            Framing::Reject(Rejection::Oversized(Op::Send))
        );
    }
}
