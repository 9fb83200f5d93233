//! The core: users, mailboxes and delivery, independent of how requests arrive.
//!
//! A front-end (today the one-operation-per-connection protocol of seeds 000/003 in
//! `commands/`) calls these methods during a reactor turn. Everything they write lands in the
//! turn's transaction; `end_turn` commits it and only then starts the pushes that depend on it,
//! so nothing is pushed, and no `0` is answered, for data that is not on disk.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use wire::{Push, PushStyle};

use crate::deliverer::{Outcome, Pool, PushJob, Report, Ticket};
use crate::store::{self, Store};

/// How long to wait before pushing again to a listener that refused during the connect window.
const REFUSED_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Most messages one deliverer job pushes to a recipient before the reactor looks again.
const DELIVERY_BATCH: usize = 64;

#[derive(Debug, PartialEq, Eq)]
pub enum ConnectOutcome {
    Connected,
    NoSuchUser,
    AlreadyConnected,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DisconnectOutcome {
    Disconnected,
    NoSuchUser,
    NotConnected,
    /// DISCONNECT is only accepted from the address the user connected from.
    WrongAddress,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SendOutcome {
    /// Stored under the sender's next id; `online` if the recipient is connected, so a push
    /// follows the commit.
    Accepted {
        id: u32,
        online: bool,
    },
    NoSuchUser,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ListOutcome {
    /// Connected users as `(alias, ip, port)`.
    Users(Vec<(String, String, u16)>),
    NotConnected,
    NotRegistered,
}

/// Something that happened to a message, for the console and the logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Delivered {
        id: u32,
        sender: String,
        recipient: String,
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
}

pub struct Settings {
    pub push_style: PushStyle,
    /// After a successful CONNECT, a refused push is retried for this long (PROTOCOL.md).
    pub connect_window: Duration,
}

pub struct Messenger {
    store: Store,
    pool: Pool,
    reports: Receiver<Report>,
    settings: Settings,
    /// Recipients with a push on its way: at most one each, which keeps their messages in order.
    in_flight: HashSet<String>,
    connected_at: HashMap<String, Instant>,
    retries: BinaryHeap<Reverse<(Instant, String)>>,
    // What the current turn will do once its transaction is committed.
    kicks: HashSet<String>,
    acks: Vec<PushJob>,
    events: Vec<Event>,
}

impl Messenger {
    pub fn new(
        store: Store,
        pool: Pool,
        reports: Receiver<Report>,
        settings: Settings,
    ) -> store::Result<Messenger> {
        // After a restart, users still marked connected get what is waiting for them.
        let kicks = store.connected_with_pending()?.into_iter().collect();
        Ok(Messenger {
            store,
            pool,
            reports,
            settings,
            in_flight: HashSet::new(),
            connected_at: HashMap::new(),
            retries: BinaryHeap::new(),
            kicks,
            acks: Vec::new(),
            events: Vec::new(),
        })
    }

    /// Registers `alias`; false if it is taken.
    pub fn register(
        &mut self,
        alias: &str,
        full_name: Option<&str>,
        birth_date: Option<&str>,
    ) -> store::Result<bool> {
        self.store.insert_user(alias, full_name, birth_date)
    }

    /// Removes `alias` and the messages waiting for it; false if there is no such user.
    pub fn unregister(&mut self, alias: &str) -> store::Result<bool> {
        self.connected_at.remove(alias);
        self.store.delete_user(alias)
    }

    pub fn connect(&mut self, alias: &str, ip: IpAddr, port: u16) -> store::Result<ConnectOutcome> {
        let Some(user) = self.store.user(alias)? else {
            return Ok(ConnectOutcome::NoSuchUser);
        };
        if user.connected {
            return Ok(ConnectOutcome::AlreadyConnected);
        }
        self.store
            .set_connected(alias, &ip.to_canonical().to_string(), port)?;
        self.connected_at.insert(alias.to_string(), Instant::now());
        self.kicks.insert(alias.to_string());
        Ok(ConnectOutcome::Connected)
    }

    pub fn disconnect(&mut self, alias: &str, from: IpAddr) -> store::Result<DisconnectOutcome> {
        let Some(user) = self.store.user(alias)? else {
            return Ok(DisconnectOutcome::NoSuchUser);
        };
        if !user.connected {
            return Ok(DisconnectOutcome::NotConnected);
        }
        if user.ip.as_deref() != Some(from.to_canonical().to_string().as_str()) {
            return Ok(DisconnectOutcome::WrongAddress);
        }
        self.store.set_disconnected(alias)?;
        self.connected_at.remove(alias);
        Ok(DisconnectOutcome::Disconnected)
    }

    pub fn send(
        &mut self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> store::Result<SendOutcome> {
        let (Some(from), Some(to)) = (self.store.user(sender)?, self.store.user(recipient)?) else {
            return Ok(SendOutcome::NoSuchUser);
        };
        let id = wire::next_message_id(from.last_id);
        self.store
            .accept_message(sender, id, recipient, text, attachment)?;
        if to.connected {
            self.kicks.insert(recipient.to_string());
        }
        Ok(SendOutcome::Accepted {
            id,
            online: to.connected,
        })
    }

    /// The connected users, for a requester named by alias or, when a client sent none, by the
    /// address it calls from.
    pub fn connected_users(
        &mut self,
        requester: Option<&str>,
        from: IpAddr,
    ) -> store::Result<ListOutcome> {
        let requester_connected = match requester {
            Some(alias) => match self.store.user(alias)? {
                None => return Ok(ListOutcome::NotRegistered),
                Some(user) => user.connected,
            },
            None => {
                let from = from.to_canonical().to_string();
                self.store
                    .connected_users()?
                    .iter()
                    .any(|(_, ip, _)| *ip == from)
            }
        };
        if !requester_connected {
            return Ok(ListOutcome::NotConnected);
        }
        Ok(ListOutcome::Users(self.store.connected_users()?))
    }

    /// Applies the results of finished pushes (called when the deliverers wake the reactor).
    pub fn collect_reports(&mut self) {
        while let Ok(report) = self.reports.try_recv() {
            self.apply_report(report);
        }
    }

    fn apply_report(
        &mut self,
        Report {
            ticket,
            outcome,
            job_done,
        }: Report,
    ) {
        match ticket {
            Ticket::Message {
                seq,
                recipient,
                sender,
                id,
                attachment,
                addr,
            } => {
                if job_done {
                    self.in_flight.remove(&recipient);
                }
                match outcome {
                    Outcome::Delivered => self.delivered(seq, recipient, sender, id, attachment),
                    Outcome::Refused if self.in_connect_window(&recipient) => {
                        self.retries
                            .push(Reverse((Instant::now() + REFUSED_RETRY_DELAY, recipient)));
                    }
                    Outcome::Refused => {
                        self.push_failed(recipient, addr, "connection refused".into())
                    }
                    Outcome::Failed(e) => self.push_failed(recipient, addr, e.to_string()),
                }
            }
            Ticket::Ack { sender, id } => match outcome {
                Outcome::Delivered => {}
                Outcome::Refused => self.events.push(Event::AckFailed {
                    sender,
                    id,
                    reason: "connection refused".into(),
                }),
                Outcome::Failed(e) => self.events.push(Event::AckFailed {
                    sender,
                    id,
                    reason: e.to_string(),
                }),
            },
        }
    }

    fn delivered(
        &mut self,
        seq: i64,
        recipient: String,
        sender: String,
        id: u32,
        attachment: Option<Vec<u8>>,
    ) {
        // A failed delete surfaces at commit: the turn rolls back and the message is pushed again.
        let _ = self.store.delete_pending(seq);
        match self.store.user(&sender) {
            Ok(Some(user)) => {
                if let Some(addr) = listener_addr(&user) {
                    let bytes = Push::Ack { id, attachment }.encode(self.settings.push_style);
                    let ticket = Ticket::Ack {
                        sender: sender.clone(),
                        id,
                    };
                    self.acks.push(PushJob::single(addr, ticket, bytes));
                }
            }
            Ok(None) => {}
            Err(e) => self.events.push(Event::AckFailed {
                sender: sender.clone(),
                id,
                reason: e.to_string(),
            }),
        }
        self.kicks.insert(recipient.clone());
        self.events.push(Event::Delivered {
            id,
            sender,
            recipient,
        });
    }

    fn push_failed(&mut self, recipient: String, addr: SocketAddr, reason: String) {
        // Only mark the user disconnected if they still listen where we pushed: they may have
        // disconnected and connected again meanwhile.
        match self.store.user(&recipient) {
            Ok(Some(user)) if listener_addr(&user) == Some(addr) => {
                if let Err(e) = self.store.set_disconnected(&recipient) {
                    self.events.push(Event::PushFailed {
                        recipient: recipient.clone(),
                        reason: e.to_string(),
                    });
                }
                self.connected_at.remove(&recipient);
            }
            Ok(Some(_)) => {
                self.kicks.insert(recipient.clone());
            }
            Ok(None) => {}
            Err(e) => self.events.push(Event::PushFailed {
                recipient: recipient.clone(),
                reason: e.to_string(),
            }),
        }
        self.events.push(Event::PushFailed { recipient, reason });
    }

    fn in_connect_window(&self, alias: &str) -> bool {
        self.connected_at
            .get(alias)
            .is_some_and(|at| at.elapsed() < self.settings.connect_window)
    }

    /// When the next retry is due, for the reactor's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.retries.peek().map(|Reverse((at, _))| *at)
    }

    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.retries.peek() {
            if *at > now {
                break;
            }
            let Reverse((_, alias)) = self.retries.pop().expect("peeked");
            self.kicks.insert(alias);
        }
    }

    /// Ends the turn: commits its writes, then starts the pushes that depend on them. Returns
    /// the commit's error, if any (the turn's writes are then rolled back), and the turn's
    /// events.
    pub fn end_turn(&mut self) -> (Result<(), String>, Vec<Event>) {
        let committed = self.store.commit();
        for job in self.acks.drain(..) {
            self.pool.submit(job);
        }
        let kicks: Vec<String> = self.kicks.drain().collect();
        for alias in kicks {
            self.start_push(&alias);
        }
        (committed, std::mem::take(&mut self.events))
    }

    /// True if `end_turn` has anything to do.
    pub fn turn_has_work(&self) -> bool {
        self.store.has_uncommitted()
            || !self.kicks.is_empty()
            || !self.acks.is_empty()
            || !self.events.is_empty()
    }

    /// Pushes the oldest message waiting for `alias`, unless a push to them is on its way.
    fn start_push(&mut self, alias: &str) {
        if self.in_flight.contains(alias) {
            return;
        }
        let next = self.store.user(alias).and_then(|user| {
            let Some(addr) = user.as_ref().and_then(listener_addr) else {
                return Ok(None);
            };
            let batch = self.store.pending_batch(alias, DELIVERY_BATCH)?;
            Ok((!batch.is_empty()).then_some((addr, batch)))
        });
        match next {
            Ok(None) => {}
            Ok(Some((addr, batch))) => {
                let style = self.settings.push_style;
                let pushes = batch
                    .into_iter()
                    .map(|pending| {
                        let bytes = Push::Message {
                            sender: pending.sender.clone(),
                            id: pending.id,
                            text: pending.text,
                            attachment: pending.attachment.clone(),
                        }
                        .encode(style);
                        let ticket = Ticket::Message {
                            seq: pending.seq,
                            recipient: alias.to_string(),
                            sender: pending.sender,
                            id: pending.id,
                            attachment: pending.attachment,
                            addr,
                        };
                        (ticket, bytes)
                    })
                    .collect();
                self.in_flight.insert(alias.to_string());
                self.pool.submit(PushJob { addr, pushes });
            }
            Err(e) => self.events.push(Event::PushFailed {
                recipient: alias.to_string(),
                reason: format!("reading the queue: {e}"),
            }),
        }
    }

    /// Stops the deliverers once their pushes are done, records the outcomes and commits.
    pub fn shut_down(&mut self) -> (Result<(), String>, Vec<Event>) {
        self.pool.shut_down();
        self.collect_reports();
        // The pool is gone: nothing more is pushed, only the outcomes are recorded.
        self.acks.clear();
        self.kicks.clear();
        self.end_turn()
    }
}

fn listener_addr(user: &store::User) -> Option<SocketAddr> {
    let (ip, port) = user.listener()?;
    Some(SocketAddr::new(ip.parse().ok()?, port))
}
