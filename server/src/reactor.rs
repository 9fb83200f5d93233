//! The event loop: one thread, one mio `Poll`, every client connection a state machine in a slab.
//!
//! A turn is: wait for readiness (or the next deadline), read and apply every whole request,
//! take in the deliverers' reports, fire due timers, then end the turn: commit the turn's writes
//! in one transaction and only then release the answers and start the pushes that depend on
//! them. The reactor never blocks on the network; its only blocking call besides `poll` is the
//! SQLite commit.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::commands::{self, Applied, Caller, Framing, Rejection, Reply};
use crate::config::Config;
use crate::connection::{Connection, State};
use crate::console::{diagnostic, Console};
use crate::messenger::{Event, Messenger};
use crate::syncer::{Synced, Syncer};
use crossbeam_channel::Receiver;

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
pub const SIGNALS: Token = Token(usize::MAX - 3);

/// A command's result waiting to be sent: `(slab key, generation, result)`.
type StagedAnswer = (usize, u64, Applied);

pub struct Reactor {
    poll: Poll,
    listener: Option<TcpListener>,
    signals: Signals,
    connections: Slab<Connection>,
    /// Connection deadlines as `(when, slab key, generation)`; stale entries are skipped.
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_generation: u64,
    messenger: Messenger,
    /// Answers waiting for the turn's commit: `(slab key, generation, result)`.
    staged: Vec<StagedAnswer>,
    console: Console,
    config: Config,
    shutdown_deadline: Option<Instant>,
    /// With `--durability full`: answers held until their commit is synced to disk.
    sync_gate: Option<SyncGate>,
}

/// Answers that promise durability wait here for the syncer.
pub struct SyncGate {
    pub syncer: Syncer,
    pub synced: Receiver<Synced>,
    /// Number of the last commit handed to the syncer.
    commits: u64,
    /// `(commit number, answers)` in commit order.
    waiting: VecDeque<(u64, Vec<StagedAnswer>)>,
}

impl SyncGate {
    pub fn new(syncer: Syncer, synced: Receiver<Synced>) -> SyncGate {
        SyncGate {
            syncer,
            synced,
            commits: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl Reactor {
    pub fn new(
        poll: Poll,
        mut listener: TcpListener,
        mut signals: Signals,
        messenger: Messenger,
        config: Config,
        sync_gate: Option<SyncGate>,
    ) -> io::Result<Reactor> {
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        Ok(Reactor {
            poll,
            listener: Some(listener),
            signals,
            connections: Slab::new(),
            timers: BinaryHeap::new(),
            next_generation: 0,
            messenger,
            staged: Vec::new(),
            console: Console::default(),
            config,
            shutdown_deadline: None,
            sync_gate,
        })
    }

    /// The console, for lines printed before the loop starts.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// Runs until SIGINT or SIGTERM, then finishes what is in flight and commits.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // Pushes owed since before a restart start in the first turn.
        self.end_turn();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        self.messenger.collect_reports();
                        self.collect_synced();
                    }
                    SIGNALS => self.on_signals(),
                    Token(key) => self.on_ready(key),
                }
            }
            let now = Instant::now();
            self.fire_timers(now);
            self.messenger.fire_timers(now);
            self.end_turn();
            self.console.flush();
            if let Some(deadline) = self.shutdown_deadline {
                if self.connections.is_empty() || now >= deadline {
                    break;
                }
            }
        }
        self.finish()
    }

    fn poll_timeout(&self) -> Option<Duration> {
        let next = [
            self.timers.peek().map(|Reverse((at, _, _))| *at),
            self.messenger.next_deadline(),
            self.shutdown_deadline,
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically EMFILE: the connection stays queued until a descriptor frees up.
                    diagnostic(&format!("accept failed: {e}"));
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.connections.len() >= self.config.max_connections {
            diagnostic(&format!(
                "refused connection from {peer}: {} connections open (--max-connections)",
                self.connections.len()
            ));
            return;
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            diagnostic(&format!("cannot watch connection from {peer}: {e}"));
            return;
        }
        let deadline = Instant::now() + self.config.idle_timeout();
        self.next_generation += 1;
        let generation = self.next_generation;
        entry.insert(Connection::new(stream, peer, deadline, generation));
        self.timers.push(Reverse((deadline, key, generation)));
        // Clients write their request right after connecting, so it is often already here:
        // reading now saves a trip through poll.
        self.on_ready(key);
    }

    fn on_ready(&mut self, key: usize) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        match conn.state {
            State::Reading => match conn.fill() {
                Ok(true) => self.try_frame(key),
                Ok(false) => {}
                Err(e) => {
                    let peer = conn.peer;
                    self.close(
                        key,
                        Some(format!("connection from {peer} failed while reading: {e}")),
                    );
                }
            },
            State::Staged => {}
            State::Writing => self.write(key),
        }
    }

    /// Applies the request if it is whole; otherwise arranges to wait or rejects it.
    fn try_frame(&mut self, key: usize) {
        let now = Instant::now();
        let conn = &mut self.connections[key];
        let grace_over = conn.grace_deadline.is_some_and(|at| at <= now);
        match commands::frame(&conn.buf, conn.eof, grace_over, self.config.register_form) {
            Framing::Incomplete => {}
            Framing::AwaitGrace => {
                if conn.grace_deadline.is_none() {
                    let at = now + self.config.grace();
                    conn.grace_deadline = Some(at);
                    self.timers.push(Reverse((at, key, conn.generation)));
                }
            }
            Framing::Complete { op, fields } => {
                let owned: Vec<Vec<u8>> = fields
                    .iter()
                    .map(|range| conn.buf[range.clone()].to_vec())
                    .collect();
                let fields: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
                let caller = Caller { ip: conn.peer.ip() };
                conn.state = State::Staged;
                let generation = conn.generation;
                let applied = commands::execute(op, &fields, &caller, &mut self.messenger);
                self.staged.push((key, generation, applied));
            }
            Framing::Reject(Rejection::Oversized(op)) => {
                conn.state = State::Staged;
                self.staged
                    .push((key, conn.generation, commands::oversized(op)));
            }
            Framing::Reject(Rejection::UnknownOp) => {
                let why = format!(
                    "closed connection from {}: unknown operation {:?}",
                    conn.peer,
                    op_preview(&conn.buf)
                );
                self.close(key, Some(why));
            }
            Framing::Reject(Rejection::Truncated) => {
                let why = format!(
                    "connection from {} closed mid-request after {} bytes",
                    conn.peer,
                    conn.buf.len()
                );
                self.close(key, Some(why));
            }
        }
    }

    fn write(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        match conn.flush() {
            Ok(true) => self.close(key, None),
            Ok(false) => {}
            Err(e) => {
                let why = format!("could not answer {}: {e}", conn.peer);
                self.close(key, Some(why));
            }
        }
    }

    fn close(&mut self, key: usize, why: Option<String>) {
        if let Some(why) = why {
            diagnostic(&why);
        }
        // Closing the socket removes it from the epoll set; no deregister call is needed.
        let mut conn = self.connections.remove(key);
        if conn.state == State::Writing {
            conn.discard_input();
        }
    }

    /// The connection at `key`, if it is still the one of that generation.
    fn live(&self, key: usize, generation: u64) -> Option<&Connection> {
        self.connections
            .get(key)
            .filter(|c| c.generation == generation)
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&Reverse((at, key, generation))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(conn) = self.live(key, generation) else {
                continue;
            };
            if conn.state == State::Reading && conn.grace_deadline.is_some_and(|g| g <= now) {
                self.try_frame(key);
            }
            let Some(conn) = self.live(key, generation) else {
                continue;
            };
            if conn.deadline <= now && conn.state != State::Staged {
                let why = match conn.state {
                    State::Writing => {
                        format!("closed {}: it did not read its answer in time", conn.peer)
                    }
                    _ => format!(
                        "closed {}: no whole request within the idle timeout ({} bytes received)",
                        conn.peer,
                        conn.buf.len()
                    ),
                };
                self.close(key, Some(why));
            }
        }
    }

    /// Commits the turn's writes, then releases the answers and the console lines.
    fn end_turn(&mut self) {
        if self.staged.is_empty() && !self.messenger.turn_has_work() {
            return;
        }
        let (committed, events) = self.messenger.end_turn();
        if let Err(e) = &committed {
            diagnostic(&format!(
                "commit failed, the turn's writes were rolled back: {e}"
            ));
        }
        let mut held = Vec::new();
        for (key, generation, applied) in std::mem::take(&mut self.staged) {
            let wrote = applied.if_not_committed.is_some();
            match (&committed, wrote, self.sync_gate.is_some()) {
                (Ok(()), true, true) => held.push((key, generation, applied)),
                _ => self.resolve(key, generation, applied, committed.is_ok()),
            }
        }
        if let (false, Some(gate)) = (held.is_empty(), self.sync_gate.as_mut()) {
            gate.commits += 1;
            gate.syncer.request(gate.commits);
            gate.waiting.push_back((gate.commits, held));
        }
        self.report(committed.is_ok(), events);
    }

    /// Releases answers whose commits the syncer has made durable (or failed to).
    fn collect_synced(&mut self) {
        let Some(gate) = self.sync_gate.as_mut() else {
            return;
        };
        let mut ready = Vec::new();
        while let Ok(synced) = gate.synced.try_recv() {
            if let Err(e) = &synced.result {
                diagnostic(&format!(
                    "{e}; answering the writes it covered with their error codes"
                ));
            }
            while gate
                .waiting
                .front()
                .is_some_and(|(commit, _)| *commit <= synced.upto)
            {
                let (_, answers) = gate.waiting.pop_front().expect("checked front");
                ready.push((answers, synced.result.is_ok()));
            }
        }
        for (answers, durable) in ready {
            for (key, generation, applied) in answers {
                self.resolve(key, generation, applied, durable);
            }
        }
    }

    /// Sends the answer a command earned, given whether its writes made it.
    fn resolve(&mut self, key: usize, generation: u64, applied: Applied, written: bool) {
        let reply = match (written, applied.if_not_committed) {
            (false, Some(instead)) => instead,
            _ => applied.reply,
        };
        let deadline = Instant::now() + self.config.idle_timeout();
        self.release(key, generation, reply, deadline);
    }

    /// Prints what happened to messages: deliveries on the console (once they are committed),
    /// failures on stderr.
    fn report(&mut self, committed: bool, events: Vec<Event>) {
        for event in events {
            match event {
                Event::Delivered { id, sender, recipient } if committed => {
                    self.console.line(&format!("SEND MESSAGE {id} FROM {sender} TO {recipient}"));
                }
                Event::Delivered { id, sender, recipient } => {
                    diagnostic(&format!("message {id} from {sender} to {recipient} was pushed but its removal was rolled back; it will be pushed again"))
                }
                Event::PushFailed { recipient, reason } => {
                    diagnostic(&format!("push to {recipient} failed, messages stay pending: {reason}"))
                }
                Event::AckFailed { sender, id, reason } => {
                    diagnostic(&format!("ack of message {id} to {sender} failed: {reason}"))
                }
            }
        }
    }

    fn release(&mut self, key: usize, generation: u64, reply: Reply, deadline: Instant) {
        if let Some(line) = &reply.console {
            self.console.line(line);
        }
        if let Some(text) = &reply.diagnostic {
            diagnostic(text);
        }
        let Some(conn) = self
            .connections
            .get_mut(key)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        conn.answer(reply.answer, deadline);
        self.timers.push(Reverse((deadline, key, generation)));
        self.write(key);
    }

    fn on_signals(&mut self) {
        let stop = self.signals.pending().count() > 0;
        if stop && self.shutdown_deadline.is_none() {
            diagnostic("signal received: no new connections; finishing requests in progress");
            if let Some(mut listener) = self.listener.take() {
                let _ = self.poll.registry().deregister(&mut listener);
            }
            self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_grace());
        }
    }

    fn finish(mut self) -> io::Result<()> {
        let open: Vec<usize> = self.connections.iter().map(|(key, _)| key).collect();
        for key in open {
            let peer = self.connections[key].peer;
            self.close(
                key,
                Some(format!(
                    "closed unfinished connection from {peer} at shutdown"
                )),
            );
        }
        let (committed, events) = self.messenger.shut_down();
        self.report(committed.is_ok(), events);
        committed.map_err(|e| io::Error::other(format!("final commit: {e}")))
    }
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

/// Registers a `mio::Waker` for the deliverers.
pub fn waker(registry: &Registry) -> io::Result<mio::Waker> {
    mio::Waker::new(registry, WAKER)
}
