//! One client connection: a non-blocking state machine with a read buffer, an outbound queue
//! with a write cursor, and deadlines. It knows nothing of what the bytes mean; its front-end
//! does.
//!
//! The outbound queue holds whole messages in the order they must be written. An answer that
//! waits for its commit (and fsync) holds its place as a [`Chunk::Held`] slot, so that notices
//! queued meanwhile never overtake it: nothing behind a held slot is written.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::core::DeliveryMark;
use crate::frontend::{Mode, Pacing};

/// Most bytes taken from the socket by one read. A chat client of the original framing sends
/// each message with one `send` of at most 1024 bytes; reading at most that much per call keeps
/// its messages apart as the original server's `recv(1024)` did.
pub const READ_CHUNK: usize = 1024;

/// Requests of one persistent connection whose answers are not yet out; past this the
/// connection is not read until they are (a client cannot pile up work).
pub const MAX_UNANSWERED: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Reading requests (a persistent connection stays here).
    Reading,
    /// Per-operation: the request was applied; its answer waits for the turn's commit.
    Staged,
    /// Writing what is queued, then closing.
    Closing,
}

pub enum Chunk {
    /// A whole message, the private message it carries, if any, and whether a newer message
    /// of its kind may replace it before it is written.
    Ready {
        bytes: Vec<u8>,
        mark: Option<DeliveryMark>,
        superseding: bool,
    },
    /// The place of an answer still waiting for its commit.
    Held(u64),
}

pub struct Connection {
    pub stream: TcpStream,
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
    /// Distinguishes this connection from earlier ones that had the same slab key; a
    /// persistent connection's session id.
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
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        frontend: usize,
        mode: Mode,
        peer: SocketAddr,
        deadline: Option<Instant>,
        generation: u64,
    ) -> Connection {
        Connection {
            stream,
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
        }
    }

    /// When the reactor must look at this connection next.
    pub fn next_wake(&self) -> Option<Instant> {
        [self.deadline, self.grace_deadline, self.paused_until]
            .into_iter()
            .flatten()
            .min()
    }

    /// Reads once, at most [`READ_CHUNK`] bytes and never past `limit` buffered. Ok(true) if
    /// bytes arrived or the client closed its side, Ok(false) if there was nothing to read.
    pub fn read_once(&mut self, limit: usize) -> io::Result<bool> {
        if self.eof || self.buf.len() >= limit {
            return Ok(false);
        }
        let mut chunk = [0u8; READ_CHUNK];
        let room = (limit - self.buf.len()).min(READ_CHUNK);
        loop {
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(true);
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reserves the place of an answer that waits for its commit.
    pub fn hold(&mut self) -> u64 {
        self.next_slot += 1;
        self.held += 1;
        self.out.push_back(Chunk::Held(self.next_slot));
        self.next_slot
    }

    /// Puts the answer in its held place (an empty answer just frees the place).
    pub fn fill(&mut self, slot: u64, bytes: Vec<u8>) {
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
                bytes,
                mark: None,
                superseding: false,
            };
        }
    }

    /// Queues a whole message at the back.
    pub fn push(&mut self, bytes: Vec<u8>, mark: Option<DeliveryMark>) {
        self.queued += bytes.len();
        self.out.push_back(Chunk::Ready {
            bytes,
            mark,
            superseding: false,
        });
    }

    /// Queues a message that makes an earlier superseding one pointless: if the last queued
    /// message is such a one and not yet being written, it is replaced. So a client that stops
    /// reading never has more than one of them waiting.
    pub fn push_superseding(&mut self, bytes: Vec<u8>) {
        let writing_front = self.written > 0 && self.out.len() == 1;
        if let Some(Chunk::Ready {
            bytes: old,
            superseding: true,
            ..
        }) = self.out.back_mut()
        {
            if !writing_front {
                self.queued = self.queued - old.len() + bytes.len();
                *old = bytes;
                return;
            }
        }
        self.queued += bytes.len();
        self.out.push_back(Chunk::Ready {
            bytes,
            mark: None,
            superseding: true,
        });
    }

    /// Writes what may be written now. Private messages fully written are added to
    /// `delivered`. Returns true when nothing is left to write.
    pub fn flush(&mut self, now: Instant, delivered: &mut Vec<DeliveryMark>) -> io::Result<bool> {
        loop {
            if self.paused_until.is_some_and(|at| at > now) {
                return Ok(false);
            }
            self.paused_until = None;
            let Some(Chunk::Ready { bytes, mark, .. }) = self.out.front() else {
                // Empty, or the front waits for its commit.
                return Ok(self.out.is_empty());
            };
            match self.stream.write(&bytes[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n;
                    self.queued -= n;
                    if self.written == bytes.len() {
                        if let Some(mark) = mark {
                            delivered.push(*mark);
                        }
                        self.out.pop_front();
                        self.written = 0;
                        if self.pacing == Pacing::OneMessagePerWrite {
                            self.paused_until = Some(now + self.pause);
                            return Ok(self.out.is_empty());
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// True when the next write waits for the socket buffer to drain (not for a commit, nor
    /// for a pause).
    pub fn write_blocked(&self) -> bool {
        self.paused_until.is_none() && matches!(self.out.front(), Some(Chunk::Ready { .. }))
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
            match self.stream.read(&mut sink) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}
