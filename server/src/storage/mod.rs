//! Storage behind one interface: users, their message-id counters and the messages waiting for
//! them. The core speaks only this trait, so a second engine (PostgreSQL, for deployments that
//! outgrow one machine) can be added without touching the core or the front-ends.
//!
//! Writes go into one transaction per reactor turn; `commit` ends it. An engine must never make
//! the caller wait for a lock held by somebody else: a write that cannot get the lock at once
//! fails (and poisons the turn), while reads go on.

mod postgres;
mod sqlite;

mod migrations {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

use std::fmt;

pub use postgres::{open_client as open_postgres, PgBarrier, PgStore};
pub use sqlite::SqliteStore;

/// A storage failure, with the engine's own words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Which life of the database server a commit was made in: PostgreSQL's postmaster start time
/// in microseconds (a restart or a failover starts a new one); 0 for SQLite. A durability
/// barrier confirms only commits of its own epoch.
pub type Epoch = i64;

/// Now, in unix seconds, as the tables record times.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub alias: String,
    pub connected: bool,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub last_id: u32,
    /// The password's argon2id hash (PHC string form), if the name has one.
    pub password: Option<String>,
    /// The SHA-256 of the listener's certificate (hex) when it listens over TLS.
    pub listener_pin: Option<String>,
}

impl User {
    /// The listener address of a connected user.
    pub fn listener(&self) -> Option<(&str, u16)> {
        match (self.connected, self.ip.as_deref(), self.port) {
            (true, Some(ip), Some(port)) => Some((ip, port)),
            _ => None,
        }
    }
}

/// Who may enter a room, and who may say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomAccess {
    pub creator: Option<String>,
    /// The key's argon2id hash, if the room has one.
    pub key: Option<String>,
}

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Acceptance order; the row's key.
    pub seq: i64,
    pub sender: String,
    pub id: u32,
    pub text: Vec<u8>,
    pub attachment: Option<Vec<u8>>,
}

/// What the core needs from a storage engine. Every method runs inside the current turn;
/// writes become durable only through `commit` (and, for the answers that promise it, the
/// syncer).
pub trait Storage {
    fn user(&self, alias: &str) -> Result<Option<User>>;
    /// Inserts a new user; false if the alias is taken.
    fn insert_user(
        &self,
        alias: &str,
        full_name: Option<&str>,
        birth_date: Option<&str>,
    ) -> Result<bool>;
    /// Sets (or with None removes) a user's password hash; false if there is no such user.
    fn set_password(&self, alias: &str, hash: Option<&str>) -> Result<bool>;
    /// Deletes a user and every message waiting for them; false if there was no such user.
    fn delete_user(&self, alias: &str) -> Result<bool>;
    /// Stores where a user listens (with the pin of its certificate if over TLS).
    fn set_connected(&self, alias: &str, ip: &str, port: u16, pin: Option<&str>) -> Result<()>;
    fn set_disconnected(&self, alias: &str) -> Result<()>;
    /// Connected users as `(alias, ip, port)`, in alias order.
    fn connected_users(&self) -> Result<Vec<(String, String, u16)>>;
    /// Gives the message the sender's next id (`wire::next_message_id`), records it as their
    /// last, queues the message and returns the id. Both users exist. Two sends by one sender
    /// never get the same id, whichever nodes they go through.
    fn accept_message(
        &self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Result<u32>;
    /// For a message around the mailbox: the sender's next id, recorded as their last as
    /// [`Storage::accept_message`] does, if nothing waits for `recipient`; None, with
    /// nothing recorded, if something does. A shared database takes no message around the
    /// mailbox (another node may be adding to it): always None.
    fn direct_message_id(&self, _sender: &str, _recipient: &str) -> Result<Option<u32>> {
        Ok(None)
    }
    /// Queues messages that had their ids from [`Storage::direct_message_id`] but were not
    /// written out (`(sender, id, text)`, in the order sent), in front of everything waiting
    /// for `recipient` (all of it came later); returns their seqs. A recipient who no longer
    /// exists (unregistered meanwhile) gets none: their mail went with them.
    fn queue_in_front(&self, recipient: &str, messages: &[(&str, u32, &[u8])]) -> Result<Vec<i64>> {
        Err(Error(format!(
            "{} messages to {recipient}: a shared database takes no message around the \
             mailbox, so none goes back in front",
            messages.len()
        )))
    }
    /// The oldest `limit` messages waiting for `recipient`, oldest first.
    fn pending_batch(&self, recipient: &str, limit: usize) -> Result<Vec<Pending>>;
    /// Removes a delivered message; false if it was no longer there (its recipient was
    /// unregistered meanwhile).
    fn delete_pending(&self, seq: i64) -> Result<bool>;
    /// How many messages wait for `recipient`, counting no further than `cap`.
    fn pending_count(&self, recipient: &str, cap: usize) -> Result<usize>;
    /// Removes the messages accepted before `before` (unix seconds) and returns them as
    /// `(recipient, sender, id)`.
    fn expire_pending(&self, before: i64) -> Result<Vec<(String, String, u32)>>;
    /// Connected users that have messages waiting: after a restart these are flushed.
    fn connected_with_pending(&self) -> Result<Vec<String>>;
    /// Of `aliases`, those with messages waiting.
    fn with_pending(&self, aliases: &[String]) -> Result<Vec<String>> {
        let mut waiting = Vec::new();
        for alias in aliases {
            if self.pending_count(alias, 1)? > 0 {
                waiting.push(alias.clone());
            }
        }
        Ok(waiting)
    }
    /// Rooms in creation order, each with whether it has a key.
    fn rooms(&self) -> Result<Vec<(String, bool)>>;
    /// Creates a room, made by `creator`; false if it exists.
    fn create_room(&self, name: &str, creator: &str) -> Result<bool>;
    /// Who created `room` and its key's hash; None if there is no such room.
    fn room_access(&self, room: &str) -> Result<Option<RoomAccess>>;
    /// Sets (or with None removes) a room's key hash.
    fn set_room_key(&self, room: &str, hash: Option<&str>) -> Result<()>;
    /// Stores a line said in `room`; with `prune_to`, also drops the room's lines but the
    /// last that many.
    fn add_room_message(
        &self,
        room: &str,
        sender: &str,
        text: &str,
        prune_to: Option<usize>,
    ) -> Result<()>;
    /// The last `limit` messages of `room` as `(sender, text)`, oldest first. An engine
    /// shared by nodes holds the room against new lines until the transaction ends, so that
    /// what is read is exactly what committed before it.
    fn room_history(&self, room: &str, limit: usize) -> Result<Vec<(String, String)>>;
    /// Stores a chat broadcast and forgets all but the newest `keep`.
    fn add_broadcast(&self, sender: &str, text: &str, keep: usize) -> Result<()>;
    /// The last `limit` chat broadcasts as `(sender, text)`, oldest first.
    fn broadcast_history(&self, limit: usize) -> Result<Vec<(String, String)>>;
    /// The canvas: 2500 colour indexes, row by row.
    fn canvas(&self) -> Result<Vec<u8>>;
    fn save_canvas(&self, pixels: &[u8]) -> Result<()>;
    /// Stores the turn's paints, `(index, colour)` in order, onto the board `pixels` they
    /// made. An engine shared by nodes must write them pixel by pixel, so that nodes painting
    /// at once do not overwrite each other's pixels with their whole boards.
    fn paint_canvas(&self, pixels: &[u8], _paints: &[(usize, u8)]) -> Result<()> {
        self.save_canvas(pixels)
    }
    /// True if other server nodes share this database: their writes appear between turns,
    /// and deliveries to a recipient must be claimed first.
    fn shared(&self) -> bool {
        false
    }
    /// Claims the right to deliver to `recipient`: while a node holds it, no other node
    /// pushes to them, so their messages arrive in order whichever nodes accepted them. False
    /// if another node holds it. A node that dies loses its claims with its connection.
    fn claim_deliveries(&self, _recipient: &str) -> Result<bool> {
        Ok(true)
    }
    /// Gives up a claim this node holds (nothing if it holds none).
    fn release_deliveries(&self, _recipient: &str) -> Result<()> {
        Ok(())
    }
    /// On a shared database: this node's name on the session bus.
    fn node(&self) -> Option<i32> {
        None
    }
    /// On a shared database: tells the other nodes `payload` when, and only if, the
    /// transaction commits.
    fn publish(&self, _payload: &str) -> Result<()> {
        Ok(())
    }
    /// Of the nodes `nodes`, those still connected to the database.
    fn live_nodes(&self, nodes: &[i32]) -> Result<Vec<i32>> {
        Ok(nodes.to_vec())
    }
    /// This connection's backend was found gone: notice it and connect again (a network
    /// engine learns of a closed connection only when it uses it).
    fn reconnect_if_lost(&self) {}
    /// What follows in this transaction is a background scan: it gives up quickly on a lock
    /// somebody else holds (a locked table), rather than hold its worker for as long as any
    /// statement may run.
    fn background(&self) -> Result<()> {
        Ok(())
    }
    /// Brings `mailbox_sizes` up to date where the database does not keep it so by itself
    /// (PostgreSQL's senders append changes that a background scan folds in; SQLite's
    /// triggers update it in place).
    fn fold_mailbox_sizes(&self) -> Result<()> {
        Ok(())
    }
    /// True while the turn has writes that are not yet committed (or a failed one).
    fn has_uncommitted(&self) -> bool;
    /// Commits the turn's writes. If any write failed, or the commit itself does, everything
    /// since the last commit is rolled back and the reason returned.
    fn commit(&self) -> std::result::Result<(), String>;
}
