//! One client connection: a non-blocking state machine with a read buffer, a write cursor and a
//! deadline. It knows nothing of what the bytes mean; its front-end's `frame` does.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Collecting the request.
    Reading,
    /// The request was applied; its answer waits for the turn's commit.
    Staged,
    /// Writing the answer from `out[written..]`.
    Writing,
}

pub struct Connection {
    pub stream: TcpStream,
    /// Index of the front-end whose listener accepted it.
    pub frontend: usize,
    pub peer: SocketAddr,
    pub state: State,
    pub buf: Vec<u8>,
    /// The client closed its sending side.
    pub eof: bool,
    pub out: Vec<u8>,
    pub written: usize,
    /// When the connection is closed if it has not finished.
    pub deadline: Instant,
    /// Set while a request that may have a longer form waits for more fields.
    pub grace_deadline: Option<Instant>,
    /// Distinguishes this connection from earlier ones that had the same slab key.
    pub generation: u64,
    /// The reactor's timer entry for this connection, if any: exactly one per connection.
    pub timer: Option<Instant>,
}

impl Connection {
    pub fn new(
        stream: TcpStream,
        frontend: usize,
        peer: SocketAddr,
        deadline: Instant,
        generation: u64,
    ) -> Connection {
        Connection {
            stream,
            frontend,
            peer,
            state: State::Reading,
            buf: Vec::new(),
            eof: false,
            out: Vec::new(),
            written: 0,
            deadline,
            grace_deadline: None,
            generation,
            timer: None,
        }
    }

    /// Reads everything available, up to `limit` buffered bytes. Returns true if anything new
    /// arrived or the client closed its side.
    pub fn fill(&mut self, limit: usize) -> io::Result<bool> {
        let mut progressed = false;
        let mut chunk = [0u8; 1024];
        while !self.eof && self.buf.len() < limit {
            let room = (limit - self.buf.len()).min(chunk.len());
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => {
                    self.eof = true;
                    progressed = true;
                }
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    progressed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(progressed)
    }

    /// When the reactor must look at this connection next.
    pub fn next_wake(&self) -> Instant {
        self.grace_deadline
            .map_or(self.deadline, |grace| grace.min(self.deadline))
    }

    /// Starts writing `answer`.
    pub fn answer(&mut self, answer: Vec<u8>, deadline: Instant) {
        self.state = State::Writing;
        self.out = answer;
        self.written = 0;
        self.deadline = deadline;
        self.grace_deadline = None;
    }

    /// Writes as much of the answer as the socket takes. Returns true when all of it is out.
    pub fn flush(&mut self) -> io::Result<bool> {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
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
