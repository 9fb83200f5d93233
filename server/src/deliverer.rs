//! The deliverer pool: threads that make the outbound pushes, so the reactor never waits on a
//! listener. Each worker runs many pushes at once as non-blocking state machines on its own mio
//! `Poll`, each with a deadline: a listener that accepts and never reads holds one descriptor
//! until its deadline, never a thread, so hundreds of stuck listeners delay nobody else.
//!
//! A job is a run of one recipient's pushes to one address, one connection each, in order
//! without a round trip through the reactor between two of them, and stopping at the first
//! that fails. A push is connect, write, half-close, then wait for the listener to close its
//! end: that close is what tells a listener that read the push from one that accepted and never
//! read (the bytes of a short push fit in the socket buffer either way).
//!
//! The next push of a job connects as soon as the one ahead of it is written and acknowledged
//! (so it waits in the listener's accept queue behind it, and a listener that takes its
//! connections one at a time takes them in order), but writes its bytes only once the one
//! ahead was delivered. The handshake thus overlaps the listener's read of the push ahead,
//! and a stopped job (a failed push, UNREGISTER, DISCONNECT) never lets a later message
//! through: the listener then finds a connection closed with nothing written. Reports of a
//! job come in order. See [`PUSHES_IN_FLIGHT_PER_JOB`].
//!
//! Limits: at most `capacity` push sockets open over the whole pool, so at most that many jobs
//! in flight (the caller checks [`Pool::has_room`]); a job is given a second socket only while
//! the pool has one to spare. The command channels and the report channel are bounded to what
//! that many jobs can produce.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

/// Names a job in reports and cancellations; chosen by the caller, unique while in flight.
pub type JobId = u64;

/// Most pushes one job may carry.
pub const MAX_PUSHES_PER_JOB: usize = 64;

const WAKER: Token = Token(usize::MAX);

#[derive(Debug)]
pub struct PushJob {
    pub id: JobId,
    pub addr: SocketAddr,
    /// The listener speaks TLS: this configuration trusts its pinned certificate only
    /// (docs/tls.md), made once for the job's pushes.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The encoded pushes, in the order they must arrive.
    pub pushes: Vec<Vec<u8>>,
}

#[derive(Debug)]
pub enum Outcome {
    /// Every byte was written and the listener closed its end.
    Delivered,
    /// Nobody listens at the address (yet).
    Refused,
    /// The push did not finish within the push timeout.
    TimedOut(Duration),
    Failed(io::Error),
    /// The job was cancelled before this push finished.
    Cancelled,
}

#[derive(Debug)]
pub struct Report {
    pub job: JobId,
    /// Which push of the job this is about.
    pub index: usize,
    pub outcome: Outcome,
    /// The last report of its job: nothing more of it is on its way.
    pub job_done: bool,
}

enum Command {
    /// A job and the number of sockets it may hold.
    Push(PushJob, usize),
    Cancel(JobId),
}

struct WorkerHandle {
    commands: Option<Sender<Command>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    /// Jobs given to this worker and not yet reported done.
    load: usize,
    /// Commands sent since the last [`Pool::dispatch`]: the worker is woken then, once.
    unwoken: bool,
}

/// Most jobs handed to one worker with one wake-up. A worker runs all of them at once, so
/// filling one worker first costs no parallelism that matters on a few cores, and saves a
/// wake-up (an `eventfd` write and a context switch) per job.
const JOBS_PER_WAKE: usize = 32;

/// Most pushes of one job open at once: the one being delivered and the next, connected
/// behind it. More would gain little (the listener reads one at a time) and would overflow
/// small accept backlogs; even a backlog of 0 holds the one queued connection.
const PUSHES_IN_FLIGHT_PER_JOB: usize = 2;

/// Longest a report of a push waits before the reactor is woken for it while its job goes on.
const REPORT_DELAY: Duration = Duration::from_millis(2);

pub struct Pool {
    workers: Vec<WorkerHandle>,
    reports: Receiver<Report>,
    /// Which worker runs each job in flight.
    /// Which worker runs each job in flight, and how many sockets it may hold.
    owner: HashMap<JobId, (usize, usize)>,
    /// Sockets given to the jobs in flight.
    sockets: usize,
    capacity: usize,
}

impl Pool {
    /// Starts `size` workers sharing at most `capacity` push sockets, each push bounded by
    /// `timeout`. A worker calls `wake` after reports (see `Worker::announce`).
    pub fn start(
        size: usize,
        capacity: usize,
        timeout: Duration,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Pool> {
        assert!(
            size > 0 && capacity >= size,
            "a pool needs workers and room"
        );
        let (report_tx, reports) = crossbeam_channel::bounded(capacity * MAX_PUSHES_PER_JOB + size);
        let workers = (0..size)
            .map(|n| {
                let poll = Poll::new()?;
                let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
                // Each worker can hold every job in flight plus one cancellation for each.
                let (commands, queue) = crossbeam_channel::bounded(2 * capacity);
                let (report_tx, wake) = (report_tx.clone(), wake.clone());
                let thread = std::thread::Builder::new()
                    .name(format!("deliverer-{n}"))
                    .spawn(move || {
                        Worker {
                            poll,
                            queue,
                            reports: report_tx,
                            wake,
                            timeout,
                            pushes: Slab::new(),
                            deadlines: BTreeSet::new(),
                            jobs: HashMap::new(),
                            accepting: true,
                            unannounced: None,
                            job_ended: false,
                        }
                        .run()
                    })?;
                Ok(WorkerHandle {
                    commands: Some(commands),
                    waker,
                    thread: Some(thread),
                    load: 0,
                    unwoken: false,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Pool {
            workers,
            reports,
            owner: HashMap::new(),
            sockets: 0,
            capacity,
        })
    }

    /// True if one more job may be submitted.
    pub fn has_room(&self) -> bool {
        self.sockets < self.capacity
    }

    /// Queues a job for a worker: one that is to be woken anyway, while it has fewer than
    /// [`JOBS_PER_WAKE`] jobs, else the least loaded. It starts at the next
    /// [`Pool::dispatch`]. The caller checked [`Pool::has_room`].
    pub fn submit(&mut self, job: PushJob) {
        assert!(self.has_room(), "submit without room");
        assert!(job.pushes.len() <= MAX_PUSHES_PER_JOB && !job.pushes.is_empty());
        let waking = self
            .workers
            .iter()
            .position(|w| w.unwoken && w.load < JOBS_PER_WAKE);
        let n = waking.unwrap_or_else(|| {
            (0..self.workers.len())
                .min_by_key(|&n| self.workers[n].load)
                .expect("at least one worker")
        });
        let worker = &mut self.workers[n];
        let id = job.id;
        let window = job
            .pushes
            .len()
            .min(PUSHES_IN_FLIGHT_PER_JOB)
            .min(self.capacity - self.sockets);
        if worker.send(Command::Push(job, window)) {
            worker.load += 1;
            self.owner.insert(id, (n, window));
            self.sockets += window;
        } else {
            log::error!("deliverer-{n} is gone; job {id} dropped");
        }
    }

    /// Cancels a job in flight: its current push is abandoned and no further push starts.
    /// A report with `job_done` still follows. Takes effect at the next [`Pool::dispatch`].
    pub fn cancel(&mut self, job: JobId) {
        if let Some(&(n, _)) = self.owner.get(&job) {
            self.workers[n].send(Command::Cancel(job));
        }
    }

    /// Wakes the workers that were sent commands since the last call, each once.
    pub fn dispatch(&mut self) {
        for worker in self.workers.iter_mut().filter(|w| w.unwoken) {
            worker.unwoken = false;
            // A failed wake means the worker's poll is gone; its thread has ended.
            let _ = worker.waker.wake();
        }
    }

    /// Moves the reports that have arrived into `out`.
    pub fn reports(&mut self, out: &mut Vec<Report>) {
        while let Ok(report) = self.reports.try_recv() {
            if report.job_done {
                if let Some((n, window)) = self.owner.remove(&report.job) {
                    self.sockets -= window;
                    self.workers[n].load -= 1;
                }
            }
            out.push(report);
        }
    }

    /// Lets pushes in flight finish (each within its timeout), then joins the workers.
    pub fn shut_down(&mut self) {
        self.capacity = 0;
        for worker in &mut self.workers {
            worker.commands = None;
            let _ = worker.waker.wake();
        }
        for worker in &mut self.workers {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl WorkerHandle {
    fn send(&mut self, command: Command) -> bool {
        let Some(commands) = &self.commands else {
            return false;
        };
        match commands.try_send(command) {
            Ok(()) => {}
            // The channel holds every job in flight and one cancellation each: full means the
            // caller broke the capacity rule.
            Err(TrySendError::Full(_)) => {
                debug_assert!(false, "deliverer command channel full");
                return false;
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
        self.unwoken = true;
        true
    }
}

enum Stage {
    Connecting,
    /// Connected; the TLS handshake with a pinned listener is under way.
    Handshaking,
    /// Connected, waiting for the push ahead of it in its job to end.
    Connected,
    Writing {
        written: usize,
    },
    /// TLS: the push and the goodbye are sealed into records, written as the socket takes
    /// them.
    Sealed,
    /// Half-closed; waiting for the listener to close its end.
    Draining,
}

struct ActivePush {
    job: JobId,
    index: usize,
    stream: TcpStream,
    /// TLS to a pinned listener: the push's bytes go through it.
    tls: Option<Box<rustls::ClientConnection>>,
    stage: Stage,
    deadline: Instant,
    /// Every push ahead of it in its job was delivered: its bytes may go.
    may_write: bool,
}

/// One push of a job that was started: in flight (`key` names it in the slab) until it has an
/// outcome, then held until every earlier push of its job is reported.
struct Started {
    key: Option<usize>,
    outcome: Option<Outcome>,
}

struct JobState {
    job: PushJob,
    /// Most of its pushes open at once (1 or [`PUSHES_IN_FLIGHT_PER_JOB`]).
    window: usize,
    /// The index of the next push to start.
    next: usize,
    /// The pushes started and not yet reported, in order; the first has index `next - len`.
    started: VecDeque<Started>,
    /// A push failed or the job was cancelled: nothing more starts.
    stopped: bool,
}

impl JobState {
    fn first_unreported(&self) -> usize {
        self.next - self.started.len()
    }
}

struct Worker {
    poll: Poll,
    queue: Receiver<Command>,
    reports: Sender<Report>,
    wake: Arc<dyn Fn() + Send + Sync>,
    timeout: Duration,
    pushes: Slab<ActivePush>,
    /// `(deadline, slab key)` of every push in flight: one entry each.
    deadlines: BTreeSet<(Instant, usize)>,
    jobs: HashMap<JobId, JobState>,
    /// False once the pool stopped sending commands.
    accepting: bool,
    /// When the oldest report the reactor was not yet woken for was sent.
    unannounced: Option<Instant>,
    /// A job ended since the reactor was last woken.
    job_ended: bool,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let next_deadline = self.deadlines.first().map(|&(at, _)| at);
            let announce_by = self.unannounced.map(|since| since + REPORT_DELAY);
            let timeout = [next_deadline, announce_by]
                .into_iter()
                .flatten()
                .min()
                .map(|at| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("deliverer poll failed: {e}");
                return;
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => self.take_commands(),
                    Token(key) => self.advance(key),
                }
            }
            let now = Instant::now();
            self.expire(now);
            self.announce(now);
            if !self.accepting && self.pushes.is_empty() {
                self.announce_now();
                return;
            }
        }
    }

    /// Wakes the reactor for the reports sent since the last wake, when a job has ended (the
    /// reactor may have more work for its recipient) or the oldest report has waited
    /// [`REPORT_DELAY`]. A run of pushes to one listener thus costs the reactor one turn per
    /// few milliseconds, not one per push.
    fn announce(&mut self, now: Instant) {
        match self.unannounced {
            Some(since) if self.job_ended || now >= since + REPORT_DELAY => self.announce_now(),
            _ => {}
        }
    }

    fn announce_now(&mut self) {
        if self.unannounced.take().is_some() {
            self.job_ended = false;
            (self.wake)();
        }
    }

    /// Takes new jobs and cancellations.
    fn take_commands(&mut self) {
        loop {
            match self.queue.try_recv() {
                Ok(Command::Push(job, window)) => {
                    let id = job.id;
                    let state = JobState {
                        job,
                        window,
                        next: 0,
                        started: VecDeque::with_capacity(PUSHES_IN_FLIGHT_PER_JOB),
                        stopped: false,
                    };
                    if self.jobs.insert(id, state).is_some() {
                        debug_assert!(false, "job {id} submitted twice");
                    }
                    self.start_more(id);
                }
                Ok(Command::Cancel(id)) => self.stop(id, None),
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    self.accepting = false;
                    return;
                }
            }
        }
    }

    /// Starts the job's next pushes while its window has room and the push before each one is
    /// known to be queued at the listener ahead of it (see [`acknowledged`]).
    fn start_more(&mut self, id: JobId) {
        loop {
            let Some(state) = self.jobs.get_mut(&id) else {
                return;
            };
            if state.stopped
                || state.next == state.job.pushes.len()
                || state.started.len() == state.window
            {
                return;
            }
            let ahead_is_queued = match state.started.back() {
                None => true,
                Some(Started { key: None, .. }) => true,
                Some(Started { key: Some(key), .. }) => {
                    let push = &self.pushes[*key];
                    matches!(push.stage, Stage::Draining) && acknowledged(&push.stream)
                }
            };
            if !ahead_is_queued {
                return;
            }
            let index = state.next;
            state.next += 1;
            let (addr, tls) = (state.job.addr, state.job.tls.clone());
            state.started.push_back(Started {
                key: None,
                outcome: None,
            });
            let first = state.started.len() == 1;
            match self.connect(id, index, (addr, tls), first) {
                Ok(key) => {
                    if let Some(state) = self.jobs.get_mut(&id) {
                        if let Some(slot) = state.started.back_mut() {
                            slot.key = Some(key);
                        }
                    }
                    // Readiness is edge-triggered: look now in case the connection is there.
                    // (That may start the next push itself, or end the job.)
                    self.advance(key);
                }
                Err(outcome) => {
                    self.settle(id, index, outcome);
                    return;
                }
            }
        }
    }

    /// Opens push `index` of job `id` and registers it; its slab key.
    fn connect(
        &mut self,
        id: JobId,
        index: usize,
        (addr, tls): (SocketAddr, Option<Arc<rustls::ClientConfig>>),
        may_write: bool,
    ) -> Result<usize, Outcome> {
        let tls = match tls {
            None => None,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                let tls = rustls::ClientConnection::new(config, name)
                    .map_err(|e| Outcome::Failed(io::Error::other(e)))?;
                Some(Box::new(tls))
            }
        };
        let mut stream = TcpStream::connect(addr).map_err(classify)?;
        let entry = self.pushes.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(
                &mut stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(Outcome::Failed)?;
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.timeout;
        self.deadlines.insert((deadline, key));
        entry.insert(ActivePush {
            job: id,
            index,
            stream,
            tls,
            stage: Stage::Connecting,
            deadline,
            may_write,
        });
        Ok(key)
    }

    /// Moves a push as far as its socket allows.
    fn advance(&mut self, key: usize) {
        let Some(push) = self.pushes.get_mut(key) else {
            return;
        };
        let job = push.job;
        match step(push, &self.jobs[&job].job.pushes[push.index]) {
            Ok(false) if matches!(push.stage, Stage::Draining) => self.start_more(job),
            Ok(false) => {}
            Ok(true) => self.end_push(key, Outcome::Delivered),
            Err(e) => self.end_push(key, classify(e)),
        }
    }

    /// Ends push `key` with `outcome` (closing its socket).
    fn end_push(&mut self, key: usize, outcome: Outcome) {
        let push = self.pushes.remove(key);
        self.deadlines.remove(&(push.deadline, key));
        // Dropping the stream closes it and takes it out of the poll set.
        drop(push.stream);
        self.settle(push.job, push.index, outcome);
    }

    /// Records the outcome of push `index`, reports what is now reportable in order, and
    /// starts the next pushes or ends the job.
    fn settle(&mut self, id: JobId, index: usize, outcome: Outcome) {
        let failed = !matches!(outcome, Outcome::Delivered);
        let Some(state) = self.jobs.get_mut(&id) else {
            return;
        };
        let position = index - state.first_unreported();
        let slot = &mut state.started[position];
        slot.key = None;
        slot.outcome = Some(outcome);
        if failed {
            self.stop(id, Some(index));
        }
        self.report_settled(id);
        self.reconnect_stalled(id);
        self.start_more(id);
    }

    /// A push started behind another is still connecting when that one has ended: its SYN was
    /// dropped because the listener's accept queue was full (a listener with a backlog of 0
    /// holds one connection), and TCP would try again only after a second. It starts again.
    fn reconnect_stalled(&mut self, id: JobId) {
        let Some(state) = self.jobs.get(&id) else {
            return;
        };
        let Some(Started { key: Some(key), .. }) = state.started.front() else {
            return;
        };
        let key = *key;
        if !matches!(self.pushes[key].stage, Stage::Connecting) {
            return;
        }
        let push = self.pushes.remove(key);
        self.deadlines.remove(&(push.deadline, key));
        drop(push.stream);
        let job = &self.jobs[&id].job;
        let to = (job.addr, job.tls.clone());
        match self.connect(id, push.index, to, push.may_write) {
            Ok(key) => {
                if let Some(slot) = self.jobs.get_mut(&id).and_then(|s| s.started.front_mut()) {
                    slot.key = Some(key);
                }
                self.advance(key);
            }
            Err(outcome) => self.settle(id, push.index, outcome),
        }
    }

    /// Stops job `id`: nothing more starts, and its pushes in flight after `failed` (all of
    /// them if `None`: the job was cancelled) end as cancelled. None of those has written a
    /// byte: a push writes only once every push ahead of it was delivered.
    fn stop(&mut self, id: JobId, failed: Option<usize>) {
        let Some(state) = self.jobs.get_mut(&id) else {
            return;
        };
        state.stopped = true;
        let first = state.first_unreported();
        let in_flight: Vec<(usize, usize)> = state
            .started
            .iter()
            .enumerate()
            .filter_map(|(n, slot)| slot.key.map(|key| (first + n, key)))
            .filter(|&(index, _)| failed.is_none_or(|f| index > f))
            .collect();
        for (index, key) in in_flight {
            let push = self.pushes.remove(key);
            self.deadlines.remove(&(push.deadline, key));
            drop(push.stream);
            let state = self.jobs.get_mut(&id).expect("job still here");
            let slot = &mut state.started[index - first];
            slot.key = None;
            slot.outcome = Some(Outcome::Cancelled);
        }
        if failed.is_none() {
            self.report_settled(id);
        }
    }

    /// Reports the job's settled pushes that no unsettled push precedes; forgets the job after
    /// its last report.
    fn report_settled(&mut self, id: JobId) {
        loop {
            let Some(state) = self.jobs.get_mut(&id) else {
                return;
            };
            let index = state.first_unreported();
            let Some(Started {
                outcome: Some(_), ..
            }) = state.started.front()
            else {
                return;
            };
            let outcome = state
                .started
                .pop_front()
                .and_then(|slot| slot.outcome)
                .expect("a settled push has an outcome");
            let done =
                state.started.is_empty() && (state.stopped || state.next == state.job.pushes.len());
            if done {
                self.jobs.remove(&id);
            }
            self.report(id, index, outcome, done);
            if done {
                return;
            }
            self.let_head_write(id);
        }
    }

    /// The job's first unreported push, if it is in flight, may now write its bytes.
    fn let_head_write(&mut self, id: JobId) {
        let Some(Started { key: Some(key), .. }) =
            self.jobs.get(&id).and_then(|state| state.started.front())
        else {
            return;
        };
        let key = *key;
        let push = &mut self.pushes[key];
        if !push.may_write {
            push.may_write = true;
            // Its time starts now: the wait behind the push ahead is not its own slowness.
            self.deadlines.remove(&(push.deadline, key));
            push.deadline = Instant::now() + self.timeout;
            self.deadlines.insert((push.deadline, key));
            self.advance(key);
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.end_push(key, Outcome::TimedOut(self.timeout));
        }
    }

    fn report(&mut self, job: JobId, index: usize, outcome: Outcome, job_done: bool) {
        self.unannounced.get_or_insert_with(Instant::now);
        self.job_ended |= job_done;
        // The channel holds what every job in flight can report, so this does not block; it
        // fails only once the pool is gone, and then nobody is left to tell.
        let _ = self.reports.send(Report {
            job,
            index,
            outcome,
            job_done,
        });
    }
}

/// True when the peer has acknowledged every byte of the push on `stream`, a half-closed one
/// (the FIN, which counts as one more, may still be unacknowledged: its ACK is often delayed).
/// The connection is then established at the listener, in its accept queue ahead of any
/// connection opened after now, so a listener that takes its connections in order reads the
/// pushes in order. (Over loopback that is true as soon as the bytes are written; over a
/// network it takes a round trip, and the next push waits for the previous one to finish.)
fn acknowledged(stream: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut unacknowledged: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ on a TCP socket) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut unacknowledged) };
    rc == 0 && unacknowledged <= 1
}

/// Advances one push carrying `bytes`; Ok(true) when the listener has read it and closed.
fn step(push: &mut ActivePush, bytes: &[u8]) -> io::Result<bool> {
    loop {
        match push.stage {
            Stage::Connecting => {
                if let Some(e) = push.stream.take_error()? {
                    return Err(e);
                }
                match push.stream.peer_addr() {
                    Ok(_) if push.tls.is_some() => push.stage = Stage::Handshaking,
                    Ok(_) => push.stage = Stage::Connected,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Stage::Handshaking => {
                let (Some(tls), stream) = (push.tls.as_mut(), &mut push.stream) else {
                    unreachable!("a handshake is TLS's")
                };
                if !write_records(tls, stream)? {
                    return Ok(false);
                }
                if !tls.is_handshaking() {
                    push.stage = Stage::Connected;
                    continue;
                }
                if !read_records(tls, stream)? {
                    return Ok(false);
                }
            }
            Stage::Connected if push.may_write => push.stage = Stage::Writing { written: 0 },
            Stage::Connected => return Ok(false),
            Stage::Writing { .. } if push.tls.is_some() => {
                let Some(tls) = push.tls.as_mut() else {
                    unreachable!("checked")
                };
                // A push is small: all of it, and TLS's goodbye, into the records at once.
                tls.writer().write_all(bytes)?;
                tls.send_close_notify();
                push.stage = Stage::Sealed;
            }
            Stage::Sealed => {
                let (Some(tls), stream) = (push.tls.as_mut(), &mut push.stream) else {
                    unreachable!("sealed by TLS")
                };
                if !write_records(tls, stream)? {
                    return Ok(false);
                }
                push.stream.shutdown(Shutdown::Write)?;
                push.stage = Stage::Draining;
            }
            Stage::Writing { written } => {
                if written == bytes.len() {
                    push.stream.shutdown(Shutdown::Write)?;
                    push.stage = Stage::Draining;
                    continue;
                }
                match push.stream.write(&bytes[written..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        push.stage = Stage::Writing {
                            written: written + n,
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Stage::Draining if push.tls.is_some() => {
                let (Some(tls), stream) = (push.tls.as_mut(), &mut push.stream) else {
                    unreachable!("checked")
                };
                match tls.read_tls(stream) {
                    Ok(0) => return Ok(true),
                    // The listener's goodbye, or a ticket: nothing to keep.
                    Ok(_) => {
                        let _ = tls.process_new_packets();
                        let mut sink = [0u8; 256];
                        while let Ok(n) = tls.reader().read(&mut sink) {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Stage::Draining => {
                let mut sink = [0u8; 256];
                match push.stream.read(&mut sink) {
                    Ok(0) => return Ok(true),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// Writes the TLS records waiting; false if the socket is full.
fn write_records(tls: &mut rustls::ClientConnection, stream: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Reads and processes TLS records; false if none were there. A certificate other than the
/// pinned one fails here.
fn read_records(tls: &mut rustls::ClientConnection, stream: &mut TcpStream) -> io::Result<bool> {
    match tls.read_tls(stream) {
        Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => {
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e),
    }
}

fn classify(e: io::Error) -> Outcome {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        Outcome::Refused
    } else {
        Outcome::Failed(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn pool(size: usize) -> (Pool, mpsc::Receiver<()>) {
        pool_with_timeout(size, Duration::from_secs(2))
    }

    /// A pool whose wake-ups land in the returned channel.
    fn pool_with_timeout(size: usize, timeout: Duration) -> (Pool, mpsc::Receiver<()>) {
        let (rang, rings) = mpsc::channel();
        let rang = std::sync::Mutex::new(rang);
        let wake = Arc::new(move || {
            let _ = rang.lock().unwrap().send(());
        });
        let pool = Pool::start(size, 64, timeout, wake).unwrap();
        (pool, rings)
    }

    #[test]
    fn jobs_of_one_turn_go_to_one_worker_and_start_when_dispatched() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Reads each push and closes, as a listener does.
        std::thread::spawn(move || {
            for stream in listener.incoming().take(3) {
                let mut stream = stream.unwrap();
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
            }
        });
        let (mut pool, rings) = pool(4);
        for id in 1..=3 {
            pool.submit(PushJob {
                tls: None,
                id,
                addr,
                pushes: vec![b"ACK\0".to_vec()],
            });
        }
        let owners: Vec<usize> = (1..=3).map(|id| pool.owner[&id].0).collect();
        assert_eq!(owners, [owners[0]; 3], "one wake-up for the turn's jobs");
        pool.dispatch();
        let mut reports = Vec::new();
        while reports.len() < 3 {
            rings
                .recv_timeout(Duration::from_secs(5))
                .expect("a worker rings");
            pool.reports(&mut reports);
        }
        assert!(reports
            .iter()
            .all(|r| r.job_done && matches!(r.outcome, Outcome::Delivered)));
    }

    /// Runs one job and returns its reports, waiting for the last.
    fn run_job(pool: &mut Pool, rings: &mpsc::Receiver<()>, job: PushJob) -> Vec<Report> {
        pool.submit(job);
        pool.dispatch();
        let mut reports = Vec::new();
        while !reports.last().is_some_and(|r: &Report| r.job_done) {
            rings
                .recv_timeout(Duration::from_secs(10))
                .expect("a worker rings");
            pool.reports(&mut reports);
        }
        reports
    }

    fn job(addr: SocketAddr, pushes: &[&str]) -> PushJob {
        PushJob {
            tls: None,
            id: 1,
            addr,
            pushes: pushes.iter().map(|p| p.as_bytes().to_vec()).collect(),
        }
    }

    fn read_all(stream: &mut std::net::TcpStream) -> String {
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        text
    }

    #[test]
    fn the_next_push_connects_ahead_and_writes_after_the_one_before_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            // The first push is taken and not read yet: the second is connected behind it.
            let (mut first, _) = listener.accept().unwrap();
            let (mut second, _) = listener.accept().unwrap();
            // Its bytes come once the first was read and closed.
            let mut read = vec![read_all(&mut first)];
            drop(first);
            read.push(read_all(&mut second));
            drop(second);
            for stream in listener.incoming().take(2) {
                read.push(read_all(&mut stream.unwrap()));
            }
            read
        });
        let (mut pool, rings) = pool(1);
        let reports = run_job(&mut pool, &rings, job(addr, &["p0", "p1", "p2", "p3"]));
        assert_eq!(reader.join().unwrap(), ["p0", "p1", "p2", "p3"]);
        let indexes: Vec<usize> = reports.iter().map(|r| r.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert!(reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Delivered)));
        assert_eq!(
            reports.iter().filter(|r| r.job_done).count(),
            1,
            "only the last report ends the job"
        );
    }

    #[test]
    fn a_failed_push_cancels_the_one_queued_behind_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (reset_tx, reset) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let (first, _) = listener.accept().unwrap();
            let (second, _) = listener.accept().unwrap();
            // Closing with the push unread resets the first connection: its push failed.
            drop(first);
            reset_tx.send(()).unwrap();
            // The second is held open, unread, until the job has ended.
            second
        });
        let (mut pool, rings) = pool(1);
        let reports = run_job(&mut pool, &rings, job(addr, &["p0", "p1", "p2"]));
        reset.recv().unwrap();
        drop(holder.join().unwrap());
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert_eq!(reports[0].index, 0);
        assert!(
            matches!(reports[0].outcome, Outcome::Failed(_)),
            "{reports:?}"
        );
        assert!(!reports[0].job_done);
        assert_eq!(reports[1].index, 1);
        assert!(
            matches!(reports[1].outcome, Outcome::Cancelled),
            "{reports:?}"
        );
        assert!(reports[1].job_done);
    }

    /// A listening socket on 127.0.0.1 with an accept backlog of 0: one queued connection.
    fn listener_with_no_backlog() -> TcpListener {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket calls on a descriptor created here; it is handed to the
        // TcpListener, which owns it from then on.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(fd >= 0);
            let listener = TcpListener::from_raw_fd(fd);
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
                },
                sin_zero: [0; 8],
            };
            let size = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(libc::bind(fd, std::ptr::from_ref(&addr).cast(), size), 0);
            assert_eq!(libc::listen(fd, 0), 0);
            listener
        }
    }

    #[test]
    fn a_push_whose_syn_a_full_accept_queue_dropped_connects_again_at_once() {
        let listener = listener_with_no_backlog();
        let addr = listener.local_addr().unwrap();
        let pushes = ["p0", "p1", "p2", "p3", "p4", "p5"];
        let reader = std::thread::spawn(move || {
            let mut read = Vec::new();
            for _ in 0..6 {
                // Slow to accept: the push behind the one queued finds the queue full.
                std::thread::sleep(Duration::from_millis(20));
                let (mut stream, _) = listener.accept().unwrap();
                read.push(read_all(&mut stream));
            }
            read
        });
        let (mut pool, rings) = pool(1);
        let started = Instant::now();
        let reports = run_job(&mut pool, &rings, job(addr, &pushes));
        let took = started.elapsed();
        assert_eq!(reader.join().unwrap(), pushes);
        assert!(reports
            .iter()
            .all(|r| matches!(r.outcome, Outcome::Delivered)));
        // Each dropped SYN would otherwise be sent again only after 1 s (then 3 s, ...).
        assert!(
            took < Duration::from_millis(900),
            "six pushes took {took:?}: a dropped connection waited for TCP's retry"
        );
    }

    #[test]
    fn a_push_waiting_behind_a_slow_one_gets_its_whole_timeout_once_it_may_write() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let mut read = Vec::new();
            // Each push is read within the push timeout (1 s) of its start, but the second
            // one ends 1.3 s after its connection was made behind the first.
            for pause in [800, 500] {
                let (mut stream, _) = listener.accept().unwrap();
                std::thread::sleep(Duration::from_millis(pause));
                read.push(read_all(&mut stream));
            }
            read
        });
        let (mut pool, rings) = pool_with_timeout(1, Duration::from_secs(1));
        let reports = run_job(&mut pool, &rings, job(addr, &["p0", "p1"]));
        assert!(
            reports
                .iter()
                .all(|r| matches!(r.outcome, Outcome::Delivered)),
            "{reports:?}"
        );
        assert_eq!(reader.join().unwrap(), ["p0", "p1"]);
    }
}
