//! Storage work beside the reactor: on PostgreSQL every storage call is a network round trip,
//! so the storage steps of every request (`core::Work`) and of the core's own chores
//! (`core::Chore`) run on worker threads, each with a connection of its own, while the
//! reactor serves everybody else. A worker reports through a bounded channel and the waker;
//! the reactor then applies what the work means for presence and deliveries, and holds the
//! answer for the syncer's durability barrier, as for a write of its own turn.
//!
//! The request workers' queues are bounded: when one is full, the request is refused (the
//! reactor never runs it itself), so a burst never queues without limit. A sender's SENDs
//! stay in order across workers: the sender's row lock orders their ids and commits.
//!
//! Requests that write mailboxes (SEND, and UNREGISTER, which deletes one) have request
//! workers of their own, apart from the others' (REGISTER, CONNECT, the user lists, logins):
//! so a locked `pending_messages` (an operator's `LOCK TABLE`, a long vacuum) holds up only
//! the requests that need it, and a REGISTER never queues behind SENDs that wait for it.
//!
//! Work that must run in order goes to one ordered worker chosen by its key ([`Router`]),
//! which runs a key's work in the order it was asked for:
//! - deliveries' steps (claiming a recipient, reading their next batch, removing what was
//!   delivered) always to the worker chosen by a hash of the recipient, whose connection
//!   holds the claim (a session-level advisory lock) from one job to the next;
//! - broadcasts, a room's joins and lines, the session bus's batches to the worker that has
//!   that key's work in hand, or, when it has none, the least busy one: a key whose work
//!   waits on a lock holds up only the keys pinned to the same worker.
//!
//! Ordered workers are apart from the request workers, so that a request waiting on a row
//! lock (up to the statement timeout) holds up no delivery, broadcast or bus event.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use crate::accounts::Policy;
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
/// `(ticket, the server's epoch the job committed in, what it did)`.
pub type Report = (Ticket, storage::Epoch, storage::Result<TaskDone>);

pub struct Beside {
    /// The request workers' queues: mailbox work's, and the other requests'.
    mail_jobs: Option<Sender<Job>>,
    jobs: Option<Sender<Job>>,
    /// Each ordered worker's queue.
    keyed: Vec<Sender<Job>>,
    router: Router,
    pub done: Receiver<Report>,
    workers: Vec<JoinHandle<()>>,
    /// Set when the server stops: nobody waits for the answers of queued jobs any more.
    stopping: Arc<AtomicBool>,
}

impl Beside {
    /// Starts `workers` request workers for mailbox work, as many for the other requests,
    /// and as many ordered workers, each a thread with a connection to `url`.
    pub fn start(
        url: &str,
        workers: usize,
        policy: Policy,
        wake: Arc<dyn Fn() + Send + Sync>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Beside, String> {
        assert!(
            workers > 0,
            "storage work beside the reactor needs a worker"
        );
        let (mail_jobs, mail_queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        let (jobs, queue) = crossbeam_channel::bounded::<Job>(QUEUE);
        let others = workers;
        // Room for every job queued or in hand: a worker never waits to report.
        let (report, done) =
            crossbeam_channel::bounded(2 * QUEUE + workers * (KEYED_QUEUE + 2) + workers + others);
        let mut handles = Vec::with_capacity(2 * workers + others);
        let mut keyed = Vec::with_capacity(workers);
        let stopping = Arc::new(AtomicBool::new(false));
        for n in 0..2 * workers + others {
            let ordered = (workers..2 * workers).contains(&n);
            let store = PgStore::open_worker(url)
                .map_err(|e| format!("storage worker {n}: cannot connect: {e}"))?
                .counted_in(metrics.clone());
            let (name, queue) = if n < workers {
                (format!("storage-mail-{n}"), mail_queue.clone())
            } else if ordered {
                let (own, own_queue) = crossbeam_channel::bounded::<Job>(KEYED_QUEUE);
                keyed.push(own);
                (format!("ordered-{}", n - workers), own_queue)
            } else {
                (format!("storage-{}", n - 2 * workers), queue.clone())
            };
            let (report, wake) = (report.clone(), wake.clone());
            let stopping = stopping.clone();
            let handle = std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&store, &queue, &report, &*wake, &stopping, policy))
                .map_err(|e| format!("cannot start storage worker {n}: {e}"))?;
            handles.push(handle);
        }
        Ok(Beside {
            mail_jobs: Some(mail_jobs),
            jobs: Some(jobs),
            router: Router::new(keyed.len()),
            keyed,
            done,
            workers: handles,
            stopping,
        })
    }

    /// Queues a request's storage work under `ticket`: work with an order key to the ordered
    /// worker that runs that key's work, in the order queued ([`Work::order_key`]); gives it
    /// back if the queue is full.
    // The work comes back only when no worker takes it: moving it back is cheaper than
    // boxing every request.
    #[allow(clippy::result_large_err)]
    /// Jobs waiting in each kind of queue: `(mail, other requests, ordered)`.
    pub fn queue_depths(&self) -> [(&'static str, usize); 3] {
        let depth = |sender: &Option<Sender<Job>>| sender.as_ref().map_or(0, Sender::len);
        [
            ("mail", depth(&self.mail_jobs)),
            ("requests", depth(&self.jobs)),
            ("ordered", self.keyed.iter().map(Sender::len).sum()),
        ]
    }

    #[allow(clippy::result_large_err)] // As `Core::try_beside`.
    pub fn try_start(&mut self, ticket: Ticket, work: Work) -> Result<(), Work> {
        let key = work.order_key().map(|key| Key::Ordered(key.to_string()));
        self.offer(ticket, key, Task::Request(work))
            .map_err(|task| match task {
                Task::Request(work) => work,
                Task::Chore(_) => unreachable!("a request was queued"),
            })
    }

    /// Queues a chore under `ticket`: with a `key` (a delivery's recipient, the bus), for the
    /// ordered worker that runs that key's work; gives it back if the queue is full.
    pub fn try_start_chore(
        &mut self,
        ticket: Ticket,
        key: Option<Key>,
        chore: Chore,
    ) -> Result<(), Chore> {
        self.offer(ticket, key, Task::Chore(chore))
            .map_err(|task| match task {
                Task::Chore(chore) => chore,
                Task::Request(_) => unreachable!("a chore was queued"),
            })
    }

    /// Queues `task` under `ticket`, by `key` on an ordered worker or else on its pool of
    /// request workers (mailbox writes apart); gives it back if the queue is full (or, should
    /// every worker have died, closed).
    #[allow(clippy::result_large_err)] // As `try_start`.
    fn offer(&mut self, ticket: Ticket, key: Option<Key>, task: Task) -> Result<(), Task> {
        let Some(key) = key else {
            let mail = matches!(&task, Task::Request(work) if work.writes_mailboxes());
            let jobs = if mail { &self.mail_jobs } else { &self.jobs };
            let jobs = jobs.as_ref().expect("jobs are taken only on drop");
            return jobs
                .try_send(Job { ticket, task })
                .map_err(|e| e.into_inner().task);
        };
        let worker = self.router.place(&key);
        self.keyed[worker]
            .try_send(Job { ticket, task })
            .map_err(|e| e.into_inner().task)?;
        self.router.sent(ticket, worker, key);
        Ok(())
    }

    /// The report of `ticket` was taken from [`Beside::done`]: its worker has one job less.
    pub fn reported(&mut self, ticket: Ticket) {
        self.router.reported(ticket);
    }
}

/// The key of ordered work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// Always on one worker, chosen by hash: a delivery's recipient, whose claim that
    /// worker's connection holds.
    Pinned(String),
    /// On the worker that has this key's work in hand, else the least busy.
    Ordered(String),
}

/// Which ordered worker runs a key's work.
struct Router {
    /// Jobs queued or in hand on each ordered worker.
    load: Vec<usize>,
    /// Ordered keys with work out: its worker and how many jobs.
    placed: HashMap<String, (usize, usize)>,
    /// Jobs out: their worker and ordered key.
    out: HashMap<Ticket, (usize, Option<String>)>,
}

impl Router {
    fn new(workers: usize) -> Router {
        assert!(workers > 0, "ordered work needs a worker");
        Router {
            load: vec![0; workers],
            placed: HashMap::new(),
            out: HashMap::new(),
        }
    }

    /// The worker for the next job of `key`.
    fn place(&self, key: &Key) -> usize {
        match key {
            Key::Pinned(key) => {
                let mut hasher = std::hash::DefaultHasher::new();
                key.hash(&mut hasher);
                (hasher.finish() % self.load.len() as u64) as usize
            }
            Key::Ordered(key) => match self.placed.get(key) {
                Some(&(worker, _)) => worker,
                None => (0..self.load.len())
                    .min_by_key(|&worker| self.load[worker])
                    .expect("at least one worker"),
            },
        }
    }

    /// Job `ticket` of `key` was queued on `worker`.
    fn sent(&mut self, ticket: Ticket, worker: usize, key: Key) {
        self.load[worker] += 1;
        let ordered = match key {
            Key::Ordered(key) => {
                let placed = self.placed.entry(key.clone()).or_insert((worker, 0));
                debug_assert_eq!(placed.0, worker, "a key's work on one worker");
                placed.1 += 1;
                Some(key)
            }
            Key::Pinned(_) => None,
        };
        self.out.insert(ticket, (worker, ordered));
    }

    /// Job `ticket` is done (nothing if it was not ordered work).
    fn reported(&mut self, ticket: Ticket) {
        let Some((worker, key)) = self.out.remove(&ticket) else {
            return;
        };
        self.load[worker] -= 1;
        if let Some(key) = key {
            if let Some(placed) = self.placed.get_mut(&key) {
                placed.1 -= 1;
                if placed.1 == 0 {
                    self.placed.remove(&key);
                }
            }
        }
    }
}

impl Drop for Beside {
    /// Lets the workers finish the jobs in hand, drop the queued ones (nobody waits for
    /// their answers), and stop.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.mail_jobs = None;
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
    policy: Policy,
) {
    while let Ok(job) = queue.recv() {
        if stopping.load(Ordering::Relaxed) {
            continue;
        }
        let done = match &job.task {
            Task::Request(work) => perform(store, work, policy).map(TaskDone::Request),
            Task::Chore(chore) => perform_chore(store, chore).map(TaskDone::Chore),
        };
        // The commit also rolls back a failed one and clears the way for the next job.
        let committed = store.commit();
        let result = match (done, committed) {
            (Ok(done), Ok(())) => Ok(done),
            (Err(e), _) => Err(e),
            (Ok(_), Err(why)) => Err(storage::Error(why)),
        };
        if report.send((job.ticket, store.epoch(), result)).is_err() {
            return;
        }
        wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered(key: &str) -> Key {
        Key::Ordered(key.to_string())
    }

    #[test]
    fn an_ordered_keys_work_stays_on_its_worker_while_out_and_new_keys_go_to_the_least_busy() {
        let mut router = Router::new(3);
        let room = router.place(&ordered("Sala1"));
        router.sent(1, room, ordered("Sala1"));
        // Stuck (waiting on a lock, say): its key's next job queues behind it...
        assert_eq!(router.place(&ordered("Sala1")), room);
        router.sent(2, room, ordered("Sala1"));
        // ...while other keys go elsewhere.
        let bus = router.place(&ordered("\0bus"));
        assert_ne!(bus, room);
        router.sent(3, bus, ordered("\0bus"));
        let other = router.place(&ordered("Sala2"));
        assert!(other != room && other != bus);
        router.reported(3);
        router.reported(1);
        assert_eq!(router.place(&ordered("Sala1")), room, "one job still out");
        router.reported(2);
        // Nothing out: anywhere, the least busy first.
        assert!(router.placed.is_empty() && router.load.iter().all(|&n| n == 0));
        assert_eq!(router.place(&ordered("Sala1")), 0);
    }

    #[test]
    fn a_pinned_key_always_goes_to_one_worker_and_counts_in_its_load() {
        let mut router = Router::new(4);
        let pinned = Key::Pinned("bea".into());
        let worker = router.place(&pinned);
        router.sent(1, worker, pinned.clone());
        router.sent(2, worker, pinned.clone());
        assert_eq!(router.place(&pinned), worker);
        assert_ne!(
            router.place(&ordered("Sala1")),
            worker,
            "the busy one is avoided"
        );
        router.reported(1);
        router.reported(2);
        router.reported(99);
        assert_eq!(router.place(&pinned), worker);
        assert!(router.load.iter().all(|&n| n == 0));
    }
}
