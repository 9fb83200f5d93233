//! The deliverer pool: threads that make the outbound pushes, so the reactor never blocks on a
//! slow or dead listener. Each result comes back through a channel and wakes the reactor.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// What a push carries back to the reactor so it can act on the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ticket {
    /// A pending message to its recipient at `addr`; `seq` is its row in the store.
    Message {
        seq: i64,
        recipient: String,
        sender: String,
        id: u32,
        attachment: Option<Vec<u8>>,
        addr: SocketAddr,
    },
    /// An ack to the sender of a delivered message.
    Ack { sender: String, id: u32 },
}

/// Pushes to one address, made one after another, each on its own connection, stopping at
/// the first that fails. A run of one recipient's messages goes as one job: that keeps them in
/// order without a round trip through the reactor between two messages.
#[derive(Debug)]
pub struct PushJob {
    pub addr: SocketAddr,
    pub pushes: Vec<(Ticket, Vec<u8>)>,
}

impl PushJob {
    pub fn single(addr: SocketAddr, ticket: Ticket, bytes: Vec<u8>) -> PushJob {
        PushJob {
            addr,
            pushes: vec![(ticket, bytes)],
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// Every byte was written and the listener closed its end.
    Delivered,
    /// Nobody listens at the address (yet).
    Refused,
    Failed(io::Error),
}

#[derive(Debug)]
pub struct Report {
    pub ticket: Ticket,
    pub outcome: Outcome,
    /// The last report of its job: nothing more of it is on its way.
    pub job_done: bool,
}

pub struct Pool {
    jobs: Option<Sender<PushJob>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// Starts `size` deliverers. Each finished push is sent on `reports`, then `wake` is called.
    pub fn start(
        size: usize,
        timeout: Duration,
        reports: Sender<Report>,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> io::Result<Pool> {
        let (jobs, queue) = crossbeam_channel::unbounded::<PushJob>();
        let workers = (0..size)
            .map(|n| {
                let (queue, reports, wake) = (queue.clone(), reports.clone(), wake.clone());
                std::thread::Builder::new()
                    .name(format!("deliverer-{n}"))
                    .spawn(move || run_worker(&queue, &reports, &*wake, timeout))
            })
            .collect::<io::Result<_>>()?;
        Ok(Pool {
            jobs: Some(jobs),
            workers,
        })
    }

    pub fn submit(&self, job: PushJob) {
        if let Some(jobs) = &self.jobs {
            // The workers only stop once `jobs` is dropped, so this cannot fail while we hold it.
            let _ = jobs.send(job);
        }
    }

    /// Lets queued pushes finish, then joins the workers.
    pub fn shut_down(&mut self) {
        self.jobs = None;
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn run_worker(
    queue: &Receiver<PushJob>,
    reports: &Sender<Report>,
    wake: &(dyn Fn() + Send + Sync),
    timeout: Duration,
) {
    for job in queue {
        let count = job.pushes.len();
        for (n, (ticket, bytes)) in job.pushes.into_iter().enumerate() {
            let outcome = push(&job.addr, &bytes, timeout);
            let job_done = n + 1 == count || !matches!(outcome, Outcome::Delivered);
            if reports
                .send(Report {
                    ticket,
                    outcome,
                    job_done,
                })
                .is_err()
            {
                return;
            }
            wake();
            if job_done {
                break;
            }
        }
    }
}

/// One push: connect, write everything, half-close, then wait for the listener to close its
/// end. Waiting for that close is what tells a listener that read the push from one that
/// accepted and never read: the bytes of a short push fit in the socket buffer either way.
fn push(addr: &SocketAddr, bytes: &[u8], timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    let attempt = || -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(remaining(deadline)?))?;
        stream.write_all(bytes)?;
        stream.shutdown(Shutdown::Write)?;
        let mut sink = [0u8; 256];
        loop {
            stream.set_read_timeout(Some(remaining(deadline)?))?;
            match stream.read(&mut sink) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    };
    match attempt() {
        Ok(()) => Outcome::Delivered,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Outcome::Refused,
        Err(e) => Outcome::Failed(e),
    }
}

fn remaining(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "push timed out"))
    } else {
        Ok(left)
    }
}
