//! Storage work beside the reactor: on PostgreSQL every storage call is a network round trip,
//! so the storage steps of every request (`core::Work`) and of the core's own chores
//! (`core::Chore`) run on worker threads, each with a connection of its own, while the
//! reactor serves everybody else. A worker reports through a bounded channel and the waker;
//! the reactor then applies what the work means for presence and deliveries, and holds the
//! answer for the syncer's durability barrier, as for a write of its own turn.
//!
//! The request workers' queue is bounded: when it is full, the request is refused (the
//! reactor never runs it itself), so a burst never queues without limit. A sender's SENDs
//! stay in order across workers: the sender's row lock orders their ids and commits.
//!
//! Work that must run in order goes to one ordered worker chosen by its key
//! (`try_start_chore`, and `try_start` for work with a `Work::order_key`): deliveries' steps
//! (claiming a recipient, reading their next batch, removing what was delivered) by the
//! recipient, whose claim is a session-level advisory lock held by that worker's connection
//! from one job to the next; broadcasts, a room's joins and lines, the session bus's
//! publishing. One worker runs a key's work in the order it was asked for. Ordered workers are
//! apart from the request workers, so that a request waiting on a row lock (up to the
//! statement timeout) holds up no delivery, broadcast or bus event.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::core::{perform, perform_chore, Chore, ChoreDone, Done, Work};
use crate::storage::{self, PgStore, Storage};

/// Names a request whose storage work runs beside the reactor.
pub type Ticket = u64;

/// Jobs waiting for a request worker; past it requests are refused.
const QUEUE: usize = 1024;

/// Jobs waiting for one ordered worker; past it the core tries again later, or refuses.
const KEYED_QUEUE: usize = 1024;

struct Job {
    ticket: Ticket,
    task: Task,
}

/// Storage work: a messenger request's, or a delivery's.
enum Task {
    Request(Work),
    Chore(Chore),
}

/// What a [`Task`] did.
pub enum TaskDone {
    Request(Done),
    Chore(ChoreDone),
}

/// A finished job: committed, or failed and rolled back.
pub type Report = (Ticket, storage::Result<TaskDone>);

pub struct Beside {
    /// The request workers' queue.
    jobs: Option<Sender<Job>>,
    /// Each ordered worker's queue.
    keyed: Vec<Sender<Job>>,
    pub done: Receiver<Report>,
    workers: Vec<JoinHandle<()>>,
    /// Set when the server stops: nobody waits for the answers of queued jobs any more.
    stopping: Arc<AtomicBool>,
}

impl Beside {
    /// Starts `workers` request workers and as many ordered workers, each a thread with a
    /// connection to `url`.
    pub fn start(
        url: &str,
        workers: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Beside, String> {
        assert!(
            workers > 0,
            "storage work beside the reactor needs a worker"
        );
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        // Room for every job queued or in hand: a worker never waits to report.
        let (report, done) = crossbeam_channel::bounded(QUEUE + workers * (KEYED_QUEUE + 2));
        let mut handles = Vec::with_capacity(2 * workers);
        let mut keyed = Vec::with_capacity(workers);
        let stopping = Arc::new(AtomicBool::new(false));
        for n in 0..2 * workers {
            let store = PgStore::open_worker(url)
                .map_err(|e| format!("storage worker {n}: cannot connect: {e}"))?;
            let (name, queue) = if n < workers {
                (format!("storage-{n}"), queue.clone())
            } else {
                let (own, own_queue) = crossbeam_channel::bounded::<Job>(KEYED_QUEUE);
                keyed.push(own);
                (format!("ordered-{}", n - workers), own_queue)
            };
            let (report, wake) = (report.clone(), wake.clone());
            let stopping = stopping.clone();
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&store, &queue, &report, &*wake, &stopping))
                .map_err(|e| format!("cannot start storage worker {n}: {e}"))?;
            handles.push(handle);
        }
        Ok(Beside {
            jobs: Some(jobs),
            keyed,
            done,
            workers: handles,
            stopping,
        })
    }

    /// Queues a request's storage work under `ticket`: work with an order key to the ordered
    /// worker that runs that key's work, in the order queued ([`Work::order_key`]); gives it
    /// back if the queue is full.
    pub fn try_start(&self, ticket: Ticket, work: Work) -> Result<(), Work> {
        let queue = self.queue_for(work.order_key());
        offer(queue, ticket, Task::Request(work)).map_err(|task| match task {
            Task::Request(work) => work,
            Task::Chore(_) => unreachable!("a request was queued"),
        })
    }

    /// Queues a chore under `ticket`: with a `key` (a delivery's recipient, the bus), for the
    /// ordered worker that runs that key's work, always the same one; gives it back if the
    /// queue is full.
    pub fn try_start_chore(
        &self,
        ticket: Ticket,
        key: Option<&str>,
        chore: Chore,
    ) -> Result<(), Chore> {
        offer(self.queue_for(key), ticket, Task::Chore(chore)).map_err(|task| match task {
            Task::Chore(chore) => chore,
            Task::Request(_) => unreachable!("a chore was queued"),
        })
    }

    /// The queue of the ordered worker that runs `key`'s work, or without a key the request
    /// workers' one.
    fn queue_for(&self, key: Option<&str>) -> &Sender<Job> {
        match key {
            Some(key) => {
                let mut hasher = std::hash::DefaultHasher::new();
                key.hash(&mut hasher);
                &self.keyed[(hasher.finish() % self.keyed.len() as u64) as usize]
            }
            None => self.jobs.as_ref().expect("jobs are taken only on drop"),
        }
    }
}

/// Queues `task` under `ticket`; gives it back if the queue is full (or, should every worker
/// have died, closed).
fn offer(queue: &Sender<Job>, ticket: Ticket, task: Task) -> Result<(), Task> {
    queue
        .try_send(Job { ticket, task })
        .map_err(|e| e.into_inner().task)
}

impl Drop for Beside {
    /// Lets the workers finish the jobs in hand, drop the queued ones (nobody waits for
    /// their answers), and stop.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        self.keyed.clear();
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// A worker: the jobs of its queue, in order, until it is closed (when the server stops).
fn run(
    store: &PgStore,
    queue: &Receiver<Job>,
    report: &Sender<Report>,
    wake: &(dyn Fn() + Send + Sync),
    stopping: &AtomicBool,
) {
    while let Ok(job) = queue.recv() {
        if stopping.load(Ordering::Relaxed) {
            continue;
        }
        let done = match &job.task {
            Task::Request(work) => perform(store, work).map(TaskDone::Request),
            Task::Chore(chore) => perform_chore(store, chore).map(TaskDone::Chore),
        };
        // The commit also rolls back a failed one and clears the way for the next job.
        let committed = store.commit();
        let result = match (done, committed) {
            (Ok(done), Ok(())) => Ok(done),
            (Err(e), _) => Err(e),
            (Ok(_), Err(why)) => Err(storage::Error(why)),
        };
        if report.send((job.ticket, result)).is_err() {
            return;
        }
        wake();
    }
}
