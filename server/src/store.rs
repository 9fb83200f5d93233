//! SQLite storage: users, their message-id counters and the messages waiting for them.
//!
//! The database is the only copy of anything that must survive a restart; the rest of the
//! server keeps no mirror of it. Writes go into one transaction per reactor turn that the
//! reactor commits before any answer that depends on them leaves (group commit).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

mod migrations {
    include!(concat!(env!("OUT_DIR"), "/migrations.rs"));
}

pub type Result<T> = rusqlite::Result<T>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub alias: String,
    pub connected: bool,
    pub ip: Option<String>,
    pub port: Option<u16>,
    pub last_id: u32,
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

/// A message waiting for its recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Acceptance order; the row's key.
    pub seq: i64,
    pub recipient: String,
    pub sender: String,
    pub id: u32,
    pub text: Vec<u8>,
    pub attachment: Option<Vec<u8>>,
}

/// Stores raw bytes as SQLite TEXT, so that `sqlite3` shows messages as text even when a client
/// sent bytes that are not UTF-8.
struct TextBytes<'a>(&'a [u8]);

impl ToSql for TextBytes<'_> {
    fn to_sql(&self) -> Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0)))
    }
}

pub struct Store {
    conn: Connection,
    /// Why the current turn's transaction cannot be committed, if a write failed.
    poisoned: std::cell::RefCell<Option<String>>,
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    /// `synchronous=NORMAL`: commits do not wait for the disk; whoever promises durability syncs
    /// the WAL itself (see `syncer`), so that the reactor never waits for an fsync.
    pub fn open(path: &Path, max_pages: Option<u64>) -> Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The reactor must not sleep on a lock: only a person's sqlite3 shell can hold one.
        conn.busy_timeout(std::time::Duration::from_millis(200))?;
        if let Some(pages) = max_pages {
            conn.pragma_update(
                None,
                "max_page_count",
                i64::try_from(pages).unwrap_or(i64::MAX),
            )?;
        }
        let store = Store {
            conn,
            poisoned: Default::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<()> {
        let applied: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (index, (name, sql)) in migrations::MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(applied).unwrap_or(0))
        {
            let tx = self.conn.unchecked_transaction()?;
            tx.execute_batch(sql).map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(format!("migration {name}: {e}").into())
            })?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Runs a write inside the turn's transaction. The first failed write poisons the turn:
    /// after an error such as SQLITE_FULL, SQLite may already have rolled back part or all of
    /// the transaction, so nothing written in this turn can be trusted to commit.
    fn write<T>(&self, statements: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let result = (|| {
            if self.conn.is_autocommit() {
                self.conn.execute_batch("BEGIN IMMEDIATE")?;
            }
            statements(&self.conn)
        })();
        if let Err(e) = &result {
            let mut poisoned = self.poisoned.borrow_mut();
            poisoned.get_or_insert_with(|| e.to_string());
        }
        result
    }

    /// True while the turn has writes that are not yet committed.
    pub fn has_uncommitted(&self) -> bool {
        !self.conn.is_autocommit() || self.poisoned.borrow().is_some()
    }

    /// Commits the turn's writes. If any write failed, or the commit itself does, everything
    /// since the last commit is rolled back and the reason returned.
    pub fn commit(&self) -> std::result::Result<(), String> {
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

    fn rollback(&self) {
        if !self.conn.is_autocommit() {
            // A failed ROLLBACK means SQLite already rolled back on its own.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }

    pub fn user(&self, alias: &str) -> Result<Option<User>> {
        self.conn
            .prepare_cached(
                "SELECT alias, connected, ip, port, last_id FROM users WHERE alias = ?1",
            )?
            .query_row([alias], |row| {
                Ok(User {
                    alias: row.get(0)?,
                    connected: row.get(1)?,
                    ip: row.get(2)?,
                    port: row.get(3)?,
                    last_id: row.get(4)?,
                })
            })
            .optional()
    }

    /// Inserts a new user; false if the alias is taken.
    pub fn insert_user(
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

    /// Deletes a user and every message waiting for them; false if there was no such user.
    pub fn delete_user(&self, alias: &str) -> Result<bool> {
        self.write(|conn| {
            conn.prepare_cached("DELETE FROM pending_messages WHERE recipient = ?1")?
                .execute([alias])?;
            let deleted = conn
                .prepare_cached("DELETE FROM users WHERE alias = ?1")?
                .execute([alias])?;
            Ok(deleted == 1)
        })
    }

    pub fn set_connected(&self, alias: &str, ip: &str, port: u16) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE users SET connected = 1, ip = ?2, port = ?3 WHERE alias = ?1",
            )?
            .execute(params![alias, ip, port])?;
            Ok(())
        })
    }

    pub fn set_disconnected(&self, alias: &str) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached(
                "UPDATE users SET connected = 0, ip = NULL, port = NULL WHERE alias = ?1",
            )?
            .execute([alias])?;
            Ok(())
        })
    }

    /// Connected users as `(alias, ip, port)`, in alias order.
    pub fn connected_users(&self) -> Result<Vec<(String, String, u16)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT alias, ip, port FROM users WHERE connected = 1 ORDER BY alias",
        )?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        rows.collect()
    }

    /// Records the sender's next message id and queues the message. The caller has checked that
    /// both users exist.
    pub fn accept_message(
        &self,
        sender: &str,
        id: u32,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached("UPDATE users SET last_id = ?2 WHERE alias = ?1")?
                .execute(params![sender, id])?;
            conn.prepare_cached(
                "INSERT INTO pending_messages (recipient, sender, id, text, attachment, accepted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![recipient, sender, id, TextBytes(text), attachment.map(TextBytes), unix_now()])?;
            Ok(())
        })
    }

    /// The oldest `limit` messages waiting for `recipient`, oldest first.
    pub fn pending_batch(&self, recipient: &str, limit: usize) -> Result<Vec<Pending>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT seq, sender, id, text, attachment FROM pending_messages
             WHERE recipient = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![recipient, limit as i64], |row| {
            Ok(Pending {
                seq: row.get(0)?,
                recipient: recipient.to_string(),
                sender: row.get(1)?,
                id: row.get(2)?,
                text: row.get_ref(3)?.as_bytes()?.to_vec(),
                attachment: match row.get_ref(4)? {
                    ValueRef::Null => None,
                    value => Some(value.as_bytes()?.to_vec()),
                },
            })
        })?;
        rows.collect()
    }

    pub fn delete_pending(&self, seq: i64) -> Result<()> {
        self.write(|conn| {
            conn.prepare_cached("DELETE FROM pending_messages WHERE seq = ?1")?
                .execute([seq])?;
            Ok(())
        })
    }

    /// Connected users that have messages waiting: after a restart these are flushed.
    pub fn connected_with_pending(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT alias FROM users WHERE connected = 1
             AND EXISTS (SELECT 1 FROM pending_messages WHERE recipient = alias)",
        )?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        rows.collect()
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), None).unwrap();
        (dir, store)
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
            .accept_message("ana", 1, "bea", b"\xffraw", None)
            .unwrap();
        store
            .accept_message("ana", 2, "bea", b"second", Some(b"/tmp/f"))
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
        store.accept_message("ana", 1, "bea", b"x", None).unwrap();
        assert!(store.delete_user("bea").unwrap());
        assert!(!store.delete_user("bea").unwrap());
        assert_eq!(store.pending_batch("bea", 1).unwrap(), vec![]);
    }
}
