//! Storage work beside the reactor: on PostgreSQL every storage call is a network round trip,
//! so the storage steps of the messenger's writes (`core::Work`: SEND, REGISTER, UNREGISTER,
//! CONNECT, DISCONNECT) run on a few worker threads, each with a connection of its own, while
//! the reactor serves everybody else. A worker reports through a bounded channel and the
//! waker; the reactor then applies what the work means for presence and deliveries, and holds
//! the answer for the syncer's durability barrier, as for a write of its own turn.
//!
//! The job queue is bounded: when it is full, the work runs in the reactor's turn as on
//! SQLite, so a burst never queues without limit. A sender's SENDs stay in order across
//! workers: the sender's row lock orders their ids and commits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::core::{perform, Done, Work};
use crate::storage::{self, PgStore, Storage};

/// Names a request whose storage work runs beside the reactor.
pub type Ticket = u64;

/// Jobs waiting for a worker; past it requests run in the reactor's turn.
const QUEUE: usize = 1024;

pub struct Job {
    pub ticket: Ticket,
    pub work: Work,
}

/// A finished job: committed, or failed and rolled back.
pub type Report = (Ticket, storage::Result<Done>);

pub struct Beside {
    jobs: Option<Sender<Job>>,
    pub done: Receiver<Report>,
    workers: Vec<JoinHandle<()>>,
    /// Set when the server stops: nobody waits for the answers of queued jobs any more.
    stopping: Arc<AtomicBool>,
}

impl Beside {
    /// Starts `workers` threads, each connected to `url`.
    pub fn start(
        url: &str,
        workers: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Beside, String> {
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        // Room for every job queued or in hand: a worker never waits to report.
        let (report, done) = crossbeam_channel::bounded(QUEUE + workers);
        let mut handles = Vec::with_capacity(workers);
        let stopping = Arc::new(AtomicBool::new(false));
        for n in 0..workers {
            let store = PgStore::open_worker(url)
                .map_err(|e| format!("storage worker {n}: cannot connect: {e}"))?;
            let (queue, report, wake) = (queue.clone(), report.clone(), wake.clone());
            let stopping = stopping.clone();
            let handle = std::thread::Builder::new()
                .name(format!("storage-{n}"))
                .spawn(move || run(&store, &queue, &report, &*wake, &stopping))
                .map_err(|e| format!("cannot start storage worker {n}: {e}"))?;
            handles.push(handle);
        }
        Ok(Beside {
            jobs: Some(jobs),
            done,
            workers: handles,
            stopping,
        })
    }

    /// Queues a job; gives it back if the queue is full.
    pub fn try_start(&self, job: Job) -> Result<(), Job> {
        let jobs = self.jobs.as_ref().expect("jobs are taken only on drop");
        jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(job) | TrySendError::Disconnected(job) => job,
        })
    }
}

impl Drop for Beside {
    /// Lets the workers finish the jobs in hand, drop the queued ones (nobody waits for
    /// their answers), and stop.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

fn run(
    store: &PgStore,
    queue: &Receiver<Job>,
    report: &Sender<Report>,
    wake: &(dyn Fn() + Send + Sync),
    stopping: &AtomicBool,
) {
    for job in queue.iter() {
        if stopping.load(Ordering::Relaxed) {
            continue;
        }
        let done = perform(store, &job.work);
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
