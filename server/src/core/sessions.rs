//! Sessions: users present through a persistent connection (the chat and rooms front-ends),
//! what they hear about, and the rooms.
//!
//! Presence is one for every front-end: a user is online through the messenger (a listener,
//! recorded in storage so it survives restarts) or through one session (in memory: a session
//! ends with its connection). The order users came online is kept for the chat's user list.
//! Everything said to a session is a [`Notice`]; front-ends encode them.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{Core, Finished, JobId, Started, Work};
use crate::accounts::{NewSecret, Proof};
use crate::bus::{Event as BusEvent, NodeId};
use crate::storage::{self, Storage};

/// How long a join may wait to come back through the bus before its member hears other
/// nodes' room events anyway (the bus may have lost it while its connection was down).
const JOIN_ECHO_WAIT: Duration = Duration::from_secs(2);

/// Other nodes' room events kept for one joiner between its join's echo and its join's
/// answer; past it more are dropped with a diagnostic.
const MAX_HEARD_WHILE_JOINING: usize = 1024;

/// On a shared database: a join whose own event this node waits to hear back through the bus
/// (see `Core::tell_room_news`).
pub(super) struct Join {
    room: String,
    since: Instant,
    /// The join's event came back before its storage work did.
    echoed: bool,
    /// Other nodes' events of the room heard since the echo, told after the join's answer.
    heard: Vec<Notice>,
}

/// Bytes of user lists told per tick at most (see `Core::tell_user_lists`): 20 MiB a second.
const USER_LIST_BYTES_PER_TICK: usize = 1 << 20;

/// How often a room line also prunes the room's stored history (`--room-history-kept`): so a
/// room holds at most that many lines and this many more.
const PRUNE_EVERY: u32 = 64;

/// Names a session: unique for the life of the server process.
pub type SessionId = u64;

/// Limits and history lengths of the chat front-ends.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Room messages replayed on joining a room, and chat broadcasts replayed on logging in.
    pub history: usize,
    /// Most rooms that may exist; creating more is refused.
    pub max_rooms: usize,
    /// Most messages that may wait for one user; SEND is refused past it. None: no limit.
    pub max_pending_per_user: Option<usize>,
    /// How long a message may wait before it is dropped. None: for ever.
    pub pending_ttl: Option<Duration>,
    /// Most names one address may register a minute. None: no limit.
    pub max_new_names_per_minute: Option<u32>,
    /// Lines kept in each room's stored history. None: all.
    pub room_history_kept: Option<usize>,
}

/// What a session hears about besides its private messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interests {
    /// The list of users online, whenever it changes.
    pub user_list: bool,
    /// The chat's broadcasts.
    pub broadcasts: bool,
    /// Private messages only while in a room (a rooms client reads its command answers with
    /// single reads outside rooms, which anything unasked would break).
    pub privates_only_in_a_room: bool,
}

impl Interests {
    /// The front-end of a session with these interests (the canvas has no names): the chat
    /// hears broadcasts, the rooms do not.
    pub fn frontend(self) -> &'static str {
        if self.broadcasts {
            "chat"
        } else {
            "rooms"
        }
    }
}

/// Marks a private message written to a session, for the report that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryMark {
    pub job: JobId,
    /// Which message of the job.
    pub index: usize,
    /// The job's last message.
    pub last: bool,
    /// A message around the mailbox that is stored nowhere yet: if its first try does not
    /// write it whole, the reactor has the core store it (`Core::store_unwritten`).
    pub unstored: bool,
}

/// Something to tell one session. Texts are shared between the sessions of a fan-out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A stored private message; once written, the session reports `delivery`.
    Private {
        from: Rc<str>,
        text: Rc<[u8]>,
        delivery: DeliveryMark,
    },
    /// Everybody online, in the order they came online.
    UserList(Rc<[String]>),
    Broadcast {
        from: Rc<str>,
        text: Rc<str>,
    },
    /// Somebody else said something in the session's room.
    RoomMessage {
        from: Rc<str>,
        text: Rc<str>,
    },
    JoinedRoom {
        user: Rc<str>,
    },
    LeftRoom {
        user: Rc<str>,
    },
    /// A member of the session's room ended their session.
    LeftChat {
        user: Rc<str>,
    },
    /// The session ends: its user was unregistered, or disconnected through the messenger.
    /// The connection closes once this is written.
    Ended(Ending),
    /// The whole canvas (colour indexes, row by row) at `version`. A newer one supersedes an
    /// older one not yet written.
    CanvasBoard {
        version: u64,
        pixels: Rc<[u8]>,
    },
    /// The pixels changed from version `from` to `to`.
    CanvasChanges {
        from: u64,
        to: u64,
        changes: Rc<[super::canvas::Change]>,
    },
}

/// Somebody online, as the operators' page lists them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Presence {
    pub name: String,
    /// `chat`, `rooms`, `messenger`, or `another node` (PostgreSQL shared by several).
    pub frontend: &'static str,
    /// Since when, as this node knows.
    #[serde(serialize_with = "unix_seconds")]
    pub since: Option<std::time::SystemTime>,
    /// The session's client address (a messenger user's listener is in the database).
    pub address: Option<std::net::IpAddr>,
    pub room: Option<String>,
    /// The node it is on, by the name the nodes use on the bus (PostgreSQL; None on SQLite).
    pub node: Option<NodeId>,
}

fn unix_seconds<S: serde::Serializer>(
    at: &Option<std::time::SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let seconds = at.and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok());
    match seconds {
        Some(seconds) => serializer.serialize_some(&seconds.as_secs()),
        None => serializer.serialize_none(),
    }
}

/// Why the server ends a session on its user's account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Unregistered,
    Disconnected,
}

impl Notice {
    /// True if `self` and `other` are the same notice told to several sessions (they share
    /// its text), so one encoding serves them all.
    pub fn same(&self, other: &Notice) -> bool {
        use Notice::*;
        match (self, other) {
            (
                Private {
                    text: a,
                    delivery: x,
                    ..
                },
                Private {
                    text: b,
                    delivery: y,
                    ..
                },
            ) => Rc::ptr_eq(a, b) && x == y,
            (UserList(a), UserList(b)) => Rc::ptr_eq(a, b),
            (Broadcast { from: f, text: a }, Broadcast { from: g, text: b })
            | (RoomMessage { from: f, text: a }, RoomMessage { from: g, text: b }) => {
                Rc::ptr_eq(f, g) && Rc::ptr_eq(a, b)
            }
            (JoinedRoom { user: a }, JoinedRoom { user: b })
            | (LeftRoom { user: a }, LeftRoom { user: b })
            | (LeftChat { user: a }, LeftChat { user: b }) => Rc::ptr_eq(a, b),
            (
                CanvasBoard {
                    version: v,
                    pixels: a,
                },
                CanvasBoard {
                    version: w,
                    pixels: b,
                },
            ) => v == w && Rc::ptr_eq(a, b),
            (CanvasChanges { changes: a, .. }, CanvasChanges { changes: b, .. }) => {
                Rc::ptr_eq(a, b)
            }
            _ => false,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// `registered`: the name was new and is now a user with a mailbox (a write).
    LoggedIn { registered: bool },
    /// The name is online through some front-end.
    Taken,
    /// The session ended before its login's storage work was done: nobody hears the answer.
    Gone,
    /// The name is new, and its address registered `--max-new-names-per-minute` names in the
    /// last minute.
    TooManyNewNames,
}

#[derive(Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The room's recent messages as `(sender, text)`, oldest first; `created` if it is new (a
    /// write).
    Joined {
        history: Vec<(String, String)>,
        created: bool,
    },
    /// The room does not exist and `max_rooms` are already there.
    TooManyRooms,
    /// The session ended before the join's storage work was done.
    Gone,
}

struct Session {
    /// Shared with `Sessions::by_alias` and with what the core keeps for a private message
    /// to or from it: naming the session costs no allocation.
    alias: Rc<str>,
    /// The client's address: only from there may the messenger disconnect or unregister it.
    from: std::net::IpAddr,
    /// When the login was accepted (for the operators' page).
    since: std::time::SystemTime,
    interests: Interests,
    room: Option<String>,
    /// The version of the online set this session was last told.
    list_version: u64,
}

impl Session {
    /// A rooms session takes private messages only while it is in a room (its client reads
    /// command answers with single reads meanwhile).
    fn accepts_private(&self) -> bool {
        !self.interests.privates_only_in_a_room || self.room.is_some()
    }
}

#[derive(Default)]
pub(super) struct Sessions {
    by_id: crate::ids::IdMap<SessionId, Session>,
    by_alias: HashMap<Rc<str>, SessionId>,
    /// Everybody online through any front-end, by the order they came online.
    online: BTreeMap<u64, String>,
    online_order: HashMap<String, u64>,
    next_order: u64,
    /// Changes with every change of the online set.
    version: u64,
    /// The list of everybody online at a version, shared by the sessions told it.
    list: Option<(u64, Rc<[String]>)>,
    /// Rooms in creation order, with their members in joining order.
    rooms: Vec<String>,
    members: HashMap<String, Vec<SessionId>>,
    /// Rooms with a key, as this node last saw them (set here, or found by a join).
    keyed: HashSet<String>,
    /// Lines said in each room since the server started (one entry per room at most): every
    /// [`PRUNE_EVERY`]th line also prunes the room's stored history.
    lines_said: HashMap<String, u32>,
    /// Rooms this node is creating (their joins' storage work is under way), with how many
    /// joins: they count against `--max-rooms` already.
    being_created: HashMap<String, usize>,
    /// The last `--history` broadcasts, oldest first, in the order this node's sessions heard
    /// them (its own and, through the bus, the other nodes'): what a chat newcomer hears
    /// first. Kept here rather than read at each login, so that a login finishing beside the
    /// reactor neither misses nor repeats a broadcast made meanwhile.
    recent_broadcasts: VecDeque<(Rc<str>, Rc<str>)>,
}

impl Sessions {
    /// Rooms and the last `history` broadcasts from storage, and the messenger users still
    /// connected since before a restart.
    pub(super) fn load(store: &dyn Storage, history: usize) -> storage::Result<Sessions> {
        let mut sessions = Sessions::default();
        for (from, text) in store.broadcast_history(history)? {
            sessions.heard_broadcast(from.into(), text.into(), history);
        }
        for (room, keyed) in store.rooms()? {
            if keyed {
                sessions.keyed.insert(room.clone());
            }
            sessions.members.insert(room.clone(), Vec::new());
            sessions.rooms.push(room);
        }
        for (alias, _, _) in store.connected_users()? {
            sessions.came_online(&alias);
        }
        Ok(sessions)
    }

    /// Keeps a broadcast among the last `history`.
    fn heard_broadcast(&mut self, from: Rc<str>, text: Rc<str>, history: usize) {
        if history == 0 {
            return;
        }
        while self.recent_broadcasts.len() >= history {
            self.recent_broadcasts.pop_front();
        }
        self.recent_broadcasts.push_back((from, text));
    }

    /// The history length to prune `room`'s stored lines to with the line said now, every
    /// [`PRUNE_EVERY`] lines (and with the first after a start), when history is bounded.
    fn prune_due(&mut self, room: &str, keep: Option<usize>) -> Option<usize> {
        let keep = keep?;
        let said = self.lines_said.entry(room.to_string()).or_default();
        let due = said.is_multiple_of(PRUNE_EVERY);
        *said = said.wrapping_add(1);
        due.then_some(keep)
    }

    /// The users in a session on this node.
    pub(super) fn aliases(&self) -> Vec<String> {
        self.by_alias
            .keys()
            .map(|alias| alias.to_string())
            .collect()
    }

    pub(super) fn session_of(&self, alias: &str) -> Option<SessionId> {
        self.by_alias.get(alias).copied()
    }

    /// The session of `alias` and its shared name, if private messages may be written to it
    /// now (see [`Sessions::accepts_private`]).
    pub(super) fn private_recipient(&self, alias: &str) -> Option<(SessionId, &Rc<str>)> {
        let id = *self.by_alias.get(alias)?;
        let session = self.by_id.get(&id)?;
        session.accepts_private().then_some((id, &session.alias))
    }

    /// The client address of a session.
    pub(super) fn address_of(&self, session: SessionId) -> Option<std::net::IpAddr> {
        self.by_id.get(&session).map(|s| s.from)
    }

    /// True if private messages may be written to the session now
    /// ([`Session::accepts_private`]).
    pub(super) fn accepts_private(&self, session: SessionId) -> bool {
        self.by_id
            .get(&session)
            .is_some_and(Session::accepts_private)
    }

    fn came_online(&mut self, alias: &str) {
        if !self.online_order.contains_key(alias) {
            self.next_order += 1;
            self.online.insert(self.next_order, alias.to_string());
            self.online_order.insert(alias.to_string(), self.next_order);
            self.version += 1;
        }
    }

    fn went_offline(&mut self, alias: &str) -> bool {
        match self.online_order.remove(alias) {
            Some(order) => {
                self.online.remove(&order);
                self.version += 1;
                true
            }
            None => false,
        }
    }
}

impl Core {
    /// Starts the login of `session` as `alias`, registering the name if it is new: in this
    /// turn, or beside the reactor, when [`Finished::Login`] comes back under the ticket.
    /// Meanwhile the name counts as taken on this node.
    pub fn start_login(
        &mut self,
        alias: &str,
        session: SessionId,
        interests: Interests,
        from: std::net::IpAddr,
        proof: Proof,
        now: Instant,
    ) -> Started {
        if self.in_a_session_or_logging_in(alias) || self.login_of.contains_key(&session) {
            self.login_refused("name_taken", interests);
            return Started::Now(Ok(Finished::Login(LoginOutcome::Taken)));
        }
        self.logging_in
            .insert(alias.to_string(), (session, interests));
        self.login_of.insert(session, alias.to_string());
        let work = Work::Login {
            session,
            alias: alias.to_string(),
            from,
            may_register: self.new_names.allows(from, now),
            proof,
        };
        let started = self.start(work, now);
        match &started {
            Started::Later(ticket) => {
                self.login_tickets.insert(*ticket, session);
            }
            Started::Now(Err(_)) => self.cancel_login(session),
            Started::Now(Ok(_)) => {}
        }
        started
    }

    /// The storage work of `session`'s login as `alias` is done: the session starts, unless
    /// the name was taken meanwhile (or is connected through the messenger), or the session
    /// has ended (another session may be logging in as `alias` by then).
    pub(super) fn logged_in(
        &mut self,
        session: SessionId,
        alias: &str,
        taken: bool,
        registered: bool,
        refused_new: bool,
        from: std::net::IpAddr,
    ) -> LoginOutcome {
        let interests = match self.logging_in.get(alias) {
            Some(&(logging_in, interests)) if logging_in == session => interests,
            _ => return LoginOutcome::Gone,
        };
        self.logging_in.remove(alias);
        self.login_of.remove(&session);
        if refused_new {
            self.login_refused("new_names_per_minute", interests);
            return LoginOutcome::TooManyNewNames;
        }
        if taken || self.present_in_a_session(alias) || self.present_since.contains_key(alias) {
            self.login_refused("name_taken", interests);
            return LoginOutcome::Taken;
        }
        let shared: Rc<str> = alias.into();
        self.sessions.by_id.insert(
            session,
            Session {
                alias: Rc::clone(&shared),
                from,
                since: std::time::SystemTime::now(),
                interests,
                room: None,
                list_version: 0,
            },
        );
        self.sessions.by_alias.insert(shared, session);
        self.came_online(alias, true);
        // The newcomer hears the list at once, before the history; the others at the next
        // tick.
        if interests.user_list {
            self.tell_user_list_to(session);
        }
        if interests.broadcasts {
            for (from, text) in &self.sessions.recent_broadcasts {
                self.notices.push((
                    session,
                    Notice::Broadcast {
                        from: from.clone(),
                        text: text.clone(),
                    },
                ));
            }
        }
        self.kicks.insert(alias.to_string());
        LoginOutcome::LoggedIn { registered }
    }

    /// Counts a login refused for `reason` (one of `metrics::REFUSALS`) by its front-end.
    fn login_refused(&self, reason: &str, interests: Interests) {
        self.metrics.refused(reason);
        self.metrics.login_failed(interests.frontend());
    }

    /// Forgets the login under way of `session`, if any.
    pub(super) fn cancel_login(&mut self, session: SessionId) {
        if let Some(alias) = self.login_of.remove(&session) {
            self.logging_in.remove(&alias);
        }
    }

    /// True if `alias` is in a session (here or on another node) or logging in here.
    pub(super) fn in_a_session_or_logging_in(&self, alias: &str) -> bool {
        self.present_in_a_session(alias) || self.logging_in.contains_key(alias)
    }

    /// Ends a session: its room hears that the user left, user lists are updated. What was
    /// waiting for the user stays in the mailbox.
    pub fn logout(&mut self, session: SessionId) {
        self.cancel_login(session);
        let Some(room) = self.sessions.by_id.get(&session).map(|s| s.room.clone()) else {
            return;
        };
        let alias = self.sessions.by_id[&session].alias.to_string();
        if let Some(room) = room {
            self.remove_member(session, &room);
            let user: Rc<str> = alias.as_str().into();
            self.tell_room(&room, Some(session), Notice::LeftChat { user });
            self.publish(BusEvent::LeftChat {
                room,
                user: alias.clone(),
            });
        }
        self.sessions.by_id.remove(&session);
        self.sessions.by_alias.remove(alias.as_str());
        self.joins.remove(&alias);
        self.leave(&alias);
        self.went_offline(&alias);
    }

    /// The user of a session.
    pub fn session_alias(&self, session: SessionId) -> Option<&str> {
        self.sessions.by_id.get(&session).map(|s| &*s.alias)
    }

    /// Everybody online through any front-end, in the order they came online.
    pub fn online_users(&self) -> Vec<String> {
        self.sessions.online.values().cloned().collect()
    }

    /// The first `limit` people online, in the order they came online, as the operators'
    /// page lists them.
    pub fn presences(&self, limit: usize) -> Vec<Presence> {
        let here = self.store.node();
        self.sessions
            .online
            .values()
            .take(limit)
            .map(|name| {
                let session = self
                    .sessions
                    .by_alias
                    .get(name.as_str())
                    .and_then(|id| self.sessions.by_id.get(id));
                match session {
                    Some(session) => Presence {
                        name: name.clone(),
                        frontend: session.interests.frontend(),
                        since: Some(session.since),
                        address: Some(session.from),
                        room: session.room.clone(),
                        node: here,
                    },
                    None => match self.present_since.get(name) {
                        Some(at) => Presence {
                            name: name.clone(),
                            frontend: "messenger",
                            since: std::time::SystemTime::now().checked_sub(at.elapsed()),
                            address: None,
                            room: None,
                            node: here,
                        },
                        None => Presence {
                            name: name.clone(),
                            frontend: "another node",
                            since: None,
                            address: None,
                            room: None,
                            node: self.remote.get(name).copied(),
                        },
                    },
                }
            })
            .collect()
    }

    /// How many are online, through any front-end, on any node.
    pub fn online_count(&self) -> usize {
        self.sessions.online.len()
    }

    /// The first `limit` rooms this node knows, in the order they were made.
    pub fn room_names(&self, limit: usize) -> Vec<String> {
        self.sessions.rooms.iter().take(limit).cloned().collect()
    }

    /// The first `limit` members of `room` on this node, in the order they entered.
    pub fn members_of(&self, room: &str, limit: usize) -> Vec<String> {
        self.sessions
            .members
            .get(room)
            .into_iter()
            .flatten()
            .filter_map(|id| self.sessions.by_id.get(id))
            .take(limit)
            .map(|session| session.alias.to_string())
            .collect()
    }

    /// Tells every session that hears broadcasts of a stored one, the sender's included.
    pub(super) fn tell_broadcast(&mut self, from: Rc<str>, text: Rc<str>) {
        self.sessions
            .heard_broadcast(from.clone(), text.clone(), self.settings.history);
        let listeners: Vec<SessionId> = self
            .sessions
            .by_id
            .iter()
            .filter(|(_, s)| s.interests.broadcasts)
            .map(|(id, _)| *id)
            .collect();
        for id in listeners {
            self.notices.push((
                id,
                Notice::Broadcast {
                    from: from.clone(),
                    text: text.clone(),
                },
            ));
        }
    }

    /// Starts moving a logged-in session into `room` (created if missing), out of the room it
    /// was in: in this turn, or beside the reactor, when [`Finished::Joined`] comes back
    /// under the ticket. Work on one room runs in order (`Work::order_key`).
    pub fn start_join_room(
        &mut self,
        session: SessionId,
        room: &str,
        key: Proof,
        now: Instant,
    ) -> Started {
        let (Some(alias), Some(from)) = (
            self.session_alias(session).map(str::to_string),
            self.sessions.address_of(session),
        ) else {
            return Started::Now(Ok(Finished::Joined(JoinOutcome::Gone)));
        };
        let exists = self.sessions.members.contains_key(room);
        let creating = self.sessions.being_created.contains_key(room);
        let rooms = self.sessions.rooms.len() + self.sessions.being_created.len();
        if !exists && !creating && rooms >= self.settings.max_rooms {
            return Started::Now(Ok(Finished::Joined(JoinOutcome::TooManyRooms)));
        }
        if !exists {
            *self
                .sessions
                .being_created
                .entry(room.to_string())
                .or_default() += 1;
        }
        let announce = self.announcement(BusEvent::Joined {
            room: room.to_string(),
            user: alias.clone(),
        });
        if announce.is_some() {
            self.await_join_echo(&alias, room, now);
        }
        let work = Work::JoinRoom {
            session,
            alias: alias.clone(),
            room: room.to_string(),
            create: !exists,
            history: self.settings.history,
            announce,
            key,
            from,
        };
        let started = self.start(work, now);
        match &started {
            Started::Later(ticket) => {
                let join = (alias, room.to_string(), !exists);
                self.join_tickets.insert(*ticket, join);
            }
            Started::Now(Err(_)) => self.join_failed(&alias, room, !exists),
            Started::Now(Ok(_)) => {}
        }
        started
    }

    /// Notes that `alias`'s join of `room`, made `now`, is to come back through the bus.
    pub(super) fn await_join_echo(&mut self, alias: &str, room: &str, now: Instant) {
        let join = Join {
            room: room.to_string(),
            since: now,
            echoed: false,
            heard: Vec::new(),
        };
        self.joins.insert(alias.to_string(), join);
    }

    /// `alias`'s join of `room` (which it was to `create`) failed.
    pub(super) fn join_failed(&mut self, alias: &str, room: &str, create: bool) {
        if create {
            self.creation_ended(room);
        }
        if self.joins.get(alias).is_some_and(|join| join.room == room) {
            self.joins.remove(alias);
        }
    }

    /// A join that was to create `room` came back, or failed: it counts against
    /// `--max-rooms` no more (a created room counts as a room).
    fn creation_ended(&mut self, room: &str) {
        if let Some(joins) = self.sessions.being_created.get_mut(room) {
            *joins -= 1;
            if *joins == 0 {
                self.sessions.being_created.remove(room);
            }
        }
    }

    /// The storage work of `session`'s join of `room` is done: the room exists (`created` by
    /// it, or already there), and the session moves into it unless it has ended.
    pub(super) fn joined_room(
        &mut self,
        session: SessionId,
        alias: String,
        room: &str,
        created: Option<bool>,
        history: Vec<(String, String)>,
    ) -> JoinOutcome {
        if created.is_some() {
            self.creation_ended(room);
        }
        // Created by this join, by another node a moment ago, or before this node started.
        self.add_room(room);
        if self.session_alias(session) != Some(alias.as_str()) {
            self.join_failed(&alias, room, false);
            // The other nodes heard the join with its commit.
            self.publish(BusEvent::LeftChat {
                room: room.to_string(),
                user: alias,
            });
            return JoinOutcome::Gone;
        }
        self.leave_room(session);
        let user: Rc<str> = alias.as_str().into();
        self.tell_room(room, Some(session), Notice::JoinedRoom { user });
        // What other nodes said in the room after the join's commit follows its history.
        let heard = match self.joins.get(&alias) {
            Some(join) if join.room == room && join.echoed => self.joins.remove(&alias),
            _ => None,
        };
        for notice in heard.into_iter().flat_map(|join| join.heard) {
            self.notices.push((session, notice));
        }
        self.sessions
            .members
            .get_mut(room)
            .expect("added above")
            .push(session);
        if let Some(s) = self.sessions.by_id.get_mut(&session) {
            s.room = Some(room.to_string());
        }
        // In a room, a rooms session can take its private messages.
        self.kicks.insert(alias);
        JoinOutcome::Joined {
            history,
            created: created == Some(true),
        }
    }

    /// Takes a session out of its room, telling the others; returns the room it left.
    pub fn leave_room(&mut self, session: SessionId) -> Option<String> {
        let room = self.sessions.by_id.get_mut(&session)?.room.take()?;
        self.remove_member(session, &room);
        let alias = self.sessions.by_id[&session].alias.to_string();
        if self.joins.get(&alias).is_some_and(|join| join.room == room) {
            self.joins.remove(&alias);
        }
        self.tell_room(
            &room,
            Some(session),
            Notice::LeftRoom {
                user: alias.as_str().into(),
            },
        );
        self.publish(BusEvent::Left {
            room: room.clone(),
            user: alias,
        });
        Some(room)
    }

    /// The session's room, if it is in one.
    pub fn room_of(&self, session: SessionId) -> Option<&str> {
        self.sessions.by_id.get(&session)?.room.as_deref()
    }

    /// Starts storing a line said in the session's room, in this turn or beside the reactor
    /// ([`Finished::RoomMessage`] under the ticket); the room hears it once it is stored.
    /// None if the session is in no room.
    pub fn start_room_message(
        &mut self,
        session: SessionId,
        text: &str,
        now: Instant,
    ) -> Option<Started> {
        let state = self.sessions.by_id.get(&session)?;
        let (room, from) = (state.room.clone()?, state.alias.to_string());
        // What reaches other users is clean text (docs/text.md).
        let cleaned = wire::clean_text(text);
        let text: &str = &cleaned;
        let announce = self.announcement(BusEvent::RoomMessage {
            room: room.clone(),
            from: from.clone(),
            text: text.to_string(),
        });
        let prune_to = self
            .sessions
            .prune_due(&room, self.settings.room_history_kept);
        let work = Work::RoomMessage {
            session,
            room,
            from,
            text: text.to_string(),
            announce,
            prune_to,
        };
        Some(self.start(work, now))
    }

    /// A line said in `room` is stored: the room's other members here hear it (the other
    /// nodes' heard it with its commit).
    pub(super) fn room_message_stored(
        &mut self,
        session: SessionId,
        room: String,
        from: String,
        text: String,
    ) {
        self.tell_room(
            &room,
            Some(session),
            Notice::RoomMessage {
                from: from.as_str().into(),
                text: text.as_str().into(),
            },
        );
    }

    /// Rooms in creation order with how many are in each now, and whether each has a key.
    pub fn room_list(&self) -> Vec<(String, usize, bool)> {
        self.sessions
            .rooms
            .iter()
            .map(|room| {
                let remote = self.remote_members.get(room).map_or(0, Vec::len);
                let keyed = self.sessions.keyed.contains(room);
                (
                    room.clone(),
                    self.sessions.members[room].len() + remote,
                    keyed,
                )
            })
            .collect()
    }

    /// Notes whether `room` has a key (for the room list).
    pub(super) fn room_keyed(&mut self, room: &str, keyed: bool) {
        if keyed {
            self.sessions.keyed.insert(room.to_string());
        } else {
            self.sessions.keyed.remove(room);
        }
    }

    /// Starts setting (or removing) the key of the room `session` is in: only its creator
    /// may.
    pub fn start_set_room_key(
        &mut self,
        session: SessionId,
        new: Option<NewSecret>,
        now: Instant,
    ) -> Option<Started> {
        let alias = self.session_alias(session)?.to_string();
        let room = self.room_of(session)?.to_string();
        let work = Work::SetRoomKey { alias, room, new };
        Some(self.start(work, now))
    }

    /// Starts setting (or removing) the password of the user of `session`.
    pub fn start_set_password(
        &mut self,
        session: SessionId,
        new: Option<NewSecret>,
        now: Instant,
    ) -> Option<Started> {
        let alias = self.session_alias(session)?.to_string();
        let from = self.sessions.address_of(session)?;
        let work = Work::SetPassword {
            alias,
            from,
            proof: Proof::Session,
            new,
        };
        Some(self.start(work, now))
    }

    /// Ends the session of `alias` here, if there is one: it is told why, then closed.
    pub(super) fn end_session_of(&mut self, alias: &str, why: Ending) -> bool {
        match self.sessions.session_of(alias) {
            Some(session) => {
                self.notices.push((session, Notice::Ended(why)));
                true
            }
            None => false,
        }
    }

    fn remove_member(&mut self, session: SessionId, room: &str) {
        if let Some(members) = self.sessions.members.get_mut(room) {
            members.retain(|&m| m != session);
        }
    }

    /// Tells every member of `room` on this node but `except`.
    fn tell_room(&mut self, room: &str, except: Option<SessionId>, notice: Notice) {
        let Some(members) = self.sessions.members.get(room) else {
            return;
        };
        for &member in members.iter().filter(|&&m| Some(m) != except) {
            self.notices.push((member, notice.clone()));
        }
    }

    /// Tells the room's members here of another node's room event. The bus carries events in
    /// commit order, and a join's history holds exactly the lines committed before it (see
    /// `Storage::room_history`):
    /// - a member whose own join has not come back through the bus yet joined after this
    ///   event, so it is not news to them (on one node they would not have seen it);
    /// - a joiner whose join came back through the bus before its answer did hears the event
    ///   after that answer.
    fn tell_room_news(&mut self, room: &str, notice: Notice) {
        if let Some(members) = self.sessions.members.get(room) {
            for &member in members {
                let Some(session) = self.sessions.by_id.get(&member) else {
                    continue;
                };
                let joined_after = self.joins.get(&*session.alias).is_some_and(|join| {
                    join.room == room && !join.echoed && join.since.elapsed() < JOIN_ECHO_WAIT
                });
                if !joined_after {
                    self.notices.push((member, notice.clone()));
                }
            }
        }
        for (alias, join) in &mut self.joins {
            if join.room != room || !join.echoed {
                continue;
            }
            if join.heard.len() < MAX_HEARD_WHILE_JOINING {
                join.heard.push(notice.clone());
            } else {
                log::warn!("{alias} misses a room event of {room} heard while joining it");
            }
        }
    }

    /// This node's join of `room` by `user` came back through the bus: before its answer (the
    /// joiner then hears what follows after it), or after (the member hears what follows).
    fn join_echoed(&mut self, user: &str, room: &str) {
        let member = self
            .sessions
            .session_of(user)
            .and_then(|session| self.room_of(session))
            == Some(room);
        match self.joins.get_mut(user) {
            Some(join) if join.room == room && member => {
                self.joins.remove(user);
            }
            Some(join) if join.room == room => join.echoed = true,
            _ => {}
        }
    }

    fn add_room(&mut self, room: &str) {
        if !self.sessions.members.contains_key(room) {
            self.sessions.rooms.push(room.to_string());
            self.sessions.members.insert(room.to_string(), Vec::new());
        }
    }

    /// True if `alias` is in a session, on this node or another.
    pub(super) fn present_in_a_session(&self, alias: &str) -> bool {
        self.sessions.session_of(alias).is_some() || self.remote.contains_key(alias)
    }

    /// Records that `alias` is online (in a session, or else through the messenger); the
    /// user-list listeners hear it at the next tick, other nodes' with the commit.
    pub(super) fn came_online(&mut self, alias: &str, session: bool) {
        self.sessions.came_online(alias);
        self.user_list_changed = true;
        self.publish(BusEvent::Online {
            alias: alias.to_string(),
            session,
        });
    }

    pub(super) fn went_offline(&mut self, alias: &str) {
        if self.sessions.went_offline(alias) {
            self.user_list_changed = true;
            self.publish(BusEvent::Offline {
                alias: alias.to_string(),
            });
        }
    }

    /// On a shared database, `event` as this node's payload on the bus, under its newest name.
    pub(super) fn announcement(&self, event: BusEvent) -> Option<String> {
        let (Some(_), Some(&node)) = (&self.bus, self.own_nodes.last()) else {
            return None;
        };
        let payload = event.encode(node);
        if payload.len() >= crate::bus::MAX_PAYLOAD {
            log::warn!(
                "the other nodes are not told of an event of {} bytes (PostgreSQL takes fewer \
                 than {})",
                payload.len(),
                crate::bus::MAX_PAYLOAD
            );
            return None;
        }
        Some(payload)
    }

    /// Tells the other nodes `event`, after what came before it (see `start_publishing`).
    pub(super) fn publish(&mut self, event: BusEvent) {
        let Some(payload) = self.announcement(event) else {
            return;
        };
        if self.to_publish.len() >= super::MAX_EVENTS_WAITING {
            log::warn!(
                "the other nodes are not told of an event: {} wait to be published already",
                super::MAX_EVENTS_WAITING
            );
        } else {
            self.to_publish.push(payload);
            self.metrics.bus_events(false, 1);
        }
    }

    /// True if events or paints wait to be published and nothing holds them back.
    pub(super) fn publish_due(&self) -> bool {
        !self.publishing
            && self.publish_retry.is_none()
            && (!self.to_publish.is_empty() || self.canvas.unstored())
    }

    /// Hands the waiting events and paints to storage in one `Chore::Publish`, after the
    /// one in flight: beside the reactor on PostgreSQL (one worker, in order), in the turn on
    /// SQLite.
    pub(super) fn start_publishing(&mut self, now: Instant) {
        if !self.publish_due() {
            return;
        }
        let paints = self.canvas.take_unstored();
        let board = if paints.is_empty() {
            Vec::new()
        } else {
            self.canvas.pixels().to_vec()
        };
        let publish = super::Chore::Publish {
            events: std::mem::take(&mut self.to_publish),
            paints,
            board,
            node: self.bus.as_ref().and(self.own_nodes.last().copied()),
        };
        self.chore(Some(super::work::BUS), publish, now);
    }

    /// Events and paints that did not go out, to go before the newer ones from `at` on.
    pub(super) fn publish_again(
        &mut self,
        mut events: Vec<String>,
        paints: Vec<(usize, u8)>,
        at: Instant,
    ) {
        events.append(&mut self.to_publish);
        events.truncate(super::MAX_EVENTS_WAITING);
        self.to_publish = events;
        self.canvas.unstore(paints);
        self.publish_retry = Some(at);
    }

    /// Applies what other nodes published since the last call (the bus rang the waker).
    pub fn collect_bus(&mut self) {
        let Some(bus) = &self.bus else {
            return;
        };
        let events: Vec<(NodeId, BusEvent)> = bus.events.try_iter().collect();
        self.metrics.bus_events(true, events.len() as u64);
        for (node, event) in events {
            if !self.own_nodes.contains(&node) || event.applies_to_its_publisher() {
                self.apply_remote(node, event);
            } else if let BusEvent::Joined { room, user } = &event {
                self.join_echoed(user, room);
            }
        }
    }

    /// After the storage connection was made again the node has a new name: the others will
    /// find the old one gone and forget this node's sessions, so announce them again.
    pub(super) fn notice_new_name(&mut self) {
        let Some(node) = self.store.node() else {
            return;
        };
        if !self.own_nodes.contains(&node) {
            self.own_nodes.push(node);
            self.announce();
        }
    }

    fn apply_remote(&mut self, node: NodeId, event: BusEvent) {
        match event {
            BusEvent::Hello => self.announce(),
            BusEvent::Online { alias, session } => {
                if session {
                    self.remote.insert(alias.clone(), node);
                }
                self.sessions.came_online(&alias);
                self.user_list_changed = true;
            }
            BusEvent::Offline { alias } => {
                self.remote.remove(&alias);
                if self.sessions.went_offline(&alias) {
                    self.user_list_changed = true;
                }
            }
            BusEvent::Pending { alias } => {
                if self.sessions.session_of(&alias).is_some() {
                    self.kicks.insert(alias);
                }
            }
            BusEvent::Member { room, user } => {
                self.add_room(&room);
                let members = self.remote_members.entry(room).or_default();
                // Said again by a node under a new name: the member stays in place.
                match members.iter_mut().find(|(m, _)| *m == user) {
                    Some(member) => member.1 = node,
                    None => members.push((user, node)),
                }
            }
            BusEvent::Joined { room, user } => {
                self.add_room(&room);
                let members = self.remote_members.entry(room.clone()).or_default();
                members.retain(|(m, _)| *m != user);
                members.push((user.clone(), node));
                self.tell_room_news(&room, Notice::JoinedRoom { user: user.into() });
            }
            BusEvent::Left { room, user } => {
                self.forget_remote_member(&room, &user);
                self.tell_room_news(&room, Notice::LeftRoom { user: user.into() });
            }
            BusEvent::LeftChat { room, user } => {
                self.forget_remote_member(&room, &user);
                self.tell_room_news(&room, Notice::LeftChat { user: user.into() });
            }
            BusEvent::RoomMessage { room, from, text } => {
                let notice = Notice::RoomMessage {
                    from: from.into(),
                    text: text.into(),
                };
                self.tell_room_news(&room, notice);
            }
            BusEvent::Broadcast { from, text } => self.tell_broadcast(from.into(), text.into()),
            BusEvent::Paints { paints } => self.canvas_apply_remote(&paints),
        }
    }

    fn forget_remote_member(&mut self, room: &str, user: &str) {
        if let Some(members) = self.remote_members.get_mut(room) {
            members.retain(|(m, _)| m != user);
        }
    }

    /// A node started: tells it (and, harmlessly, the others) who is in a session here and
    /// in which room, as state rather than as news.
    fn announce(&mut self) {
        let mut events = Vec::new();
        for session in self.sessions.by_id.values() {
            events.push(BusEvent::Online {
                alias: session.alias.to_string(),
                session: true,
            });
            if let Some(room) = &session.room {
                events.push(BusEvent::Member {
                    room: room.clone(),
                    user: session.alias.to_string(),
                });
            }
        }
        for event in events {
            self.publish(event);
        }
    }

    /// The nodes whose sessions this node knows of: the sweep asks which are still connected.
    pub(super) fn nodes_to_look_at(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.remote.values().copied().collect();
        nodes.extend(
            self.remote_members
                .values()
                .flatten()
                .map(|(_, node)| *node),
        );
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Of `nodes`, those not `live` are gone: their sessions are forgotten once they are gone
    /// at two looks in a row (their storage connection ended with them): their users go
    /// offline, their room members leave.
    pub(super) fn nodes_looked_at(&mut self, nodes: Vec<NodeId>, live: &[NodeId]) {
        // Gone at two looks in a row: a node that lost its connection for a moment and made
        // it again has announced its sessions under its new name by then.
        let missing: Vec<NodeId> = nodes.into_iter().filter(|n| !live.contains(n)).collect();
        let dead_now: Vec<NodeId> = missing
            .iter()
            .copied()
            .filter(|n| self.missing_nodes.contains(n))
            .collect();
        self.missing_nodes = missing;
        if dead_now.is_empty() {
            return;
        }
        let dead = |node: &NodeId| dead_now.contains(node);
        let gone: Vec<String> = self
            .remote
            .iter()
            .filter(|(_, node)| dead(node))
            .map(|(alias, _)| alias.clone())
            .collect();
        for alias in gone {
            self.remote.remove(&alias);
            if self.sessions.went_offline(&alias) {
                self.user_list_changed = true;
            }
        }
        let mut left = Vec::new();
        for (room, members) in &mut self.remote_members {
            members.retain(|(user, node)| {
                if dead(node) {
                    left.push((room.clone(), user.clone()));
                }
                !dead(node)
            });
        }
        for (room, user) in left {
            self.tell_room(&room, None, Notice::LeftChat { user: user.into() });
        }
    }

    /// Tells user-list listeners that have not heard the current list, those longest behind
    /// first, up to [`USER_LIST_BYTES_PER_TICK`]: called once per tick at most, so a storm of
    /// logins costs each session one list per tick at most, and a tick a bounded number of
    /// bytes whatever the number of sessions (a list of everybody to everybody grows with the
    /// square of the sessions). Returns true if some are still behind.
    pub(super) fn tell_user_lists(&mut self) -> bool {
        let version = self.sessions.version;
        let mut behind: Vec<(u64, SessionId)> = self
            .sessions
            .by_id
            .iter()
            .filter(|(_, s)| s.interests.user_list && s.list_version < version)
            .map(|(id, s)| (s.list_version, *id))
            .collect();
        if behind.is_empty() {
            return false;
        }
        let list = self.current_user_list();
        let bytes = list.iter().map(|name| name.len() + 1).sum::<usize>().max(1);
        let told = (USER_LIST_BYTES_PER_TICK / bytes).max(1);
        let left = behind.len() > told;
        if left {
            behind.select_nth_unstable(told);
            behind.truncate(told);
        }
        for (_, id) in behind {
            self.tell_list(id, list.clone());
        }
        left
    }

    fn tell_user_list_to(&mut self, session: SessionId) {
        let list = self.current_user_list();
        self.tell_list(session, list);
    }

    /// Everybody online, made once per change of the online set and shared.
    fn current_user_list(&mut self) -> Rc<[String]> {
        let version = self.sessions.version;
        match &self.sessions.list {
            Some((made, list)) if *made == version => list.clone(),
            _ => {
                let list: Rc<[String]> = self.online_users().into();
                self.sessions.list = Some((version, list.clone()));
                list
            }
        }
    }

    fn tell_list(&mut self, session: SessionId, list: Rc<[String]>) {
        if let Some(s) = self.sessions.by_id.get_mut(&session) {
            s.list_version = self.sessions.version;
            self.notices.push((session, Notice::UserList(list)));
        }
    }
}
