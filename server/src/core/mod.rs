//! The core: users, presence and mailboxes, independent of any wire format.
//!
//! Front-ends call these methods during a reactor turn. Everything they write lands in the
//! turn's transaction; `end_turn` commits it and only then starts the deliveries that depend on
//! it, so nothing is delivered, and no success is answered, for data that is not on disk.
//!
//! The core says what must reach whom; a [`DeliverySink`] does it. A present user has an
//! [`Endpoint`]: for the messenger, a listener address to push to. Deliveries to one recipient
//! are strictly sequential (at most one job in flight each), in acceptance order, and a job is
//! cancelled when its recipient unregisters or disconnects.

pub mod canvas;
mod sessions;
#[cfg(test)]
mod tests;
mod work;

pub use sessions::{
    DeliveryMark, Interests, JoinOutcome, LoginOutcome, Notice, SessionId, Settings,
};
pub use work::{perform, Done, Work};
use work::{store_message, Stored};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::beside::{Beside, Job as BesideJob, Ticket};
use crate::bus::{Bus, Event as BusEvent, NodeId};
use crate::storage::{self, Pending, Storage};

pub use crate::deliverer::JobId;

/// Most messages one delivery job carries to a recipient before the core looks again.
pub const DELIVERY_BATCH: usize = 64;

/// Acks waiting for room in the sink; more are dropped with a diagnostic (an ack is a courtesy
/// to the sender, not a stored message).
pub const MAX_ACKS_WAITING: usize = 4096;

/// How often, at most, user-list listeners hear a changed list of who is online.
pub const USER_LIST_TICK: Duration = Duration::from_millis(50);

/// How soon to try again to remove delivered messages whose removal did not commit (the
/// database was locked or full).
const REMOVAL_RETRY: Duration = Duration::from_millis(100);

/// How often a node on a shared database looks for deliveries nobody makes: the longest a
/// dead node's recipients wait for another node to take over (its claims go with its
/// connection at once).
const SHARED_SWEEP: Duration = Duration::from_secs(1);

/// Where a present user is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A listener the user announced: every delivery is a push to it (the messenger).
    Listener(SocketAddr),
    /// A persistent connection: deliveries are notices queued on it (chat, rooms).
    Session(SessionId),
}

/// What the core asks a sink to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A recipient's oldest messages, in order; the sink stops at the first that fails.
    Messages {
        job: JobId,
        to: Endpoint,
        /// When the recipient became present at `to`.
        since: Instant,
        messages: Vec<Pending>,
    },
    /// Tells a sender that message `id` was delivered.
    Ack {
        job: JobId,
        to: Endpoint,
        id: u32,
        attachment: Option<Vec<u8>>,
    },
}

/// How one delivery of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Not reachable yet, but expected to be soon (the endpoint was announced a moment ago).
    RetryAfter(Duration),
    /// The endpoint is gone: the recipient is no longer present there.
    Failed(String),
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub job: JobId,
    /// Which item of the job (the n-th message).
    pub index: usize,
    pub outcome: Outcome,
    /// Nothing more of the job will be reported.
    pub job_done: bool,
}

/// Carries deliveries out. The real one pushes to listeners through the deliverer pool; unit
/// tests use a recording fake.
pub trait DeliverySink {
    /// True if one more job may start now.
    fn has_room(&self) -> bool;
    fn start(&mut self, delivery: Delivery);
    /// Abandons a job in flight; a report with `job_done` still follows.
    fn cancel(&mut self, job: JobId);
    /// Moves the reports that have arrived into `out`.
    fn reports(&mut self, out: &mut Vec<Report>);
    /// Sets off what was started or cancelled since the last call (once per reactor turn).
    fn dispatch(&mut self);
    /// Lets what is in flight finish, reports included, and stops.
    fn shut_down(&mut self);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Connected,
    NoSuchUser,
    AlreadyConnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectOutcome {
    Disconnected,
    NoSuchUser,
    NotConnected,
    /// Asked from another address than the user connected from.
    NotFromThere,
}

/// A request's storage work, finished, and what it meant for presence and deliveries.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    Sent(SendOutcome),
    /// False: the alias was taken.
    Registered(bool),
    /// False: there was no such user.
    Unregistered(bool),
    Connected(ConnectOutcome),
    Disconnected(DisconnectOutcome),
    /// The users connected through the messenger as `(alias, ip, port)` in alias order, and
    /// whether the named requester is present: None if there is no such user.
    Listed {
        users: Vec<(String, String, u16)>,
        requester_present: Option<bool>,
    },
}

/// Where a request's storage work runs.
pub enum Started {
    /// Beside the reactor; [`Core::collect_beside`] reports it under this ticket.
    Later(Ticket),
    /// In this turn, done.
    Now(storage::Result<Finished>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored under the sender's next id; `online` if the recipient is present, so a delivery
    /// follows the commit.
    Accepted {
        id: u32,
        online: bool,
    },
    NoSuchUser,
    /// `--max-pending-per-user` messages already wait for the recipient.
    MailboxFull,
}

/// Something that happened to a message, for the console and the logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Delivered {
        id: u32,
        sender: String,
        recipient: String,
    },
    /// Delivered, but its removal did not commit: it is not delivered again, and the removal
    /// is retried.
    RemovalPostponed {
        id: u32,
        recipient: String,
        reason: String,
    },
    PushFailed {
        recipient: String,
        reason: String,
    },
    AckFailed {
        sender: String,
        id: u32,
        reason: String,
    },
    /// Waited longer than `--pending-ttl` and was dropped.
    Expired {
        id: u32,
        sender: String,
        recipient: String,
    },
}

/// A job in flight, as the core remembers it.
enum Job {
    Messages {
        recipient: String,
        to: Endpoint,
        messages: Vec<(i64, String, u32, Option<Vec<u8>>)>,
        cancelled: bool,
    },
    Ack {
        sender: String,
        id: u32,
    },
}

pub struct Core {
    store: Box<dyn Storage>,
    /// Storage workers that run SENDs beside the reactor (PostgreSQL), and the last ticket.
    beside: Option<Beside>,
    next_ticket: Ticket,
    /// On a shared database: the other nodes' session events.
    bus: Option<Bus>,
    /// This node's names on the bus: its storage connection's backend, and those of the
    /// connections it had before (whose events may still be on their way).
    own_nodes: Vec<NodeId>,
    /// Users in a session on another node, and which.
    remote: HashMap<String, NodeId>,
    /// Members of each room in sessions on other nodes, in joining order.
    remote_members: HashMap<String, Vec<(String, NodeId)>>,
    /// On a shared database: this node's users whose join of a room has not yet come back
    /// through the bus, with the room and when they joined (see `Core::tell_room_news`).
    joins_unheard: HashMap<String, (String, Instant)>,
    /// Nodes found gone at the last look (see `sweep_nodes`).
    missing_nodes: Vec<NodeId>,
    sink: Box<dyn DeliverySink>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    settings: Settings,
    sessions: sessions::Sessions,
    /// What sessions must be told, in order, once the turn is committed.
    notices: Vec<(SessionId, Notice)>,
    /// The online set changed; listeners hear it at `user_list_at`.
    user_list_changed: bool,
    user_list_at: Option<Instant>,
    canvas: canvas::Canvas,
    /// The next sweep for expired messages (with `--pending-ttl`).
    expiry_at: Option<Instant>,
    /// On a shared database: when to look for present users with messages that no node is
    /// delivering (accepted while their claim was held by a node that died since).
    sweep_at: Option<Instant>,
    /// When each present user became present (for the sink's connect window).
    present_since: HashMap<String, Instant>,
    jobs: HashMap<JobId, Job>,
    /// The message job in flight for each recipient: at most one, which keeps order.
    in_flight: HashMap<String, JobId>,
    next_job: JobId,
    /// Recipients with something to deliver while the sink had no room; each once.
    waiting: VecDeque<String>,
    waiting_set: HashSet<String>,
    acks_waiting: VecDeque<Delivery>,
    /// `(when, recipient)`; at most one entry per recipient, mirrored in `retry_at`.
    retries: BTreeSet<(Instant, String)>,
    retry_at: HashMap<String, Instant>,
    /// Delivered messages whose removal has not committed, by recipient: nothing more is
    /// delivered to them until it has, so a message is never delivered twice.
    unremoved: HashMap<String, Vec<(i64, u32)>>,
    removal_retry: Option<Instant>,
    // What the current turn will do once its transaction is committed.
    kicks: HashSet<String>,
    turn_removed: Vec<(String, i64, u32)>,
    acks: Vec<(Endpoint, u32, Option<Vec<u8>>, String)>,
    events: Vec<Event>,
    scratch: Vec<Report>,
}

impl Core {
    pub fn new(
        store: Box<dyn Storage>,
        sink: Box<dyn DeliverySink>,
        bus: Option<Bus>,
        beside: Option<Beside>,
        settings: Settings,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> storage::Result<Core> {
        // After a restart, users still marked connected get what is waiting for them.
        let kicks = store.connected_with_pending()?.into_iter().collect();
        let sessions = sessions::Sessions::load(&*store)?;
        let canvas = canvas::Canvas::load(&*store)?;
        let sweep_at = store.shared().then(|| Instant::now() + SHARED_SWEEP);
        if bus.is_some() {
            // The others answer with their sessions and rooms' members.
            store.publish(&BusEvent::Hello.encode())?;
        }
        let own_nodes = store.node().into_iter().collect();
        Ok(Core {
            beside,
            next_ticket: 0,
            store,
            own_nodes,
            bus,
            remote: HashMap::new(),
            remote_members: HashMap::new(),
            joins_unheard: HashMap::new(),
            missing_nodes: Vec::new(),
            sink,
            metrics,
            settings,
            sessions,
            notices: Vec::new(),
            user_list_changed: false,
            user_list_at: None,
            canvas,
            expiry_at: None,
            sweep_at,
            present_since: HashMap::new(),
            jobs: HashMap::new(),
            in_flight: HashMap::new(),
            next_job: 0,
            waiting: VecDeque::new(),
            waiting_set: HashSet::new(),
            acks_waiting: VecDeque::new(),
            retries: BTreeSet::new(),
            retry_at: HashMap::new(),
            unremoved: HashMap::new(),
            removal_retry: None,
            kicks,
            turn_removed: Vec::new(),
            acks: Vec::new(),
            events: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Runs `work`'s storage steps beside the reactor when there are storage workers with room
    /// (PostgreSQL), else in this turn.
    pub fn start(&mut self, work: Work, now: Instant) -> Started {
        match self.try_beside(work) {
            Ok(ticket) => Started::Later(ticket),
            Err(work) => Started::Now(self.perform_now(work, now)),
        }
    }

    fn try_beside(&mut self, work: Work) -> Result<Ticket, Work> {
        let Some(beside) = &self.beside else {
            return Err(work);
        };
        // Refused from memory, with no storage work.
        if matches!(&work, Work::Connect { alias, .. } if self.present_in_a_session(alias)) {
            return Err(work);
        }
        let ticket = self.next_ticket + 1;
        beside
            .try_start(BesideJob { ticket, work })
            .map_err(|job| job.work)?;
        self.next_ticket = ticket;
        Ok(ticket)
    }

    /// Runs `work`'s storage steps in this turn and applies what they mean.
    pub fn perform_now(&mut self, work: Work, now: Instant) -> storage::Result<Finished> {
        if let Work::Connect { alias, .. } = &work {
            // A user in a session (always a registered one) is present already.
            if self.present_in_a_session(alias) {
                return Ok(Finished::Connected(ConnectOutcome::AlreadyConnected));
            }
        }
        let done = perform(&*self.store, &work)?;
        Ok(self.finished(done, now))
    }

    /// The requests whose storage work beside the reactor has finished (a worker rang the
    /// waker): each committed, or failed and rolled back.
    pub fn collect_beside(&mut self, now: Instant) -> Vec<(Ticket, storage::Result<Finished>)> {
        let Some(beside) = &self.beside else {
            return Vec::new();
        };
        let done: Vec<_> = beside.done.try_iter().collect();
        done.into_iter()
            .map(|(ticket, done)| (ticket, done.map(|done| self.finished(done, now))))
            .collect()
    }

    /// What finished storage work means for presence and deliveries.
    fn finished(&mut self, done: Done, now: Instant) -> Finished {
        match done {
            Done::Sent { recipient, stored } => Finished::Sent(self.sent(&recipient, stored)),
            Done::Registered(registered) => Finished::Registered(registered),
            Done::Unregistered { alias, removed } => {
                if removed {
                    // A delivery in flight to them is cancelled.
                    self.leave(&alias);
                    self.unremoved.remove(&alias);
                    self.went_offline(&alias);
                }
                Finished::Unregistered(removed)
            }
            Done::Connected { alias, outcome } => {
                // The user logged in to a session while the CONNECT ran beside the reactor:
                // the session came first, and the listener is taken back (if that write
                // fails, the user stays present both ways, as the CONNECT was committed).
                if outcome == ConnectOutcome::Connected
                    && self.present_in_a_session(&alias)
                    && self.store.set_disconnected(&alias).is_ok()
                {
                    return Finished::Connected(ConnectOutcome::AlreadyConnected);
                }
                if outcome == ConnectOutcome::Connected {
                    self.present_since.insert(alias.clone(), now);
                    self.kicks.insert(alias.clone());
                    self.came_online(&alias, false);
                }
                Finished::Connected(outcome)
            }
            Done::Disconnected { alias, outcome } => {
                if outcome == DisconnectOutcome::Disconnected {
                    self.leave(&alias);
                    self.went_offline(&alias);
                }
                Finished::Disconnected(outcome)
            }
            Done::Listed { users, requester } => Finished::Listed {
                users,
                // Present through a listener, or in a session here.
                requester_present: requester.and_then(|(alias, user)| {
                    let user = user?;
                    let session = self.sessions.session_of(&alias).is_some();
                    Some(listener_endpoint(&user).is_some() || session)
                }),
            },
        }
    }

    /// Where deliveries to `user` go now, if anywhere: a rooms user outside any room is
    /// present but takes no deliveries (its client reads command answers with single reads).
    fn delivery_endpoint(&self, user: &storage::User) -> Option<Endpoint> {
        listener_endpoint(user).or_else(|| {
            let session = self.sessions.session_of(&user.alias)?;
            self.sessions
                .accepts_private(session)
                .then_some(Endpoint::Session(session))
        })
    }

    /// Forgets `alias`'s presence and stops delivering to them.
    fn leave(&mut self, alias: &str) {
        self.present_since.remove(alias);
        if let Some(at) = self.retry_at.remove(alias) {
            self.retries.remove(&(at, alias.to_string()));
        }
        if let Some(&job) = self.in_flight.get(alias) {
            if let Some(Job::Messages { cancelled, to, .. }) = self.jobs.get_mut(&job) {
                // A session's deliveries end with the session, which reports them.
                if !*cancelled && matches!(to, Endpoint::Listener(_)) {
                    *cancelled = true;
                    self.sink.cancel(job);
                }
            }
        }
    }

    /// The storage work of a SEND, with this server's mailbox limit.
    pub fn send_work(
        &self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Work {
        Work::Send {
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            text: text.to_vec(),
            attachment: attachment.map(<[u8]>::to_vec),
            max_pending: self.settings.max_pending_per_user,
        }
    }

    pub fn send(
        &mut self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> storage::Result<SendOutcome> {
        let max_pending = self.settings.max_pending_per_user;
        let stored = store_message(
            &*self.store,
            sender,
            recipient,
            text,
            attachment,
            max_pending,
        )?;
        Ok(self.sent(recipient, stored))
    }

    /// What a stored SEND means for its recipient's deliveries.
    fn sent(&mut self, recipient: &str, stored: Stored) -> SendOutcome {
        let (id, connected) = match stored {
            Stored::Accepted { id, connected } => (id, connected),
            Stored::NoSuchUser => return SendOutcome::NoSuchUser,
            Stored::MailboxFull => return SendOutcome::MailboxFull,
        };
        let local_session = self.sessions.session_of(recipient).is_some();
        let online = connected || self.present_in_a_session(recipient);
        if connected || local_session {
            self.kicks.insert(recipient.to_string());
        } else if online {
            // In a session on another node, which delivers once it hears.
            self.publish(BusEvent::Pending {
                alias: recipient.to_string(),
            });
        }
        SendOutcome::Accepted { id, online }
    }

    /// Applies the results of finished deliveries (called when the deliverers wake the reactor).
    pub fn collect_reports(&mut self, now: Instant) {
        let mut reports = std::mem::take(&mut self.scratch);
        self.sink.reports(&mut reports);
        for report in reports.drain(..) {
            self.apply_report(report, now);
        }
        self.scratch = reports;
    }

    /// A session wrote (or, closing, failed to write) a private message of job `report.job`.
    pub fn session_report(&mut self, report: Report, now: Instant) {
        self.apply_report(report, now);
    }

    fn apply_report(&mut self, report: Report, now: Instant) {
        let Some(job) = self.jobs.get(&report.job) else {
            debug_assert!(false, "report for unknown job {}", report.job);
            return;
        };
        match job {
            Job::Ack { sender, id } => {
                if let Outcome::Failed(reason) = report.outcome {
                    self.events.push(Event::AckFailed {
                        sender: sender.clone(),
                        id: *id,
                        reason,
                    });
                }
            }
            Job::Messages {
                recipient,
                to,
                messages,
                ..
            } => {
                let (recipient, to) = (recipient.clone(), *to);
                let message = messages.get(report.index).cloned();
                self.metrics.push(match report.outcome {
                    Outcome::Delivered => "delivered",
                    Outcome::Failed(_) => "failed",
                    Outcome::RetryAfter(_) => "retried",
                    Outcome::Cancelled => "cancelled",
                });
                match (report.outcome, message) {
                    (Outcome::Delivered, Some((seq, sender, id, attachment))) => {
                        self.delivered(&recipient, seq, sender, id, attachment)
                    }
                    (Outcome::RetryAfter(delay), _) => self.retry(&recipient, now + delay),
                    (Outcome::Failed(reason), _) => self.push_failed(&recipient, to, reason),
                    _ => {}
                }
                if report.job_done {
                    self.in_flight.remove(&recipient);
                    self.kicks.insert(recipient);
                }
            }
        }
        if report.job_done {
            self.jobs.remove(&report.job);
            // Room freed: those waiting for it go first.
            while self.sink.has_room() {
                if let Some(ack) = self.acks_waiting.pop_front() {
                    self.sink.start(ack);
                } else if let Some(alias) = self.waiting.pop_front() {
                    self.waiting_set.remove(&alias);
                    self.kicks.insert(alias);
                    break;
                } else {
                    break;
                }
            }
        }
    }

    fn delivered(
        &mut self,
        recipient: &str,
        seq: i64,
        sender: String,
        id: u32,
        attachment: Option<Vec<u8>>,
    ) {
        // False: the message went with its recipient's UNREGISTER; nothing to record or ack.
        // An error poisons the turn; the removal is then retried (see end_turn).
        if let Ok(false) = self.store.delete_pending(seq) {
            return;
        }
        self.turn_removed.push((recipient.to_string(), seq, id));
        match self.store.user(&sender) {
            Ok(Some(user)) => {
                if let Some(to) = listener_endpoint(&user) {
                    self.acks.push((to, id, attachment, sender.clone()));
                }
            }
            Ok(None) => {}
            Err(e) => self.events.push(Event::AckFailed {
                sender: sender.clone(),
                id,
                reason: e.to_string(),
            }),
        }
        self.events.push(Event::Delivered {
            id,
            sender,
            recipient: recipient.to_string(),
        });
    }

    fn retry(&mut self, alias: &str, at: Instant) {
        if let Some(old) = self.retry_at.insert(alias.to_string(), at) {
            self.retries.remove(&(old, alias.to_string()));
        }
        self.retries.insert((at, alias.to_string()));
    }

    fn push_failed(&mut self, recipient: &str, to: Endpoint, reason: String) {
        // Only mark the user disconnected if they are still present where we delivered: they
        // may have disconnected and connected again meanwhile. A session that failed has
        // already ended.
        match self.store.user(recipient) {
            Ok(Some(user))
                if matches!(to, Endpoint::Listener(_)) && listener_endpoint(&user) == Some(to) =>
            {
                if let Err(e) = self.store.set_disconnected(recipient) {
                    self.events.push(Event::PushFailed {
                        recipient: recipient.to_string(),
                        reason: e.to_string(),
                    });
                }
                self.present_since.remove(recipient);
                self.went_offline(recipient);
            }
            Ok(_) => {}
            Err(e) => self.events.push(Event::PushFailed {
                recipient: recipient.to_string(),
                reason: e.to_string(),
            }),
        }
        self.events.push(Event::PushFailed {
            recipient: recipient.to_string(),
            reason,
        });
    }

    /// The next time the core has something to do by itself.
    pub fn next_deadline(&self) -> Option<Instant> {
        let retry = self.retries.first().map(|(at, _)| *at);
        [
            retry,
            self.removal_retry,
            self.user_list_at,
            self.canvas.tick_at,
            self.expiry_at,
            self.sweep_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn fire_timers(&mut self, now: Instant) {
        if self.user_list_at.is_some_and(|at| at <= now) {
            self.user_list_at = None;
            self.tell_user_lists();
        }
        if self.canvas.tick_at.is_some_and(|at| at <= now) {
            self.canvas_tick();
        }
        if self.expiry_at.is_some_and(|at| at <= now) {
            self.expiry_at = None;
            self.expire();
        }
        if self.sweep_at.is_some_and(|at| at <= now) {
            self.sweep_at = Some(now + SHARED_SWEEP);
            match self.store.connected_with_pending() {
                // Those another node delivers to fail their claim and are left alone.
                Ok(aliases) => self.kicks.extend(aliases),
                Err(e) => log::warn!("looking for deliveries nobody makes: {e}"),
            }
            // A node that took a SEND before it heard of the recipient's session here told
            // nobody: look at this node's sessions' mailboxes too.
            let sessions = self.sessions.aliases();
            if !sessions.is_empty() {
                match self.store.with_pending(&sessions) {
                    Ok(aliases) => self.kicks.extend(aliases),
                    Err(e) => log::warn!("looking for messages to sessions: {e}"),
                }
            }
            self.sweep_nodes();
        }
        while let Some((at, _)) = self.retries.first() {
            if *at > now {
                break;
            }
            let (_, alias) = self.retries.pop_first().expect("looked at first");
            self.retry_at.remove(&alias);
            self.kicks.insert(alias);
        }
        if self.removal_retry.is_some_and(|at| at <= now) {
            self.removal_retry = None;
            for (recipient, messages) in std::mem::take(&mut self.unremoved) {
                for (seq, id) in messages {
                    // Ok(false): gone with an UNREGISTER meanwhile.
                    if !matches!(self.store.delete_pending(seq), Ok(false)) {
                        self.turn_removed.push((recipient.clone(), seq, id));
                    }
                }
                self.kicks.insert(recipient);
            }
        }
    }

    /// Ends the turn: commits its writes, then starts the deliveries that depend on them.
    /// Returns the commit's error, if any (the turn's writes are then rolled back), and the
    /// turn's events.
    pub fn end_turn(&mut self, now: Instant) -> (Result<(), String>, Vec<Event>) {
        self.notice_new_name();
        if std::mem::take(&mut self.user_list_changed) && self.user_list_at.is_none() {
            self.user_list_at = Some(now + USER_LIST_TICK);
        }
        self.canvas_end_turn(now);
        if let (Some(ttl), None) = (self.settings.pending_ttl, self.expiry_at) {
            // Often enough that nothing outlives its time by more than half of it.
            self.expiry_at =
                Some(now + (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60)));
        }
        let committed = self.store.commit();
        let removed = std::mem::take(&mut self.turn_removed);
        let mut events = std::mem::take(&mut self.events);
        if let Err(reason) = &committed {
            // The removals were rolled back: hold those recipients until they are redone.
            for (recipient, seq, id) in removed {
                events.push(Event::RemovalPostponed {
                    id,
                    recipient: recipient.clone(),
                    reason: reason.clone(),
                });
                self.unremoved.entry(recipient).or_default().push((seq, id));
            }
            events.retain(|e| !matches!(e, Event::Delivered { .. }));
            self.acks.clear();
            if !self.unremoved.is_empty() && self.removal_retry.is_none() {
                self.removal_retry = Some(now + REMOVAL_RETRY);
            }
        }
        for (to, id, attachment, sender) in std::mem::take(&mut self.acks) {
            let job = self.new_job(Job::Ack {
                sender: sender.clone(),
                id,
            });
            let ack = Delivery::Ack {
                job,
                to,
                id,
                attachment,
            };
            if self.sink.has_room() {
                self.sink.start(ack);
            } else if self.acks_waiting.len() < MAX_ACKS_WAITING {
                self.acks_waiting.push_back(ack);
            } else {
                self.jobs.remove(&job);
                events.push(Event::AckFailed {
                    sender,
                    id,
                    reason: format!("{MAX_ACKS_WAITING} acks already wait for a deliverer"),
                });
            }
        }
        let kicks: Vec<String> = self.kicks.drain().collect();
        for alias in kicks {
            self.start_delivery(&alias, &mut events);
        }
        (committed, events)
    }

    /// Sets off the deliveries started (and cancellations made) since the last call; the
    /// reactor calls it once per turn, so each deliverer is woken at most once a turn.
    pub fn dispatch(&mut self) {
        self.sink.dispatch();
    }

    fn new_job(&mut self, job: Job) -> JobId {
        self.next_job += 1;
        self.jobs.insert(self.next_job, job);
        self.next_job
    }

    /// True if `end_turn` has anything to do.
    pub fn turn_has_work(&self) -> bool {
        self.store.has_uncommitted()
            || !self.kicks.is_empty()
            || !self.acks.is_empty()
            || !self.events.is_empty()
            || !self.turn_removed.is_empty()
            || !self.notices.is_empty()
            || self.user_list_changed
            || self.canvas.unsaved()
            // Connected to the database again: announce the sessions under the new name.
            || self.store.node().is_some_and(|n| !self.own_nodes.contains(&n))
    }

    /// Starts delivering the oldest messages waiting for `alias`, unless a delivery to them is
    /// on its way, a removal of theirs is not committed yet, or a retry is scheduled.
    fn start_delivery(&mut self, alias: &str, events: &mut Vec<Event>) {
        if self.in_flight.contains_key(alias)
            || self.unremoved.contains_key(alias)
            || self.retry_at.contains_key(alias)
            || self.waiting_set.contains(alias)
        {
            return;
        }
        let to_listener = self.sessions.session_of(alias).is_none();
        if to_listener && !self.sink.has_room() {
            self.waiting_set.insert(alias.to_string());
            self.waiting.push_back(alias.to_string());
            return;
        }
        match self.store.claim_deliveries(alias) {
            Ok(true) => {}
            // Another node delivers to them; when it is done it looks again.
            Ok(false) => return,
            Err(e) => {
                events.push(Event::PushFailed {
                    recipient: alias.to_string(),
                    reason: format!("claiming the deliveries: {e}"),
                });
                return;
            }
        }
        let mut present = false;
        let next = self.store.user(alias).and_then(|user| {
            let Some(to) = user.as_ref().and_then(|u| self.delivery_endpoint(u)) else {
                return Ok(None);
            };
            present = true;
            let batch = self.store.pending_batch(alias, DELIVERY_BATCH)?;
            Ok((!batch.is_empty()).then_some((to, batch)))
        });
        if !matches!(next, Ok(Some(_))) {
            self.release_deliveries(alias, present, events);
        }
        match next {
            Ok(None) => {}
            Ok(Some((to, messages))) => {
                let since = *self
                    .present_since
                    .entry(alias.to_string())
                    // Present since before a restart: no connect window any more.
                    .or_insert_with(|| Instant::now() - Duration::from_secs(3600));
                let job = self.new_job(Job::Messages {
                    recipient: alias.to_string(),
                    to,
                    messages: messages
                        .iter()
                        .map(|m| (m.seq, m.sender.clone(), m.id, m.attachment.clone()))
                        .collect(),
                    cancelled: false,
                });
                self.in_flight.insert(alias.to_string(), job);
                match to {
                    Endpoint::Listener(_) => self.sink.start(Delivery::Messages {
                        job,
                        to,
                        since,
                        messages,
                    }),
                    Endpoint::Session(session) => {
                        let count = messages.len();
                        for (index, message) in messages.into_iter().enumerate() {
                            self.notices.push((
                                session,
                                Notice::Private {
                                    from: message.sender.into(),
                                    text: message.text.into(),
                                    delivery: DeliveryMark {
                                        job,
                                        index,
                                        last: index + 1 == count,
                                    },
                                },
                            ));
                        }
                    }
                }
            }
            Err(e) => events.push(Event::PushFailed {
                recipient: alias.to_string(),
                reason: format!("reading the queue: {e}"),
            }),
        }
    }

    /// Gives up the claim on `alias`'s deliveries. On a shared database another node may have
    /// accepted a message for them while this one held the claim (its own claim failed, so it
    /// left the message to us): if they are still present and something waits, go again.
    fn release_deliveries(&mut self, alias: &str, present: bool, events: &mut Vec<Event>) {
        if let Err(e) = self.store.release_deliveries(alias) {
            events.push(Event::PushFailed {
                recipient: alias.to_string(),
                reason: format!("releasing the deliveries: {e}"),
            });
        }
        if present && self.store.shared() && matches!(self.store.pending_count(alias, 1), Ok(1)) {
            self.kicks.insert(alias.to_string());
        }
    }

    /// Stops the sink once what is in flight is done, records the outcomes and commits.
    pub fn shut_down(&mut self, now: Instant) -> (Result<(), String>, Vec<Event>) {
        self.sink.shut_down();
        self.collect_reports(now);
        // The sink is gone: nothing more is delivered, only the outcomes are recorded.
        self.acks.clear();
        self.kicks.clear();
        self.end_turn(now)
    }

    /// Drops the messages older than `--pending-ttl`, with an event for each.
    fn expire(&mut self) {
        let Some(ttl) = self.settings.pending_ttl else {
            return;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = now.saturating_sub(ttl).as_secs() as i64;
        // A failed write poisons the turn, and the next sweep tries again.
        if let Ok(expired) = self.store.expire_pending(before) {
            for (recipient, sender, id) in expired {
                self.events.push(Event::Expired {
                    id,
                    sender,
                    recipient,
                });
            }
        }
    }

    /// What sessions must be told, in order; the reactor takes them after each commit.
    pub fn take_notices(&mut self) -> Vec<(SessionId, Notice)> {
        std::mem::take(&mut self.notices)
    }
}

fn listener_endpoint(user: &storage::User) -> Option<Endpoint> {
    let (ip, port) = user.listener()?;
    Some(Endpoint::Listener(SocketAddr::new(ip.parse().ok()?, port)))
}
