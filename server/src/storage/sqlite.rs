//! The embedded engine: SQLite in WAL mode, through rusqlite.
//!
//! The reactor's connection never waits: its busy timeout is zero, so a write that finds the
//! write lock taken (somebody's `sqlite3` shell) fails at once and poisons the turn, while reads
//! go on from the WAL snapshot. It never checkpoints either: a WAL hook replaces SQLite's
//! automatic checkpoint and wakes the [`Checkpointer`] thread, which copies the WAL into the
//! database (with its fsyncs) on a connection of its own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use super::{migrations, unix_now, Error, Pending, Result, RoomAccess, Storage, User};
use crate::watched::Watched;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error(e.to_string())
    }
}

/// Stores raw bytes as SQLite TEXT, so that `sqlite3` shows messages as text even when a client
/// sent bytes that are not UTF-8.
struct TextBytes<'a>(&'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

pub struct SqliteStore {
    conn: Connection,
    /// Why the current turn's transaction cannot be committed, if a write failed.
    poisoned: std::cell::RefCell<Option<String>>,
    /// Users read recently, as the turn's transaction sees them: every write to `users` goes
    /// through this store and updates its entry after the SQL succeeded, and a rollback
    /// forgets them all. SEND looks up two users; served from here, that is no SQL at all.
    users: std::cell::RefCell<HashMap<String, User>>,
    /// SQLite's count of commits by other connections when the cache was last good: an
    /// operator's `server account` run against the live file changes users behind it.
    data_version: std::cell::Cell<i64>,
    /// Recipients whose mailbox is known to be empty: put here when a look (or a login's
    /// read of the mailbox) found nothing waiting, taken out by every message queued for
    /// them (both ways in are in this file), forgotten with the users. A message around the mailbox asks here, not the file.
    empty_mailboxes: std::cell::RefCell<std::collections::HashSet<String>>,
    /// Ids for messages around the mailbox, given without a write: per sender, the last id
    /// given and the last of the block reserved, which is recorded as the sender's `last_id`
    /// before any of it is given (so the messenger's next SEND gets an id after the block,
    /// and a restart skips what was not given). Forgotten with the users.
    reserved_ids: std::cell::RefCell<HashMap<String, (u32, u32)>>,
    /// When `data_version` was last read: outside a transaction each read takes and gives
    /// back SQLite's file lock (two system calls, a tenth of a private message's cost when
    /// it was read at every look-up), so it is read again only after [`STALE_AFTER`] for a
    /// user, [`MAILBOXES_STALE_AFTER`] for an empty mailbox.
    data_version_read: std::cell::Cell<Option<std::time::Instant>>,
    /// Declared after `conn` so that it stops after the reactor's connection has closed.
    _checkpointer: Checkpointer,
}

/// How long the user cache trusts its last look at `data_version` outside a transaction: an
/// operator's change to a user is seen by the running server within this.
const STALE_AFTER: Duration = Duration::from_millis(1);

/// The same for the empty mailboxes known. No operator command adds mail, only another server
/// on the same file would: they are looked at less often (every 1 ms, the look alone was 2 %
/// of the server's CPU for private messages at 10,000/s).
const MAILBOXES_STALE_AFTER: Duration = Duration::from_millis(10);

/// How many ids a sender's block around the mailbox holds: one write of `last_id` (and one
/// commit) per this many messages. A restart skips what is left of each block: ids never
/// repeat, and a sender's 4 billion last through four million restarts. With 64, the
/// writes were 3 % of a private message's cost for a busy sender (2026-12-07).
const RESERVED_IDS: u32 = 1024;

/// Most users kept in the cache; past it the cache starts again empty (a few hundred bytes a
/// user: a few MiB at most). The same bounds the known empty mailboxes and the id blocks.
const MAX_CACHED_USERS: usize = 16_384;

impl SqliteStore {
    /// Opens (creating if needed) the database and brings its schema up to date.
    /// `synchronous=NORMAL`: commits do not wait for the disk; whoever promises durability syncs
    /// the WAL itself (see `syncer`), so that the reactor never waits for an fsync.
    /// `checkpoint_pages`: WAL size that wakes the checkpointer.
    pub fn open(
        path: &Path,
        max_pages: Option<u64>,
        checkpoint_pages: u32,
    ) -> std::result::Result<SqliteStore, Error> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The bundled SQLite is built with STAT4, which re-prepares a cached statement each
        // time a value compared with an indexed column changes (`recipient = ?1`): a full
        // parse per delivery. The query planner stability guarantee turns that off.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        if let Some(pages) = max_pages {
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )?;
        }
        migrate(&conn)?;
        // Migrations ran with the default busy handler; from here on the reactor never sleeps.
        conn.busy_timeout(Duration::ZERO)?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpointer = Checkpointer::start(path.to_path_buf())?;
        let wake = checkpointer.signal.clone();
        let threshold = i32::try_from(checkpoint_pages).unwrap_or(i32::MAX).max(1);
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            if pages >= threshold {
                wake.poke();
            }
            Ok(())
        }))?;
        Ok(SqliteStore {
            conn,
            poisoned: Default::default(),
            users: Default::default(),
            data_version: Default::default(),
            data_version_read: Default::default(),
            empty_mailboxes: Default::default(),
            reserved_ids: Default::default(),
            _checkpointer: checkpointer,
        })
    }

    /// Runs a write inside the turn's transaction. The first failed write poisons the turn:
    /// after an error such as SQLITE_FULL, SQLite may already have rolled back part or all of
    /// the transaction, so nothing written in this turn can be trusted to commit.
    fn write<T>(&self, statements: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let result = (|| {
            if self.conn.is_autocommit() {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
                // Nobody else commits until this transaction ends: checked once for all
                // the look-ups inside it (`user`).
                self.forget_if_changed_elsewhere()?;
            }
            statements(&self.conn)
        })();
        result.map_err(|e| {
            let mut poisoned = self.poisoned.borrow_mut();
            poisoned.get_or_insert_with(|| e.to_string());
            Error::from(e)
        })
    }

    fn read_user(&self, alias: &str) -> Result<Option<User>> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT alias, connected, ip, port, last_id, password_hash, listener_pin FROM users
                 WHERE alias = ?1",
            )?
            .query_row([alias], |row| {
                Ok(User {
                    alias: row.get(0)?,
                    connected: row.get(1)?,
                    ip: row.get(2)?,
                    port: row.get(3)?,
                    last_id: row.get(4)?,
                    password: row.get(5)?,
                    listener_pin: row.get(6)?,
                })
            })
            .optional()?)
    }

    /// Forgets the cached users if another connection committed since they were read.
    fn forget_if_changed_elsewhere(&self) -> rusqlite::Result<()> {
        let version: i64 = self
            .conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |row| row.get(0))?;
        if version != self.data_version.replace(version) {
            self.forget_cached();
        }
        self.data_version_read.set(Some(std::time::Instant::now()));
        Ok(())
    }

    /// Makes this connection wait up to `timeout` for a lock held by another (the server's),
    /// as an operator's command may; the server's own connection never waits.
    pub fn wait_for_locks(&self, timeout: Duration) -> Result<()> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    /// Applies a committed-or-to-be-committed change to a cached user.
    fn cached(&self, alias: &str, change: impl FnOnce(&mut User)) {
        if let Some(user) = self.users.borrow_mut().get_mut(alias) {
            change(user);
        }
    }

    /// Forgets what is remembered of the file: after a rollback, or another connection's
    /// commit.
    fn forget_cached(&self) {
        self.users.borrow_mut().clear();
        self.empty_mailboxes.borrow_mut().clear();
        self.reserved_ids.borrow_mut().clear();
    }

    /// Looks whether another connection committed, if the last look is `stale_after` old,
    /// outside a transaction (inside one nobody else commits, and `write` looked when it
    /// began).
    fn look_for_changes_elsewhere(&self, stale_after: Duration) -> rusqlite::Result<()> {
        let stale = self
            .data_version_read
            .get()
            .is_none_or(|read| read.elapsed() >= stale_after);
        if self.conn.is_autocommit() && stale {
            self.forget_if_changed_elsewhere()?;
        }
        Ok(())
    }

    /// True if nothing waits for `recipient`.
    fn mailbox_empty(&self, recipient: &str) -> Result<bool> {
        self.look_for_changes_elsewhere(MAILBOXES_STALE_AFTER)?;
        if self.empty_mailboxes.borrow().contains(recipient) {
            return Ok(true);
        }
        let waiting: bool = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM pending_messages WHERE recipient = ?1)")?
            .query_row([recipient], |row| row.get(0))?;
        if !waiting {
            self.remember_empty(recipient);
        }
        Ok(!waiting)
    }

    /// Remembers that nothing waits for `recipient` (until a message does, or the cache is
    /// forgotten).
    fn remember_empty(&self, recipient: &str) {
        let mut empty = self.empty_mailboxes.borrow_mut();
        if empty.len() >= MAX_CACHED_USERS {
            empty.clear();
        }
        empty.insert(recipient.to_string());
    }

    /// `sender`'s next id around the mailbox: from their reserved block, or from a new one.
    fn id_around_mailbox(&self, sender: &str) -> Result<u32> {
        if let Some((given, last)) = self.reserved_ids.borrow_mut().get_mut(sender) {
            if *given != *last {
                *given = wire::next_message_id(*given);
                return Ok(*given);
            }
        }
        let last_id = self
            .user(sender)?
            .ok_or_else(|| Error(format!("no user {sender}")))?
            .last_id;
        let first = wire::next_message_id(last_id);
        let last = (1..RESERVED_IDS).fold(first, |id, _| wire::next_message_id(id));
        self.write(|conn| {
            conn.prepare_cached("UPDATE users SET last_id = ?2 WHERE alias = ?1")?
                .execute(params![sender, last])?;
            Ok(())
        })?;
        self.cached(sender, |user| user.last_id = last);
        let mut reserved = self.reserved_ids.borrow_mut();
        if reserved.len() >= MAX_CACHED_USERS {
            reserved.clear();
        }
        reserved.insert(sender.to_string(), (first, last));
        Ok(first)
    }

    fn rollback(&self) {
        self.forget_cached();
        if !self.conn.is_autocommit() {
            // A failed ROLLBACK means SQLite already rolled back on its own.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (index, (name, sql)) in migrations::SQLITE
        .iter()
        .enumerate()
        .skip(usize::try_from(applied).unwrap_or(0))
    {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql).map_err(|e| {
            rusqlite::Error::ToSqlConversionFailure(format!("migration {name}: {e}").into())
        })?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl Storage for SqliteStore {
    fn has_uncommitted(&self) -> bool {
        !self.conn.is_autocommit() || self.poisoned.borrow().is_some()
    }

    fn commit(&self) -> std::result::Result<(), String> {
        if let Some(why) = self.poisoned.borrow_mut().take() {
            self.rollback();
            return Err(why);
        }
        if self.conn.is_autocommit() {
            return Ok(());
        }
        self.conn.execute_batch("COMMIT").map_err(|e| {
            self.rollback();
            e.to_string()
        })
    }

    fn user(&self, alias: &str) -> Result<Option<User>> {
        self.look_for_changes_elsewhere(STALE_AFTER)?;
        if let Some(user) = self.users.borrow().get(alias) {
            return Ok(Some(user.clone()));
        }
        let user = self.read_user(alias)?;
        if let Some(user) = &user {
            let mut users = self.users.borrow_mut();
            if users.len() >= MAX_CACHED_USERS {
                users.clear();
            }
            users.insert(alias.to_string(), user.clone());
        }
        Ok(user)
    }

    fn insert_user(
        &self,
        alias: &str,
        full_name: Option<&str>,
        birth_date: Option<&str>,
    ) -> Result<bool> {
        self.write(|conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO users (alias, full_name, birth_date, registered_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (alias) DO NOTHING",
                )?
                .execute(params![alias, full_name, birth_date, unix_now()])?;
            Ok(inserted == 1)
        })
    }

    fn set_password(&self, alias: &str, hash: Option<&str>) -> Result<bool> {
        let changed = self.write(|conn| {
            Ok(conn
                .prepare_cached("UPDATE users SET password_hash = ?2 WHERE alias = ?1")?
                .execute(params![alias, hash])?
                == 1)
        })?;
        self.cached(alias, |user| user.password = hash.map(str::to_string));
        Ok(changed)
    }

    fn delete_user(&self, alias: &str) -> Result<bool> {
        self.write(|conn| {
            conn.prepare_cached("DELETE FROM pending_messages WHERE recipient = ?1")?
                .execute([alias])?;
            let deleted = conn
                .prepare_cached("DELETE FROM users WHERE alias = ?1")?
                .execute([alias])?;
            Ok(deleted == 1)
        })
        .inspect(|_| {
            self.users.borrow_mut().remove(alias);
        })
    }

    fn set_connected(&self, alias: &str, ip: &str, port: u16, pin: Option<&str>) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE users SET connected = 1, ip = ?2, port = ?3, listener_pin = ?4
                 WHERE alias = ?1",
            )?
            .execute(params![alias, ip, port, pin])?;
            Ok(())
        })?;
        self.cached(alias, |user| {
            user.connected = true;
            user.ip = Some(ip.to_string());
            user.port = Some(port);
            user.listener_pin = pin.map(str::to_string);
        });
        Ok(())
    }

    fn set_disconnected(&self, alias: &str) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE users SET connected = 0, ip = NULL, port = NULL, listener_pin = NULL
                 WHERE alias = ?1",
            )?
            .execute([alias])?;
            Ok(())
        })?;
        self.cached(alias, |user| {
            user.connected = false;
            user.ip = None;
            user.port = None;
            user.listener_pin = None;
        });
        Ok(())
    }

    fn connected_users(&self) -> Result<Vec<(String, String, u16)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT alias, ip, port FROM users WHERE connected = 1 ORDER BY alias",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn accept_message(
        &self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Result<u32> {
        // One writer: the sender's row as this connection sees it is the latest.
        let last_id = self
            .user(sender)?
            .ok_or_else(|| Error(format!("no user {sender}")))?
            .last_id;
        let id = wire::next_message_id(last_id);
        self.write(|conn| {
            conn.prepare_cached("UPDATE users SET last_id = ?2 WHERE alias = ?1")?
                .execute(params![sender, id])?;
            conn.prepare_cached(
                "INSERT INTO pending_messages (recipient, sender, id, text, attachment, accepted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![recipient, sender, id, TextBytes(text), attachment.map(TextBytes), unix_now()])?;
            Ok(())
        })?;
        self.cached(sender, |user| user.last_id = id);
        self.empty_mailboxes.borrow_mut().remove(recipient);
        Ok(id)
    }

    fn direct_message_id(&self, sender: &str, recipient: &str) -> Result<Option<u32>> {
        if !self.mailbox_empty(recipient)? {
            return Ok(None);
        }
        Ok(Some(self.id_around_mailbox(sender)?))
    }

    fn queue_in_front(&self, recipient: &str, messages: &[(&str, u32, &[u8])]) -> Result<Vec<i64>> {
        if messages.is_empty() || self.user(recipient)?.is_none() {
            return Ok(Vec::new());
        }
        self.empty_mailboxes.borrow_mut().remove(recipient);
        self.write(|conn| {
            // The lowest of `messages.len()` seqs below every one in use or ever used.
            let first: i64 = conn
                .prepare_cached(
                    "UPDATE pending_front SET seq = min(seq,
                         coalesce((SELECT min(seq) FROM pending_messages), 0)) - ?1
                     RETURNING seq",
                )?
                .query_row([messages.len() as i64], |row| row.get(0))?;
            let mut insert = conn.prepare_cached(
                "INSERT INTO pending_messages (seq, recipient, sender, id, text, accepted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut seqs = Vec::with_capacity(messages.len());
            for (seq, (sender, id, text)) in (first..).zip(messages) {
                insert.execute(params![
                    seq,
                    recipient,
                    sender,
                    id,
                    TextBytes(text),
                    unix_now()
                ])?;
                seqs.push(seq);
            }
            Ok(seqs)
        })
    }

    fn pending_batch(&self, recipient: &str, limit: usize) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, sender, id, text, attachment FROM pending_messages
             WHERE recipient = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![recipient, limit as i64], |row| {
            Ok(Pending {
                seq: row.get(0)?,
                sender: row.get(1)?,
                id: row.get(2)?,
                text: row.get_ref(3)?.as_bytes()?.to_vec(),
                attachment: match row.get_ref(4)? {
                    ValueRef::Null => None,
                    value => Some(value.as_bytes()?.to_vec()),
                },
            })
        })?;
        let batch: Vec<Pending> = rows.collect::<rusqlite::Result<_>>()?;
        if batch.is_empty() {
            // A session's login reads its mailbox: the first message to it need not look.
            self.remember_empty(recipient);
        }
        Ok(batch)
    }

    fn delete_pending(&self, seq: i64) -> Result<bool> {
        self.write(|conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM pending_messages WHERE seq = ?1")?
                .execute([seq])?;
            Ok(deleted == 1)
        })
    }

    fn pending_count(&self, recipient: &str, cap: usize) -> Result<usize> {
        let count: i64 = self
            .conn
            .prepare_cached(
                "SELECT count(*) FROM (SELECT 1 FROM pending_messages WHERE recipient = ?1 LIMIT ?2)",
            )?
            .query_row(params![recipient, cap as i64], |row| row.get(0))?;
        Ok(count as usize)
    }

    fn expire_pending(&self, before: i64) -> Result<Vec<(String, String, u32)>> {
        self.write(|conn| {
            let mut stmt = conn.prepare_cached(
                "DELETE FROM pending_messages WHERE accepted_at < ?1 RETURNING recipient, sender, id",
            )?;
            let rows = stmt.query_map([before], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
            rows.collect()
        })
    }

    fn rooms(&self) -> Result<Vec<(String, bool)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, key_hash IS NOT NULL FROM rooms ORDER BY seq")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn create_room(&self, name: &str, creator: &str) -> Result<bool> {
        self.write(|conn| {
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO rooms (name, created_at, creator) VALUES (?1, ?2, ?3)
                     ON CONFLICT (name) DO NOTHING",
                )?
                .execute(params![name, unix_now(), creator])?;
            Ok(inserted == 1)
        })
    }

    fn room_access(&self, room: &str) -> Result<Option<RoomAccess>> {
        Ok(self
            .conn
            .prepare_cached("SELECT creator, key_hash FROM rooms WHERE name = ?1")?
            .query_row([room], |row| {
                Ok(RoomAccess {
                    creator: row.get(0)?,
                    key: row.get(1)?,
                })
            })
            .optional()?)
    }

    fn set_room_key(&self, room: &str, hash: Option<&str>) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached("UPDATE rooms SET key_hash = ?2 WHERE name = ?1")?
                .execute(params![room, hash])?;
            Ok(())
        })
    }

    fn add_room_message(
        &self,
        room: &str,
        sender: &str,
        text: &str,
        prune_to: Option<usize>,
    ) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "INSERT INTO room_messages (room, sender, text, sent_at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![room, sender, text, unix_now()])?;
            if let Some(keep) = prune_to {
                conn.prepare_cached(
                    "DELETE FROM room_messages WHERE room = ?1 AND seq <= (SELECT seq FROM
                     room_messages WHERE room = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                )?
                .execute(params![room, keep as i64])?;
            }
            Ok(())
        })
    }

    fn room_history(&self, room: &str, limit: usize) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sender, text FROM (SELECT seq, sender, text FROM room_messages
             WHERE room = ?1 ORDER BY seq DESC LIMIT ?2) ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![room, limit as i64], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_broadcast(&self, sender: &str, text: &str, keep: usize) -> Result<()> {
        self.write(|conn| {
            let seq = conn
                .prepare_cached(
                    "INSERT INTO chat_broadcasts (sender, text, sent_at) VALUES (?1, ?2, ?3)",
                )?
                .insert(params![sender, text, unix_now()])?;
            conn.prepare_cached("DELETE FROM chat_broadcasts WHERE seq <= ?1")?
                .execute([seq - keep as i64])?;
            Ok(())
        })
    }

    fn broadcast_history(&self, limit: usize) -> Result<Vec<(String, String)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT sender, text FROM (SELECT seq, sender, text FROM chat_broadcasts
             ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
        )?;
        let rows = stmt.query_map([limit as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn canvas(&self) -> Result<Vec<u8>> {
        Ok(self
            .conn
            .prepare_cached("SELECT pixels FROM canvas WHERE id = 1")?
            .query_row([], |row| row.get(0))?)
    }

    fn save_canvas(&self, pixels: &[u8]) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached("UPDATE canvas SET pixels = ?1 WHERE id = 1")?
                .execute([pixels])?;
            Ok(())
        })
    }

    fn connected_with_pending(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT alias FROM users WHERE connected = 1
             AND EXISTS (SELECT 1 FROM pending_messages WHERE recipient = alias)",
        )?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// Wakes the checkpointer; cheap enough for the WAL hook, which runs inside every commit
/// (once the WAL is past its threshold, every commit pokes until the checkpoint is done: only
/// a poke that finds the checkpointer waiting costs a system call, see [`Watched`]).
struct Signal(Watched<SignalState>);

#[derive(Default)]
struct SignalState {
    poked: bool,
    stop: bool,
}

impl Default for Signal {
    fn default() -> Signal {
        Signal(Watched::new(SignalState::default()))
    }
}

impl Signal {
    fn poke(&self) {
        self.0.change(|state| state.poked = true);
    }
    fn stop(&self) {
        self.0.change(|state| state.stop = true);
    }
    /// Waits for a poke; false once stopped.
    fn wait(&self) -> bool {
        self.0.wait_until(
            |state| state.poked || state.stop,
            |state| {
                state.poked = false;
                !state.stop
            },
        )
    }
}

/// The thread that copies the WAL back into the database file, off the reactor thread.
/// PASSIVE checkpoints take no lock a writer needs, so the reactor's commits go on meanwhile.
/// In WAL mode with `synchronous=NORMAL`, SQLite syncs the WAL before copying it and the
/// database after, so a checkpoint never makes an unsynced write look durable.
pub struct Checkpointer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf) -> std::result::Result<Checkpointer, Error> {
        let conn = Connection::open(&path)?;
        // Off the reactor, waiting for a reader or the sqlite3 shell is harmless.
        conn.busy_timeout(Duration::from_secs(5))?;
        // A connection that has not read the database yet does not know it is in WAL mode,
        // and its checkpoints would do nothing.
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error(format!(
                "{} is in {mode} mode, not WAL",
                path.display()
            )));
        }
        let signal = Arc::new(Signal::default());
        let waiting = signal.clone();
        let thread = std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                while waiting.wait() {
                    match conn.wal_checkpoint_v2(None::<&str>, rusqlite::wal::CheckpointMode::PASSIVE) {
                        Ok(_) => {}
                        Err(e) if is_io_error(&e) => crate::console::fatal(&format!(
                            "checkpoint of {} failed: {e}; stopping so that a restart re-reads what is on disk",
                            path.display()
                        )),
                        Err(e) => {
                            log::warn!("checkpoint of {} postponed: {e}", path.display())
                        }
                    }
                }
            })
            .map_err(|e| Error(format!("cannot start the checkpointer: {e}")))?;
        Ok(Checkpointer {
            signal,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.signal.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn is_io_error(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::SystemIoFailure)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), None, 1000).unwrap();
        (dir, store)
    }

    #[test]
    fn the_reactor_connection_never_waits_nor_checkpoints() {
        let (_dir, store) = store();
        let autocheckpoint: i64 = store
            .conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        let busy: i64 = store
            .conn
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!((autocheckpoint, busy), (0, 0));
    }

    #[test]
    fn cached_users_follow_the_turn_and_a_rollback_forgets_its_changes() {
        let (_dir, store) = store();
        store.insert_user("ana", None, None).unwrap();
        store.insert_user("bea", None, None).unwrap();
        store.commit().unwrap();
        assert!(!store.user("ana").unwrap().unwrap().connected, "now cached");
        store.set_connected("ana", "127.0.0.1", 4000, None).unwrap();
        store.accept_message("ana", "bea", b"hola", None).unwrap();
        let seen = store.user("ana").unwrap().unwrap();
        assert_eq!(
            (seen.connected, seen.last_id),
            (true, 1),
            "the turn sees its own writes"
        );
        // A message to nobody breaks the foreign key: the turn is poisoned and rolled back.
        assert!(store.accept_message("ana", "nobody", b"x", None).is_err());
        assert!(store.commit().is_err());
        let after = store.user("ana").unwrap().unwrap();
        assert_eq!((after.connected, after.last_id), (false, 0), "{after:?}");
        assert!(store.delete_user("bea").unwrap());
        store.commit().unwrap();
        assert_eq!(store.user("bea").unwrap(), None);
    }

    #[test]
    fn statements_are_not_prepared_again_for_each_new_value() {
        let (_dir, store) = store();
        let stable = store
            .conn
            .db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG)
            .unwrap();
        assert!(stable);
    }

    /// Messages around the mailbox (issue 24): an id only while nothing waits, from a block
    /// written once; the unwritten ones go in front of what came since, in their order, with
    /// seqs never used before.
    #[test]
    fn a_mailbox_read_empty_is_not_looked_at_again_until_mail_comes() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_dir, mut store) = store();
        store.insert_user("ana", None, None).unwrap();
        store.insert_user("bea", None, None).unwrap();
        store.insert_user("cy", None, None).unwrap();
        store.commit().unwrap();
        // Every SQLite VM step counted: zero means no SQL ran.
        let steps = std::sync::Arc::new(AtomicUsize::new(0));
        let counter = steps.clone();
        store
            .conn
            .progress_handler(
                1,
                Some(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    false
                }),
            )
            .unwrap();
        // ana's first message (to cy) takes a block of ids, and a transaction is open: no
        // look at `data_version` can come between the steps below.
        assert_eq!(store.direct_message_id("ana", "cy").unwrap(), Some(1));
        assert!(store.has_uncommitted());
        // bea's login reads her mailbox: empty.
        assert!(store.pending_batch("bea", 10).unwrap().is_empty());
        let before = steps.load(Ordering::SeqCst);
        assert_eq!(store.direct_message_id("ana", "bea").unwrap(), Some(2));
        assert_eq!(
            steps.load(Ordering::SeqCst),
            before,
            "known empty since the login, the id from the block: no SQL"
        );
        store.commit().unwrap();
        // Mail for her: the next message must look, and go through the mailbox.
        store.accept_message("ana", "bea", b"tres", None).unwrap();
        store.commit().unwrap();
        assert_eq!(store.direct_message_id("ana", "bea").unwrap(), None);
    }

    #[test]
    fn ids_around_the_mailbox_and_messages_queued_in_front() {
        let (_dir, store) = store();
        store.insert_user("ana", None, None).unwrap();
        store.insert_user("bea", None, None).unwrap();
        store.commit().unwrap();
        assert_eq!(store.direct_message_id("ana", "bea").unwrap(), Some(1));
        store.commit().unwrap();
        assert_eq!(store.direct_message_id("ana", "bea").unwrap(), Some(2));
        assert!(
            !store.has_uncommitted(),
            "the second id is from the block: no write"
        );
        // The messenger's next SEND gets an id after the block.
        let after_block = RESERVED_IDS + 1;
        assert_eq!(
            store.accept_message("ana", "bea", b"tres", None).unwrap(),
            after_block
        );
        assert_eq!(
            store.direct_message_id("ana", "bea").unwrap(),
            None,
            "something waits"
        );
        assert_eq!(
            store.accept_message("ana", "bea", b"cuatro", None).unwrap(),
            after_block + 1
        );
        store
            .queue_in_front("bea", &[("ana", 1, b"uno"), ("ana", 2, b"dos")])
            .unwrap();
        store.commit().unwrap();
        let texts = |store: &SqliteStore| -> Vec<(u32, Vec<u8>)> {
            let batch = store.pending_batch("bea", 10).unwrap();
            batch.into_iter().map(|p| (p.id, p.text)).collect()
        };
        let expected: Vec<(u32, Vec<u8>)> = vec![
            (1, b"uno".to_vec()),
            (2, b"dos".to_vec()),
            (after_block, b"tres".to_vec()),
            (after_block + 1, b"cuatro".to_vec()),
        ];
        assert_eq!(texts(&store), expected);
        // Delivered and removed, then another in front: below the first two's seqs.
        let front: Vec<i64> = store
            .pending_batch("bea", 2)
            .unwrap()
            .iter()
            .map(|p| p.seq)
            .collect();
        for seq in &front {
            assert!(store.delete_pending(*seq).unwrap());
        }
        store
            .queue_in_front("bea", &[("ana", 3, b"cinco")])
            .unwrap();
        store.commit().unwrap();
        let again = store.pending_batch("bea", 1).unwrap();
        assert_eq!(again[0].text, b"cinco");
        assert!(
            front.iter().all(|&seq| again[0].seq < seq),
            "a seq never used before"
        );
        // A rollback forgets the block: the next id comes after everything recorded.
        store.rollback();
        for seq in store
            .pending_batch("bea", 10)
            .unwrap()
            .iter()
            .map(|p| p.seq)
        {
            assert!(store.delete_pending(seq).unwrap());
        }
        store.commit().unwrap();
        assert_eq!(
            store.direct_message_id("ana", "bea").unwrap(),
            Some(after_block + 2)
        );
    }

    /// Issue 28: a database whose mail was left by a server before `mailbox_sizes` gets its
    /// sizes at the upgrade, and the triggers keep them as mail comes and goes.
    #[test]
    fn mailbox_sizes_are_counted_at_the_upgrade_and_kept_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let sizes = |store: &SqliteStore| -> Vec<(String, i64)> {
            let mut stmt = store
                .conn
                .prepare("SELECT recipient, messages FROM mailbox_sizes ORDER BY recipient")
                .unwrap();
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
            rows.collect::<rusqlite::Result<_>>().unwrap()
        };
        {
            let conn = Connection::open(&path).unwrap();
            let before = migrations::SQLITE
                .iter()
                .position(|(name, _)| name.contains("mailbox_sizes"))
                .unwrap();
            for (_, sql) in &migrations::SQLITE[..before] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", before as i64)
                .unwrap();
            conn.execute_batch(
                "INSERT INTO users (alias, registered_at) VALUES ('ana', 0), ('bea', 0);
                 INSERT INTO pending_messages (recipient, sender, id, text, accepted_at)
                 VALUES ('bea', 'ana', 1, 'a', 0), ('bea', 'ana', 2, 'b', 0),
                        ('ana', 'bea', 1, 'c', 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path, None, 1000).unwrap();
        assert_eq!(sizes(&store), [("ana".into(), 1), ("bea".into(), 2)]);
        store.accept_message("ana", "bea", b"d", None).unwrap();
        let first = store.pending_batch("bea", 1).unwrap()[0].seq;
        assert!(store.delete_pending(first).unwrap());
        let ana = store.pending_batch("ana", 1).unwrap()[0].seq;
        assert!(store.delete_pending(ana).unwrap());
        store.commit().unwrap();
        assert_eq!(sizes(&store), [("bea".into(), 2)]);
        assert!(store.delete_user("bea").unwrap());
        store.commit().unwrap();
        assert_eq!(sizes(&store), []);
    }

    #[test]
    fn pending_messages_come_back_in_acceptance_order_and_bytes_survive() {
        let (_dir, store) = store();
        assert!(store.insert_user("ana", None, None).unwrap());
        assert!(!store.insert_user("ana", None, None).unwrap());
        assert!(store
            .insert_user("bea", Some("Bea B"), Some("01/01/2000"))
            .unwrap());
        store
            .accept_message("ana", "bea", b"\xffraw", None)
            .unwrap();
        store
            .accept_message("ana", "bea", b"second", Some(b"/tmp/f"))
            .unwrap();
        store.commit().unwrap();
        assert_eq!(store.user("ana").unwrap().unwrap().last_id, 2);
        let first = store.pending_batch("bea", 1).unwrap()[0].clone();
        assert_eq!(
            (first.id, first.text.as_slice(), first.attachment),
            (1, b"\xffraw".as_slice(), None)
        );
        store.delete_pending(first.seq).unwrap();
        let second = store.pending_batch("bea", 1).unwrap()[0].clone();
        assert_eq!(second.attachment.as_deref(), Some(b"/tmp/f".as_slice()));
        store.rollback();
        assert_eq!(
            store.pending_batch("bea", 1).unwrap()[0].clone().id,
            1,
            "rollback restores the delete"
        );
    }

    #[test]
    fn deleting_a_user_drops_their_queue() {
        let (_dir, store) = store();
        store.insert_user("ana", None, None).unwrap();
        store.insert_user("bea", None, None).unwrap();
        store.accept_message("ana", "bea", b"x", None).unwrap();
        let seq = store.pending_batch("bea", 1).unwrap()[0].seq;
        assert!(store.delete_user("bea").unwrap());
        assert!(!store.delete_user("bea").unwrap());
        assert!(
            !store.delete_pending(seq).unwrap(),
            "already gone with its recipient"
        );
        assert_eq!(store.pending_batch("bea", 1).unwrap(), vec![]);
    }

    #[test]
    fn the_checkpointer_copies_the_wal_back_past_its_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path, None, 5).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        store.insert_user("ana", None, None).unwrap();
        store.insert_user("bea", None, None).unwrap();
        for _ in 1..=20 {
            store.accept_message("ana", "bea", b"x", None).unwrap();
            store.commit().unwrap();
        }
        let start = std::time::Instant::now();
        while std::fs::metadata(&path).unwrap().len() <= before {
            assert!(start.elapsed() < Duration::from_secs(10), "no checkpoint");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Each poke waits for the one before to be taken, so the checkpointer's thread is
    /// waiting (or about to) at every poke: a lost wake-up would leave this test waiting.
    #[test]
    fn every_poke_made_while_the_checkpointer_waits_wakes_it() {
        let signal = Arc::new(Signal::default());
        let (took, taken) = std::sync::mpsc::channel();
        let waiting = signal.clone();
        let thread = std::thread::spawn(move || {
            while waiting.wait() {
                took.send(()).unwrap();
            }
        });
        for poke in 0..2_000 {
            signal.poke();
            assert!(
                taken.recv_timeout(Duration::from_secs(10)).is_ok(),
                "poke {poke} never woke the checkpointer"
            );
        }
        signal.stop();
        thread.join().unwrap();
    }
}
