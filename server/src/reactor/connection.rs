//! One client connection: a non-blocking state machine with a read buffer, an outbound queue
//! with a write cursor, and deadlines. It knows nothing of what the bytes mean; its front-end
//! does.
//!
//! The outbound queue holds whole messages in the order they must be written. An answer that
//! waits for its commit (and fsync) holds its place as a [`Chunk::Held`] slot, so that notices
//! queued meanwhile never overtake it: nothing behind a held slot is written.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::transport::Transport;
use crate::core::DeliveryMark;
use crate::flood::Bucket;
use crate::frontend::{Mode, Pacing};

/// Most bytes taken from the socket by one read. A chat client of the original framing sends
/// each message with one `send` of at most 1024 bytes; reading at most that much per call keeps
/// its messages apart as the original server's `recv(1024)` did.
pub const READ_CHUNK: usize = 1024;

/// Requests of one persistent connection whose answers are not yet out; past this the
/// connection is not read until they are (a client cannot pile up work). As many as a turn
/// serves it (`TURN_BUDGET`): a room line holds its place until the turn's commit, so a
/// smaller bound would cut every turn short of its budget.
pub const MAX_UNANSWERED: usize = 64;

/// Most messages gathered into one write (`sendmsg`): more are written by the next call of
/// the same flush.
const MAX_SLICES: usize = 256;

/// Slices of a write that has few messages: an array of [`MAX_SLICES`] filled for every
/// write was a tenth of the writing's own cost for a message or two.
const FEW_SLICES: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading requests (a persistent connection stays here).
    Reading,
    /// Per-operation: the request was applied; its answer waits for the turn's commit.
    Staged,
    /// Writing what is queued, then closing.
    Closing,
}

/// Bytes to write: a connection's own (an answer), a fixed answer, or shared with other
/// connections (a notice encoded once for all its recipients).
pub enum Bytes {
    Owned(Vec<u8>),
    Static(&'static [u8]),
    Shared(Rc<[u8]>),
}

impl From<std::borrow::Cow<'static, [u8]>> for Bytes {
    fn from(bytes: std::borrow::Cow<'static, [u8]>) -> Bytes {
        match bytes {
            std::borrow::Cow::Borrowed(fixed) => Bytes::Static(fixed),
            std::borrow::Cow::Owned(own) => Bytes::Owned(own),
        }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Owned(v) => v,
            Bytes::Static(s) => s,
            Bytes::Shared(r) => r,
        }
    }
}

/// What may become of a queued message that is not written yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Must be written (an answer, a private message, room news).
    Kept,
    /// A newer message of its kind replaces it (a whole canvas board).
    Superseded,
    /// May be dropped when the client reads slower than the server writes (a broadcast to a
    /// client paced one message per write).
    Droppable,
}

pub enum Chunk {
    /// A whole message, the private message it carries, if any, and what may become of it.
    Ready {
        bytes: Bytes,
        mark: Option<DeliveryMark>,
        kind: Kind,
    },
    /// The place of an answer still waiting for its commit.
    Held(u64),
}

pub struct Connection {
    /// The socket, or TLS over it.
    pub transport: Transport,
    /// Index of the front-end whose listener accepted it.
    pub frontend: usize,
    pub mode: Mode,
    pub pacing: Pacing,
    pub peer: SocketAddr,
    pub state: State,
    pub buf: Vec<u8>,
    /// The client closed its sending side.
    pub eof: bool,
    pub out: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    pub written: usize,
    /// Bytes in `out` not yet written.
    pub queued: usize,
    /// Queued private messages whose marks say they are stored nowhere yet.
    unstored: usize,
    /// Held slots in `out`, and the number for the next one.
    pub held: usize,
    next_slot: u64,
    /// One-message-per-write pacing: the pause after each message, and no write before
    /// `paused_until`.
    pub pause: Duration,
    pub paused_until: Option<Instant>,
    /// When the connection is closed if it has not finished (per-operation; persistent
    /// connections are closed by their buffer limit and by TCP keepalive instead).
    pub deadline: Option<Instant>,
    /// Set while a request that may have a longer form waits for more fields.
    pub grace_deadline: Option<Instant>,
    /// Distinguishes this connection from earlier ones that had the same slab key, which its
    /// low bits hold (`reactor::generation`); a persistent connection's session id.
    pub generation: u64,
    /// The reactor's timer entry for this connection, if any: exactly one per connection.
    pub timer: Option<Instant>,
    /// A persistent connection whose session has started (counted as online).
    pub established: bool,
    /// Persistent: a request's storage work runs beside the reactor; the connection's next
    /// requests are neither read nor applied until it is done, so they see what it did (a
    /// login's session) and take effect in order.
    pub awaiting_storage: bool,
    /// In the poll set. A per-operation connection whose whole request came with its first
    /// read, and whose answer fit the socket buffer, never is: registering it would cost an
    /// `epoll_ctl` per request for events nobody needs.
    pub watched: bool,
    /// `--proxy-protocol`: the PROXY header that names the client has not been read yet.
    pub awaiting_proxy_header: bool,
    /// Something was queued this turn: the reactor flushes it at the end of the turn.
    pub dirty: bool,
    /// Reading or serving stopped with requests possibly left (its share of the turn used, or
    /// [`MAX_UNANSWERED`] answers out): it goes on in a later turn without any readiness
    /// event (readiness is edge-triggered, and the bytes may already be buffered).
    pub runnable: bool,
    /// Stopped at [`MAX_UNANSWERED`]: releasing an answer makes it runnable.
    pub stalled: bool,
    /// Flood control of a session's requests.
    pub flood: Option<Bucket>,
    /// Over its flood limit: not read nor served before then.
    pub throttled_until: Option<Instant>,
    /// Requests applied in turn `served_turn`.
    pub served: u32,
    pub served_turn: u64,
    /// Readiness reported the client's end or an error: reads go on until one would block,
    /// since that report is not repeated for what a short read leaves unread.
    pub hung_up: bool,
}

/// What one read of a connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Nothing: the socket would block, or the buffer is at its limit.
    Nothing,
    /// Bytes, or the end of the client's stream; the socket may have more.
    Bytes,
    /// Bytes, and the socket had no more. Another read would only say it would block: the
    /// readiness of anything that comes later is reported anew (epoll reports every arrival
    /// after the poll that reported the last one), so one system call per read is saved.
    AllThereWas,
}

impl Connection {
    pub fn new(
        transport: Transport,
        frontend: usize,
        mode: Mode,
        peer: SocketAddr,
        deadline: Option<Instant>,
        generation: u64,
    ) -> Connection {
        Connection {
            transport,
            frontend,
            mode,
            pacing: Pacing::Stream,
            peer,
            state: State::Reading,
            buf: Vec::new(),
            eof: false,
            out: VecDeque::new(),
            written: 0,
            queued: 0,
            unstored: 0,
            held: 0,
            next_slot: 0,
            pause: Duration::ZERO,
            paused_until: None,
            deadline,
            grace_deadline: None,
            generation,
            timer: None,
            established: false,
            awaiting_storage: false,
            watched: false,
            awaiting_proxy_header: false,
            dirty: false,
            flood: None,
            throttled_until: None,
            runnable: false,
            stalled: false,
            served: 0,
            served_turn: 0,
            hung_up: false,
        }
    }

    /// When the reactor must look at this connection next.
    pub fn next_wake(&self) -> Option<Instant> {
        [
            self.deadline,
            self.grace_deadline,
            self.paused_until,
            self.throttled_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Reads once, at most [`READ_CHUNK`] bytes and never past `limit` buffered.
    pub fn read_once(&mut self, limit: usize) -> io::Result<Received> {
        if self.eof || self.buf.len() >= limit {
            return Ok(Received::Nothing);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let room = (limit - self.buf.len()).min(READ_CHUNK);
        loop {
            match self.transport.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(Received::Bytes);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    // A plain socket's short read took all it had. TLS reads the socket in
                    // records of its own size, so it cannot tell.
                    let all = n < room && !self.transport.is_tls() && !self.hung_up;
                    return Ok(if all {
                        Received::AllThereWas
                    } else {
                        Received::Bytes
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Received::Nothing),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reading stopped with nothing more to read: if every request is served too, the client
    /// kept to its rate.
    pub fn caught_up_if_served(&mut self) {
        if self.buf.is_empty() {
            if let Some(bucket) = self.flood.as_mut() {
                bucket.caught_up();
            }
        }
    }

    /// Counts a request applied in turn `turn`; false if the connection's share of that turn
    /// was already used.
    pub fn serve(&mut self, turn: u64, budget: u32) -> bool {
        if self.served_turn != turn {
            self.served_turn = turn;
            self.served = 0;
        }
        if self.served >= budget {
            return false;
        }
        self.served += 1;
        true
    }

    /// Requests applied in turn `turn` so far.
    pub fn served_in(&self, turn: u64) -> u32 {
        if self.served_turn == turn {
            self.served
        } else {
            0
        }
    }

    /// True if the connection used its share of turn `turn`.
    pub fn served_out(&self, turn: u64, budget: u32) -> bool {
        self.served_turn == turn && self.served >= budget
    }

    /// Reserves the place of an answer that waits for its commit.
    pub fn hold(&mut self) -> u64 {
        self.next_slot += 1;
        self.held += 1;
        self.out.push_back(Chunk::Held(self.next_slot));
        self.next_slot
    }

    /// Puts the answer in its held place (an empty answer just frees the place).
    pub fn fill(&mut self, slot: u64, bytes: std::borrow::Cow<'static, [u8]>) {
        let Some(index) = self
            .out
            .iter()
            .position(|c| matches!(c, Chunk::Held(s) if *s == slot))
        else {
            return;
        };
        self.held -= 1;
        if bytes.is_empty() {
            self.out.remove(index);
        } else {
            self.queued += bytes.len();
            self.out[index] = Chunk::Ready {
                bytes: bytes.into(),
                mark: None,
                kind: Kind::Kept,
            };
        }
    }

    /// Queues a whole message at the back. A superseded message replaces the last queued
    /// message of its kind if that is not being written yet, so a client that stops reading
    /// never has more than one of them waiting.
    pub fn push(&mut self, bytes: Bytes, mark: Option<DeliveryMark>, kind: Kind) {
        debug_assert!(
            mark.is_none() || kind == Kind::Kept,
            "a private message is kept"
        );
        if kind == Kind::Superseded {
            let writing_front = self.written > 0 && self.out.len() == 1;
            if let Some(Chunk::Ready {
                bytes: old,
                kind: Kind::Superseded,
                ..
            }) = self.out.back_mut()
            {
                if !writing_front {
                    self.queued = self.queued - old.len() + bytes.len();
                    *old = bytes;
                    return;
                }
            }
        }
        self.queued += bytes.len();
        if mark.is_some_and(|mark| mark.unstored) {
            self.unstored += 1;
        }
        self.out.push_back(Chunk::Ready { bytes, mark, kind });
    }

    /// The marks of the queued private messages stored nowhere yet, which from now on count
    /// as stored (the caller stores them).
    pub fn take_unstored(&mut self) -> Vec<DeliveryMark> {
        if self.unstored == 0 {
            return Vec::new();
        }
        self.unstored = 0;
        let mut taken = Vec::new();
        for chunk in &mut self.out {
            if let Chunk::Ready {
                mark: Some(mark), ..
            } = chunk
            {
                if mark.unstored {
                    mark.unstored = false;
                    taken.push(*mark);
                }
            }
        }
        taken
    }

    /// Writes what may be written now: with [`Pacing::Stream`] every ready message up to the
    /// first held slot, many per write; otherwise the front message alone, then a pause.
    /// Private messages fully written are added to `delivered`. Returns true when nothing is
    /// left to write.
    pub fn flush(&mut self, now: Instant, delivered: &mut Vec<DeliveryMark>) -> io::Result<bool> {
        // TLS records of earlier writes go first.
        if !self.transport.flush_waiting()? {
            return Ok(false);
        }
        loop {
            if self.paused_until.is_some_and(|at| at > now) {
                return Ok(false);
            }
            self.paused_until = None;
            let one = self.pacing == Pacing::OneMessagePerWrite;
            let ready = self
                .out
                .iter()
                .take_while(|chunk| matches!(chunk, Chunk::Ready { .. }))
                .take(if one { 1 } else { MAX_SLICES })
                .count();
            if ready == 0 {
                // Empty, or the front waits for its commit.
                if self.out.is_empty() {
                    // Most sessions idle most of the time: an empty queue holds no memory.
                    self.out = VecDeque::new();
                }
                return Ok(self.out.is_empty() && !self.transport.waiting());
            }
            let written = if ready <= FEW_SLICES {
                let mut slices = [IoSlice::new(&[]); FEW_SLICES];
                self.write_ready(&mut slices[..ready])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                self.write_ready(&mut slices[..ready])
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.queued -= n;
                    let whole = self.advance(n, delivered);
                    if one && whole {
                        self.paused_until = Some(now + self.pause);
                        return Ok(self.out.is_empty() && !self.transport.waiting());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes the first `slices.len()` messages of the queue (ready ones), `written` bytes of
    /// the first gone already, in one call.
    fn write_ready<'a>(&'a mut self, slices: &mut [IoSlice<'a>]) -> io::Result<usize> {
        let ready = self.out.iter().map_while(|chunk| match chunk {
            Chunk::Ready { bytes, .. } => Some(bytes),
            _ => None,
        });
        for (n, (slice, bytes)) in slices.iter_mut().zip(ready).enumerate() {
            let skip = if n == 0 { self.written } else { 0 };
            *slice = IoSlice::new(&bytes[skip..]);
        }
        self.transport.write_vectored(slices)
    }

    /// Takes `n` written bytes off the front of the queue; returns true if the last message
    /// they touched was written whole.
    fn advance(&mut self, mut n: usize, delivered: &mut Vec<DeliveryMark>) -> bool {
        let mut whole = false;
        while n > 0 {
            let Some(Chunk::Ready { bytes, mark, .. }) = self.out.front() else {
                debug_assert!(false, "wrote past the ready messages");
                return whole;
            };
            let left = bytes.len() - self.written;
            if n < left {
                self.written += n;
                return false;
            }
            n -= left;
            if let Some(mark) = mark {
                self.unstored -= usize::from(mark.unstored);
                delivered.push(*mark);
            }
            self.out.pop_front();
            self.written = 0;
            whole = true;
        }
        whole
    }

    /// Drops the droppable messages not yet being written; returns how many.
    pub fn drop_droppable(&mut self) -> usize {
        let before = self.out.len();
        let mut queued = self.queued;
        let writing = self.written > 0;
        let mut index = 0;
        self.out.retain(|chunk| {
            let front = index == 0;
            index += 1;
            match chunk {
                Chunk::Ready {
                    bytes,
                    kind: Kind::Droppable,
                    ..
                } if !(front && writing) => {
                    queued -= bytes.len();
                    false
                }
                _ => true,
            }
        });
        self.queued = queued;
        before - self.out.len()
    }

    /// True when the next write waits for the socket buffer to drain (not for a commit, nor
    /// for a pause).
    pub fn write_blocked(&self) -> bool {
        self.transport.waiting()
            || self.paused_until.is_none() && matches!(self.out.front(), Some(Chunk::Ready { .. }))
    }

    /// Private messages queued but not completely written (the connection is going away).
    pub fn unwritten_marks(&self) -> impl Iterator<Item = DeliveryMark> + '_ {
        self.out.iter().filter_map(|c| match c {
            Chunk::Ready { mark, .. } => *mark,
            Chunk::Held(_) => None,
        })
    }

    /// Reads and drops whatever the client sent beyond its request, so that closing sends a FIN
    /// rather than a reset that could destroy the answer before the client reads it.
    pub fn discard_input(&mut self) {
        let mut sink = [0u8; 1024];
        for _ in 0..64 {
            match self.transport.socket_mut().read(&mut sink) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}
