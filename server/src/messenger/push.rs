//! The messenger's deliveries: the core's messages and acks become pushes to the users'
//! listeners (seed 000 section 8.6), made by the deliverer pool.
//!
//! What belongs to this protocol lives here: the push encodings and their op-name style, and the
//! connect window (a listener that refuses a push just after CONNECT is retried, because some
//! clients only listen once they have read the CONNECT answer).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use wire::{Push, PushStyle};

use crate::core::{Delivery, DeliverySink, Endpoint, JobId, Outcome, Report};
use crate::deliverer::{self, Pool, PushJob};

/// How long to wait before pushing again to a listener that refused during the connect window.
pub const REFUSED_RETRY_DELAY: Duration = Duration::from_millis(100);

pub struct ListenerPushes {
    pool: Pool,
    style: PushStyle,
    connect_window: Duration,
    /// Jobs in flight whose refusals may still fall in the connect window: since when their
    /// recipient is present.
    present_since: HashMap<JobId, Instant>,
    raw: Vec<deliverer::Report>,
    misrouted: Vec<Report>,
}

impl ListenerPushes {
    pub fn new(pool: Pool, style: PushStyle, connect_window: Duration) -> ListenerPushes {
        ListenerPushes {
            pool,
            style,
            connect_window,
            present_since: HashMap::new(),
            raw: Vec::new(),
            misrouted: Vec::new(),
        }
    }
}

impl DeliverySink for ListenerPushes {
    fn has_room(&self) -> bool {
        self.pool.has_room()
    }

    fn start(&mut self, delivery: Delivery) {
        let (id, to, pushes) = match delivery {
            Delivery::Messages {
                job,
                to,
                since,
                messages,
            } => {
                self.present_since.insert(job, since);
                let pushes = messages
                    .into_iter()
                    .map(|m| {
                        Push::Message {
                            sender: m.sender,
                            id: m.id,
                            text: m.text,
                            attachment: m.attachment,
                        }
                        .encode(self.style)
                    })
                    .collect();
                (job, to, pushes)
            }
            Delivery::Ack {
                job,
                to,
                id,
                attachment,
            } => (
                job,
                to,
                vec![Push::Ack { id, attachment }.encode(self.style)],
            ),
        };
        match to {
            Endpoint::Listener(addr, pin) => self.pool.submit(PushJob {
                id,
                addr,
                tls: pin.map(crate::tls::pinned_client_config),
                pushes,
            }),
            // The core writes to sessions itself; a session delivery here is a bug, reported
            // as a failure so the core's bookkeeping still ends.
            Endpoint::Session(session) => self.misrouted.push(Report {
                job: id,
                index: 0,
                outcome: Outcome::Failed(format!("session {session} handed to the push sink")),
                job_done: true,
            }),
        }
    }

    fn cancel(&mut self, job: JobId) {
        self.pool.cancel(job);
    }

    fn reports(&mut self, out: &mut Vec<Report>) {
        out.append(&mut self.misrouted);
        self.pool.reports(&mut self.raw);
        let now = Instant::now();
        for raw in self.raw.drain(..) {
            let in_window = self
                .present_since
                .get(&raw.job)
                .is_some_and(|since| now.duration_since(*since) < self.connect_window);
            if raw.job_done {
                self.present_since.remove(&raw.job);
            }
            let outcome = match raw.outcome {
                deliverer::Outcome::Delivered => Outcome::Delivered,
                deliverer::Outcome::Cancelled => Outcome::Cancelled,
                deliverer::Outcome::Refused if in_window => {
                    Outcome::RetryAfter(REFUSED_RETRY_DELAY)
                }
                deliverer::Outcome::Refused => Outcome::Failed("connection refused".into()),
                deliverer::Outcome::TimedOut(after) => Outcome::Failed(format!(
                    "timed out after {} ms (the listener did not read the push and close)",
                    after.as_millis()
                )),
                deliverer::Outcome::Failed(e) => Outcome::Failed(e.to_string()),
            };
            out.push(Report {
                job: raw.job,
                index: raw.index,
                outcome,
                job_done: raw.job_done,
            });
        }
    }

    fn dispatch(&mut self) {
        self.pool.dispatch();
    }

    fn shut_down(&mut self) {
        self.pool.shut_down();
    }
}
