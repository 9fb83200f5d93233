//! What the reactor knows of a protocol: a front-end on its own listening socket.
//!
//! The reactor owns sockets, buffers, deadlines and the commit; a front-end owns the meaning of
//! the bytes: the cheap "is a whole request buffered?" check ([`Frontend::frame`]), the parse of
//! a whole request into a typed one and its application to the core ([`Frontend::apply`]), and
//! the encoding of the answer and of what the core tells sessions.
//!
//! A front-end is per-operation (one request per connection, answered, then closed: the
//! messenger) or persistent (requests and answers interleave on a connection that carries a
//! session, the core's notices are written to it, end of file means the user left: the chat
//! and the rooms).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::beside::Ticket;
use crate::core::{Core, Finished, Notice, SessionId};
use crate::storage;

/// How connections of a front-end live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One request, its answer, then the server closes.
    PerOperation,
    /// Many requests and answers, plus notices; a session is bound to the connection.
    Persistent,
}

/// How a persistent connection's output may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pacing {
    /// Any number of messages per write.
    Stream,
    /// One message per write, and a pause between two: for clients that read one message
    /// per `recv` with no delimiter, which two glued messages would break.
    OneMessagePerWrite,
}

/// The bytes received on a connection so far.
pub struct Input<'a> {
    /// The connection's session (persistent front-ends); unique per connection.
    pub session: SessionId,
    pub buf: &'a [u8],
    /// The client closed its sending side: nothing more will arrive.
    pub eof: bool,
    /// A grace period asked for with [`Framing::AwaitGrace`] has passed.
    pub grace_over: bool,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// More bytes are needed.
    Incomplete,
    /// Whole in a short form, but a longer form may still be arriving: ask again after this
    /// long (or when more bytes come).
    AwaitGrace(Duration),
    /// A whole request fills the first `len` bytes.
    Complete(usize),
    /// Answered without touching the core (e.g. a field over its limit), then closed.
    Refuse(Reply),
    /// A persistent connection's bad request: answered, `len` bytes dropped, the connection
    /// stays open.
    Skip { len: usize, reply: Reply },
    /// Closed without an answer; the reason goes to stderr.
    Close(String),
}

/// An answer to a client: the bytes, the console line (without `s> `) and a diagnostic for
/// stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    /// Borrowed for a fixed answer made for every request but rarely sent (a refusal kept
    /// in case the turn's commit fails).
    pub answer: std::borrow::Cow<'static, [u8]>,
    pub console: Option<String>,
    pub diagnostic: Option<std::borrow::Cow<'static, str>>,
    /// Close the connection once the answer is written (persistent front-ends; per-operation
    /// connections always close).
    pub close: bool,
}

impl Reply {
    pub fn code(code: u8) -> Reply {
        Reply {
            answer: vec![code].into(),
            ..Reply::default()
        }
    }

    pub fn console(mut self, line: impl Into<String>) -> Reply {
        self.console = Some(line.into());
        self
    }

    pub fn diagnostic(mut self, text: impl Into<std::borrow::Cow<'static, str>>) -> Reply {
        self.diagnostic = Some(text.into());
        self
    }

    /// An answer of raw bytes (possibly none) with nothing to print.
    pub fn bytes(answer: Vec<u8>) -> Reply {
        Reply {
            answer: answer.into(),
            ..Reply::default()
        }
    }

    /// A fixed answer with nothing to print.
    pub fn fixed(answer: &'static [u8]) -> Reply {
        Reply {
            answer: answer.into(),
            ..Reply::default()
        }
    }

    pub fn then_close(mut self) -> Reply {
        self.close = true;
        self
    }
}

/// A request's result. Answers that report a write hold back until the turn's transaction is
/// committed (and synced); if it is not, the client gets `if_not_committed` instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    pub if_not_committed: Option<Reply>,
    /// The operation whose requests counter the final answer's first byte (its result code)
    /// counts in.
    pub counted_as: Option<&'static str>,
    /// No answer yet: the request's storage work runs beside the reactor under this ticket,
    /// and [`Frontend::finish`] makes the answer when it is done.
    pub later: Option<Ticket>,
    /// The answer reports a write committed beside the reactor: it waits for the syncer's
    /// durability barrier whatever becomes of the reactor's own turn. Set by the reactor,
    /// which knows where a deferred request's work committed.
    pub stored_beside: bool,
    /// The database server's life the write was committed in (see `storage::Epoch`): only a
    /// barrier of the same one confirms it.
    pub epoch: crate::storage::Epoch,
    /// A written answer waits for the disk (the syncer), not only for the commit.
    pub durable: bool,
}

impl Applied {
    /// An answer that does not depend on the commit.
    pub fn read_only(reply: Reply) -> Applied {
        Applied {
            reply,
            if_not_committed: None,
            counted_as: None,
            later: None,
            stored_beside: false,
            epoch: 0,
            durable: false,
        }
    }

    /// An answer that reports a write: it waits until the turn's transaction is on disk.
    pub fn written(reply: Reply, if_not_committed: Reply) -> Applied {
        Applied {
            if_not_committed: Some(if_not_committed),
            durable: true,
            ..Applied::read_only(reply)
        }
    }

    /// An answer that depends on the turn's commit but promises nothing on disk: it goes
    /// once the commit is done.
    pub fn committed(reply: Reply, if_not_committed: Reply) -> Applied {
        Applied {
            if_not_committed: Some(if_not_committed),
            ..Applied::read_only(reply)
        }
    }

    /// The answer comes later, when the storage work of `ticket` is done.
    pub fn later(ticket: Ticket) -> Applied {
        Applied {
            later: Some(ticket),
            ..Applied::read_only(Reply::default())
        }
    }

    /// Counts the answer as a request of operation `op`.
    pub fn counted_as(mut self, op: &'static str) -> Applied {
        self.counted_as = Some(op);
        self
    }
}

/// The framing of line protocols: a request is a line ending in `\n`; `limit` bytes without
/// one are refused with `too_long`, and the connection closed.
pub fn frame_line(buf: &[u8], limit: usize, too_long: impl FnOnce() -> Reply) -> Framing {
    match buf.iter().position(|&b| b == b'\n') {
        Some(end) => Framing::Complete(end + 1),
        None if buf.len() >= limit => Framing::Refuse(too_long()),
        None => Framing::Incomplete,
    }
}

/// A received line without its `\n` or `\r\n`.
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

impl Applied {
    /// The answer to a session's login: a name seen for the first time was registered, so the
    /// answer waits for that to be on disk, and if it does not get there the session ends
    /// with `not_stored` rather than live without a user.
    pub fn login(ok: Reply, registered: bool, not_stored: Reply) -> Applied {
        if registered {
            Applied::written(ok, not_stored.then_close())
        } else {
            Applied::read_only(ok)
        }
    }
}

/// Bytes encoded once and written to several connections.
pub type Shared = Rc<[u8]>;

/// Encodings a front-end made last: the core tells a fan-out's sessions one after another,
/// so this small memo makes each notice encoded once per format, not once per recipient.
#[derive(Default)]
pub struct EncodeMemo {
    /// `(notice, format, bytes)`, newest last. Holding the notice keeps its texts alive, so
    /// the pointers [`Notice::same`] compares cannot be reused by another notice meanwhile.
    recent: VecDeque<(Notice, u8, Shared)>,
}

/// Encodings kept by an [`EncodeMemo`]: a front-end has a few formats (framings, modes).
const MEMO_ENTRIES: usize = 4;

impl EncodeMemo {
    /// The bytes of `notice` in `format`, encoded by `encode` only if not encoded just before.
    pub fn get_or(
        &mut self,
        notice: &Notice,
        format: u8,
        encode: impl FnOnce() -> Vec<u8>,
    ) -> Shared {
        if let Some((_, _, bytes)) = self
            .recent
            .iter()
            .find(|(n, f, _)| *f == format && n.same(notice))
        {
            return bytes.clone();
        }
        let bytes: Shared = encode().into();
        if self.recent.len() == MEMO_ENTRIES {
            self.recent.pop_front();
        }
        self.recent
            .push_back((notice.clone(), format, bytes.clone()));
        bytes
    }
}

/// Who is asking, as far as the connection tells.
#[derive(Clone, Debug)]
pub struct Caller {
    pub peer: SocketAddr,
    pub session: SessionId,
    /// The request came over TLS.
    pub tls: bool,
}

pub trait Frontend {
    /// For logs: `messenger`, ...
    fn name(&self) -> &'static str;
    fn mode(&self) -> Mode {
        Mode::PerOperation
    }
    /// Most bytes a connection may have buffered; a request never needs more.
    fn read_limit(&self) -> usize;
    /// The cheap check: is a whole request buffered?
    fn frame(&self, input: &Input) -> Framing;
    /// Parses the whole request `request` (as [`Framing::Complete`] measured it) and applies it.
    fn apply(&mut self, request: &[u8], caller: &Caller, core: &mut Core, now: Instant) -> Applied;
    /// The answer to a request that `apply` answered [`Applied::later`], now that its storage
    /// work is done.
    fn finish(&mut self, _ticket: Ticket, _result: storage::Result<Finished>) -> Applied {
        Applied::read_only(Reply::default().diagnostic(format!(
            "{}: a result for a request it never deferred",
            self.name()
        )))
    }
    /// Persistent: how to write to `session`.
    fn pacing(&self, _session: SessionId) -> Pacing {
        Pacing::Stream
    }
    /// Persistent: the bytes that tell `session` about `notice`, or nothing. A notice told
    /// to many sessions is encoded once per format ([`EncodeMemo`]) and the bytes shared.
    fn encode(&mut self, _session: SessionId, _notice: &Notice) -> Option<Shared> {
        None
    }
    /// Persistent: what tells `session` that it sends faster than its flood limit and is
    /// being slowed down (the protocol's error), or nothing.
    fn slow_down(&self, _session: SessionId) -> Option<Vec<u8>> {
        None
    }
    /// Persistent: true once `session` is established (logged in, or watching the canvas).
    /// Until then the connection has `--idle-timeout-ms`, so silent connections cannot hold
    /// connection slots.
    fn established(&self, _session: SessionId) -> bool {
        true
    }
    /// Persistent: what to send before the server closes a connection on its own account
    /// (shutdown, bad input, a client that stopped reading), after which the connection is
    /// reset. None: a plain close.
    fn farewell(&self) -> Option<Vec<u8>> {
        None
    }
    /// Persistent: the connection of `session` ended (the user left, or was disconnected);
    /// the front-end forgets it and ends the session in the core. Returns the console line.
    fn closed(&mut self, _session: SessionId, _core: &mut Core) -> Option<String> {
        None
    }
}
