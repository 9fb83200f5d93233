//! The syncer thread: makes committed writes durable without stalling the reactor.
//!
//! The reactor's commits do not wait for the disk: SQLite runs with `synchronous=NORMAL`, so a
//! commit only appends to the WAL in the page cache; PostgreSQL's session runs with
//! `synchronous_commit = off`. When a turn has answers that promise durability, the reactor
//! asks for a sync of that commit (by number) and holds the answers; this thread makes
//! everything committed so far durable (a [`Barrier`]) and publishes how far it got. One
//! barrier covers every commit made before it started, so under load many turns share one
//! (group commit) while the reactor goes on serving.
//!
//! There is no queue between the two: a request raises a high-water mark, so the state is a few
//! words whatever the load. A failed fsync is final: the kernel may have dropped the dirty pages,
//! and a later "successful" fsync would not bring them back. The syncer records the failure and
//! the reactor stops the server (see `console::fatal`); a restart re-reads what is on disk.
//!
//! PostgreSQL's barrier is another matter: a barrier that fails because its connection was lost
//! (a restart, a failover, a terminated backend) says nothing about the disk. The commits it
//! covered may or may not be durable, so their answers get their error codes (`lost`); the
//! barrier connects again (with backoff) and later commits are confirmed by barriers on the
//! new connection. Each confirmation names the server's *epoch* (its postmaster's start
//! time): a commit made on a server that restarted since (or on the old primary of a
//! failover) is never confirmed by a barrier on the new one, whose WAL may not hold it.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::storage::Epoch;
use crate::watched::Watched;

/// First wait before connecting the barrier again; doubled at each failure up to
/// [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// What makes every commit made so far durable, run on the syncer thread.
pub enum Barrier {
    /// fdatasync of SQLite's WAL file, opened at the first sync (SQLite creates it).
    SqliteWal { path: PathBuf, file: Option<File> },
    /// A transaction that writes WAL and commits with `synchronous_commit = on` on a
    /// connection of its own: PostgreSQL returns from its COMMIT only once the WAL is flushed
    /// up to its commit record, which comes after the commit records of every transaction
    /// committed before it. The connection is made again when it is lost.
    Postgres(Box<crate::storage::PgBarrier>),
}

/// Why a barrier did not confirm its commits.
#[derive(Debug)]
enum Failure {
    /// The disk may have lost what it held: the server must stop.
    Fatal(String),
    /// The commits' fate is unknown (PostgreSQL's connection was lost, or it refused the
    /// barrier, as a standby does): their answers get their error codes, and barriers go on.
    Lost(String),
}

impl Barrier {
    fn describe(&self) -> String {
        match self {
            Barrier::SqliteWal { path, .. } => format!("fsync of {}", path.display()),
            Barrier::Postgres(_) => {
                "the PostgreSQL durability barrier (a synchronous commit)".into()
            }
        }
    }

    /// Makes every earlier commit durable; the epoch it was made durable in.
    fn run(&mut self) -> Result<Epoch, Failure> {
        match self {
            Barrier::SqliteWal { path, file } => sync(path, file)
                .map(|()| 0)
                .map_err(|e| Failure::Fatal(e.to_string())),
            Barrier::Postgres(barrier) => barrier.run().map_err(|e| Failure::Lost(e.0)),
        }
    }
}

#[derive(Default)]
struct State {
    requested: u64,
    /// Commits up to this one are durable (in `epoch`).
    synced: u64,
    epoch: Epoch,
    /// Commits up to this one were covered by a barrier that failed without a verdict.
    lost: u64,
    failure: Option<String>,
    stop: bool,
}

/// The syncer thread and what it has published.
pub struct Syncer {
    shared: Arc<Watched<State>>,
    thread: Option<JoinHandle<()>>,
}

/// What the reactor learns when it looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Commits up to `synced` are durable, made durable in `epoch`; those up to `lost` were
    /// covered by a barrier that failed without a verdict (a commit covered by both counts
    /// as lost: a barrier that failed after a good one is rare, and an error answer to a
    /// durable write is the safe mistake).
    Synced {
        synced: u64,
        epoch: Epoch,
        lost: u64,
    },
    /// A barrier failed for good (a failed fsync): the reason.
    Failed(String),
}

impl Syncer {
    /// Starts the thread. `wake` is called after each barrier so the reactor looks.
    pub fn start(
        barrier: Barrier,
        wake: Arc<dyn Fn() + Send + Sync>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> io::Result<Syncer> {
        let shared = Arc::new(Watched::new(State::default()));
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("syncer".into())
            .spawn(move || run(barrier, &worker, &*wake, &metrics))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for commit number `commit` (and everything before it) to be made durable.
    pub fn request(&self, commit: u64) {
        self.shared
            .change(|state| state.requested = state.requested.max(commit));
    }

    pub fn progress(&self) -> Progress {
        self.shared.with(|state| match &state.failure {
            Some(why) => Progress::Failed(why.clone()),
            None => Progress::Synced {
                synced: state.synced,
                epoch: state.epoch,
                lost: state.lost,
            },
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.change(|state| state.stop = true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    mut barrier: Barrier,
    shared: &Watched<State>,
    wake: &(dyn Fn() + Send + Sync),
    metrics: &crate::metrics::Metrics,
) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        let asked = shared.wait_until(
            |state| state.requested > state.synced.max(state.lost) || state.stop,
            |state| (!state.stop).then_some(state.requested),
        );
        let Some(upto) = asked else { return };
        let started = std::time::Instant::now();
        let result = barrier.run();
        metrics.observe_fsync(started.elapsed());
        let (fatal, lost) = shared.with(|state| match result {
            Ok(epoch) => {
                state.synced = upto;
                state.epoch = epoch;
                (false, false)
            }
            Err(Failure::Lost(why)) => {
                log::error!(
                    "{} failed: {why}; the {} commits it covered are answered as failed \
                     (they may or may not be durable), and the barrier connects again",
                    barrier.describe(),
                    upto - state.synced.max(state.lost)
                );
                state.lost = upto;
                (false, true)
            }
            Err(Failure::Fatal(why)) => {
                state.failure = Some(format!("{} failed: {why}", barrier.describe()));
                state.stop = true;
                (true, false)
            }
        });
        wake();
        if fatal {
            return;
        }
        if lost {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(RECONNECT_MAX);
        } else {
            backoff = RECONNECT_FIRST;
        }
    }
}

fn sync(wal: &PathBuf, file: &mut Option<File>) -> io::Result<()> {
    if file.is_none() {
        *file = Some(File::open(wal)?);
    }
    file.as_ref().expect("opened above").sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A syncer over a file of its own; each of its wake-ups lands in the returned channel.
    fn syncer(dir: &tempfile::TempDir) -> (Syncer, mpsc::Receiver<()>) {
        let wal = dir.path().join("wal");
        std::fs::write(&wal, b"frames").unwrap();
        let (rang, rings) = mpsc::channel();
        let rang = std::sync::Mutex::new(rang);
        let wake = Arc::new(move || {
            let _ = rang.lock().unwrap().send(());
        });
        let barrier = Barrier::SqliteWal {
            path: wal,
            file: None,
        };
        let syncer = Syncer::start(barrier, wake, Arc::default()).unwrap();
        (syncer, rings)
    }

    /// Waits, on the syncer's wake-ups, until `commit` is synced; fails after 10 s.
    fn wait_synced(syncer: &Syncer, rings: &mpsc::Receiver<()>, commit: u64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match syncer.progress() {
                Progress::Synced { synced, .. } if synced >= commit => return,
                Progress::Synced { .. } => {}
                Progress::Failed(why) => panic!("sync failed: {why}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                rings.recv_timeout(left).is_ok(),
                "commit {commit} was never synced"
            );
        }
    }

    /// Each request waits for the one before to be synced, so the syncer is idle (or about to
    /// be) at every request: a wake-up lost between its check and its wait would leave a
    /// request unsynced and this test waiting.
    #[test]
    fn every_request_made_while_the_syncer_goes_idle_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let (syncer, rings) = syncer(&dir);
        for commit in 1..=2_000 {
            syncer.request(commit);
            wait_synced(&syncer, &rings, commit);
        }
    }

    /// Requests made while a sync runs are covered by the next one, without a wake-up each.
    #[test]
    fn requests_made_during_a_sync_are_covered_by_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (syncer, rings) = syncer(&dir);
        for commit in 1..=500 {
            syncer.request(commit);
        }
        wait_synced(&syncer, &rings, 500);
    }
}
