//! The syncer thread: makes committed writes durable without stalling the reactor.
//!
//! SQLite runs with `synchronous=NORMAL`, so a commit only appends to the WAL in the page
//! cache. When a turn has answers that promise durability, the reactor asks for a sync of that
//! commit and holds the answers; this thread fdatasyncs the WAL file and reports how far it got.
//! One fsync covers every commit made before it started, so under load many turns share one
//! (group commit) while the reactor goes on serving. Checkpoints stay safe: in NORMAL mode
//! SQLite syncs the WAL before copying it into the database and the database after.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// Every commit numbered up to `upto` is on disk (or the sync failed).
#[derive(Debug)]
pub struct Synced {
    pub upto: u64,
    pub result: Result<(), String>,
}

pub struct Syncer {
    requests: Option<Sender<u64>>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread for the WAL file `wal`. Results go to `synced`, then `wake` is called.
    pub fn start(
        wal: PathBuf,
        synced: Sender<Synced>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Syncer> {
        let (requests, queue) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new()
            .name("syncer".into())
            .spawn(move || run(&wal, &queue, &synced, &*wake))?;
        Ok(Syncer {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for commit number `commit` (and all before it) to be made durable.
    pub fn request(&self, commit: u64) {
        if let Some(requests) = &self.requests {
            let _ = requests.send(commit);
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(
    wal: &PathBuf,
    queue: &Receiver<u64>,
    synced: &Sender<Synced>,
    wake: &(dyn Fn() + Send + Sync),
) {
    let mut file: Option<File> = None;
    while let Ok(first) = queue.recv() {
        // Everything asked for so far is covered by the one sync below.
        let upto = queue.try_iter().fold(first, u64::max);
        let result = sync(wal, &mut file).map_err(|e| format!("syncing {}: {e}", wal.display()));
        if synced.send(Synced { upto, result }).is_err() {
            return;
        }
        wake();
    }
}

fn sync(wal: &PathBuf, file: &mut Option<File>) -> io::Result<()> {
    if file.is_none() {
        *file = Some(File::open(wal)?);
    }
    file.as_ref().expect("opened above").sync_data()
}
