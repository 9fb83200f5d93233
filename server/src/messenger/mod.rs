//! The front-end of seeds 000/003: one operation per TCP connection, NUL-terminated fields,
//! a one-byte result code. [`shape`] decides whether a whole request is buffered; each command
//! module parses its fields and applies them to the core, producing the answer bytes and the
//! console line of seed 000 section 7. `push` turns the core's deliveries into pushes to the
//! users' listeners.

mod connect;
mod disconnect;
mod password;
pub mod push;
mod register;
mod send;
mod unregister;
mod users;

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use wire::{scan_fields, FieldCount, Op, ScanError, AUTH, MAX_FIELD_LEN, MAX_OP_LEN};

use crate::accounts::Proof;
use crate::beside::Ticket;
use crate::core::{Core, Finished, Started, Work};
use crate::frontend::{Applied, Caller, Framing, Frontend, Input, Reply};
use crate::storage;

/// Enough for the longest request (`AUTH` and two 255-byte fields, a 32-byte op name and four
/// 255-byte fields, with their NULs) plus slack; whatever a client sends beyond it is never
/// read.
pub const READ_LIMIT: usize = 2048;

const _: () = assert!(READ_LIMIT > AUTH.len() + 1 + 2 * 256 + MAX_OP_LEN + 1 + 4 * 256);

/// Which REGISTER form to expect; `auto` waits a grace period after the first field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegisterForm {
    Auto,
    /// Later edition: `REGISTER name`. Answers at once.
    One,
    /// 2022-23 edition: `REGISTER full-name alias DD/MM/YYYY`.
    Three,
}

/// What the bytes received so far amount to, in this protocol's terms.
#[derive(Debug, PartialEq, Eq)]
pub enum Shape {
    /// More bytes are needed.
    Incomplete,
    /// The request is whole in its short form, but the long form may still be arriving: wait
    /// for the grace period before deciding.
    AwaitGrace,
    /// A whole request: the op, the byte ranges of its fields after the op name, those of
    /// the name and password of an `AUTH` before it, and the request's length.
    Complete {
        op: Op,
        fields: Vec<Range<usize>>,
        auth: Option<(Range<usize>, Range<usize>)>,
        len: usize,
    },
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
pub fn shape(buf: &[u8], eof: bool, grace_over: bool, register_form: RegisterForm) -> Shape {
    let authenticated = matches!(
        scan_fields(buf, 1, MAX_OP_LEN, MAX_FIELD_LEN),
        Ok(scan) if scan.fields.first().is_some_and(|f| &buf[f.clone()] == AUTH.as_bytes())
    );
    if !authenticated {
        return shape_op(buf, eof, grace_over, register_form);
    }
    // `AUTH alias password`, then the operation as usual.
    let scan = match scan_fields(buf, 3, MAX_OP_LEN, MAX_FIELD_LEN) {
        Err(ScanError::Oversized { .. }) => return Shape::Reject(Rejection::UnknownOp),
        Ok(scan) if scan.fields.len() < 3 => return incomplete(eof),
        Ok(scan) => scan,
    };
    let offset = scan.fields[2].end + 1;
    match shape_op(&buf[offset..], eof, grace_over, register_form) {
        Shape::Complete {
            op, fields, len, ..
        } => Shape::Complete {
            op,
            fields: fields
                .into_iter()
                .map(|f| f.start + offset..f.end + offset)
                .collect(),
            auth: Some((scan.fields[1].clone(), scan.fields[2].clone())),
            len: offset + len,
        },
        other => other,
    }
}

/// [`shape`] of a request without `AUTH`.
fn shape_op(buf: &[u8], eof: bool, grace_over: bool, register_form: RegisterForm) -> Shape {
    let op = match scan_fields(buf, 1, MAX_OP_LEN, MAX_FIELD_LEN) {
        Err(ScanError::Oversized { .. }) => return Shape::Reject(Rejection::UnknownOp),
        Ok(scan) if scan.fields.is_empty() => return incomplete(eof),
        Ok(scan) => match Op::from_name(&buf[scan.fields[0].clone()]) {
            Some(op) => op,
            None => return Shape::Reject(Rejection::UnknownOp),
        },
    };
    let scan = match scan_fields(buf, 1 + op.fields().max(), MAX_OP_LEN, MAX_FIELD_LEN) {
        Err(ScanError::Oversized { .. }) => return Shape::Reject(Rejection::Oversized(op)),
        Ok(scan) => scan,
    };
    let arriving = scan.partial_len > 0;
    let fields: Vec<Range<usize>> = scan.fields[1..].to_vec();
    let complete = Shape::Complete {
        op,
        fields: fields.clone(),
        auth: None,
        len: fields.last().map_or(op.name().len(), |f| f.end) + 1,
    };
    let short_form_done = !arriving && (eof || grace_over);
    match (op.fields(), fields.len()) {
        (FieldCount::Exactly(n), got) if got == n => complete,
        (FieldCount::OneOrThree, 3) | (FieldCount::ZeroOrOne, 1) => complete,
        (FieldCount::OneOrThree, 1) => match register_form {
            RegisterForm::One => complete,
            RegisterForm::Auto if short_form_done => complete,
            RegisterForm::Auto if !arriving && !eof => Shape::AwaitGrace,
            _ => incomplete(eof),
        },
        (FieldCount::ZeroOrOne, 0) if short_form_done => complete,
        (FieldCount::ZeroOrOne, 0) if !arriving && !eof => Shape::AwaitGrace,
        _ => incomplete(eof),
    }
}

fn incomplete(eof: bool) -> Shape {
    if eof {
        Shape::Reject(Rejection::Truncated)
    } else {
        Shape::Incomplete
    }
}

/// The messenger front-end and its settings.
pub struct Messenger {
    register_form: RegisterForm,
    /// How long to wait for the longer form of REGISTER and for the alias of USERS.
    grace: Duration,
    /// Requests whose storage work runs beside the reactor, by ticket, with what their answer
    /// needs: at most one per connection waiting for it.
    waiting: HashMap<Ticket, (Op, Work)>,
}

/// What a request amounts to before storage: an answer at once (a refusal), or storage work.
pub enum Parsed {
    Answer(Applied),
    Work(Work),
}

impl From<Applied> for Parsed {
    fn from(applied: Applied) -> Parsed {
        Parsed::Answer(applied)
    }
}

/// A failure answer of `op` about `alias`: the code, the console's `OP alias FAIL` and why.
fn failure(op: Op, alias: &str, code: u8, why: String) -> Reply {
    Reply::code(code)
        .console(format!("{} {alias} FAIL", op.name()))
        .diagnostic(why)
}

/// The answer to `op` once its storage work `work` is done.
fn answer(op: Op, work: &Work, result: storage::Result<Finished>) -> Applied {
    match work {
        Work::Send {
            sender, recipient, ..
        } => send::answer(op.name(), sender, recipient, result),
        Work::Register { alias, .. } => register::answer(alias, result),
        Work::Unregister { alias, .. } => unregister::answer(alias, result),
        Work::Connect { alias, .. } => connect::answer(alias, result),
        Work::Disconnect { alias, from, .. } => disconnect::answer(alias, *from, result),
        Work::SetPassword { alias, .. } => password::answer(alias, result),
        Work::ListUsers { requester, from } => {
            users::answer(op, requester.as_deref(), *from, result)
        }
        // Only the session front-ends start these.
        Work::Login { .. }
        | Work::Broadcast { .. }
        | Work::JoinRoom { .. }
        | Work::SetRoomKey { .. }
        | Work::RoomMessage { .. } => {
            debug_assert!(false, "the messenger got the result of {work:?}");
            Applied::read_only(
                Reply::code(wire::code::TWO)
                    .diagnostic(format!("the messenger got the result of {work:?}")),
            )
        }
    }
}

impl Messenger {
    pub fn new(register_form: RegisterForm, grace: Duration) -> Messenger {
        Messenger {
            register_form,
            grace,
            waiting: HashMap::new(),
        }
    }
}

impl Frontend for Messenger {
    fn name(&self) -> &'static str {
        "messenger"
    }

    fn read_limit(&self) -> usize {
        READ_LIMIT
    }

    fn frame(&self, input: &Input) -> Framing {
        match shape(input.buf, input.eof, input.grace_over, self.register_form) {
            Shape::Incomplete => Framing::Incomplete,
            Shape::AwaitGrace => Framing::AwaitGrace(self.grace),
            Shape::Complete { len, .. } => Framing::Complete(len),
            Shape::Reject(Rejection::Oversized(op)) => {
                Framing::Refuse(Reply::code(op.error_code()).diagnostic(format!(
                    "{} rejected: a field is over {MAX_FIELD_LEN} bytes",
                    op.name()
                )))
            }
            Shape::Reject(Rejection::UnknownOp) => {
                Framing::Close(format!("unknown operation {:?}", op_preview(input.buf)))
            }
            Shape::Reject(Rejection::Truncated) => Framing::Close(format!(
                "closed mid-request after {} bytes",
                input.buf.len()
            )),
        }
    }

    fn apply(&mut self, request: &[u8], caller: &Caller, core: &mut Core, now: Instant) -> Applied {
        // The request is whole: its shape is final whatever comes after it.
        let Shape::Complete {
            op, fields, auth, ..
        } = shape(request, true, true, self.register_form)
        else {
            unreachable!("apply is only called with a request frame() found whole")
        };
        let fields: Vec<&[u8]> = fields.iter().map(|range| &request[range.clone()]).collect();
        let from = caller.peer.ip();
        let parsed = match op {
            Op::Register => register::apply(&fields, from),
            Op::Unregister => unregister::apply(&fields, from),
            Op::Connect | Op::ConnectTls => connect::apply(&fields, caller),
            Op::Disconnect => disconnect::apply(&fields, caller),
            Op::Send | Op::SendAttach => send::apply(&fields, core, from),
            Op::ConnectedUsers | Op::Users => users::apply(op, &fields, caller),
            Op::SetPassword => password::apply(&fields, from),
        };
        let parsed = match (parsed, auth) {
            (Parsed::Work(work), Some((alias, secret))) => {
                authenticated(op, work, &request[alias], &request[secret])
            }
            (parsed, _) => parsed,
        };
        let applied = match parsed {
            Parsed::Answer(applied) => applied,
            Parsed::Work(work) => {
                let kept = work.clone();
                match core.start(work, now) {
                    Started::Later(ticket) => {
                        self.waiting.insert(ticket, (op, kept));
                        Applied::later(ticket)
                    }
                    Started::Now(result) => answer(op, &kept, result),
                }
            }
        };
        applied.counted_as(op.name())
    }

    fn finish(&mut self, ticket: Ticket, result: storage::Result<Finished>) -> Applied {
        match self.waiting.remove(&ticket) {
            Some((op, work)) => answer(op, &work, result).counted_as(op.name()),
            None => Applied::read_only(
                Reply::default()
                    .diagnostic(format!("no request waits for storage ticket {ticket}")),
            ),
        }
    }
}

/// `work` with the password of an `AUTH alias password` before it as its proof; refused if
/// `alias` is not the user the operation acts as. An empty password proves nothing (a client
/// may say so to learn whether the name needs one). The user lists ignore `AUTH`.
fn authenticated(op: Op, mut work: Work, alias: &[u8], secret: &[u8]) -> Parsed {
    let Some((acting_as, _)) = work.subject() else {
        return Parsed::Work(work);
    };
    let refuse = |why: String| {
        let reply = failure(op, &acting_as, op.error_code(), why);
        Parsed::Answer(Applied::read_only(reply))
    };
    if alias != acting_as.as_bytes() {
        return refuse(format!(
            "{} {acting_as} rejected: AUTH names {:?}",
            op.name(),
            shown(alias)
        ));
    }
    let Ok(secret) = std::str::from_utf8(secret) else {
        return refuse(format!(
            "{} {acting_as} rejected: the password is not UTF-8",
            op.name()
        ));
    };
    if let Some(proof) = work.proof_mut() {
        *proof = Proof::given(Some(secret));
    }
    Parsed::Work(work)
}

/// The start of an unknown request, for the log.
fn op_preview(buf: &[u8]) -> String {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(buf.len())
        .min(40);
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A name as the console shows it, even when it is not valid UTF-8.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(buf: &[u8]) -> Shape {
        shape(buf, false, false, RegisterForm::Auto)
    }

    #[test]
    fn exact_ops_are_complete_with_all_their_fields() {
        assert_eq!(ranges(b"SEND\0a\0b\0"), Shape::Incomplete);
        assert_eq!(
            ranges(b"SEND\0a\0b\0hi\0"),
            Shape::Complete {
                op: Op::Send,
                fields: vec![5..6, 7..8, 9..11],
                auth: None,
                len: 12,
            }
        );
        assert_eq!(
            shape(b"SEND\0a\0", true, false, RegisterForm::Auto),
            Shape::Reject(Rejection::Truncated)
        );
    }

    #[test]
    fn register_waits_for_grace_unless_pinned() {
        assert_eq!(ranges(b"REGISTER\0ana\0"), Shape::AwaitGrace);
        assert_eq!(ranges(b"REGISTER\0ana\0Ana"), Shape::Incomplete);
        let one = Shape::Complete {
            op: Op::Register,
            fields: vec![Range { start: 9, end: 12 }],
            auth: None,
            len: 13,
        };
        assert_eq!(
            shape(b"REGISTER\0ana\0", false, true, RegisterForm::Auto),
            one
        );
        assert_eq!(
            shape(b"REGISTER\0ana\0", true, false, RegisterForm::Auto),
            one
        );
        assert_eq!(
            shape(b"REGISTER\0ana\0", false, false, RegisterForm::One),
            one
        );
        assert_eq!(
            shape(b"REGISTER\0ana\0", false, true, RegisterForm::Three),
            Shape::Incomplete
        );
        assert!(matches!(
            ranges(b"REGISTER\0Ana B\0ana\x0001/01/2000\0"),
            Shape::Complete { .. }
        ));
    }

    #[test]
    fn users_may_come_without_an_alias() {
        assert_eq!(ranges(b"USERS\0"), Shape::AwaitGrace);
        assert_eq!(
            shape(b"USERS\0", false, true, RegisterForm::Auto),
            Shape::Complete {
                op: Op::Users,
                fields: vec![],
                auth: None,
                len: 6,
            }
        );
        assert!(matches!(
            ranges(b"CONNECTEDUSERS\0ana\0"),
            Shape::Complete { .. }
        ));
    }

    proptest::proptest! {
        // The request parser sees every hostile byte first: it must never panic, and a whole
        // request must name fields that lie inside the buffer and hold no NUL.
        #[test]
        fn shape_never_panics_on_arbitrary_bytes(
            prefix in proptest::sample::select(vec![&b""[..], b"REGISTER\0", b"SEND\0", b"SENDATTACH\0", b"USERS\0", b"CONNECT\0", b"AUTH\0a\0pw\0", b"AUTH\0a\0pw\0USERS\0"]),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200),
            eof: bool,
            grace_over: bool,
        ) {
            let buf = [prefix, tail.as_slice()].concat();
            for form in [RegisterForm::Auto, RegisterForm::One, RegisterForm::Three] {
                if let Shape::Complete { op, fields, auth, len } = shape(&buf, eof, grace_over, form) {
                    proptest::prop_assert!(fields.len() <= op.fields().max());
                    proptest::prop_assert!(len <= buf.len());
                    let auth = auth.into_iter().flat_map(|(a, b)| [a, b]);
                    for range in fields.into_iter().chain(auth) {
                        proptest::prop_assert!(range.end < len && !buf[range].contains(&0));
                    }
                }
            }
        }
    }

    #[test]
    fn an_auth_prefix_names_the_user_and_password_before_the_operation() {
        let request = b"AUTH\0bob\0pw\0CONNECT\0bob\x004000\0";
        assert_eq!(
            ranges(request),
            Shape::Complete {
                op: Op::Connect,
                fields: vec![20..23, 24..28],
                auth: Some((5..8, 9..11)),
                len: request.len(),
            }
        );
        assert_eq!(ranges(b"AUTH\0bob\0pw\0CONN"), Shape::Incomplete);
        assert_eq!(ranges(b"AUTH\0bob\0"), Shape::Incomplete);
        assert_eq!(
            ranges(b"AUTH\0bob\0pw\0AUTH\0"),
            Shape::Reject(Rejection::UnknownOp)
        );
        // USERS without an alias waits for its grace period after an AUTH too.
        assert_eq!(ranges(b"AUTH\0bob\0pw\0USERS\0"), Shape::AwaitGrace);
    }

    #[test]
    fn unknown_and_oversized_requests_are_rejected() {
        assert_eq!(ranges(b"HELLO\0"), Shape::Reject(Rejection::UnknownOp));
        assert_eq!(ranges(&[b'X'; 40]), Shape::Reject(Rejection::UnknownOp));
        let long = [b"SEND\0a\0b\0".as_slice(), &[b'x'; 256]].concat();
        assert_eq!(ranges(&long), Shape::Reject(Rejection::Oversized(Op::Send)));
    }
}
