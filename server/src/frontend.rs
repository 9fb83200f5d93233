//! What the reactor knows of a protocol: a front-end on its own listening socket.
//!
//! The reactor owns sockets, buffers, deadlines and the commit; a front-end owns the meaning of
//! the bytes: the cheap "is a whole request buffered?" check ([`Frontend::frame`]), the parse of
//! a whole request into a typed one and its application to the core ([`Frontend::apply`]), and
//! the encoding of the answer. Today every front-end is per-operation: one request per
//! connection, answered, then closed.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::core::Core;

/// The bytes received on a connection so far.
pub struct Input<'a> {
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
    /// Closed without an answer; the reason goes to stderr.
    Close(String),
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

/// A request's result. Answers that report a write hold back until the turn's transaction is
/// committed (and synced); if it is not, the client gets `if_not_committed` instead.
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

/// Who is asking, as far as the connection tells.
pub struct Caller {
    pub peer: SocketAddr,
}

pub trait Frontend {
    /// For logs: `messenger`, ...
    fn name(&self) -> &'static str;
    /// Most bytes a connection may have buffered; a request never needs more.
    fn read_limit(&self) -> usize;
    /// The cheap check: is a whole request buffered?
    fn frame(&self, input: &Input) -> Framing;
    /// Parses the whole request `request` (as [`Framing::Complete`] measured it) and applies it.
    fn apply(&mut self, request: &[u8], caller: &Caller, core: &mut Core, now: Instant) -> Applied;
}
