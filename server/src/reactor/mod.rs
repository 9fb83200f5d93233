//! The event loop: one thread, one mio `Poll`, every client connection a state machine in a slab.
//!
//! A turn is: wait for readiness (or the next deadline), read and apply every whole request,
//! take in the deliverers' reports, fire due timers, then end the turn: commit the turn's writes
//! in one transaction and only then release the answers and start the deliveries that depend on
//! them. The reactor never blocks: sockets are non-blocking, pushes run on the deliverers, the
//! fsync on the syncer, checkpoints on the checkpointer, console output on writer threads, and
//! the database answers a locked write with an error at once.
//!
//! The reactor knows protocols only through [`Frontend`]: one listening socket each.

mod connection;
mod transport;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use crate::beside::Ticket;
use crate::config::Config;
use crate::console::{fatal, Console};
use crate::core::{Core, DeliveryMark, Event, Outcome, Report, SessionId};
use crate::flood::{Bucket, Verdict};
use crate::frontend::{Applied, Caller, Framing, Frontend, Input, Mode, Pacing, Reply};
use crate::metrics::Metrics;
use crate::proxy_header::{self, Header};
use crate::syncer::{Progress, Syncer};
use connection::{Bytes, Connection, Kind, Received, State, MAX_UNANSWERED};
use transport::Transport;

const WAKER: Token = Token(usize::MAX - 1);
const SIGNALS: Token = Token(usize::MAX - 2);
/// Listener `n` has token `LISTENERS - n`.
const LISTENERS: usize = usize::MAX - 3;

/// How soon to try `accept` again after it failed for lack of descriptors or memory. Closing a
/// connection also tries at once.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// TCP keepalive of persistent connections: a peer that vanished without a FIN or reset is
/// found after about `idle + count * interval` seconds.
const KEEPALIVE_IDLE_SECS: i32 = 60;
const KEEPALIVE_INTERVAL_SECS: i32 = 10;
const KEEPALIVE_COUNT: i32 = 3;

/// The kernel's send buffer of a persistent connection (Linux doubles it). Without a cap it
/// autotunes up to `tcp_wmem`'s maximum (4 MiB here) per socket: memory nobody accounts for,
/// and megabytes a client that stopped reading could sit on before `--session-buffer-bytes`
/// notices.
const SESSION_SEND_BUFFER: i32 = 128 * 1024;

/// Requests one connection may have applied in one turn; the rest wait for a later turn, so
/// a client's pipelined requests cannot lengthen a turn for everybody else without bound.
/// What a turn says to a room goes out in one write per member at the turn's end: with 16,
/// a burst in a room of 1000 went out 15 lines per write, and the kernel's cost per write
/// made each delivery cost 0.85 µs of CPU against InspIRCd's 0.45; with 64, 50 lines per
/// write and 0.30 to 0.42 µs (`chatload ... --only fanout`, README).
pub const TURN_BUDGET: u32 = 64;

/// A request's result waiting to be sent: `(slab key, generation, held slot, result)`.
type StagedAnswer = (usize, u64, u64, Applied);

/// A front-end and the socket it listens on.
pub struct Listening {
    pub socket: TcpListener,
    pub frontend: Box<dyn Frontend>,
    /// Flood limits of each session (persistent front-ends); none: no limit.
    pub flood: Option<crate::flood::Limits>,
    /// Its connections begin with a PROXY protocol header (`--proxy-protocol`, the protocol
    /// ports only).
    pub proxy_protocol: bool,
    /// Its connections speak TLS (with the reactor's certificates).
    pub tls: bool,
}

pub struct Reactor {
    poll: Poll,
    listening: Vec<Listening>,
    /// Each listener's front-end as the metrics index session front-ends (None: the
    /// messenger, the admin page): looked up once, not per message.
    metered: Vec<Option<usize>>,
    /// False once shutdown began: the listeners are no longer watched.
    accepting: bool,
    /// Set while `accept` fails for lack of descriptors: when to try again.
    accept_retry: Option<Instant>,
    signals: Signals,
    connections: Slab<Connection>,
    /// `(when, slab key)`: one entry per connection (its `timer`), so at most
    /// `--max-connections` entries.
    timers: BTreeSet<(Instant, usize)>,
    next_generation: u64,
    core: Core,
    /// Answers waiting for the turn's commit.
    staged: Vec<StagedAnswer>,
    /// Requests whose storage work runs beside the reactor, by ticket: where the answer goes
    /// and which front-end makes it. Bounded by the storage workers' queue.
    later: HashMap<Ticket, (usize, u64, u64, usize)>,
    console: Console,
    config: Config,
    shutdown_deadline: Option<Instant>,
    /// With `--durability full`: answers held until their commit is synced to disk.
    sync_gate: Option<SyncGate>,
    delivered: Vec<DeliveryMark>,
    metrics: std::sync::Arc<Metrics>,
    doorbell: std::sync::Arc<Doorbell>,
    /// Counts the loop's turns (for each connection's share of a turn).
    turn: u64,
    /// Connections with something queued this turn: each is flushed once, at the end of the
    /// turn. Bounded by the connections (a connection is listed once while `dirty`).
    dirty: Vec<usize>,
    /// Connections to read and serve again next turn (`Connection::runnable`), listed once.
    runnable: Vec<usize>,
    /// Emptied lists kept for their memory: the core's notices and events are swapped
    /// into them every turn (see [`reuse`]).
    spare_notices: Vec<(SessionId, crate::core::Notice)>,
    spare_events: Vec<Event>,
    /// The certificate and key of the TLS ports (`--tls-cert`, `--tls-key`).
    certificates: Option<crate::tls::Certificates>,
}

/// Answers that promise durability wait here for the syncer.
pub struct SyncGate {
    syncer: Syncer,
    /// Number of the last commit handed to the syncer.
    commits: u64,
    /// `(commit number, answers)` in commit order; at most one entry per turn whose commit is
    /// not yet synced, each holding at most [`MAX_UNANSWERED`] answers per open connection.
    waiting: VecDeque<(u64, Vec<StagedAnswer>)>,
}

impl SyncGate {
    pub fn new(syncer: Syncer) -> SyncGate {
        SyncGate {
            syncer,
            commits: 0,
            waiting: VecDeque::new(),
        }
    }
}

impl Reactor {
    pub fn new(
        Poller { poll, doorbell }: Poller,
        mut listening: Vec<Listening>,
        mut signals: Signals,
        core: Core,
        config: Config,
        sync_gate: Option<SyncGate>,
        metrics: std::sync::Arc<Metrics>,
    ) -> io::Result<Reactor> {
        for (n, listener) in listening.iter_mut().enumerate() {
            poll.registry().register(
                &mut listener.socket,
                Token(LISTENERS - n),
                Interest::READABLE,
            )?;
        }
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        let metered = listening
            .iter()
            .map(|l| crate::metrics::session_frontend(l.frontend.name()))
            .collect();
        Ok(Reactor {
            poll,
            metered,
            listening,
            accepting: true,
            accept_retry: None,
            signals,
            connections: Slab::with_capacity(config.max_connections.min(4096) as usize),
            timers: BTreeSet::new(),
            next_generation: 0,
            core,
            staged: Vec::new(),
            later: HashMap::new(),
            console: Console::default(),
            config,
            shutdown_deadline: None,
            sync_gate,
            delivered: Vec::new(),
            metrics,
            doorbell,
            turn: 0,
            dirty: Vec::new(),
            runnable: Vec::new(),
            spare_notices: Vec::new(),
            spare_events: Vec::new(),
            certificates: None,
        })
    }

    /// The certificate and key the TLS ports serve (reloaded on SIGHUP).
    pub fn use_certificates(&mut self, certificates: crate::tls::Certificates) {
        self.certificates = Some(certificates);
    }

    /// The console, for lines printed before the loop starts.
    pub fn console(&mut self) -> &mut Console {
        &mut self.console
    }

    /// Runs until SIGINT or SIGTERM, then finishes what is in flight and commits.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        // Deliveries owed since before a restart start in the first turn.
        self.end_turn(Instant::now());
        loop {
            self.turn += 1;
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            // One reading of the clock for the events' writes (a read of it per write was
            // half a percent of a private message's cost).
            let woke = Instant::now();
            for event in events.iter() {
                match event.token() {
                    WAKER => {
                        self.doorbell.answer();
                        self.core.collect_reports(Instant::now());
                        self.core.collect_bus();
                        self.collect_beside();
                        self.collect_synced();
                    }
                    SIGNALS => self.on_signals(),
                    Token(n) if n > LISTENERS - self.listening.len() && n <= LISTENERS => {
                        self.accept_all(LISTENERS - n)
                    }
                    Token(key) => {
                        if event.is_read_closed() || event.is_error() {
                            if let Some(conn) = self.connections.get_mut(key) {
                                conn.hung_up = true;
                            }
                        }
                        self.on_ready(key, woke)
                    }
                }
            }
            self.serve_runnable();
            let now = Instant::now();
            if self.accept_retry.is_some_and(|at| at <= now) {
                self.retry_accept();
            }
            self.fire_timers(now);
            self.core.fire_timers(now);
            self.end_turn(now);
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
        // Work the last turn made for the next one (a written private message's report, a
        // connection with requests left, answers to commit).
        if self.core.turn_has_work() || !self.runnable.is_empty() || !self.staged.is_empty() {
            return Some(Duration::ZERO);
        }
        let next = [
            self.timers.first().map(|(at, _)| *at),
            self.core.next_deadline(),
            self.shutdown_deadline,
            self.accept_retry,
            crate::console::left_out_due(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        Some(next.saturating_duration_since(Instant::now()))
    }

    /// Accepts until the queue of listener `n` is empty. Readiness is edge-triggered: a queue
    /// left non-empty raises no new event, so every failure that stops this loop early must
    /// arrange another try (`accept_retry`).
    fn accept_all(&mut self, n: usize) {
        if !self.accepting {
            return;
        }
        loop {
            match self.listening[n].socket.accept() {
                Ok((stream, peer)) => self.admit(n, stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_transient_accept_error(&e) => {
                    // The peer gave up while queued: nothing to serve, take the next one.
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connections stay queued in the
                    // kernel until a descriptor frees up; try again then, or soon.
                    if self.accept_retry.is_none() {
                        log::warn!(
                            "accept on the {} port failed: {e}; retrying as descriptors free up",
                            self.listening[n].frontend.name()
                        );
                    }
                    self.accept_retry = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn retry_accept(&mut self) {
        self.accept_retry = None;
        for n in 0..self.listening.len() {
            self.accept_all(n);
        }
    }

    fn admit(&mut self, n: usize, stream: TcpStream, peer: SocketAddr) {
        if self.connections.len() >= self.config.max_connections as usize {
            crate::console::log_rate_limited(
                log::Level::Warn,
                "refused connections",
                format_args!(
                    "refused connection from {peer}: {} connections open (--max-connections)",
                    self.connections.len()
                ),
            );
            return;
        }
        let entry = self.connections.vacant_entry();
        let key = entry.key();
        let frontend = &self.listening[n].frontend;
        let mode = frontend.mode();
        self.next_generation += 1;
        let generation = generation(self.next_generation, key);
        // A persistent connection too, until its session is established.
        let deadline = Some(Instant::now() + self.config.idle_timeout());
        if mode == Mode::Persistent {
            let _ = stream.set_nodelay(true);
            set_session_socket_options(&stream);
        }
        let proxy_protocol = self.listening[n].proxy_protocol;
        let transport = match (&self.certificates, self.listening[n].tls) {
            (Some(certificates), true) => {
                match Transport::tls(stream, certificates.config(), proxy_protocol) {
                    Ok(transport) => transport,
                    Err(e) => {
                        log::warn!("refused TLS connection from {peer}: {e}");
                        return;
                    }
                }
            }
            _ => Transport::Plain(stream),
        };
        let mut conn = Connection::new(transport, n, mode, peer, deadline, generation);
        conn.pacing = frontend.pacing(generation);
        conn.pause = self.config.chat_pause();
        conn.awaiting_proxy_header = proxy_protocol;
        if mode == Mode::Persistent {
            conn.flood = self.listening[n]
                .flood
                .map(|limits| Bucket::new(limits, Instant::now()));
        }
        entry.insert(conn);
        self.schedule(key);
        // Clients write their request right after connecting, so it is often already here:
        // reading now saves a trip through poll, and a per-operation connection whose request
        // was whole is never watched at all (its answer fits the empty socket buffer). A
        // session always reads on. Registering after the read loses nothing: epoll reports
        // the readiness a socket already has when it is added.
        self.on_ready(key, Instant::now());
        if self
            .connections
            .get(key)
            .is_some_and(|c| c.state == State::Reading)
        {
            self.watch(key);
        }
    }

    /// Adds the connection to the poll set, once: from then on its readiness drives it.
    fn watch(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        if conn.watched {
            return;
        }
        match self.poll.registry().register(
            conn.transport.socket_mut(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            Ok(()) => conn.watched = true,
            Err(e) => {
                let why = format!("cannot watch connection from {}: {e}", conn.peer);
                self.close(key, Some(why));
            }
        }
    }

    /// Puts the connection's one timer entry at its next wake-up time.
    fn schedule(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        let at = conn.next_wake();
        if let Some(old) = std::mem::replace(&mut conn.timer, at) {
            self.timers.remove(&(old, key));
        }
        if let Some(at) = at {
            self.timers.insert((at, key));
        }
    }

    /// Lists connection `key` to be read and served again next turn.
    fn make_runnable(&mut self, key: usize) {
        self.connections[key].stalled = false;
        list_once(&mut self.connections, &mut self.runnable, key, |c| {
            &mut c.runnable
        });
    }

    /// Reads and serves the connections that stopped with requests possibly left, each up to
    /// its share of this turn; those with still more are listed again for the next.
    fn serve_runnable(&mut self) {
        let runnable = take_listed(&mut self.connections, &mut self.runnable, |c| {
            &mut c.runnable
        });
        for &key in &runnable {
            self.try_frame(key);
            if self.connections.contains(key) {
                self.read(key);
            }
        }
        reuse(&mut self.runnable, runnable);
    }

    /// Notes that connection `key` has something new to write at the end of the turn.
    fn mark_dirty(&mut self, key: usize) {
        list_once(&mut self.connections, &mut self.dirty, key, |c| {
            &mut c.dirty
        });
    }

    /// Writes every connection that had something queued this turn: once each, many messages
    /// per write. A private message around the mailbox that this first try does not write
    /// whole is stored (`Core::store_unwritten`): in memory alone it would not outlive a
    /// crash. Only here, once every notice of the turn is queued, so that all of a recipient's
    /// unwritten messages are stored together, in their order.
    fn flush_dirty(&mut self, now: Instant) {
        let dirty = take_listed(&mut self.connections, &mut self.dirty, |c| &mut c.dirty);
        for &key in &dirty {
            self.write(key, now);
            if let Some(conn) = self.connections.get_mut(key) {
                let unstored = conn.take_unstored();
                if !unstored.is_empty() {
                    self.core.store_unwritten(unstored);
                }
            }
        }
        reuse(&mut self.dirty, dirty);
    }

    fn on_ready(&mut self, key: usize, now: Instant) {
        let Some(conn) = self.connections.get(key) else {
            return;
        };
        if conn.state == State::Reading {
            self.read(key);
        }
        if self.connections.contains(key) {
            self.write(key, now);
        }
    }

    /// Reads and frames what the socket has, one read at a time (a chat client of the original
    /// framing delimits its messages by its writes).
    fn read(&mut self, key: usize) {
        loop {
            let Some(conn) = self.connections.get_mut(key) else {
                return;
            };
            if conn.state != State::Reading || conn.awaiting_storage {
                return;
            }
            if conn.held >= MAX_UNANSWERED {
                conn.stalled = true;
                return;
            }
            if conn.throttled_until.is_some() {
                return;
            }
            if conn.served_out(self.turn, TURN_BUDGET) {
                self.make_runnable(key);
                return;
            }
            let limit = if conn.awaiting_proxy_header {
                proxy_header::MAX_HEADER
            } else {
                self.listening[conn.frontend].frontend.read_limit()
            };
            let read = conn.read_once(limit);
            let served_before = conn.served_in(self.turn);
            if conn.transport.handshake_just_finished() {
                self.metrics.tls_handshake(true);
            }
            match read {
                Ok(Received::Bytes) => self.try_frame(key),
                Ok(Received::AllThereWas) => {
                    self.try_frame(key);
                    let Some(conn) = self.connections.get_mut(key) else {
                        return;
                    };
                    // A client that sent one request waits for its answer: another read would
                    // only say it would block. One that sent several streams them: reading on
                    // takes what came while they were served into this turn, and their
                    // answers and what they told others into this turn's writes (a room's
                    // burst goes out 50 lines a write to each member, not 40).
                    if conn.served_in(self.turn) - served_before <= 1 {
                        conn.caught_up_if_served();
                        return;
                    }
                }
                Ok(Received::Nothing) => {
                    conn.caught_up_if_served();
                    return;
                }
                Err(e) => {
                    let peer = conn.peer;
                    self.close(
                        key,
                        Some(format!("connection from {peer} failed while reading: {e}")),
                    );
                    return;
                }
            }
        }
    }

    /// Applies every whole request buffered; otherwise arranges to wait or rejects.
    fn try_frame(&mut self, key: usize) {
        let now = Instant::now();
        loop {
            let Some(conn) = self.connections.get_mut(key) else {
                return;
            };
            if conn.state != State::Reading || conn.awaiting_storage {
                return;
            }
            if conn.awaiting_proxy_header {
                match proxy_header::parse(&conn.buf) {
                    Header::Incomplete if conn.eof => {
                        let why = format!(
                            "connection from {} ended inside its PROXY header",
                            conn.peer
                        );
                        self.close(key, Some(why));
                        return;
                    }
                    Header::Incomplete => return,
                    Header::Complete { len, source } => {
                        conn.buf.drain(..len);
                        conn.awaiting_proxy_header = false;
                        if let Some(client) = source {
                            conn.peer = client;
                        }
                        if conn.transport.is_tls() {
                            // What came after the header is the TLS handshake's.
                            let rest = std::mem::take(&mut conn.buf);
                            if let Err(e) = conn.transport.end_raw(&rest) {
                                let why = format!("TLS from {}: {e}", conn.peer);
                                self.close(key, Some(why));
                                return;
                            }
                        }
                        continue;
                    }
                    Header::Invalid(why) => {
                        let why = format!("closed connection from {}: {why}", conn.peer);
                        self.close(key, Some(why));
                        return;
                    }
                }
            }
            if conn.buf.is_empty() && conn.eof && conn.mode == Mode::Persistent {
                // End of file on a session: the user left.
                self.close(key, None);
                return;
            }
            let input = Input {
                session: conn.generation,
                buf: &conn.buf,
                eof: conn.eof,
                grace_over: conn.grace_deadline.is_some_and(|at| at <= now),
            };
            let framing = self.listening[conn.frontend].frontend.frame(&input);
            if matches!(framing, Framing::Complete(_) | Framing::Skip { .. })
                && !self.may_serve(key, now)
            {
                return;
            }
            let conn = &mut self.connections[key];
            let frontend = &mut self.listening[conn.frontend].frontend;
            match framing {
                Framing::Incomplete => {
                    if conn.eof && conn.mode == Mode::Persistent {
                        let why = format!(
                            "{} connection from {} ended inside a request",
                            frontend.name(),
                            conn.peer
                        );
                        self.close(key, Some(why));
                    }
                    return;
                }
                Framing::AwaitGrace(grace) => {
                    if conn.grace_deadline.is_none() {
                        conn.grace_deadline = Some(now + grace);
                        self.schedule(key);
                    }
                    return;
                }
                Framing::Complete(len) => {
                    let caller = Caller {
                        peer: conn.peer,
                        session: conn.generation,
                        tls: conn.transport.is_tls(),
                    };
                    // The answer's place comes first: what the request makes the core tell
                    // sessions (this one's included) goes behind it.
                    let slot = conn.hold();
                    let applied = frontend.apply(&conn.buf[..len], &caller, &mut self.core, now);
                    conn.pacing = frontend.pacing(conn.generation);
                    if conn.pacing == Pacing::Stream {
                        conn.paused_until = None;
                    }
                    conn.buf.drain(..len);
                    conn.grace_deadline = None;
                    if conn.mode == Mode::PerOperation {
                        conn.state = State::Staged;
                    }
                    let generation = conn.generation;
                    match applied.later {
                        Some(ticket) => {
                            let place = (key, generation, slot, conn.frontend);
                            self.later.insert(ticket, place);
                            conn.awaiting_storage = conn.mode == Mode::Persistent;
                        }
                        None => self.staged.push((key, generation, slot, applied)),
                    }
                    self.note_established(key, generation);
                    self.tell_sessions();
                }
                Framing::Skip { len, reply } => {
                    conn.buf.drain(..len);
                    let slot = conn.hold();
                    self.staged
                        .push((key, conn.generation, slot, Applied::read_only(reply)));
                }
                Framing::Refuse(reply) => {
                    conn.buf.clear();
                    if conn.mode == Mode::PerOperation {
                        conn.state = State::Staged;
                    }
                    let slot = conn.hold();
                    self.staged.push((
                        key,
                        conn.generation,
                        slot,
                        Applied::read_only(reply.then_close()),
                    ));
                    return;
                }
                Framing::Close(why) => {
                    let why = format!(
                        "closed {} connection from {}: {why}",
                        frontend.name(),
                        conn.peer
                    );
                    self.end_session(key, why);
                    return;
                }
            }
            if self.connections[key].mode == Mode::PerOperation {
                return;
            }
        }
    }

    /// Whether connection `key` may have one more whole request served now: not with
    /// [`MAX_UNANSWERED`] answers out (releasing one resumes it), nor past its share of the
    /// turn (it goes on next turn), nor over its flood limit (it goes on when a token comes
    /// back; told the first time; disconnected if it never catches up).
    fn may_serve(&mut self, key: usize, now: Instant) -> bool {
        let conn = &mut self.connections[key];
        if conn.held >= MAX_UNANSWERED {
            conn.stalled = true;
            return false;
        }
        if conn.served_out(self.turn, TURN_BUDGET) {
            self.make_runnable(key);
            return false;
        }
        let verdict = match conn.flood.as_mut() {
            Some(bucket) => bucket.take(now),
            None => Verdict::Serve,
        };
        match verdict {
            Verdict::Serve => {
                conn.serve(self.turn, TURN_BUDGET);
                true
            }
            Verdict::Wait { until, first } => {
                conn.throttled_until = Some(until);
                if first {
                    self.tell_slowed(key);
                }
                self.schedule(key);
                false
            }
            Verdict::Disconnect => {
                let frontend = &self.listening[conn.frontend].frontend;
                self.metrics.refused("flood");
                let why = format!(
                    "disconnected {} session from {}: over its flood limit for longer than \
                     --flood-disconnect-secs",
                    frontend.name(),
                    conn.peer
                );
                self.end_session(key, why);
                false
            }
        }
    }

    /// Connection `key` went over its flood limit: counted, logged (a few lines a second at
    /// most) and told.
    fn tell_slowed(&mut self, key: usize) {
        let conn = &mut self.connections[key];
        let frontend = &self.listening[conn.frontend].frontend;
        self.metrics.rate_limited(frontend.name());
        crate::console::note_rate_limited(
            "flood limits",
            format!(
                "{} session from {} is over its flood limit: slowed down",
                frontend.name(),
                conn.peer
            ),
        );
        if let Some(bytes) = frontend.slow_down(conn.generation) {
            conn.push(Bytes::Owned(bytes), None, Kind::Kept);
            self.mark_dirty(key);
        }
    }

    /// Writes what the connection may write now; reports private messages written; closes a
    /// connection that is done or whose client stopped reading. `now`: the turn's, not the
    /// clock's at each write.
    fn write(&mut self, key: usize, now: Instant) {
        let conn = &mut self.connections[key];
        let queued_before = conn.queued;
        let result = conn.flush(now, &mut self.delivered);
        let paused = conn.paused_until.is_some();
        let (peer, queued, state) = (conn.peer, conn.queued, conn.state);
        let metered = self.metered[conn.frontend];
        if let Some(frontend) = metered {
            self.metrics
                .written(frontend, queued_before.saturating_sub(queued) as u64);
        }
        for mark in self.delivered.drain(..) {
            self.core.session_report(
                Report {
                    job: mark.job,
                    index: mark.index,
                    outcome: Outcome::Delivered,
                    job_done: mark.last,
                },
                now,
            );
        }
        match result {
            Ok(true) if state == State::Closing => self.close(key, None),
            Ok(_) if queued > self.config.session_buffer_bytes as usize => {
                if let Some(frontend) = metered {
                    self.metrics.slow_consumer(frontend);
                }
                self.end_session(
                    key,
                    format!(
                        "disconnected {peer}: {queued} bytes wait for it (--session-buffer-bytes); it stopped reading"
                    ),
                )
            }
            Ok(_) => {
                if paused {
                    self.schedule(key);
                }
                if self.connections[key].write_blocked() {
                    // The socket buffer is full: writable readiness says when to go on.
                    self.watch(key);
                }
            }
            Err(e) => self.close(key, Some(format!("could not write to {peer}: {e}"))),
        }
    }

    /// Closes a connection on the server's own account. A persistent connection gets its
    /// front-end's farewell first (unless a message is half written) and is then reset: some
    /// clients (the canvas's original) notice only a reset, never a clean close.
    fn end_session(&mut self, key: usize, why: String) {
        let conn = &mut self.connections[key];
        if conn.mode == Mode::Persistent {
            if let Some(farewell) = self.listening[conn.frontend].frontend.farewell() {
                if conn.written == 0 {
                    // Best effort, non-blocking: a client that stopped reading may not get it.
                    let _ = conn
                        .transport
                        .write_vectored(&[std::io::IoSlice::new(&farewell)]);
                    let _ = conn.transport.flush_waiting();
                }
                set_linger_zero(conn.transport.socket());
            }
        }
        self.close(key, Some(why));
    }

    fn close(&mut self, key: usize, why: Option<String>) {
        if let Some(why) = why {
            crate::console::note_rate_limited("closed connections", why);
        }
        // Closing the socket removes it from the epoll set; no deregister call is needed.
        let mut conn = self.connections.remove(key);
        if conn.transport.handshake_unfinished() {
            self.metrics.tls_handshake(false);
        }
        if let Some(at) = conn.timer {
            self.timers.remove(&(at, key));
        }
        if conn.mode == Mode::Persistent {
            if conn.established {
                let name = self.listening[conn.frontend].frontend.name();
                self.metrics.session(name, -1);
            }
            let unwritten: Vec<DeliveryMark> = conn.unwritten_marks().collect();
            self.undeliverable(unwritten);
            let frontend = &mut self.listening[conn.frontend].frontend;
            if let Some(line) = frontend.closed(conn.generation, &mut self.core) {
                self.console.line(&line);
            }
        }
        if conn.state == State::Closing {
            conn.transport.close_notify();
            conn.discard_input();
        }
        drop(conn);
        // A descriptor is free: connections queued while there were none can come in now.
        if self.accept_retry.is_some() {
            self.retry_accept();
        }
    }

    /// Reports the private messages a session will never write: the first of each job fails
    /// it, and the messages stay in the mailbox.
    fn undeliverable(&mut self, marks: Vec<DeliveryMark>) {
        let mut failed = HashSet::new();
        let now = Instant::now();
        for mark in marks {
            if failed.insert(mark.job) {
                self.core.session_report(
                    Report {
                        job: mark.job,
                        index: mark.index,
                        outcome: Outcome::Failed("the session ended".into()),
                        job_done: true,
                    },
                    now,
                );
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let conn = &mut self.connections[key];
            conn.timer = None;
            if conn.throttled_until.is_some_and(|t| t <= now) {
                conn.throttled_until = None;
                self.make_runnable(key);
            }
            let conn = &self.connections[key];
            if conn.paused_until.is_some_and(|p| p <= now) {
                self.write(key, now);
            }
            let Some(conn) = self.connections.get(key) else {
                continue;
            };
            if conn.state == State::Reading && conn.grace_deadline.is_some_and(|g| g <= now) {
                self.try_frame(key);
            }
            let Some(conn) = self.connections.get(key) else {
                continue;
            };
            if conn.deadline.is_some_and(|d| d <= now) && conn.state != State::Staged {
                let why = match conn.state {
                    State::Closing => {
                        format!("closed {}: it did not read its answer in time", conn.peer)
                    }
                    _ if conn.mode == Mode::Persistent => format!(
                        "closed {}: no session started within the idle timeout",
                        conn.peer
                    ),
                    _ => format!(
                        "closed {}: no whole request within the idle timeout ({} bytes received)",
                        conn.peer,
                        conn.buf.len()
                    ),
                };
                if conn.mode == Mode::Persistent && conn.state == State::Reading {
                    self.end_session(key, why);
                } else {
                    self.close(key, Some(why));
                }
            } else if conn.timer.is_none() {
                self.schedule(key);
            }
        }
    }

    /// Ends a turn: commits, then sets off the deliveries the turn started (timers and
    /// reports start some too, in turns that commit nothing).
    fn end_turn(&mut self, now: Instant) {
        self.commit_turn(now);
        self.core.dispatch();
        self.flush_dirty(now);
        let mut written = std::mem::take(&mut self.spare_events);
        self.core.take_write_events_into(&mut written);
        self.report(&mut written);
        reuse(&mut self.spare_events, written);
    }

    /// Commits the turn's writes, then releases the answers, the console lines and what the
    /// core has to tell sessions.
    fn commit_turn(&mut self, now: Instant) {
        if self.staged.is_empty() && !self.core.turn_has_work() {
            return;
        }
        let (committed, mut events) = self.core.end_turn(now);
        if let Err(e) = &committed {
            log::error!("commit failed, the turn's writes were rolled back: {e}");
            // SQLite's words for a full disk or `--max-db-pages`; PostgreSQL's for a full disk.
            let full = ["database or disk is full", "No space left on device"]
                .iter()
                .any(|words| e.contains(words));
            self.metrics.refused(if full {
                "database_full"
            } else {
                "storage_failed"
            });
        }
        let mut held = Vec::new();
        let mut staged = std::mem::take(&mut self.staged);
        for (key, generation, slot, applied) in staged.drain(..) {
            let wrote = applied.if_not_committed.is_some() && applied.durable;
            match (
                &committed,
                wrote,
                applied.stored_beside,
                self.sync_gate.is_some(),
            ) {
                // Committed beside the reactor: this turn's commit does not concern it.
                (_, _, true, true) | (Ok(()), true, _, true) => {
                    held.push((key, generation, slot, applied))
                }
                (_, _, true, false) => self.resolve(key, generation, slot, applied, true),
                _ => self.resolve(key, generation, slot, applied, committed.is_ok()),
            }
        }
        if let (false, Some(gate)) = (held.is_empty(), self.sync_gate.as_mut()) {
            gate.commits += 1;
            gate.syncer.request(gate.commits);
            gate.waiting.push_back((gate.commits, held));
        }
        reuse(&mut self.staged, staged);
        self.report(&mut events);
        self.tell_sessions();
    }

    /// Encodes the core's notices and queues them on their sessions' connections, to be
    /// written at the end of the turn. A client paced one message per write, which the
    /// server's own pacing may leave behind, loses droppable messages (broadcasts) past half
    /// its `--session-buffer-bytes`, never a private message; any other client that lets its
    /// buffer fill is disconnected (`write`).
    fn tell_sessions(&mut self) {
        let mut notices = std::mem::take(&mut self.spare_notices);
        self.core.take_notices_into(&mut notices);
        if notices.is_empty() {
            self.spare_notices = notices;
            return;
        }
        let mut lost = Vec::new();
        let soft_limit = self.config.session_buffer_bytes as usize / 2;
        for (session, notice) in notices.drain(..) {
            let mark = match &notice {
                crate::core::Notice::Private { delivery, .. } => Some(*delivery),
                _ => None,
            };
            let key = key_of(session);
            let Some(conn) = self
                .connections
                .get_mut(key)
                .filter(|conn| conn.generation == session)
            else {
                lost.extend(mark);
                continue;
            };
            let Some(bytes) = self.listening[conn.frontend]
                .frontend
                .encode(session, &notice)
            else {
                lost.extend(mark);
                continue;
            };
            let kind = kind_of(&notice);
            if conn.pacing == Pacing::OneMessagePerWrite && conn.queued > soft_limit {
                let dropped = conn.drop_droppable() + usize::from(kind == Kind::Droppable);
                if dropped > 0 {
                    let name = self.listening[conn.frontend].frontend.name();
                    self.metrics.broadcasts_dropped(name, dropped as u64);
                    crate::console::note_rate_limited(
                        "broadcasts dropped",
                        format!(
                            "dropped {dropped} broadcasts to {}: it reads slower than they come",
                            conn.peer
                        ),
                    );
                }
                if kind == Kind::Droppable {
                    continue;
                }
            }
            conn.push(Bytes::Shared(bytes), mark, kind);
            if let (Some(frontend), Some(delivery)) =
                (self.metered[conn.frontend], delivery_kind(&notice))
            {
                self.metrics.delivered(frontend, delivery);
            }
            if matches!(notice, crate::core::Notice::Ended(_)) {
                // Told why; closed once that is written (or at its deadline).
                conn.state = State::Closing;
                conn.deadline = Some(Instant::now() + self.config.idle_timeout());
                self.schedule(key);
            }
            self.mark_dirty(key);
        }
        reuse(&mut self.spare_notices, notices);
        self.undeliverable(lost);
    }

    /// Stages the answers of requests whose storage work beside the reactor is done (the
    /// front-end forgets each, even when its connection has gone meanwhile).
    fn collect_beside(&mut self) {
        for answer in self.core.collect_beside(Instant::now()) {
            let ticket = answer.ticket;
            let Some((key, generation, slot, frontend)) = self.later.remove(&ticket) else {
                debug_assert!(
                    false,
                    "a result for storage ticket {ticket}, never deferred"
                );
                continue;
            };
            let mut applied = self.listening[frontend]
                .frontend
                .finish(ticket, answer.result);
            applied.epoch = answer.epoch;
            // Committed by a storage worker: only the durability barrier concerns it. Made in
            // this turn (after its secrets were checked): the turn's commit does too.
            applied.stored_beside = answer.beside && applied.if_not_committed.is_some();
            self.staged.push((key, generation, slot, applied));
            // A login answered beside the reactor.
            self.note_established(key, generation);
            self.resume_after_storage(key, generation);
        }
    }

    /// A persistent connection's request that waited for storage work is done: its next
    /// requests, buffered or still in the socket, go on (readiness is edge-triggered, so
    /// nothing else would look at them).
    fn resume_after_storage(&mut self, key: usize, generation: u64) {
        match self.connections.get_mut(key) {
            Some(conn) if conn.generation == generation && conn.awaiting_storage => {
                conn.awaiting_storage = false;
            }
            _ => return,
        }
        self.try_frame(key);
        self.read(key);
    }

    /// Marks connection `key` (if it is still `generation`) established once its front-end
    /// says its session is: its login deadline goes.
    fn note_established(&mut self, key: usize, generation: u64) {
        let Some(conn) = self.connections.get_mut(key) else {
            return;
        };
        let frontend = &self.listening[conn.frontend].frontend;
        if conn.generation != generation
            || conn.mode != Mode::Persistent
            || conn.established
            || !frontend.established(generation)
        {
            return;
        }
        conn.deadline = None;
        conn.established = true;
        self.metrics.session(frontend.name(), 1);
        // Its login deadline's timer goes too: thousands of stale timers firing at once would
        // stall a turn.
        self.schedule(key);
    }

    /// Releases answers whose commits the syncer has made durable, and answers with their
    /// error codes those whose barrier failed without a verdict (PostgreSQL's connection was
    /// lost) or that were committed in another epoch of the server than the barrier's (it
    /// restarted, or failed over, since). A failed fsync stops the server: the answers it
    /// covered are never sent, and nothing written after it can be promised either.
    fn collect_synced(&mut self) {
        let Some(gate) = self.sync_gate.as_mut() else {
            return;
        };
        let (synced, epoch, lost) = match gate.syncer.progress() {
            Progress::Synced {
                synced,
                epoch,
                lost,
            } => (synced, epoch, lost),
            Progress::Failed(why) => {
                self.console.flush();
                fatal(&format!(
                    "{why}; the writes it covered may not be on disk, so the server stops \
                     without answering them (a restart re-reads what is)"
                ))
            }
        };
        let mut ready = Vec::new();
        while gate
            .waiting
            .front()
            .is_some_and(|(commit, _)| *commit <= synced.max(lost))
        {
            let (commit, answers) = gate.waiting.pop_front().expect("checked front");
            ready.extend(answers.into_iter().map(|answer| (commit, answer)));
        }
        let mut unconfirmed = 0;
        for (commit, (key, generation, slot, applied)) in ready {
            let durable = commit > lost && applied.epoch == epoch;
            unconfirmed += usize::from(!durable);
            self.resolve(key, generation, slot, applied, durable);
        }
        if unconfirmed > 0 {
            log::warn!(
                "{unconfirmed} writes answered with their error codes: no durability barrier \
                 of the database server's current life covered them (they may or may not be \
                 stored)"
            );
        }
    }

    /// Sends the answer a request earned, given whether its writes made it.
    fn resolve(&mut self, key: usize, generation: u64, slot: u64, applied: Applied, written: bool) {
        let reply = match (written, applied.if_not_committed) {
            (false, Some(instead)) => instead,
            _ => applied.reply,
        };
        if let (Some(op), Some(&code)) = (applied.counted_as, reply.answer.first()) {
            self.metrics.request(op, code);
        }
        self.release(key, generation, slot, reply);
    }

    /// Prints what happened to messages: deliveries on the console, failures on stderr. The
    /// core reports a delivery or an expiry only once it is committed.
    fn report(&mut self, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            match event {
                Event::Delivered { id, sender, recipient } => {
                    self.console
                        .line_fmt(format_args!("SEND MESSAGE {id} FROM {sender} TO {recipient}"));
                }
                Event::RemovalPostponed { id, recipient, reason } => log::warn!(
                    "message {id} to {recipient} was delivered but its removal did not commit ({reason}); retrying the removal, it is not delivered again"
                ),
                // At most --max-pushes per --push-timeout-ms: one line each.
                Event::PushFailed { recipient, reason } => {
                    log::warn!("push to {recipient} failed, messages stay pending: {reason}")
                }
                Event::AckFailed { sender, id, reason } => crate::console::note_rate_limited(
                    "failed acks",
                    format_args!("ack of message {id} to {sender} failed: {reason}"),
                ),
                Event::Expired { id, sender, recipient } => crate::console::note_rate_limited(
                    "expired messages",
                    format_args!(
                        "message {id} from {sender} to {recipient} waited longer than \
                         --pending-ttl and was dropped"
                    ),
                ),
            }
        }
    }

    fn release(&mut self, key: usize, generation: u64, slot: u64, reply: Reply) {
        if let Some(line) = &reply.console {
            self.console.line(line);
        }
        if let Some(text) = &reply.diagnostic {
            // What clients cause is logged a few lines a second at most, with a count.
            crate::console::note_rate_limited("answers' diagnostics", text);
        }
        let Some(conn) = self
            .connections
            .get_mut(key)
            .filter(|c| c.generation == generation)
        else {
            return;
        };
        conn.fill(slot, reply.answer);
        let resume = conn.stalled && conn.held < MAX_UNANSWERED;
        if conn.mode == Mode::PerOperation || reply.close {
            conn.state = State::Closing;
            conn.deadline = Some(Instant::now() + self.config.idle_timeout());
            self.schedule(key);
        }
        self.mark_dirty(key);
        if resume {
            // Reading stopped at the limit of unanswered requests; readiness is
            // edge-triggered, so what is buffered or arrived meanwhile is looked at next turn.
            self.make_runnable(key);
        }
    }

    fn on_signals(&mut self) {
        let mut stop = false;
        let mut reload = false;
        for signal in self.signals.pending() {
            match signal {
                signal_hook::consts::SIGHUP => reload = true,
                _ => stop = true,
            }
        }
        if reload {
            self.reload_certificates();
        }
        if stop && self.shutdown_deadline.is_none() {
            log::info!("signal received: no new connections; finishing requests in progress");
            self.accepting = false;
            self.accept_retry = None;
            for listener in &mut self.listening {
                let _ = self.poll.registry().deregister(&mut listener.socket);
            }
            // Sessions have nothing in progress: they end now.
            let sessions: Vec<usize> = self
                .connections
                .iter()
                .filter(|(_, conn)| conn.mode == Mode::Persistent)
                .map(|(key, _)| key)
                .collect();
            for key in sessions {
                self.end_session(key, "the server is stopping".into());
            }
            self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_grace());
        }
    }

    /// SIGHUP: the TLS ports' certificate and key are read again; new connections get them,
    /// established ones go on. A file that does not load keeps the pair in use.
    fn reload_certificates(&mut self) {
        let Some(certificates) = &mut self.certificates else {
            log::info!("SIGHUP: no --tls-cert to load again");
            return;
        };
        match certificates.reload() {
            Ok(()) => log::info!("SIGHUP: TLS certificate and key loaded again"),
            Err(e) => log::error!("SIGHUP: kept the TLS certificate in use: {e}"),
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
        let (committed, mut events) = self.core.shut_down(Instant::now());
        self.report(&mut events);
        self.console.flush();
        committed.map_err(|e| io::Error::other(format!("final commit: {e}")))
    }
}

/// Lists connection `key` in `list` unless its `flag` says it is listed already: so a list
/// holds each connection once, and is bounded by the connections.
fn list_once(
    connections: &mut Slab<Connection>,
    list: &mut Vec<usize>,
    key: usize,
    flag: fn(&mut Connection) -> &mut bool,
) {
    let listed = flag(&mut connections[key]);
    if !*listed {
        *listed = true;
        list.push(key);
    }
}

/// Empties `list`, returning the connections still listed (their `flag` set, which is
/// cleared): a key whose connection closed meanwhile, or was reused by a new one, is skipped.
/// Most memory an emptied list keeps for the next turns (a fan-out's turn may have listed
/// far more than a usual one).
const REUSED_BYTES: usize = 64 << 10;

/// Gives an emptied list's memory back to `list`, unless something was listed there
/// meanwhile or it holds more than [`REUSED_BYTES`]: the lists taken every turn then
/// allocate nothing in the usual turn.
fn reuse<T>(list: &mut Vec<T>, mut spare: Vec<T>) {
    spare.clear();
    if list.is_empty() && spare.capacity() * std::mem::size_of::<T>() <= REUSED_BYTES {
        *list = spare;
    }
}

fn take_listed(
    connections: &mut Slab<Connection>,
    list: &mut Vec<usize>,
    flag: fn(&mut Connection) -> &mut bool,
) -> Vec<usize> {
    let mut listed = std::mem::take(list);
    listed.retain(|&key| {
        connections
            .get_mut(key)
            .map(flag)
            .is_some_and(std::mem::take)
    });
    listed
}

/// What may become of a notice queued and not yet written: a newer board or user list makes an
/// older one pointless; a broadcast may be dropped for a client that reads too slowly; the
/// rest (private messages above all) must be written.
fn kind_of(notice: &crate::core::Notice) -> Kind {
    use crate::core::Notice;
    match notice {
        Notice::CanvasBoard { .. } | Notice::UserList(_) => Kind::Superseded,
        Notice::Broadcast { .. } => Kind::Droppable,
        _ => Kind::Kept,
    }
}

/// What a notice written to a session is, as `messenger_session_deliveries_total` counts it
/// (a session's end is not a delivery).
fn delivery_kind(notice: &crate::core::Notice) -> Option<crate::metrics::Delivery> {
    use crate::core::Notice;
    use crate::metrics::Delivery;
    Some(match notice {
        Notice::Private { .. } => Delivery::Private,
        Notice::UserList(_) => Delivery::UserList,
        Notice::Broadcast { .. } => Delivery::Broadcast,
        Notice::RoomMessage { .. } => Delivery::RoomLine,
        Notice::JoinedRoom { .. } | Notice::LeftRoom { .. } | Notice::LeftChat { .. } => {
            Delivery::RoomEvent
        }
        Notice::CanvasBoard { .. } | Notice::CanvasChanges { .. } => Delivery::Canvas,
        Notice::Ended(_) => return None,
    })
}

/// Makes closing `stream` send a reset instead of a FIN.
fn set_linger_zero(stream: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a descriptor we own, with a correctly sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Low bits of a connection's generation that hold its slab key; the others count the
/// connections accepted. A session's id (its connection's generation) so names its connection
/// without a map to look it up in (one cache miss less for every notice: 2026-12-07), and two
/// connections of one slot still differ.
const KEY_BITS: u32 = 20;
const _: () = assert!(crate::config::MAX_CONNECTIONS < 1 << KEY_BITS);

/// The generation of the `count`th connection accepted, in slot `key`.
fn generation(count: u64, key: usize) -> u64 {
    debug_assert!(key < 1 << KEY_BITS, "slab key {key} past --max-connections");
    count << KEY_BITS | key as u64
}

/// The slot of the connection whose generation (or session id) is `generation`.
fn key_of(generation: u64) -> usize {
    (generation & ((1 << KEY_BITS) - 1)) as usize
}

/// TCP keepalive, so that a session whose peer vanished is found and ended, and a bounded
/// kernel send buffer.
fn set_session_socket_options(stream: &TcpStream) {
    let fd = stream.as_raw_fd();
    let options = [
        (libc::SOL_SOCKET, libc::SO_SNDBUF, SESSION_SEND_BUFFER),
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, KEEPALIVE_IDLE_SECS),
        (
            libc::IPPROTO_TCP,
            libc::TCP_KEEPINTVL,
            KEEPALIVE_INTERVAL_SECS,
        ),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, KEEPALIVE_COUNT),
    ];
    for (level, name, value) in options {
        // SAFETY: setsockopt on a descriptor we own, with a correctly sized int value.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }
}

/// Accept errors that concern only the connection being accepted.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EPROTO | libc::EPERM)
    )
}

/// The reactor's `Poll` and the doorbell registered with it, made before the threads that
/// ring it.
pub struct Poller {
    pub poll: Poll,
    pub doorbell: std::sync::Arc<Doorbell>,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        let poll = Poll::new()?;
        let doorbell = std::sync::Arc::new(Doorbell::new(poll.registry())?);
        Ok(Poller { poll, doorbell })
    }
}

/// How deliverers and the syncer wake the reactor: a `mio::Waker` that is written at most once
/// until the reactor answers it. Several threads reporting in the same moment cost one
/// `eventfd` write and one wake-up, not one each.
pub struct Doorbell {
    waker: mio::Waker,
    rung: AtomicBool,
}

impl Doorbell {
    fn new(registry: &Registry) -> io::Result<Doorbell> {
        Ok(Doorbell {
            waker: mio::Waker::new(registry, WAKER)?,
            rung: AtomicBool::new(false),
        })
    }

    /// Called after publishing something for the reactor (a report, a sync).
    pub fn ring(&self) {
        if !self.rung.swap(true, Ordering::AcqRel) {
            // A failed wake means the reactor is gone; nothing is left to tell.
            let _ = self.waker.wake();
        }
    }

    /// Called by the reactor before it looks at what was published: anything published after
    /// this rings again.
    fn answer(&self) {
        // A read-modify-write, not a store: a plain store could become visible only after
        // the reactor's reads of the channels, and a report sent in between would then find
        // the bell still rung and never wake it.
        self.rung.swap(false, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_slot_and_tells_the_slots_connections_apart() {
        let last = crate::config::MAX_CONNECTIONS as usize - 1;
        for key in [0, 1, last] {
            let (first, next) = (generation(1, key), generation(2, key));
            assert_eq!((key_of(first), key_of(next)), (key, key));
            assert_ne!(first, next, "slot {key} reused");
        }
        assert_ne!(generation(1, 2), generation(2, 1));
    }

    #[test]
    fn an_emptied_list_keeps_its_memory_unless_it_grew_past_the_bound_or_was_refilled() {
        let mut list: Vec<u64> = Vec::new();
        reuse(&mut list, Vec::with_capacity(100));
        assert!(list.is_empty() && list.capacity() >= 100, "kept");
        let mut list: Vec<u64> = Vec::new();
        reuse(&mut list, vec![0; REUSED_BYTES / 8 + 1]);
        assert_eq!(list.capacity(), 0, "a fan-out's list is let go");
        let mut list = vec![7u64];
        reuse(&mut list, Vec::with_capacity(100));
        assert_eq!(list, [7], "what was listed meanwhile stays");
    }

    #[test]
    fn a_doorbell_rung_many_times_wakes_the_reactor_once_until_answered() {
        let Poller { mut poll, doorbell } = Poller::new().unwrap();
        let mut events = Events::with_capacity(8);
        let mut wake_ups = || {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            events.iter().filter(|e| e.token() == WAKER).count()
        };
        doorbell.ring();
        doorbell.ring();
        assert_eq!(wake_ups(), 1);
        doorbell.ring();
        assert_eq!(wake_ups(), 0, "not answered yet: no second write");
        doorbell.answer();
        doorbell.ring();
        assert_eq!(wake_ups(), 1);
    }
}
