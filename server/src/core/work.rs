//! The storage steps of the messenger's requests and of deliveries, apart from the core's
//! memory: what runs in the reactor's turn on SQLite and on a storage worker beside it on
//! PostgreSQL (`beside.rs`). [`perform`] does the steps of one [`Work`] and says what it did
//! ([`Done`]); the core then applies what that means for presence and deliveries
//! (`Core::finished`, `Core::chore_done`), on the reactor.

use std::net::{IpAddr, SocketAddr};

use super::{ConnectOutcome, DisconnectOutcome, SessionId};
use crate::accounts::{self, Denial, Kind, NewSecret, Policy, Proof, Proving, Subject, Verdict};
use crate::bus::NodeId;
use crate::storage::{self, Pending, Storage, User};

/// A request's storage work.
///
/// `announce`: on a shared database, the session-bus event (encoded) that tells the other
/// nodes, published in the same transaction: they hear of the change exactly when it commits,
/// in the order it commits in, so what a joiner reads of a room's history and the room's
/// events it hears afterwards neither overlap nor leave a gap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Send {
        sender: String,
        recipient: String,
        text: Vec<u8>,
        attachment: Option<Vec<u8>>,
        /// `--max-pending-per-user`.
        max_pending: Option<usize>,
        /// That the caller may act as the sender, and the caller's address.
        proof: Proof,
        from: IpAddr,
    },
    /// With a password (`proof`), a new name is claimed: it gets that password.
    Register {
        alias: String,
        full_name: Option<String>,
        birth_date: Option<String>,
        /// The client's address (`--max-new-names-per-minute` counts by it).
        from: IpAddr,
        proof: Proof,
    },
    /// A connected user only from the address it connected from.
    Unregister {
        alias: String,
        from: IpAddr,
        proof: Proof,
    },
    Connect {
        alias: String,
        ip: IpAddr,
        port: u16,
        proof: Proof,
        /// The SHA-256 (hex) of the listener's certificate, if it listens over TLS.
        pin: Option<String>,
    },
    /// Only from the address the user connected from (seed 000 section 8.4).
    Disconnect {
        alias: String,
        from: IpAddr,
        proof: Proof,
    },
    /// Sets `alias`'s password (`new`), or removes it (None). A name with a password needs
    /// it (or the session logged in with it); a name without one needs its user present:
    /// connected from `from`, or the session itself.
    SetPassword {
        alias: String,
        from: IpAddr,
        proof: Proof,
        new: Option<NewSecret>,
    },
    /// USERS and CONNECTEDUSERS: who is connected, and the requester, named or else found by
    /// the address it asks `from`.
    ListUsers {
        requester: Option<String>,
        from: IpAddr,
    },
    /// `session`'s chat or rooms login as `alias`: registers the name if it is new, unless
    /// the user is connected through the messenger.
    Login {
        session: SessionId,
        alias: String,
        /// The client's address, and whether it may register a new name now
        /// (`--max-new-names-per-minute`).
        from: IpAddr,
        may_register: bool,
        /// A new name is claimed with a given password.
        proof: Proof,
    },
    /// A chat broadcast: stored, keeping the last `keep`.
    Broadcast {
        from: String,
        text: String,
        keep: usize,
        announce: Option<String>,
    },
    /// `session` (`alias`) enters `room`: the room is created first if this node did not
    /// know it (`create`; nothing if it exists by then), then its last `history` messages
    /// are read.
    JoinRoom {
        session: SessionId,
        alias: String,
        room: String,
        create: bool,
        history: usize,
        announce: Option<String>,
        /// The room's key, if it has one.
        key: Proof,
        /// The session's client address (failed keys are throttled by it).
        from: IpAddr,
    },
    /// The creator of `room`, in it, sets its key (`new`) or removes it (None).
    SetRoomKey {
        alias: String,
        room: String,
        new: Option<NewSecret>,
    },
    /// `session`, as `from`, says `text` in `room`.
    RoomMessage {
        session: SessionId,
        room: String,
        from: String,
        text: String,
        announce: Option<String>,
        /// Also drop the room's lines but the last this many (`--room-history-kept`).
        prune_to: Option<usize>,
    },
}

impl Work {
    /// Who the secrets of this work are about, for the throttle and the verified passwords:
    /// a user's name, or `room:` and a room's name (no user name holds a `:`).
    pub fn subject(&self) -> Option<(String, Kind)> {
        match self {
            Work::Send { sender: alias, .. }
            | Work::Register { alias, .. }
            | Work::Unregister { alias, .. }
            | Work::Connect { alias, .. }
            | Work::Disconnect { alias, .. }
            | Work::SetPassword { alias, .. }
            | Work::Login { alias, .. } => Some((alias.clone(), Kind::User)),
            Work::JoinRoom { room, .. } | Work::SetRoomKey { room, .. } => {
                Some((format!("room:{room}"), Kind::RoomKey))
            }
            Work::ListUsers { .. } | Work::Broadcast { .. } | Work::RoomMessage { .. } => None,
        }
    }

    /// The caller's proof, where the work acts as somebody.
    pub fn proof_mut(&mut self) -> Option<&mut Proof> {
        match self {
            Work::Send { proof, .. }
            | Work::Register { proof, .. }
            | Work::Unregister { proof, .. }
            | Work::Connect { proof, .. }
            | Work::Disconnect { proof, .. }
            | Work::SetPassword { proof, .. }
            | Work::Login { proof, .. }
            | Work::JoinRoom { key: proof, .. } => Some(proof),
            Work::SetRoomKey { .. }
            | Work::ListUsers { .. }
            | Work::Broadcast { .. }
            | Work::RoomMessage { .. } => None,
        }
    }

    /// True if the work's caller is the session logged in as the user it acts as.
    pub fn from_a_session(&self) -> bool {
        matches!(
            self,
            Work::Send {
                proof: Proof::Session,
                ..
            } | Work::SetPassword {
                proof: Proof::Session,
                ..
            }
        )
    }

    /// The new password or key the work stores.
    pub fn new_secret_mut(&mut self) -> Option<&mut NewSecret> {
        match self {
            Work::SetPassword { new, .. } | Work::SetRoomKey { new, .. } => new.as_mut(),
            _ => None,
        }
    }

    /// The client address the work came from, where it is known.
    pub fn from(&self) -> Option<IpAddr> {
        match self {
            Work::Register { from, .. }
            | Work::Unregister { from, .. }
            | Work::Disconnect { from, .. }
            | Work::SetPassword { from, .. }
            | Work::JoinRoom { from, .. }
            | Work::Send { from, .. }
            | Work::Login { from, .. } => Some(*from),
            Work::Connect { ip, .. } => Some(*ip),
            _ => None,
        }
    }

    /// True for the requests that write mailboxes (`pending_messages`): they have request
    /// workers of their own (see `beside.rs`).
    pub fn writes_mailboxes(&self) -> bool {
        matches!(self, Work::Send { .. } | Work::Unregister { .. })
    }
}

/// The key of broadcasts' storage work: one storage worker stores them all, in the order they
/// were made (NUL is in no user's name, and no room's).
const BROADCASTS: &str = "\0broadcasts";

/// The key of the session bus's publishing (and of the canvas paints that go with it).
pub(super) const BUS: &str = "\0bus";

impl Work {
    /// Work under the same key runs on one storage worker, in the order it was started: the
    /// order it commits in and comes back in, so the order this node's sessions and (through
    /// the bus, published as it comes back) the other nodes' hear it. A room's joins and
    /// lines go by the room: a join's history then holds exactly the lines that came back
    /// before it.
    pub fn order_key(&self) -> Option<&str> {
        match self {
            Work::Broadcast { .. } => Some(BROADCASTS),
            Work::JoinRoom { room, .. } | Work::RoomMessage { room, .. } => Some(room),
            _ => None,
        }
    }
}

/// The storage work of deliveries: on PostgreSQL each runs on the storage worker whose
/// connection holds (or takes) the recipient's claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chore {
    /// Claims the deliveries to `alias` and reads their oldest `limit` waiting messages if they
    /// are present: through a listener, or (`in_session`) in a session here that takes them.
    Gather {
        alias: String,
        in_session: bool,
        limit: usize,
    },
    /// Gives up the claim on `alias`'s deliveries.
    Release { alias: String },
    /// Removes delivered messages from `recipient`'s mailbox.
    Remove {
        recipient: String,
        removals: Vec<Removal>,
    },
    /// A push to `listener` failed (`reason`, reported once this is done): `recipient` is
    /// disconnected if that is still where they listen (they may have connected again
    /// elsewhere meanwhile).
    Unreachable {
        recipient: String,
        listener: SocketAddr,
        reason: String,
    },
    /// The shared database's sweep: present users with messages that no node delivers (those
    /// connected through the messenger, and of `sessions` here), which of the other `nodes`
    /// are still connected, and whether this node's own connection (`own`) still is.
    Sweep {
        sessions: Vec<String>,
        nodes: Vec<NodeId>,
        own: Option<NodeId>,
    },
    /// Drops the messages accepted before `before` (unix seconds): `--pending-ttl`.
    Expire { before: i64 },
    /// Tells the other nodes `events` (encoded bus payloads, in order) in one transaction,
    /// which also stores the canvas `paints` (`(index, colour)` in order) onto the stored
    /// board (or stores `board`, this node's, where nodes share nothing) and, on the bus,
    /// publishes them as `node`'s: a paint and its event commit together, under the board's
    /// row lock, so every node applies paints in the order they were stored.
    Publish {
        events: Vec<String>,
        paints: Vec<(usize, u8)>,
        board: Vec<u8>,
        node: Option<NodeId>,
    },
    /// Takes back a messenger CONNECT that committed while its user logged in to a session.
    TakeBack { alias: String },
}

/// A delivered message: removed from its recipient's mailbox, then acknowledged to its sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The mailbox row.
    pub seq: i64,
    pub sender: String,
    pub id: u32,
    pub attachment: Option<Vec<u8>>,
}

/// What gathering a recipient's deliveries found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gathered {
    /// Another node holds the claim: it delivers.
    Elsewhere,
    /// Nothing to deliver now, and the claim is given up. `again`: on a shared database a
    /// message arrived meanwhile for a recipient still present (its node left it to the
    /// claim's holder), so look once more.
    Released { again: bool },
    /// Claimed; the recipient as stored and their oldest messages, in order.
    Held { user: User, batch: Vec<Pending> },
}

/// A SEND as storage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Queued under the sender's next id; `connected`: the recipient is connected through the
    /// messenger (on any node).
    Accepted {
        id: u32,
        connected: bool,
    },
    NoSuchUser,
    MailboxFull,
}

/// What the storage steps of a [`Work`] did (committed with the turn, or by the worker).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// Nothing written: the caller's secret must be checked (or hashed) first, then `work`
    /// runs again with the result as its proof.
    Proving {
        work: Box<Work>,
        proving: Proving,
    },
    /// Nothing written: refused on the accounts' account.
    Denied {
        work: Box<Work>,
        denial: Denial,
    },
    /// `alias`'s password was set (or removed); false: there is no such user.
    PasswordSet {
        alias: String,
        set: bool,
    },
    /// `room`'s key was set (`keyed`) or removed.
    RoomKeySet {
        room: String,
        keyed: bool,
    },
    Sent {
        recipient: String,
        stored: Stored,
    },
    /// `registered` false: the alias was taken.
    Registered {
        registered: bool,
        from: IpAddr,
    },
    /// False: there was no such user.
    Unregistered {
        alias: String,
        removed: bool,
    },
    Connected {
        alias: String,
        outcome: ConnectOutcome,
    },
    Disconnected {
        alias: String,
        outcome: DisconnectOutcome,
    },
    /// The users connected through the messenger as `(alias, ip, port)` in alias order, and
    /// the named requester as storage knows them (None: no such user).
    Listed {
        users: Vec<(String, String, u16)>,
        requester: Option<(String, Option<storage::User>)>,
    },
    /// `taken`: connected through the messenger; `registered`: the name was new and now is a
    /// user.
    /// `refused_new`: the name was new but its address may register no more now.
    LoggedIn {
        session: SessionId,
        alias: String,
        taken: bool,
        registered: bool,
        refused_new: bool,
        from: IpAddr,
    },
    Broadcast {
        from: String,
        text: String,
    },
    /// `created`: None if the work was not to create the room, else whether it did (false:
    /// somebody else did meanwhile).
    JoinedRoom {
        session: SessionId,
        alias: String,
        room: String,
        created: Option<bool>,
        history: Vec<(String, String)>,
        /// The room has a key.
        keyed: bool,
    },
    RoomMessage {
        session: SessionId,
        room: String,
        from: String,
        text: String,
    },
}

/// What the storage work of a [`Chore`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoreDone {
    Gathered {
        alias: String,
        gathered: Gathered,
    },
    /// `again` as in [`Gathered::Released`].
    Released {
        alias: String,
        again: bool,
    },
    /// The removals that found their message (the others went with an UNREGISTER), each with
    /// its sender as stored, for the acknowledgement.
    Removed {
        recipient: String,
        removed: Vec<(Removal, storage::Result<Option<User>>)>,
    },
    Unreachable {
        recipient: String,
        disconnected: bool,
    },
    Swept {
        with_pending: Vec<String>,
        /// The nodes asked about, and those of them still connected.
        nodes: Vec<NodeId>,
        live: Vec<NodeId>,
        /// This node's own connection is gone.
        own_lost: bool,
    },
    /// The messages dropped, as `(recipient, sender, id)`.
    Expired {
        expired: Vec<(String, String, u32)>,
    },
    Published,
    TakenBack,
}

/// Runs the storage steps of `work` in `store`'s current transaction.
pub fn perform(store: &dyn Storage, work: &Work, policy: Policy) -> storage::Result<Done> {
    match steps(store, work, policy) {
        Ok(done) => Ok(done),
        Err(Stop::Storage(e)) => Err(e),
        Err(Stop::Prove(proving)) => Ok(Done::Proving {
            work: Box::new(work.clone()),
            proving,
        }),
        Err(Stop::Deny(denial)) => Ok(Done::Denied {
            work: Box::new(work.clone()),
            denial,
        }),
    }
}

/// Why a work's steps stopped before writing anything.
enum Stop {
    Storage(storage::Error),
    /// A secret must be checked (or hashed) first.
    Prove(Proving),
    Deny(Denial),
}

impl From<storage::Error> for Stop {
    fn from(e: storage::Error) -> Stop {
        Stop::Storage(e)
    }
}

/// The gate for a user: the claim's hash if a new name is claimed, or a stop.
fn admit(
    user: Option<&User>,
    proof: &Proof,
    may_claim: bool,
    new: Option<&NewSecret>,
    policy: Policy,
) -> Result<Option<String>, Stop> {
    let subject = match user {
        None => Subject::Absent,
        Some(user) => Subject::Present(user.password.as_deref()),
    };
    passed(
        accounts::gate(subject, proof, Kind::User, may_claim, policy),
        new,
    )
}

/// Goes on after a `verdict` that lets a work through, unless a new secret is still to be
/// hashed: then that is to be proved first, with whatever the verdict asked.
fn passed(verdict: Verdict, new: Option<&NewSecret>) -> Result<Option<String>, Stop> {
    let hash_new = matches!(new, Some(NewSecret::Plain(_)));
    match verdict {
        Verdict::Pass { .. } if hash_new => Err(Stop::Prove(Proving {
            verify: None,
            claim: false,
            new: true,
        })),
        Verdict::Pass { claim } => Ok(claim),
        Verdict::Prove(proving) => Err(Stop::Prove(Proving {
            new: hash_new,
            ..proving
        })),
        Verdict::Deny(denial) => Err(Stop::Deny(denial)),
    }
}

/// True if `user` listens through the messenger at an address other than `from`.
fn listens_elsewhere(user: &User, from: IpAddr) -> bool {
    user.listener()
        .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.to_canonical() != from.to_canonical())
}

/// A new secret as stored: its hash (the checker made it before the work ran again).
fn stored_secret(new: &Option<NewSecret>) -> Option<&str> {
    match new {
        Some(NewSecret::Hashed(hash)) => Some(hash),
        // `passed` sent a plain one to the checker first.
        Some(NewSecret::Plain(_)) | None => None,
    }
}

fn steps(store: &dyn Storage, work: &Work, policy: Policy) -> Result<Done, Stop> {
    Ok(match work {
        Work::Send {
            sender,
            recipient,
            text,
            attachment,
            max_pending,
            proof,
            ..
        } => {
            let Some(user) = store.user(sender)? else {
                return Ok(Done::Sent {
                    recipient: recipient.clone(),
                    stored: Stored::NoSuchUser,
                });
            };
            admit(Some(&user), proof, false, None, policy)?;
            Done::Sent {
                recipient: recipient.clone(),
                stored: store_message(
                    store,
                    sender,
                    recipient,
                    text,
                    attachment.as_deref(),
                    *max_pending,
                )?,
            }
        }
        Work::Register {
            alias,
            full_name,
            birth_date,
            from,
            proof,
        } => {
            let existing = store.user(alias)?;
            let registered = match existing {
                Some(_) => false,
                None => {
                    let claim = admit(None, proof, true, None, policy)?;
                    let inserted =
                        store.insert_user(alias, full_name.as_deref(), birth_date.as_deref())?;
                    if inserted && claim.is_some() {
                        store.set_password(alias, claim.as_deref())?;
                    }
                    inserted
                }
            };
            Done::Registered {
                registered,
                from: *from,
            }
        }
        Work::Unregister { alias, from, proof } => {
            let removed = match store.user(alias)? {
                None => false,
                Some(user) => {
                    admit(Some(&user), proof, false, None, policy)?;
                    if listens_elsewhere(&user, *from) {
                        return Err(Stop::Deny(Denial::NotFromThere));
                    }
                    store.delete_user(alias)?
                }
            };
            Done::Unregistered {
                alias: alias.clone(),
                removed,
            }
        }
        Work::Connect {
            alias,
            ip,
            port,
            proof,
            pin,
        } => Done::Connected {
            alias: alias.clone(),
            outcome: match store.user(alias)? {
                None => ConnectOutcome::NoSuchUser,
                Some(user) => {
                    admit(Some(&user), proof, false, None, policy)?;
                    if user.connected {
                        ConnectOutcome::AlreadyConnected
                    } else {
                        let ip = ip.to_canonical().to_string();
                        store.set_connected(alias, &ip, *port, pin.as_deref())?;
                        ConnectOutcome::Connected
                    }
                }
            },
        },
        Work::Disconnect { alias, from, proof } => Done::Disconnected {
            alias: alias.clone(),
            outcome: match store.user(alias)? {
                None => DisconnectOutcome::NoSuchUser,
                Some(user) => {
                    admit(Some(&user), proof, false, None, policy)?;
                    if !user.connected {
                        DisconnectOutcome::NotConnected
                    } else if listens_elsewhere(&user, *from) {
                        DisconnectOutcome::NotFromThere
                    } else {
                        store.set_disconnected(alias)?;
                        DisconnectOutcome::Disconnected
                    }
                }
            },
        },
        Work::SetPassword {
            alias,
            from,
            proof,
            new,
        } => {
            let Some(user) = store.user(alias)? else {
                return Ok(Done::PasswordSet {
                    alias: alias.clone(),
                    set: false,
                });
            };
            // A name without a password is claimed only by its user, present now.
            let present = *proof == Proof::Session
                || user
                    .listener()
                    .and_then(|(ip, _)| ip.parse::<IpAddr>().ok())
                    .is_some_and(|ip| ip.to_canonical() == from.to_canonical());
            if user.password.is_none() && !present {
                return Err(Stop::Deny(Denial::NotPresent));
            }
            // Passwords being required does not stop their user from setting one.
            let open = Policy {
                require_passwords: false,
            };
            admit(Some(&user), proof, false, new.as_ref(), open)?;
            Done::PasswordSet {
                alias: alias.clone(),
                set: store.set_password(alias, stored_secret(new))?,
            }
        }
        Work::ListUsers { requester, .. } => Done::Listed {
            users: store.connected_users()?,
            requester: match requester {
                Some(alias) => Some((alias.clone(), store.user(alias)?)),
                None => None,
            },
        },
        Work::Login {
            session,
            alias,
            from,
            may_register,
            proof,
        } => {
            let user = store.user(alias)?;
            let new = user.is_none();
            let claim = admit(user.as_ref(), proof, *may_register, None, policy)?;
            // False too when another node registered the name a moment ago.
            let registered = new && *may_register && store.insert_user(alias, None, None)?;
            if registered && claim.is_some() {
                store.set_password(alias, claim.as_deref())?;
            }
            Done::LoggedIn {
                session: *session,
                alias: alias.clone(),
                taken: user.is_some_and(|u| u.connected),
                registered,
                refused_new: new && !*may_register,
                from: *from,
            }
        }
        Work::Broadcast {
            from,
            text,
            keep,
            announce,
        } => {
            store.add_broadcast(from, text, *keep)?;
            publish(store, announce)?;
            Done::Broadcast {
                from: from.clone(),
                text: text.clone(),
            }
        }
        Work::JoinRoom {
            session,
            alias,
            room,
            create,
            history,
            announce,
            key,
            ..
        } => {
            let access = store.room_access(room)?;
            if let Some(access) = &access {
                let subject = Subject::Present(access.key.as_deref());
                passed(
                    accounts::gate(subject, key, Kind::RoomKey, false, policy),
                    None,
                )?;
            }
            let created = if *create {
                Some(store.create_room(room, alias)?)
            } else {
                None
            };
            let history = store.room_history(room, *history)?;
            publish(store, announce)?;
            Done::JoinedRoom {
                session: *session,
                alias: alias.clone(),
                room: room.clone(),
                created,
                history,
                keyed: access.is_some_and(|a| a.key.is_some()),
            }
        }
        Work::SetRoomKey {
            alias, room, new, ..
        } => {
            let creator = store.room_access(room)?.and_then(|a| a.creator);
            if creator.as_deref() != Some(alias.as_str()) {
                return Err(Stop::Deny(Denial::NotCreator));
            }
            let open = Verdict::Pass { claim: None };
            passed(open, new.as_ref())?;
            store.set_room_key(room, stored_secret(new))?;
            Done::RoomKeySet {
                room: room.clone(),
                keyed: new.is_some(),
            }
        }
        Work::RoomMessage {
            session,
            room,
            from,
            text,
            announce,
            prune_to,
        } => {
            store.add_room_message(room, from, text, *prune_to)?;
            publish(store, announce)?;
            Done::RoomMessage {
                session: *session,
                room: room.clone(),
                from: from.clone(),
                text: text.clone(),
            }
        }
    })
}

/// Publishes a work's `announce`, if any, in its transaction.
fn publish(store: &dyn Storage, announce: &Option<String>) -> storage::Result<()> {
    match announce {
        Some(payload) => store.publish(payload),
        None => Ok(()),
    }
}

/// Runs the storage steps of `chore` (in `store`'s current transaction, if it writes).
pub fn perform_chore(store: &dyn Storage, chore: &Chore) -> storage::Result<ChoreDone> {
    Ok(match chore {
        Chore::Gather {
            alias,
            in_session,
            limit,
        } => ChoreDone::Gathered {
            alias: alias.clone(),
            gathered: gather(store, alias, *in_session, *limit)?,
        },
        Chore::Release { alias } => ChoreDone::Released {
            alias: alias.clone(),
            again: release(store, alias, true)?,
        },
        Chore::Remove {
            recipient,
            removals,
        } => {
            let mut removed = Vec::with_capacity(removals.len());
            for removal in removals {
                // False: the message went with its recipient's UNREGISTER.
                if store.delete_pending(removal.seq)? {
                    removed.push((removal.clone(), store.user(&removal.sender)));
                }
            }
            ChoreDone::Removed {
                recipient: recipient.clone(),
                removed,
            }
        }
        Chore::Unreachable {
            recipient,
            listener,
            ..
        } => ChoreDone::Unreachable {
            recipient: recipient.clone(),
            disconnected: match store.user(recipient)? {
                Some(user) if listener_address(&user) == Some(*listener) => {
                    store.set_disconnected(recipient)?;
                    true
                }
                _ => false,
            },
        },
        Chore::Sweep {
            sessions,
            nodes,
            own,
        } => {
            store.background()?;
            store.fold_mailbox_sizes()?;
            let mut with_pending = store.connected_with_pending()?;
            if !sessions.is_empty() {
                with_pending.extend(store.with_pending(sessions)?);
            }
            let asked: Vec<NodeId> = nodes.iter().chain(own).copied().collect();
            let mut live = if asked.is_empty() {
                Vec::new()
            } else {
                store.live_nodes(&asked)?
            };
            let own_lost = own.is_some_and(|own| !live.contains(&own));
            live.retain(|n| Some(*n) != *own);
            ChoreDone::Swept {
                with_pending,
                nodes: nodes.clone(),
                live,
                own_lost,
            }
        }
        Chore::Expire { before } => {
            store.background()?;
            ChoreDone::Expired {
                expired: store.expire_pending(*before)?,
            }
        }
        Chore::Publish {
            events,
            paints,
            board,
            node,
        } => {
            for event in events {
                store.publish(event)?;
            }
            if !paints.is_empty() {
                store.paint_canvas(board, paints)?;
                if let Some(node) = node {
                    for event in super::canvas::paint_events(paints) {
                        store.publish(&event.encode(*node))?;
                    }
                }
            }
            ChoreDone::Published
        }
        Chore::TakeBack { alias } => {
            store.set_disconnected(alias)?;
            ChoreDone::TakenBack
        }
    })
}

/// A pin as stored (64 hex digits) as bytes; None if it is not one.
pub fn decode_pin(hex: &str) -> Option<super::Pin> {
    let mut pin = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (n, byte) in pin.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * n..2 * n + 2)?, 16).ok()?;
    }
    Some(pin)
}

/// The address of a connected user's listener.
pub fn listener_address(user: &User) -> Option<SocketAddr> {
    let (ip, port) = user.listener()?;
    Some(SocketAddr::new(ip.parse().ok()?, port))
}

/// A recipient's next deliveries: the claim first, then who they are and what waits for them.
fn gather(
    store: &dyn Storage,
    alias: &str,
    in_session: bool,
    limit: usize,
) -> storage::Result<Gathered> {
    if !store.claim_deliveries(alias)? {
        return Ok(Gathered::Elsewhere);
    }
    let read = (|| {
        let user = store.user(alias)?;
        let present = user
            .as_ref()
            .is_some_and(|u| u.listener().is_some() || in_session);
        let batch = if present {
            store.pending_batch(alias, limit)?
        } else {
            Vec::new()
        };
        Ok((user, present, batch))
    })();
    match read {
        Ok((Some(user), _, batch)) if !batch.is_empty() => Ok(Gathered::Held { user, batch }),
        Ok((_, present, _)) => Ok(Gathered::Released {
            again: release(store, alias, present)?,
        }),
        Err(e) => {
            // The claim must not outlive a failed read; if this fails too, the connection is
            // gone and the claim with it.
            let _ = store.release_deliveries(alias);
            Err(e)
        }
    }
}

/// Gives up the claim on `alias`'s deliveries. On a shared database another node may have
/// accepted a message for them while this one held the claim (its own claim failed, so it
/// left the message to us): true if they are `present` and something waits.
fn release(store: &dyn Storage, alias: &str, present: bool) -> storage::Result<bool> {
    store.release_deliveries(alias)?;
    Ok(present && store.shared() && store.pending_count(alias, 1)? == 1)
}

/// A SEND's storage steps once its sender is known to exist: the recipient exists, their
/// mailbox has room, then the message is accepted.
fn store_message(
    store: &dyn Storage,
    sender: &str,
    recipient: &str,
    text: &[u8],
    attachment: Option<&[u8]>,
    max_pending: Option<usize>,
) -> storage::Result<Stored> {
    let Some(to) = store.user(recipient)? else {
        return Ok(Stored::NoSuchUser);
    };
    if let Some(max) = max_pending {
        if store.pending_count(recipient, max)? >= max {
            return Ok(Stored::MailboxFull);
        }
    }
    let id = store.accept_message(sender, recipient, text, attachment)?;
    Ok(Stored::Accepted {
        id,
        connected: to.connected,
    })
}
