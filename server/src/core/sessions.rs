//! Sessions: users present through a persistent connection (the chat and rooms front-ends),
//! what they hear about, and the rooms.
//!
//! Presence is one for every front-end: a user is online through the messenger (a listener,
//! recorded in storage so it survives restarts) or through one session (in memory: a session
//! ends with its connection). The order users came online is kept for the chat's user list.
//! Everything said to a session is a [`Notice`]; front-ends encode them.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use super::{Core, JobId};
use crate::storage::{self, Storage};

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

/// Marks a private message written to a session, for the report that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryMark {
    pub job: JobId,
    /// Which message of the job.
    pub index: usize,
    /// The job's last message.
    pub last: bool,
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

impl Notice {
    /// True if this notice makes an unwritten earlier one of its kind pointless.
    pub fn supersedes(&self) -> bool {
        matches!(self, Notice::CanvasBoard { .. })
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// `registered`: the name was new and is now a user with a mailbox (a write).
    LoggedIn { registered: bool },
    /// The name is online through some front-end.
    Taken,
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
}

struct Session {
    alias: String,
    interests: Interests,
    room: Option<String>,
    /// The version of the online set this session was last told.
    list_version: u64,
}

#[derive(Default)]
pub(super) struct Sessions {
    by_id: HashMap<SessionId, Session>,
    by_alias: HashMap<String, SessionId>,
    /// Everybody online through any front-end, by the order they came online.
    online: BTreeMap<u64, String>,
    online_order: HashMap<String, u64>,
    next_order: u64,
    /// Changes with every change of the online set.
    version: u64,
    /// Rooms in creation order, with their members in joining order.
    rooms: Vec<String>,
    members: HashMap<String, Vec<SessionId>>,
}

impl Sessions {
    /// Rooms from storage, and the messenger users still connected since before a restart.
    pub(super) fn load(store: &dyn Storage) -> storage::Result<Sessions> {
        let mut sessions = Sessions::default();
        for room in store.rooms()? {
            sessions.members.insert(room.clone(), Vec::new());
            sessions.rooms.push(room);
        }
        for (alias, _, _) in store.connected_users()? {
            sessions.came_online(&alias);
        }
        Ok(sessions)
    }

    pub(super) fn session_of(&self, alias: &str) -> Option<SessionId> {
        self.by_alias.get(alias).copied()
    }

    /// True if private messages may be written to the session now: a rooms session only while
    /// it is in a room (its client reads command answers with single reads meanwhile).
    pub(super) fn accepts_private(&self, session: SessionId) -> bool {
        self.by_id
            .get(&session)
            .is_some_and(|s| !s.interests.privates_only_in_a_room || s.room.is_some())
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
    /// Starts a session for `alias`, registering the name if it is new.
    pub fn login(
        &mut self,
        alias: &str,
        session: SessionId,
        interests: Interests,
    ) -> storage::Result<LoginOutcome> {
        let user = self.store.user(alias)?;
        if user.as_ref().is_some_and(|u| u.connected) || self.sessions.session_of(alias).is_some() {
            return Ok(LoginOutcome::Taken);
        }
        let registered = user.is_none();
        if registered {
            self.store.insert_user(alias, None, None)?;
        }
        self.sessions.by_id.insert(
            session,
            Session {
                alias: alias.to_string(),
                interests,
                room: None,
                list_version: 0,
            },
        );
        self.sessions.by_alias.insert(alias.to_string(), session);
        self.came_online(alias);
        // The newcomer hears the list at once, before the history; the others at the next
        // tick.
        if interests.user_list {
            self.tell_user_list_to(session);
        }
        if interests.broadcasts {
            for (from, text) in self.store.broadcast_history(self.settings.history)? {
                self.notices.push((
                    session,
                    Notice::Broadcast {
                        from: from.into(),
                        text: text.into(),
                    },
                ));
            }
        }
        self.kicks.insert(alias.to_string());
        Ok(LoginOutcome::LoggedIn { registered })
    }

    /// Ends a session: its room hears that the user left, user lists are updated. What was
    /// waiting for the user stays in the mailbox.
    pub fn logout(&mut self, session: SessionId) {
        let Some(room) = self.sessions.by_id.get(&session).map(|s| s.room.clone()) else {
            return;
        };
        let alias = self.sessions.by_id[&session].alias.clone();
        if let Some(room) = room {
            self.remove_member(session, &room);
            let user: Rc<str> = alias.as_str().into();
            self.tell_room(&room, session, Notice::LeftChat { user });
        }
        self.sessions.by_id.remove(&session);
        self.sessions.by_alias.remove(&alias);
        self.leave(&alias);
        self.went_offline(&alias);
    }

    /// The user of a session.
    pub fn session_alias(&self, session: SessionId) -> Option<&str> {
        self.sessions.by_id.get(&session).map(|s| s.alias.as_str())
    }

    /// Everybody online through any front-end, in the order they came online.
    pub fn online_users(&self) -> Vec<String> {
        self.sessions.online.values().cloned().collect()
    }

    /// Stores a chat broadcast and tells every session that hears broadcasts, the sender's
    /// included.
    pub fn broadcast(&mut self, session: SessionId, text: &str) -> storage::Result<()> {
        let Some(alias) = self.session_alias(session).map(str::to_string) else {
            return Ok(());
        };
        self.store
            .add_broadcast(&alias, text, self.settings.history.max(1))?;
        let (from, text): (Rc<str>, Rc<str>) = (alias.into(), text.into());
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
        Ok(())
    }

    /// Moves a session into `room` (created if missing), out of the room it was in.
    pub fn join_room(&mut self, session: SessionId, room: &str) -> storage::Result<JoinOutcome> {
        let Some(alias) = self.session_alias(session).map(str::to_string) else {
            return Ok(JoinOutcome::TooManyRooms);
        };
        let exists = self.sessions.members.contains_key(room);
        if !exists && self.sessions.rooms.len() >= self.settings.max_rooms {
            return Ok(JoinOutcome::TooManyRooms);
        }
        if !exists {
            self.store.create_room(room)?;
            self.sessions.rooms.push(room.to_string());
            self.sessions.members.insert(room.to_string(), Vec::new());
        }
        let history = self.store.room_history(room, self.settings.history)?;
        self.leave_room(session);
        let user: Rc<str> = alias.as_str().into();
        self.tell_room(room, session, Notice::JoinedRoom { user });
        self.sessions
            .members
            .get_mut(room)
            .expect("created above")
            .push(session);
        if let Some(s) = self.sessions.by_id.get_mut(&session) {
            s.room = Some(room.to_string());
        }
        // In a room, a rooms session can take its private messages.
        self.kicks.insert(alias);
        Ok(JoinOutcome::Joined {
            history,
            created: !exists,
        })
    }

    /// Takes a session out of its room, telling the others; returns the room it left.
    pub fn leave_room(&mut self, session: SessionId) -> Option<String> {
        let room = self.sessions.by_id.get_mut(&session)?.room.take()?;
        self.remove_member(session, &room);
        let user: Rc<str> = self.sessions.by_id[&session].alias.as_str().into();
        self.tell_room(&room, session, Notice::LeftRoom { user });
        Some(room)
    }

    /// The session's room, if it is in one.
    pub fn room_of(&self, session: SessionId) -> Option<&str> {
        self.sessions.by_id.get(&session)?.room.as_deref()
    }

    /// Stores a message in the session's room and tells the other members; false if the
    /// session is in no room.
    pub fn room_message(&mut self, session: SessionId, text: &str) -> storage::Result<bool> {
        let Some(session_state) = self.sessions.by_id.get(&session) else {
            return Ok(false);
        };
        let Some(room) = session_state.room.clone() else {
            return Ok(false);
        };
        let alias = session_state.alias.clone();
        self.store.add_room_message(&room, &alias, text)?;
        self.tell_room(
            &room,
            session,
            Notice::RoomMessage {
                from: alias.into(),
                text: text.into(),
            },
        );
        Ok(true)
    }

    /// Rooms in creation order with how many are in each now.
    pub fn room_list(&self) -> Vec<(String, usize)> {
        self.sessions
            .rooms
            .iter()
            .map(|room| (room.clone(), self.sessions.members[room].len()))
            .collect()
    }

    fn remove_member(&mut self, session: SessionId, room: &str) {
        if let Some(members) = self.sessions.members.get_mut(room) {
            members.retain(|&m| m != session);
        }
    }

    /// Tells every member of `room` but `except`.
    fn tell_room(&mut self, room: &str, except: SessionId, notice: Notice) {
        let Some(members) = self.sessions.members.get(room) else {
            return;
        };
        for &member in members.iter().filter(|&&m| m != except) {
            self.notices.push((member, notice.clone()));
        }
    }

    /// Records that `alias` is online; the user-list listeners hear it at the next tick.
    pub(super) fn came_online(&mut self, alias: &str) {
        self.sessions.came_online(alias);
        self.user_list_changed = true;
    }

    pub(super) fn went_offline(&mut self, alias: &str) {
        if self.sessions.went_offline(alias) {
            self.user_list_changed = true;
        }
    }

    /// Tells every user-list listener that has not heard the current list. Called once per
    /// tick at most: a storm of logins costs each session one list per tick, not one per login.
    pub(super) fn tell_user_lists(&mut self) {
        let behind: Vec<SessionId> = self
            .sessions
            .by_id
            .iter()
            .filter(|(_, s)| s.interests.user_list && s.list_version < self.sessions.version)
            .map(|(id, _)| *id)
            .collect();
        if behind.is_empty() {
            return;
        }
        let list: Rc<[String]> = self.online_users().into();
        for id in behind {
            self.tell_list(id, list.clone());
        }
    }

    fn tell_user_list_to(&mut self, session: SessionId) {
        let list: Rc<[String]> = self.online_users().into();
        self.tell_list(session, list);
    }

    fn tell_list(&mut self, session: SessionId, list: Rc<[String]>) {
        if let Some(s) = self.sessions.by_id.get_mut(&session) {
            s.list_version = self.sessions.version;
            self.notices.push((session, Notice::UserList(list)));
        }
    }
}
