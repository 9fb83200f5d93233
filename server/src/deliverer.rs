//! The deliverer pool: threads that make the outbound pushes, so the reactor never waits on a
//! listener. Each worker runs many pushes at once as non-blocking state machines on its own mio
//! `Poll`, each with a deadline: a listener that accepts and never reads holds one descriptor
//! until its deadline, never a thread, so hundreds of stuck listeners delay nobody else.
//!
//! A job is a run of one recipient's pushes to one address, made one connection after another
//! (that keeps them in order without a round trip through the reactor between two of them) and
//! stopping at the first that fails. A push is connect, write, half-close, then wait for the
//! listener to close its end: that close is what tells a listener that read the push from one
//! that accepted and never read (the bytes of a short push fit in the socket buffer either way).
//!
//! Limits: at most `capacity` jobs in flight over the whole pool (the caller checks
//! [`Pool::has_room`]), so at most `capacity` push sockets are open; the command channels and
//! the report channel are bounded to what that many jobs can produce.

use std::collections::{BTreeSet, HashMap};
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
    Push(PushJob),
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

pub struct Pool {
    workers: Vec<WorkerHandle>,
    reports: Receiver<Report>,
    /// Which worker runs each job in flight.
    owner: HashMap<JobId, usize>,
    capacity: usize,
}

impl Pool {
    /// Starts `size` workers sharing at most `capacity` jobs in flight, each push bounded by
    /// `timeout`. After sending reports a worker calls `wake`.
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
                            by_job: HashMap::new(),
                            accepting: true,
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
            capacity,
        })
    }

    /// True if one more job may be submitted.
    pub fn has_room(&self) -> bool {
        self.owner.len() < self.capacity
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
        if worker.send(Command::Push(job)) {
            worker.load += 1;
            self.owner.insert(id, n);
        } else {
            log::error!("deliverer-{n} is gone; job {id} dropped");
        }
    }

    /// Cancels a job in flight: its current push is abandoned and no further push starts.
    /// A report with `job_done` still follows. Takes effect at the next [`Pool::dispatch`].
    pub fn cancel(&mut self, job: JobId) {
        if let Some(&n) = self.owner.get(&job) {
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
                if let Some(n) = self.owner.remove(&report.job) {
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
    Writing {
        written: usize,
    },
    /// Half-closed; waiting for the listener to close its end.
    Draining,
}

struct ActivePush {
    job: PushJob,
    index: usize,
    stream: TcpStream,
    stage: Stage,
    deadline: Instant,
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
    by_job: HashMap<JobId, usize>,
    /// False once the pool stopped sending commands.
    accepting: bool,
}

impl Worker {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self
                .deadlines
                .first()
                .map(|(at, _)| at.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("deliverer poll failed: {e}");
                return;
            }
            let mut reported = false;
            for event in events.iter() {
                match event.token() {
                    WAKER => reported |= self.take_commands(),
                    Token(key) => reported |= self.advance(key),
                }
            }
            reported |= self.expire(Instant::now());
            if reported {
                (self.wake)();
            }
            if !self.accepting && self.pushes.is_empty() {
                return;
            }
        }
    }

    /// Takes new jobs and cancellations; true if it sent reports.
    fn take_commands(&mut self) -> bool {
        let mut reported = false;
        loop {
            match self.queue.try_recv() {
                Ok(Command::Push(job)) => reported |= self.start(job, 0),
                Ok(Command::Cancel(id)) => {
                    if let Some(&key) = self.by_job.get(&id) {
                        self.finish(key, Outcome::Cancelled);
                        reported = true;
                    }
                }
                Err(TryRecvError::Empty) => return reported,
                Err(TryRecvError::Disconnected) => {
                    self.accepting = false;
                    return reported;
                }
            }
        }
    }

    /// Starts push `index` of `job`; true if it sent reports (it failed at once).
    fn start(&mut self, job: PushJob, index: usize) -> bool {
        let mut stream = match TcpStream::connect(job.addr) {
            Ok(stream) => stream,
            Err(e) => return self.report_done(&job, index, classify(e)),
        };
        let entry = self.pushes.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.report_done(&job, index, Outcome::Failed(e));
        }
        let _ = stream.set_nodelay(true);
        let deadline = Instant::now() + self.timeout;
        self.by_job.insert(job.id, key);
        self.deadlines.insert((deadline, key));
        entry.insert(ActivePush {
            job,
            index,
            stream,
            stage: Stage::Connecting,
            deadline,
        });
        // Readiness is edge-triggered: look now in case the connection is already there.
        self.advance(key)
    }

    /// Moves a push as far as its socket allows; true if it sent reports.
    fn advance(&mut self, key: usize) -> bool {
        let Some(push) = self.pushes.get_mut(key) else {
            return false;
        };
        match step(push) {
            Ok(false) => false,
            Ok(true) => self.finish(key, Outcome::Delivered),
            Err(e) => self.finish(key, classify(e)),
        }
    }

    /// Ends push `key` with `outcome`; on delivery the job's next push starts.
    fn finish(&mut self, key: usize, outcome: Outcome) -> bool {
        let push = self.pushes.remove(key);
        self.deadlines.remove(&(push.deadline, key));
        self.by_job.remove(&push.job.id);
        // Dropping the stream closes it and takes it out of the poll set.
        drop(push.stream);
        let next = push.index + 1;
        if matches!(outcome, Outcome::Delivered) && next < push.job.pushes.len() {
            self.report(push.job.id, push.index, outcome, false);
            self.start(push.job, next);
        } else {
            self.report_done(&push.job, push.index, outcome);
        }
        true
    }

    fn expire(&mut self, now: Instant) -> bool {
        let mut reported = false;
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            reported |= self.finish(key, Outcome::TimedOut(self.timeout));
        }
        reported
    }

    fn report_done(&self, job: &PushJob, index: usize, outcome: Outcome) -> bool {
        self.report(job.id, index, outcome, true);
        true
    }

    fn report(&self, job: JobId, index: usize, outcome: Outcome, job_done: bool) {
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

/// Advances one push; Ok(true) when the listener has read it and closed.
fn step(push: &mut ActivePush) -> io::Result<bool> {
    loop {
        match push.stage {
            Stage::Connecting => {
                if let Some(e) = push.stream.take_error()? {
                    return Err(e);
                }
                match push.stream.peer_addr() {
                    Ok(_) => push.stage = Stage::Writing { written: 0 },
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                    Err(e) => return Err(e),
                }
            }
            Stage::Writing { written } => {
                let bytes = &push.job.pushes[push.index];
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
        let (rang, rings) = mpsc::channel();
        let rang = std::sync::Mutex::new(rang);
        let wake = Arc::new(move || {
            let _ = rang.lock().unwrap().send(());
        });
        let pool = Pool::start(size, 64, Duration::from_secs(2), wake).unwrap();
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
                id,
                addr,
                pushes: vec![b"ACK\0".to_vec()],
            });
        }
        let owners: Vec<usize> = (1..=3).map(|id| pool.owner[&id]).collect();
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
}
