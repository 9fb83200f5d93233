//! The core: users, presence and mailboxes, independent of any wire format.
//!
//! Front-ends call these methods during a reactor turn. Everything they write lands in the
//! turn's transaction; `end_turn` commits it and only then starts the deliveries that depend on
//! it, so nothing is delivered, and no success is answered, for data that is not on disk. (A
//! private message between two sessions may go around the mailbox, stored nowhere: see
//! `direct.rs`.)
//!
//! The core says what must reach whom; a [`DeliverySink`] does it. A present user has an
//! [`Endpoint`]: for the messenger, a listener address to push to. Deliveries to one recipient
//! are strictly sequential (at most one job in flight each), in acceptance order, and a job is
//! cancelled when its recipient unregisters or disconnects.

pub mod canvas;
mod direct;
mod new_names;
mod sessions;
#[cfg(test)]
mod tests;
mod work;

pub use sessions::{
    DeliveryMark, Ending, Interests, JoinOutcome, LoginOutcome, Notice, Presence, SessionId,
    Settings,
};
use work::{listener_address, Gathered, Removal, Stored};
pub use work::{perform, perform_chore, Chore, ChoreDone, Done, Work};

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::accounts::{Accounts, Denial, Proved, Step};
use crate::beside::{Beside, Key, TaskDone, Ticket};
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

/// How soon to try again a delivery whose storage worker's queue was full.
const BUSY_RETRY: Duration = Duration::from_millis(10);

/// How soon to publish again after the session bus's events failed to go out.
const PUBLISH_RETRY: Duration = Duration::from_millis(100);

/// Bus events waiting to be published; past it more are dropped with a diagnostic (the other
/// nodes' sessions then miss them, as when the bus's connection is lost).
const MAX_EVENTS_WAITING: usize = 65_536;

/// How long a stopping server waits for the deliveries' storage work in hand (their removals
/// above all), as long as any statement may run.
const CHORES_AT_SHUTDOWN: Duration = Duration::from_secs(5);

/// The SHA-256 of a listener's TLS certificate: pushes to it go over TLS and accept only it.
pub type Pin = [u8; 32];

/// Where a present user is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// A listener the user announced: every delivery is a push to it (the messenger), over
    /// TLS to the certificate pinned if there is a pin.
    Listener(SocketAddr, Option<Pin>),
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
    Login(LoginOutcome),
    /// Refused by the accounts: a missing or wrong password or key, a throttled address, ...
    Denied(Denial),
    /// The password was set or removed; false: there is no such user.
    PasswordSet(bool),
    /// The room's key was set (true) or removed.
    RoomKeySet(bool),
    /// A REGISTER refused: its address registered `--max-new-names-per-minute` names in the
    /// last minute.
    TooManyNewNames,
    Broadcast,
    Joined(JoinOutcome),
    /// A room line stored and told to the room.
    RoomMessage,
}

/// A request's answer that was deferred under `ticket`: its storage work is done.
#[derive(Debug)]
pub struct Answer {
    pub ticket: Ticket,
    /// The database server's life the work committed in.
    pub epoch: storage::Epoch,
    pub result: storage::Result<Finished>,
    /// Committed beside the reactor (PostgreSQL), rather than in the reactor's turn (whose
    /// commit it then waits for).
    pub beside: bool,
}

/// Where a request's storage work runs.
#[derive(Debug)]
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
    /// Told to the recipient's session around the mailbox (`direct.rs`): stored nowhere, it
    /// depends on the turn's commit (which may hold the sender's id block), not on the disk.
    Told {
        id: u32,
    },
    NoSuchUser,
    /// `--max-pending-per-user` messages already wait for the recipient.
    MailboxFull,
}

/// Something that happened to a message, for the console and the logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Delivered, and its removal committed.
    /// (Its names are shared with what the core kept for it: a message around the mailbox
    /// is reported without a copy.)
    Delivered {
        id: u32,
        sender: std::rc::Rc<str>,
        recipient: std::rc::Rc<str>,
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
        messages: Vec<Removal>,
        cancelled: bool,
    },
    Ack {
        sender: String,
        id: u32,
    },
    /// A private message around the mailbox to a session (`direct.rs`); `stored`: its row,
    /// once its first write did not write it whole.
    Direct {
        recipient: std::rc::Rc<str>,
        sender: std::rc::Rc<str>,
        id: u32,
        text: std::rc::Rc<[u8]>,
        stored: Option<i64>,
    },
}

pub struct Core {
    store: Box<dyn Storage>,
    /// Passwords and room keys: the checker, the throttle, the policy.
    accounts: Accounts,
    /// Answers to deferred requests that were made in this turn (after their secrets were
    /// checked), for the reactor to collect.
    answered: Vec<Answer>,
    /// Storage workers that run SENDs and deliveries' storage work beside the reactor
    /// (PostgreSQL), and the last ticket.
    beside: Option<Beside>,
    next_ticket: Ticket,
    /// Deliveries' storage work running beside the reactor, by ticket.
    chores: HashMap<Ticket, Chore>,
    /// Logins whose storage work is under way: the session and what it is to hear, by alias
    /// (the name counts as taken meanwhile), and the alias by session.
    logging_in: HashMap<String, (SessionId, Interests)>,
    login_of: HashMap<SessionId, String>,
    /// The session of each login whose storage work runs beside the reactor, by ticket.
    login_tickets: HashMap<Ticket, SessionId>,
    /// Joins of rooms running beside the reactor, by ticket: who joins which room, and
    /// whether the join creates it.
    join_tickets: HashMap<Ticket, (String, String, bool)>,
    /// Recipients whose next deliveries are being gathered beside the reactor.
    gathering: HashSet<String>,
    /// Of those, the ones kicked meanwhile: a message committed after the gathering read the
    /// mailbox would otherwise wait for the next sweep.
    gather_again: HashSet<String>,
    /// Recipients with removals running beside the reactor, and how many.
    removing: HashMap<String, usize>,
    /// Messages delivered in this turn, by recipient in the order they were first delivered
    /// to: removed at the end of the turn.
    removals_due: Vec<(String, Vec<Removal>)>,
    removals_due_index: HashMap<String, usize>,
    /// The sink is shut down: nothing more starts.
    stopped: bool,
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
    /// through the bus, or whose answer has not (see `Core::tell_room_news`).
    joins: HashMap<String, sessions::Join>,
    /// Nodes found gone at the last look (see `sweep_nodes`).
    missing_nodes: Vec<NodeId>,
    /// On a shared database: bus events (encoded) waiting to be published, in order.
    to_publish: Vec<String>,
    /// A `Chore::Publish` is in flight: the next waits for it, so events go out in order.
    publishing: bool,
    /// After a failed publish: not before then.
    publish_retry: Option<Instant>,
    sink: Box<dyn DeliverySink>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    settings: Settings,
    /// Names registered by each address in the last minute.
    new_names: new_names::NewNames,
    sessions: sessions::Sessions,
    /// What sessions must be told, in order, once the turn is committed.
    notices: Vec<(SessionId, Notice)>,
    /// The online set changed; listeners hear it at `user_list_at`.
    user_list_changed: bool,
    user_list_at: Option<Instant>,
    canvas: canvas::Canvas,
    /// The next sweep for expired messages (with `--pending-ttl`).
    expiry_at: Option<Instant>,
    /// Background scans (the sweep, the expiry) in flight, by [`scan_key`]: one of each at
    /// a time.
    scanning: HashSet<&'static str>,
    /// On a shared database: when to look for present users with messages that no node is
    /// delivering (accepted while their claim was held by a node that died since).
    sweep_at: Option<Instant>,
    /// When each present user became present (for the sink's connect window).
    present_since: HashMap<String, Instant>,
    jobs: crate::ids::IdMap<JobId, Job>,
    /// The message job in flight for each recipient: at most one, which keeps order.
    in_flight: HashMap<String, JobId>,
    /// How many messages around the mailbox each session has not written yet (`direct.rs`).
    unwritten_direct: HashMap<std::rc::Rc<str>, usize>,
    /// The messages around the mailbox of this turn, taken back if its commit fails.
    turn_direct: Vec<JobId>,
    /// Messages around the mailbox that will never be written, to queue in front of their
    /// recipients' mailboxes at the end of the turn: `(recipient, sender, id, text)`.
    unwritten_to_queue: Vec<direct::Unwritten>,
    /// Recipients whose mailbox deliveries wait for their messages around the mailbox to be
    /// written (or stored): they are looked at again when the last one is.
    after_direct: HashSet<String>,
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
    unremoved: HashMap<String, Vec<Removal>>,
    removal_retry: Option<Instant>,
    // What the current turn will do once its transaction is committed.
    kicks: HashSet<String>,
    /// Removed in the turn's transaction: the recipient, the message and where its sender
    /// hears the acknowledgement.
    turn_removed: Vec<(String, Removal, Option<Endpoint>)>,
    /// Messages dropped by `--pending-ttl` in the turn's transaction, reported once it commits.
    turn_expired: Vec<Event>,
    /// Acknowledgements of committed removals, to start.
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
        accounts: Accounts,
        settings: Settings,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> storage::Result<Core> {
        // After a restart, users still marked connected get what is waiting for them.
        let kicks = store.connected_with_pending()?.into_iter().collect();
        let sessions = sessions::Sessions::load(&*store, settings.history)?;
        let canvas = canvas::Canvas::load(&*store)?;
        let sweep_at = store.shared().then(|| Instant::now() + SHARED_SWEEP);
        let own_nodes: Vec<NodeId> = store.node().into_iter().collect();
        // The others answer with their sessions and rooms' members.
        let to_publish = match (&bus, store.node()) {
            (Some(_), Some(node)) => vec![BusEvent::Hello.encode(node)],
            _ => Vec::new(),
        };
        let expiry_at = settings
            .pending_ttl
            .map(|ttl| Instant::now() + expiry_period(ttl));
        Ok(Core {
            accounts,
            answered: Vec::new(),
            beside,
            next_ticket: 0,
            chores: HashMap::new(),
            logging_in: HashMap::new(),
            login_of: HashMap::new(),
            login_tickets: HashMap::new(),
            join_tickets: HashMap::new(),
            gathering: HashSet::new(),
            gather_again: HashSet::new(),
            removing: HashMap::new(),
            removals_due: Vec::new(),
            removals_due_index: HashMap::new(),
            stopped: false,
            store,
            own_nodes,
            bus,
            remote: HashMap::new(),
            remote_members: HashMap::new(),
            joins: HashMap::new(),
            missing_nodes: Vec::new(),
            to_publish,
            publishing: false,
            publish_retry: None,
            sink,
            metrics,
            new_names: new_names::NewNames::new(settings.max_new_names_per_minute),
            settings,
            sessions,
            notices: Vec::new(),
            user_list_changed: false,
            scanning: HashSet::new(),
            user_list_at: None,
            canvas,
            expiry_at,
            sweep_at,
            present_since: HashMap::new(),
            jobs: Default::default(),
            in_flight: HashMap::new(),
            unwritten_direct: HashMap::new(),
            turn_direct: Vec::new(),
            unwritten_to_queue: Vec::new(),
            after_direct: HashSet::new(),
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
            turn_expired: Vec::new(),
            acks: Vec::new(),
            events: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Runs `work`'s storage steps beside the reactor when there are storage workers
    /// (PostgreSQL), else in this turn. When the workers' queue is full the request is
    /// refused: the reactor never waits on the database's round trips, and run now it would
    /// overtake the work queued before it. A request whose caller's secret must be checked
    /// first is answered later, on either engine.
    pub fn start(&mut self, work: Work, now: Instant) -> Started {
        // A user in a session (always a registered one) is present already.
        if matches!(&work, Work::Connect { alias, .. } if self.in_a_session_or_logging_in(alias)) {
            return Started::Now(Ok(Finished::Connected(ConnectOutcome::AlreadyConnected)));
        }
        if let Work::Register { from, .. } = &work {
            if !self.new_names.allows(*from, now) {
                self.metrics.refused("new_names_per_minute");
                return Started::Now(Ok(Finished::TooManyNewNames));
            }
        }
        let denial = self
            .accounts
            .throttled(&work, now)
            .or_else(|| self.session_elsewhere(&work));
        if let Some(denial) = denial {
            return Started::Now(Ok(self.refused(&work, denial, now)));
        }
        match self.try_beside(work) {
            Ok(ticket) => Started::Later(ticket),
            Err(_) if self.beside.is_some() => Started::Now(Err(storage::Error(
                "the storage workers are busy; nothing was stored".into(),
            ))),
            Err(work) => {
                let ticket = self.new_ticket();
                match self.run_in_turn(ticket, work, now) {
                    Some(answer) => Started::Now(answer.result),
                    None => Started::Later(ticket),
                }
            }
        }
    }

    /// Refuses DISCONNECT and UNREGISTER of a user in a session from another address than
    /// the session's, or in a session on another node (whose address this one cannot check).
    fn session_elsewhere(&self, work: &Work) -> Option<Denial> {
        let (Work::Unregister { alias, from, .. } | Work::Disconnect { alias, from, .. }) = work
        else {
            return None;
        };
        if self.remote.contains_key(alias) {
            return Some(Denial::OnAnotherNode);
        }
        let session = self.sessions.session_of(alias)?;
        let came_from = self.sessions.address_of(session)?;
        (came_from.to_canonical() != from.to_canonical()).then_some(Denial::NotFromThere)
    }

    fn new_ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        self.next_ticket
    }

    // The work comes back only when no worker takes it: moving it back is cheaper than
    // boxing every request.
    #[allow(clippy::result_large_err)]
    fn try_beside(&mut self, work: Work) -> Result<Ticket, Work> {
        let ticket = self.next_ticket + 1;
        self.try_beside_as(ticket, work)?;
        self.next_ticket = ticket;
        Ok(ticket)
    }

    #[allow(clippy::result_large_err)] // As `try_beside`.
    fn try_beside_as(&mut self, ticket: Ticket, work: Work) -> Result<(), Work> {
        let Some(beside) = &mut self.beside else {
            return Err(work);
        };
        beside.try_start(ticket, work)
    }

    /// Runs `work`'s storage steps in this turn under `ticket`: its answer, or None while its
    /// secrets are being checked.
    fn run_in_turn(&mut self, ticket: Ticket, work: Work, now: Instant) -> Option<Answer> {
        let done = perform(&*self.store, &work, self.accounts.policy);
        self.request_done(ticket, 0, done, false, now)
    }

    /// A request's storage work came back (from this turn, or from a worker beside the
    /// reactor): its answer, or None if it must wait for its secrets to be checked.
    fn request_done(
        &mut self,
        ticket: Ticket,
        epoch: storage::Epoch,
        done: storage::Result<Done>,
        beside: bool,
        now: Instant,
    ) -> Option<Answer> {
        let result = match done {
            Ok(Done::Proving { work, proving }) => {
                match self.accounts.prove(ticket, *work, proving, now) {
                    Step::Checking => return None,
                    Step::Again(work) => return self.run_again(ticket, work, now),
                    Step::Refused(work, denial) => Ok(Done::Denied {
                        work: Box::new(work),
                        denial,
                    }),
                }
            }
            other => other,
        };
        let login = self.login_tickets.remove(&ticket);
        let join = self.join_tickets.remove(&ticket);
        let result = match result {
            Ok(done) => Ok(self.finished(done, now)),
            Err(e) => {
                if let Some(session) = login {
                    self.cancel_login(session);
                }
                if let Some((alias, room, create)) = join {
                    self.join_failed(&alias, &room, create);
                }
                Err(e)
            }
        };
        Some(Answer {
            ticket,
            epoch,
            result,
            beside,
        })
    }

    /// Runs a request again under its ticket, now that its secrets are proved.
    fn run_again(&mut self, ticket: Ticket, work: Work, now: Instant) -> Option<Answer> {
        match self.try_beside_as(ticket, work) {
            Ok(()) => None,
            Err(_) if self.beside.is_some() => self.request_done(
                ticket,
                0,
                Err(storage::Error(
                    "the storage workers are busy; nothing was stored".into(),
                )),
                true,
                now,
            ),
            Err(work) => self.run_in_turn(ticket, work, now),
        }
    }

    /// The requests whose storage work beside the reactor has finished (a worker rang the
    /// waker), and those whose secrets were checked since: each committed, or failed and
    /// rolled back, or refused. Deliveries' storage work that finished is applied here.
    pub fn collect_beside(&mut self, now: Instant) -> Vec<Answer> {
        for (ticket, checked) in self.accounts.checked(now) {
            let answer = match checked {
                Proved::Ready(work) => {
                    self.accounts.succeeded(&work);
                    self.run_again(ticket, work, now)
                }
                Proved::Refused(work, denial) => {
                    let denied = Done::Denied {
                        work: Box::new(work),
                        denial,
                    };
                    self.request_done(ticket, 0, Ok(denied), self.beside.is_some(), now)
                }
            };
            self.answered.extend(answer);
        }
        let mut answers = std::mem::take(&mut self.answered);
        let Some(beside) = &self.beside else {
            return answers;
        };
        let reports: Vec<_> = beside.done.try_iter().collect();
        for report in reports {
            if let Some(answer) = self.apply_beside(report, now) {
                answers.push(answer);
            }
        }
        answers
    }

    /// Applies a report of storage work beside the reactor; a request's answer is returned.
    fn apply_beside(
        &mut self,
        (ticket, epoch, result): crate::beside::Report,
        now: Instant,
    ) -> Option<Answer> {
        if let Some(beside) = &mut self.beside {
            beside.reported(ticket);
        }
        match (self.chores.remove(&ticket), result) {
            (None, Ok(TaskDone::Request(done))) => {
                self.request_done(ticket, epoch, Ok(done), true, now)
            }
            (None, Err(e)) => self.request_done(ticket, epoch, Err(e), true, now),
            (Some(chore), Ok(TaskDone::Chore(done))) => {
                self.chore_ended(&chore);
                self.chore_done(chore, Ok(done), true, now);
                None
            }
            (Some(chore), Err(e)) => {
                self.chore_ended(&chore);
                self.chore_done(chore, Err(e), true, now);
                None
            }
            (chore, Ok(_)) => {
                log::error!("storage ticket {ticket} reported work of another kind: {chore:?}");
                debug_assert!(false, "storage ticket {ticket} of another kind");
                None
            }
        }
    }

    /// A request refused on the accounts' account: noted (failed guesses count towards the
    /// throttle), and what it had reserved (a login's name, a room it was creating) is let
    /// go.
    fn refused(&mut self, work: &Work, denial: Denial, now: Instant) -> Finished {
        self.accounts.refused(work, denial, now);
        match work {
            Work::Login { session, alias, .. } => {
                if let Some(&(_, interests)) = self.logging_in.get(alias) {
                    self.metrics.login_failed(interests.frontend());
                }
                self.cancel_login(*session)
            }
            Work::JoinRoom {
                alias,
                room,
                create,
                ..
            } => self.join_failed(alias, room, *create),
            _ => {}
        }
        Finished::Denied(denial)
    }

    /// What finished storage work means for presence and deliveries.
    fn finished(&mut self, done: Done, now: Instant) -> Finished {
        match done {
            Done::Proving { work, .. } => {
                debug_assert!(false, "a work to prove reached `finished`: {work:?}");
                Finished::Denied(Denial::Busy)
            }
            Done::Denied { work, denial } => self.refused(&work, denial, now),
            Done::PasswordSet { alias, set } => {
                if set {
                    self.accounts.forget(&alias);
                }
                Finished::PasswordSet(set)
            }
            Done::RoomKeySet { room, keyed } => {
                self.accounts.forget(&format!("room:{room}"));
                self.room_keyed(&room, keyed);
                Finished::RoomKeySet(keyed)
            }
            Done::Sent { recipient, stored } => Finished::Sent(self.sent(&recipient, stored)),
            Done::Registered { registered, from } => {
                if registered {
                    self.new_names.registered(from, now);
                }
                Finished::Registered(registered)
            }
            Done::Unregistered { alias, removed } => {
                if removed {
                    // A delivery in flight to them is cancelled.
                    self.leave(&alias);
                    self.unremoved.remove(&alias);
                    // A session goes offline when its connection closes.
                    if !self.end_session_of(&alias, Ending::Unregistered) {
                        self.went_offline(&alias);
                    }
                }
                Finished::Unregistered(removed)
            }
            Done::Connected { alias, outcome } => {
                // The user logged in to a session while the CONNECT ran beside the reactor:
                // the session came first, and the listener is taken back.
                if outcome == ConnectOutcome::Connected && self.present_in_a_session(&alias) {
                    self.chore(None, Chore::TakeBack { alias }, now);
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
                // A user in a session here (from the caller's address, as `start` checked).
                if outcome == DisconnectOutcome::NotConnected
                    && self.end_session_of(&alias, Ending::Disconnected)
                {
                    return Finished::Disconnected(DisconnectOutcome::Disconnected);
                }
                if outcome == DisconnectOutcome::Disconnected {
                    self.leave(&alias);
                    self.went_offline(&alias);
                }
                Finished::Disconnected(outcome)
            }
            Done::LoggedIn {
                session,
                alias,
                taken,
                registered,
                refused_new,
                from,
            } => {
                if registered {
                    self.new_names.registered(from, now);
                }
                let outcome = self.logged_in(session, &alias, taken, registered, refused_new, from);
                Finished::Login(outcome)
            }
            // The other nodes heard it with its commit.
            Done::Broadcast { from, text } => {
                self.metrics.message("broadcast");
                self.tell_broadcast(from.as_str().into(), text.as_str().into());
                Finished::Broadcast
            }
            Done::JoinedRoom {
                session,
                alias,
                room,
                created,
                history,
                keyed,
            } => {
                self.room_keyed(&room, keyed);
                Finished::Joined(self.joined_room(session, alias, &room, created, history))
            }
            Done::RoomMessage {
                session,
                room,
                from,
                text,
            } => {
                self.metrics.message("room_line");
                self.room_message_stored(session, room, from, text);
                Finished::RoomMessage
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
                if !*cancelled && matches!(to, Endpoint::Listener(..)) {
                    *cancelled = true;
                    self.sink.cancel(job);
                }
            }
        }
    }

    /// The storage work of a chat broadcast, keeping this server's `--history`.
    pub fn broadcast_work(&self, from: &str, text: &str) -> Work {
        // What reaches other users is clean text (docs/text.md), whatever the front-end.
        let text = wire::clean_text(text);
        Work::Broadcast {
            from: from.to_string(),
            text: text.to_string(),
            keep: self.settings.history.max(1),
            announce: self.announcement(BusEvent::Broadcast {
                from: from.to_string(),
                text: text.to_string(),
            }),
        }
    }

    /// The storage work of a SEND, with this server's mailbox limit.
    /// A SEND from `sender`, whose caller at `from` proves itself with `proof`.
    pub fn send_work(
        &self,
        (sender, proof, from): (&str, crate::accounts::Proof, std::net::IpAddr),
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Work {
        Work::Send {
            proof,
            from,
            sender: sender.to_string(),
            recipient: recipient.to_string(),
            // What reaches other users is clean text (docs/text.md), whatever the front-end.
            text: wire::clean_text_bytes(text).into_owned(),
            attachment: attachment.map(<[u8]>::to_vec),
            max_pending: self.settings.max_pending_per_user,
        }
    }

    /// Starts a private message from the user of a chat session (`sender`, its shared name,
    /// from address `from`): around the mailbox if it may go so (`direct.rs`), else stored
    /// in it like a SEND.
    pub fn send_from_session(
        &mut self,
        (sender, from): (&std::rc::Rc<str>, std::net::IpAddr),
        recipient: &str,
        text: &[u8],
        now: Instant,
    ) -> Started {
        // What reaches other users is clean text (docs/text.md), whatever the front-end.
        let text = wire::clean_text_bytes(text);
        if let Some(sent) = self.send_direct(sender, recipient, &text) {
            return Started::Now(sent.map(Finished::Sent));
        }
        let sender = (&**sender, crate::accounts::Proof::Session, from);
        let work = self.send_work(sender, recipient, &text, None);
        self.start(work, now)
    }

    /// What a stored SEND means for its recipient's deliveries.
    fn sent(&mut self, recipient: &str, stored: Stored) -> SendOutcome {
        let (id, connected) = match stored {
            Stored::Accepted { id, connected } => (id, connected),
            Stored::NoSuchUser => return SendOutcome::NoSuchUser,
            Stored::MailboxFull => {
                self.metrics.refused("mailbox_full");
                return SendOutcome::MailboxFull;
            }
        };
        self.metrics.message("private");
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
            Job::Direct { .. } => {
                self.direct_reported(report.job, report.outcome == Outcome::Delivered)
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
                    (Outcome::Delivered, Some(removal)) => self.delivered(&recipient, removal),
                    (Outcome::RetryAfter(delay), _) => self.retry(&recipient, now + delay),
                    (Outcome::Failed(reason), _) => self.push_failed(&recipient, to, reason, now),
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

    /// A message reached its recipient: it is removed at the end of the turn.
    fn delivered(&mut self, recipient: &str, removal: Removal) {
        match self.removals_due_index.get(recipient) {
            Some(&at) => self.removals_due[at].1.push(removal),
            None => {
                self.removals_due_index
                    .insert(recipient.to_string(), self.removals_due.len());
                self.removals_due
                    .push((recipient.to_string(), vec![removal]));
            }
        }
    }

    fn retry(&mut self, alias: &str, at: Instant) {
        if let Some(old) = self.retry_at.insert(alias.to_string(), at) {
            self.retries.remove(&(old, alias.to_string()));
        }
        self.retries.insert((at, alias.to_string()));
    }

    fn push_failed(&mut self, recipient: &str, to: Endpoint, reason: String, now: Instant) {
        // A session that failed has already ended. A listener's user is marked disconnected
        // if they still listen there: they may have connected again meanwhile.
        // The failure is reported once the user's presence says so: whoever reads the line
        // and asks finds them disconnected.
        match to {
            Endpoint::Listener(listener, _) => {
                let chore = Chore::Unreachable {
                    recipient: recipient.to_string(),
                    listener,
                    reason,
                };
                self.chore(Some(recipient), chore, now);
            }
            Endpoint::Session(_) => self.events.push(Event::PushFailed {
                recipient: recipient.to_string(),
                reason,
            }),
        }
    }

    /// Runs a delivery's storage work: beside the reactor on PostgreSQL, on the worker that
    /// runs `key`'s (the recipient's, whose claim its connection holds), else in this turn.
    fn chore(&mut self, key: Option<&str>, chore: Chore, now: Instant) {
        let Some(beside) = &mut self.beside else {
            let done = perform_chore(&*self.store, &chore);
            self.chore_done(chore, done, false, now);
            return;
        };
        let ticket = self.next_ticket + 1;
        // A recipient's steps stay on the worker whose connection holds their claim; the
        // background scans go to an ordered worker, never to the request workers.
        let key = key.map(|key| match chore {
            Chore::Publish { .. } | Chore::Sweep { .. } | Chore::Expire { .. } => {
                Key::Ordered(key.to_string())
            }
            _ => Key::Pinned(key.to_string()),
        });
        match beside.try_start_chore(ticket, key, chore.clone()) {
            Ok(()) => {
                self.next_ticket = ticket;
                match &chore {
                    Chore::Gather { alias, .. } => {
                        self.gathering.insert(alias.clone());
                    }
                    Chore::Remove { recipient, .. } => {
                        *self.removing.entry(recipient.clone()).or_default() += 1;
                    }
                    Chore::Publish { .. } => self.publishing = true,
                    Chore::Sweep { .. } | Chore::Expire { .. } => {
                        self.scanning.insert(scan_key(&chore));
                    }
                    _ => {}
                }
                self.chores.insert(ticket, chore);
            }
            // The worker has a long queue: come back to it later.
            Err(chore) => match chore {
                Chore::Remove {
                    recipient,
                    removals,
                } => {
                    self.postpone_removals(&recipient, removals, "the storage worker is busy", now)
                }
                Chore::Gather { alias, .. }
                | Chore::Release { alias }
                | Chore::Unreachable {
                    recipient: alias, ..
                } => self.retry(&alias, now + BUSY_RETRY),
                Chore::Publish { events, paints, .. } => {
                    self.publish_again(events, paints, now + BUSY_RETRY)
                }
                // The next sweep comes soon enough; a CONNECT taken back stays connected
                // (the listener is then pushed to, as for any connected user).
                Chore::Sweep { .. } | Chore::Expire { .. } | Chore::TakeBack { .. } => {}
            },
        }
    }

    /// A delivery's storage work beside the reactor has come back.
    fn chore_ended(&mut self, chore: &Chore) {
        match chore {
            Chore::Gather { alias, .. } => {
                self.gathering.remove(alias);
                if self.gather_again.remove(alias) {
                    self.kicks.insert(alias.clone());
                }
            }
            Chore::Remove { recipient, .. } => {
                let left = self.removing.get_mut(recipient).map(|n| {
                    *n -= 1;
                    *n
                });
                if left == Some(0) {
                    self.removing.remove(recipient);
                    // Held back while the removals ran.
                    self.kicks.insert(recipient.clone());
                }
            }
            Chore::Publish { .. } => self.publishing = false,
            Chore::Sweep { .. } | Chore::Expire { .. } => {
                self.scanning.remove(scan_key(chore));
            }
            _ => {}
        }
    }

    /// Applies what a delivery's storage work did: `committed` beside the reactor, or else
    /// written into the turn's transaction.
    fn chore_done(
        &mut self,
        chore: Chore,
        done: storage::Result<ChoreDone>,
        committed: bool,
        now: Instant,
    ) {
        let failed = match done {
            Ok(ChoreDone::Gathered { alias, gathered }) => {
                self.gathered(&alias, gathered, now);
                return;
            }
            Ok(ChoreDone::Released { alias, again }) => {
                if again {
                    self.kicks.insert(alias);
                }
                return;
            }
            Ok(ChoreDone::Removed { recipient, removed }) => {
                for (removal, sender) in removed {
                    let ack_to = match sender {
                        Ok(user) => user.as_ref().and_then(listener_endpoint),
                        Err(e) => {
                            self.events.push(Event::AckFailed {
                                sender: removal.sender.clone(),
                                id: removal.id,
                                reason: e.to_string(),
                            });
                            None
                        }
                    };
                    if committed {
                        self.removal_committed(&recipient, removal, ack_to);
                    } else {
                        self.turn_removed.push((recipient.clone(), removal, ack_to));
                    }
                }
                return;
            }
            Ok(ChoreDone::Unreachable {
                recipient,
                disconnected,
            }) => {
                if disconnected {
                    self.present_since.remove(&recipient);
                    self.went_offline(&recipient);
                }
                if let Chore::Unreachable { reason, .. } = chore {
                    self.events.push(Event::PushFailed { recipient, reason });
                }
                return;
            }
            Ok(ChoreDone::Swept {
                with_pending,
                nodes,
                live,
                own_lost,
            }) => {
                // Those another node delivers to fail their claim and are left alone.
                self.kicks.extend(with_pending);
                self.nodes_looked_at(nodes, &live);
                if own_lost {
                    // Idle turns never touch the connection: make it again now, before the
                    // other nodes take this one for dead (the next turn announces the
                    // sessions under the new name).
                    self.store.reconnect_if_lost();
                }
                return;
            }
            Ok(ChoreDone::Published | ChoreDone::TakenBack) => return,
            Ok(ChoreDone::Expired { expired }) => {
                for (recipient, sender, id) in expired {
                    let event = Event::Expired {
                        id,
                        sender,
                        recipient,
                    };
                    if committed {
                        self.events.push(event);
                    } else {
                        self.turn_expired.push(event);
                    }
                }
                return;
            }
            Err(e) => e.to_string(),
        };
        match chore {
            Chore::Gather { alias, .. } => self.events.push(Event::PushFailed {
                recipient: alias,
                reason: format!("claiming the deliveries or reading the queue: {failed}"),
            }),
            Chore::Release { alias } => self.events.push(Event::PushFailed {
                recipient: alias,
                reason: format!("releasing the deliveries: {failed}"),
            }),
            Chore::Remove {
                recipient,
                removals,
            } => self.postpone_removals(&recipient, removals, &failed, now),
            Chore::Unreachable {
                recipient, reason, ..
            } => self.events.push(Event::PushFailed {
                recipient,
                reason: format!("{reason}; marking them disconnected failed too: {failed}"),
            }),
            Chore::Sweep { .. } => log::warn!("looking for deliveries nobody makes: {failed}"),
            // The next sweep tries again.
            Chore::Expire { .. } => {
                log::warn!("dropping messages older than --pending-ttl: {failed}")
            }
            Chore::Publish { events, paints, .. } => {
                if !events.is_empty() {
                    log::warn!(
                        "the other nodes missed {} session events: {failed}",
                        events.len()
                    );
                }
                // The paints are stored (and their events made) again.
                self.publish_again(Vec::new(), paints, now + PUBLISH_RETRY);
            }
            Chore::TakeBack { alias } => log::warn!(
                "{alias} logged in to a session while connecting through the messenger; \
                 taking the listener back failed ({failed}), so it stays connected too"
            ),
        }
    }

    /// A delivered message's removal is committed: it is reported, and its sender told.
    fn removal_committed(&mut self, recipient: &str, removal: Removal, ack_to: Option<Endpoint>) {
        if let Some(to) = ack_to {
            self.acks
                .push((to, removal.id, removal.attachment, removal.sender.clone()));
        }
        self.events.push(Event::Delivered {
            id: removal.id,
            sender: removal.sender.into(),
            recipient: recipient.into(),
        });
    }

    /// Delivered messages whose removal did not commit: nothing more is delivered to their
    /// recipient until it has (so none is delivered twice), and it is tried again soon.
    fn postpone_removals(
        &mut self,
        recipient: &str,
        removals: Vec<Removal>,
        reason: &str,
        now: Instant,
    ) {
        for removal in &removals {
            self.events.push(Event::RemovalPostponed {
                id: removal.id,
                recipient: recipient.to_string(),
                reason: reason.to_string(),
            });
        }
        self.unremoved
            .entry(recipient.to_string())
            .or_default()
            .extend(removals);
        if self.removal_retry.is_none() {
            self.removal_retry = Some(now + REMOVAL_RETRY);
        }
    }

    /// What gathering a recipient's deliveries found: a job starts if there is a batch and
    /// they are still present.
    fn gathered(&mut self, alias: &str, gathered: Gathered, now: Instant) {
        let (user, messages) = match gathered {
            Gathered::Elsewhere => return,
            Gathered::Released { again } => {
                if again {
                    self.kicks.insert(alias.to_string());
                }
                return;
            }
            Gathered::Held { user, batch } => (user, batch),
        };
        if self.stopped {
            return;
        }
        let Some(to) = self.delivery_endpoint(&user) else {
            // Gone meanwhile (the gathering ran beside the reactor).
            let release = Chore::Release {
                alias: alias.to_string(),
            };
            self.chore(Some(alias), release, now);
            return;
        };
        if matches!(to, Endpoint::Listener(..)) && !self.sink.has_room() {
            // The claim stays; the batch is read again when there is room.
            if self.waiting_set.insert(alias.to_string()) {
                self.waiting.push_back(alias.to_string());
            }
            return;
        }
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
                .map(|m| Removal {
                    seq: m.seq,
                    sender: m.sender.clone(),
                    id: m.id,
                    attachment: m.attachment.clone(),
                })
                .collect(),
            cancelled: false,
        });
        self.in_flight.insert(alias.to_string(), job);
        match to {
            Endpoint::Listener(..) => self.sink.start(Delivery::Messages {
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
                                unstored: false,
                            },
                        },
                    ));
                }
            }
        }
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
            self.publish_retry,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    pub fn fire_timers(&mut self, now: Instant) {
        if self.user_list_at.is_some_and(|at| at <= now) {
            self.user_list_at = None;
            if self.tell_user_lists() {
                // The rest hear it at the next tick.
                self.user_list_at = Some(now + USER_LIST_TICK);
            }
        }
        if self.canvas.tick_at.is_some_and(|at| at <= now) {
            self.canvas_tick();
        }
        if self.publish_retry.is_some_and(|at| at <= now) {
            self.publish_retry = None;
        }
        if let (Some(at), Some(ttl)) = (self.expiry_at, self.settings.pending_ttl) {
            if at <= now {
                // Armed here, not at the end of a turn: on PostgreSQL the expiry runs beside
                // the reactor and its turn may have nothing to commit.
                self.expiry_at = Some(now + expiry_period(ttl));
                self.expire(now);
            }
        }
        if self.sweep_at.is_some_and(|at| at <= now) {
            self.sweep_at = Some(now + SHARED_SWEEP);
            // A node that took a SEND before it heard of the recipient's session here told
            // nobody: this node's sessions' mailboxes are looked at too.
            let sweep = Chore::Sweep {
                sessions: self.sessions.aliases(),
                nodes: self.nodes_to_look_at(),
                own: self.store.node(),
            };
            // One at a time: a sweep that waits (a locked table) is not joined by another
            // every second.
            if !self.scanning.contains(scan_key(&sweep)) {
                self.chore(Some(scan_key(&sweep)), sweep, now);
            }
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
            for (recipient, removals) in std::mem::take(&mut self.unremoved) {
                self.kicks.insert(recipient.clone());
                let remove = Chore::Remove {
                    recipient: recipient.clone(),
                    removals,
                };
                self.chore(Some(&recipient), remove, now);
            }
        }
    }

    /// Ends the turn: commits its writes, then starts the deliveries that depend on them.
    /// Returns the commit's error, if any (the turn's writes are then rolled back), and the
    /// turn's events.
    /// Jobs waiting for the storage workers (PostgreSQL), by queue; None without workers.
    pub fn storage_queue_depths(&self) -> Option<[(&'static str, usize); 3]> {
        self.beside.as_ref().map(Beside::queue_depths)
    }

    pub fn end_turn(&mut self, now: Instant) -> (Result<(), String>, Vec<Event>) {
        self.notice_new_name();
        if std::mem::take(&mut self.user_list_changed) && self.user_list_at.is_none() {
            self.user_list_at = Some(now + USER_LIST_TICK);
        }
        self.canvas_end_turn(now);
        // What was delivered this turn is removed: in the turn's transaction, or beside it.
        self.removals_due_index.clear();
        for (recipient, removals) in std::mem::take(&mut self.removals_due) {
            let remove = Chore::Remove {
                recipient: recipient.clone(),
                removals,
            };
            self.chore(Some(&recipient), remove, now);
        }
        self.queue_unwritten_in_front();
        // On a shared database the reactor's own transaction is empty: the bus's events and
        // the paints go through a storage worker.
        self.start_publishing(now);
        let writing = self.store.has_uncommitted();
        let started = Instant::now();
        let committed = self.store.commit();
        if writing {
            self.metrics.observe_commit(started.elapsed());
        }
        self.direct_turn_committed(committed.is_ok());
        let removed = std::mem::take(&mut self.turn_removed);
        let expired = std::mem::take(&mut self.turn_expired);
        match &committed {
            Ok(()) => {
                self.events.extend(expired);
                for (recipient, removal, ack_to) in removed {
                    self.removal_committed(&recipient, removal, ack_to);
                }
            }
            Err(reason) => {
                // The removals were rolled back: hold those recipients until they are redone.
                for (recipient, removal, _) in removed {
                    self.postpone_removals(&recipient, vec![removal], reason, now);
                }
            }
        }
        if !self.stopped {
            for (to, id, attachment, sender) in std::mem::take(&mut self.acks) {
                self.start_ack(to, id, attachment, sender);
            }
            let kicks: Vec<String> = self.kicks.drain().collect();
            for alias in kicks {
                self.start_delivery(&alias, now);
            }
        }
        // An empty list stays, with its memory, for the next turn's reports.
        let events = if self.events.is_empty() {
            Vec::new()
        } else {
            std::mem::take(&mut self.events)
        };
        (committed, events)
    }

    fn start_ack(&mut self, to: Endpoint, id: u32, attachment: Option<Vec<u8>>, sender: String) {
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
            self.events.push(Event::AckFailed {
                sender,
                id,
                reason: format!("{MAX_ACKS_WAITING} acks already wait for a deliverer"),
            });
        }
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
            || !self.turn_expired.is_empty()
            || !self.removals_due.is_empty()
            || !self.unwritten_to_queue.is_empty()
            || !self.notices.is_empty()
            || self.user_list_changed
            || self.publish_due()
            // Connected to the database again: announce the sessions under the new name.
            || self.store.node().is_some_and(|n| !self.own_nodes.contains(&n))
    }

    /// Starts delivering the oldest messages waiting for `alias`, unless a delivery to them is
    /// on its way (or being gathered), a removal of theirs is not committed yet, or a retry is
    /// scheduled.
    fn start_delivery(&mut self, alias: &str, now: Instant) {
        if self.gathering.contains(alias) {
            self.gather_again.insert(alias.to_string());
            return;
        }
        // Messages around the mailbox go first; their rows, if they were stored, must not be
        // read for a second delivery. The last of them kicks the recipient again.
        if self.unwritten_direct.contains_key(alias) {
            self.after_direct.insert(alias.to_string());
            return;
        }
        if self.delivery_held(alias) {
            return;
        }
        let session = self.sessions.session_of(alias);
        if session.is_none() && !self.sink.has_room() {
            self.waiting_set.insert(alias.to_string());
            self.waiting.push_back(alias.to_string());
            return;
        }
        let gather = Chore::Gather {
            alias: alias.to_string(),
            in_session: session.is_some_and(|s| self.sessions.accepts_private(s)),
            limit: DELIVERY_BATCH,
        };
        self.chore(Some(alias), gather, now);
    }

    /// True if a delivery to `alias` is on its way, or held back until a removal of theirs
    /// commits, a retry is due or the sink has room; each of these kicks them again when it
    /// ends.
    fn delivery_held(&self, alias: &str) -> bool {
        self.in_flight.contains_key(alias)
            || self.unremoved.contains_key(alias)
            || self.removing.contains_key(alias)
            || self.retry_at.contains_key(alias)
            || self.waiting_set.contains(alias)
    }

    /// Stops the sink once what is in flight is done, records the outcomes and commits; waits
    /// for the removals running beside the reactor.
    pub fn shut_down(&mut self, now: Instant) -> (Result<(), String>, Vec<Event>) {
        self.sink.shut_down();
        self.collect_reports(now);
        // The sink is gone: nothing more is delivered, only the outcomes are recorded.
        self.stopped = true;
        self.acks.clear();
        self.kicks.clear();
        let (committed, mut events) = self.end_turn(now);
        let deadline = Instant::now() + CHORES_AT_SHUTDOWN;
        while !self.chores.is_empty() {
            let Some(beside) = &self.beside else { break };
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(report) = beside.done.recv_timeout(left) else {
                log::warn!(
                    "{} deliveries' storage steps unfinished at shutdown: what they removed is \
                     delivered again after a restart",
                    self.chores.len()
                );
                break;
            };
            // A request's answer has nobody to go to any more.
            let _ = self.apply_beside(report, now);
        }
        events.append(&mut self.events);
        (committed, events)
    }

    /// Drops the messages older than `--pending-ttl`, with an event for each.
    fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.settings.pending_ttl else {
            return;
        };
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let before = since_epoch.saturating_sub(ttl).as_secs() as i64;
        let expire = Chore::Expire { before };
        if !self.scanning.contains(scan_key(&expire)) {
            self.chore(Some(scan_key(&expire)), expire, now);
        }
    }

    /// What sessions must be told, in order, swapped into `into` (empty; its memory serves
    /// the next ones); the reactor takes them after each commit.
    pub fn take_notices_into(&mut self, into: &mut Vec<(SessionId, Notice)>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.notices, into);
    }

    /// What the end of the turn's writes reported (`session_report`): private messages
    /// written around the mailbox, failures. None of it waits for a commit, so the reactor
    /// prints it at once rather than in a turn of its own. Swapped into `into` like the
    /// notices.
    pub fn take_write_events_into(&mut self, into: &mut Vec<Event>) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.events, into);
    }
}

/// The ordered worker's key of a background scan (NUL is in no user's name, and no room's).
fn scan_key(chore: &Chore) -> &'static str {
    match chore {
        Chore::Expire { .. } => "\0expiry",
        _ => "\0sweep",
    }
}

/// How often messages older than `ttl` are dropped: often enough that nothing outlives its
/// time by more than half of it.
fn expiry_period(ttl: Duration) -> Duration {
    (ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

fn listener_endpoint(user: &storage::User) -> Option<Endpoint> {
    let pin = user.listener_pin.as_deref().and_then(work::decode_pin);
    listener_address(user).map(|addr| Endpoint::Listener(addr, pin))
}
