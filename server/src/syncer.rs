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

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::watched::Watched;

/// What makes every commit made so far durable, run on the syncer thread.
pub enum Barrier {
    /// fdatasync of SQLite's WAL file, opened at the first sync (SQLite creates it).
    SqliteWal { path: PathBuf, file: Option<File> },
    /// A transaction that writes WAL and commits with `synchronous_commit = on` on a
    /// connection of its own: PostgreSQL returns from its COMMIT only once the WAL is flushed
    /// up to its commit record, which comes after the commit records of every transaction
    /// committed before it.
    Postgres(Box<postgres::Client>),
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

    fn run(&mut self) -> Result<(), String> {
        match self {
            Barrier::SqliteWal { path, file } => sync(path, file).map_err(|e| e.to_string()),
            // It must write WAL of its own: PostgreSQL commits a transaction that wrote none
            // asynchronously whatever `synchronous_commit` says (an xid alone is not enough).
            // A transactional logical message is the smallest such write, needs no table and
            // no privilege, and never conflicts with another node's barrier.
            Barrier::Postgres(client) => client
                .batch_execute(
                    "BEGIN; SELECT pg_logical_emit_message(true, 'messenger', 'barrier'); COMMIT",
                )
                .map_err(|e| crate::storage::Error::from(e).0),
        }
    }
}

#[derive(Default)]
struct State {
    /// Highest commit number asked for.
    requested: u64,
    /// Highest commit number known to be on disk.
    synced: u64,
    /// Set once an fsync failed; nothing is synced after that.
    failure: Option<String>,
    stop: bool,
}

pub struct Syncer {
    shared: Arc<Watched<State>>,
    thread: Option<JoinHandle<()>>,
}

/// What the reactor learns when it looks.
pub enum Progress {
    /// Every commit up to this number is on disk.
    Synced(u64),
    Failed(String),
}

impl Syncer {
    /// Starts the thread that runs `barrier`; `wake` is called after each sync, whose
    /// duration goes to `metrics`.
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

    /// Asks for commit number `commit` (and all before it) to be made durable.
    pub fn request(&self, commit: u64) {
        self.shared
            .change(|state| state.requested = state.requested.max(commit));
    }

    pub fn progress(&self) -> Progress {
        self.shared.with(|state| match &state.failure {
            Some(why) => Progress::Failed(why.clone()),
            None => Progress::Synced(state.synced),
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
    loop {
        let asked = shared.wait_until(
            |state| state.requested > state.synced || state.stop,
            // Everything asked for so far is covered by the one sync below.
            |state| (!state.stop).then_some(state.requested),
        );
        let Some(upto) = asked else { return };
        let started = std::time::Instant::now();
        let result = barrier.run();
        metrics.observe_fsync(started.elapsed());
        let failed = shared.with(|state| {
            match result {
                Ok(()) => state.synced = upto,
                Err(e) => {
                    state.failure = Some(format!("{} failed: {e}", barrier.describe()));
                    state.stop = true;
                }
            }
            state.failure.is_some()
        });
        wake();
        if failed {
            return;
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
                Progress::Synced(upto) if upto >= commit => return,
                Progress::Synced(_) => {}
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
