//! The shared engine: PostgreSQL, for several server nodes on one database.
//!
//! A `PgStore` is one connection, in the same shape as the SQLite engine: reads run at once,
//! the first write opens a transaction and `commit` ends it. The event loop's reads the state
//! at start-up and names the node; each storage worker's (`beside.rs`) runs a job per
//! transaction. Sessions run with `synchronous_commit = off`, so a commit does not wait for
//! the WAL flush; with
//! `--durability full` the syncer's barrier (a synchronous commit on a connection of its own,
//! see `syncer::Barrier`) makes every earlier commit durable before the answers that promise
//! it go out: one flush for many turns, as with SQLite.
//!
//! Waiting on somebody else's lock is bounded: `lock_timeout` makes a write that finds a row
//! locked by another node's open turn fail after `LOCK_TIMEOUT`, poisoning this turn, instead of
//! hanging; `statement_timeout` bounds a statement the server itself is slow to run.
//!
//! Migrations run under a transaction-level advisory lock, so nodes that start together apply
//! each step once and the others see it done.
//!
//! A lost connection (the server restarted, a failover, a terminated backend) fails the turn
//! that finds it; the next storage call outside a turn's transaction connects again (after a
//! failed try, with backoff: `RECONNECT_FIRST` doubling to `RECONNECT_MOST`). The new
//! connection takes back the delivery claims the old one held (where another node has not
//! taken them meanwhile) and has a new backend process id, which is the node's new name on
//! the session bus, and the server's epoch (see `storage::Epoch`).

use std::cell::{Cell, RefCell, RefMut};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::{migrations, unix_now, Epoch, Error, Pending, Result, RoomAccess, Storage, User};

/// How long a write waits for a row another node's turn holds.
const LOCK_TIMEOUT: &str = "250ms";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP keepalive of every connection: a server that vanished is found after about
/// `idle + retries * interval`.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const KEEPALIVE_RETRIES: u32 = 3;
/// How long a background scan (the sweep, the expiry) waits for a lock.
const BACKGROUND_LOCK_WAIT: &str = "100ms";
/// Longest any statement may run.
const STATEMENT_TIMEOUT: &str = "5s";
/// How soon a connection that was lost is tried again after a failed try: doubled at each
/// failure from the first to the most.
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MOST: Duration = Duration::from_secs(2);
/// How long a node waits for another node's migration step, and a step may run.
const MIGRATION_WAIT: &str = "10min";
/// Advisory-lock key (`pg_advisory_xact_lock(MIGRATION_LOCK)`) of the migrations: "msgr" in
/// ASCII, unlikely to meet another application's keys in a shared database.
const MIGRATION_LOCK: i64 = 0x6d73_6772;
/// First key of the per-recipient delivery claims, `pg_try_advisory_lock(DELIVERY_LOCKS,
/// hashtext(alias))`: two-key advisory locks live apart from one-key ones. Two aliases with
/// the same hash share a claim, which only makes one wait for the other.
const DELIVERY_LOCKS: i32 = 0x6d73;
/// Advisory-lock keys (`pg_try_advisory_xact_lock(FOLD_LOCK, 0)`) of the mailbox sizes' fold:
/// one node folds at a time, the others skip their turn rather than wait.
const FOLD_LOCK: i32 = 0x6d74;

impl From<postgres::Error> for Error {
    /// The error with its whole chain of causes: a database error's severity, message and
    /// detail; any other's sources (the socket's error under "error connecting to server").
    fn from(e: postgres::Error) -> Error {
        use std::fmt::Write as _;
        if let Some(db) = e.as_db_error() {
            let mut text = format!(
                "{}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(detail) = db.detail() {
                let _ = write!(text, "; {detail}");
            }
            return Error(text);
        }
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            let _ = write!(text, ": {cause}");
            source = cause.source();
        }
        Error(text)
    }
}

/// Where `url` points, for error lines: the socket directory or host and the port.
fn server_of(url: &str) -> String {
    let Ok(config) = url.parse::<postgres::Config>() else {
        return "the database".into();
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    match config.get_hosts().first() {
        Some(postgres::config::Host::Unix(dir)) => {
            format!("the socket {}/.s.PGSQL.{port}", dir.display())
        }
        Some(postgres::config::Host::Tcp(host)) => format!("{host}:{port}"),
        None => format!("localhost:{port}"),
    }
}

pub struct PgStore {
    client: RefCell<Client>,
    /// Statements prepared on this connection, by their SQL.
    statements: RefCell<HashMap<&'static str, Statement>>,
    /// True between the turn's first write and its commit.
    in_transaction: Cell<bool>,
    /// Why the current turn's transaction cannot be committed, if a write failed.
    poisoned: RefCell<Option<String>>,
    /// The transaction's session-bus events, sent with its COMMIT in one round trip (each a
    /// NOTIFY, which PostgreSQL delivers only if the transaction commits, in commit order).
    notifies: RefCell<Vec<String>>,
    /// Recipients whose delivery claim (a session-level advisory lock) this node holds: at
    /// most those with a delivery in flight or waiting for a retry.
    claimed: RefCell<HashSet<String>>,
    /// The backend process id of this connection: the node's name on the session bus.
    backend: Cell<i32>,
    /// The server's life this connection was made in.
    epoch: Cell<Epoch>,
    role: Role,
    /// To connect again after the connection is lost.
    url: String,
    /// The last failed try to connect again, and how long to wait after it.
    reconnected_at: Cell<Option<Instant>>,
    reconnect_wait: Cell<Duration>,
    /// Where connecting again is counted (the server's stores; not the operator's).
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

impl PgStore {
    /// Connects to `url` (a libpq-style URL: `postgres://user@/db?host=/socket/dir`, or with a
    /// host and port) and brings the schema up to date.
    pub fn open(url: &str) -> std::result::Result<PgStore, Error> {
        let store = PgStore::connect(url, Role::Reactor)?;
        migrate(&mut store.client.borrow_mut())?;
        Ok(store)
    }

    /// A storage worker's connection (see `beside.rs`), to a database already migrated.
    pub fn open_worker(url: &str) -> std::result::Result<PgStore, Error> {
        PgStore::connect(url, Role::Worker)
    }

    /// Counts this connection's reconnections in `metrics`.
    pub fn counted_in(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> PgStore {
        self.metrics = Some(metrics);
        self
    }

    fn connect(url: &str, role: Role) -> std::result::Result<PgStore, Error> {
        let (client, backend, epoch) = connect(url, role)?;
        Ok(PgStore {
            role,
            backend: Cell::new(backend),
            epoch: Cell::new(epoch),
            url: url.to_string(),
            reconnected_at: Cell::new(None),
            reconnect_wait: Cell::new(RECONNECT_FIRST),
            metrics: None,
            client: RefCell::new(client),
            statements: RefCell::default(),
            in_transaction: Cell::new(false),
            poisoned: RefCell::default(),
            notifies: RefCell::default(),
            claimed: RefCell::default(),
        })
    }

    /// The server's life this connection's commits are made in (see [`Epoch`]).
    pub fn epoch(&self) -> Epoch {
        self.epoch.get()
    }

    /// The connection; a lost one is made again first, unless a turn's transaction was open
    /// on it (that turn fails, and its commit clears the way).
    fn client(&self) -> RefMut<'_, Client> {
        let lost = self.client.borrow().is_closed();
        let between_turns = !self.in_transaction.get() && self.poisoned.borrow().is_none();
        let due = self
            .reconnected_at
            .get()
            .is_none_or(|at| at.elapsed() >= self.reconnect_wait.get());
        if lost && between_turns && due {
            self.reconnect();
        }
        self.client.borrow_mut()
    }

    fn reconnect(&self) {
        let (mut client, backend, epoch) = match connect(&self.url, self.role) {
            Ok(connected) => connected,
            Err(e) => {
                let wait = self.reconnect_wait.get();
                log::error!(
                    "the database connection is lost and cannot be made again: {e}; next try \
                     in {} ms",
                    wait.as_millis()
                );
                self.reconnected_at.set(Some(Instant::now()));
                self.reconnect_wait.set((wait * 2).min(RECONNECT_MOST));
                return;
            }
        };
        self.reconnected_at.set(None);
        self.reconnect_wait.set(RECONNECT_FIRST);
        if let Some(metrics) = &self.metrics {
            metrics.reconnected(self.role == Role::Reactor);
        }
        // Claims went with the old connection; take back those nobody took meanwhile.
        self.claimed.borrow_mut().retain(|recipient| {
            let got = client.query_one(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                &[&DELIVERY_LOCKS, recipient],
            );
            matches!(got.map(|row| row.get::<_, bool>(0)), Ok(true))
        });
        log::warn!(
            "connected to the database again (backend {} replaces {})",
            backend,
            self.backend.get()
        );
        self.statements.borrow_mut().clear();
        self.backend.set(backend);
        self.epoch.set(epoch);
        *self.client.borrow_mut() = client;
    }

    fn statement(&self, client: &mut Client, sql: &'static str) -> Result<Statement> {
        if let Some(statement) = self.statements.borrow().get(sql) {
            return Ok(statement.clone());
        }
        let statement = client.prepare(sql)?;
        self.statements.borrow_mut().insert(sql, statement.clone());
        Ok(statement)
    }

    fn query(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        let mut client = self.client();
        let statement = self.statement(&mut client, sql)?;
        Ok(client.query(&statement, params)?)
    }

    /// Runs a write inside the turn's transaction; the first failed write poisons the turn
    /// (PostgreSQL refuses everything after an error in a transaction anyway).
    fn write<T>(&self, statements: impl FnOnce(&Self) -> Result<T>) -> Result<T> {
        let result = (|| {
            if !self.in_transaction.get() {
                self.client().batch_execute("BEGIN")?;
                self.in_transaction.set(true);
            }
            statements(self)
        })();
        result.inspect_err(|e| {
            self.poisoned
                .borrow_mut()
                .get_or_insert_with(|| e.0.clone());
        })
    }

    fn execute(&self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let mut client = self.client();
        let statement = self.statement(&mut client, sql)?;
        Ok(client.execute(&statement, params)?)
    }

    fn pairs(
        &self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<(String, String)>> {
        Ok(self
            .query(sql, params)?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    fn end_transaction(&self, sql: &str) -> std::result::Result<(), String> {
        self.in_transaction.set(false);
        self.client
            .borrow_mut()
            .batch_execute(sql)
            .map_err(|e| Error::from(e).0)
    }
}

/// Appends `text` as an SQL string literal. Every connection runs with
/// `standard_conforming_strings = on` (set in [`connect`]), where a backslash is an ordinary
/// character and a quote is written twice; a NUL cannot be in `text` (a Rust `str` of JSON
/// has it escaped, and PostgreSQL's text refuses it anyway).
fn push_literal(sql: &mut String, text: &str) {
    sql.push('\'');
    for c in text.chars() {
        if c == '\'' {
            sql.push('\'');
        }
        sql.push(c);
    }
    sql.push('\'');
}

/// Who a connection works for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The reactor's turns: a lock held by another node's turn is waited for briefly.
    Reactor,
    /// A storage worker beside the reactor: it may wait for locks as long as any statement.
    Worker,
}

/// A connection to `url`. The `postgres` crate builds a runtime for each connection and
/// panics if it cannot (out of file descriptors, say): that is an error here, so that a
/// reconnection when descriptors run out fails like any lost connection instead of killing
/// its thread.
pub fn open_client(url: &str) -> std::result::Result<Client, Error> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error(format!("{url} is not a PostgreSQL URL: {}", Error::from(e))))?;
    // A server that does not answer (a failover in progress) fails the connection in
    // seconds, and a peer that vanished without closing is found by keepalives in well under
    // a minute, not the system's two hours.
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(KEEPALIVE_IDLE)
        .keepalives_interval(KEEPALIVE_INTERVAL)
        .keepalives_retries(KEEPALIVE_RETRIES);
    // (The config is not used after a panic.)
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.connect(NoTls))) {
        Ok(connected) => connected.map_err(|e| {
            Error(format!(
                "connecting to {}: {}",
                server_of(url),
                Error::from(e)
            ))
        }),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the connection's runtime could not start");
            Err(Error(format!("cannot connect: {why}")))
        }
    }
}

/// The postmaster's start time, in microseconds: the server's [`Epoch`].
const EPOCH_SQL: &str = "(extract(epoch from pg_postmaster_start_time()) * 1000000)::bigint";

/// The syncer's connection to PostgreSQL: its commits wait for the WAL flush. A lost one is
/// made again at the next barrier.
pub struct PgBarrier {
    url: String,
    connected: Option<(Client, Epoch)>,
}

impl PgBarrier {
    /// Connects once at start-up, so that a wrong URL stops the server at once.
    pub fn open(url: &str) -> std::result::Result<PgBarrier, Error> {
        let mut barrier = PgBarrier {
            url: url.to_string(),
            connected: None,
        };
        barrier.connection()?;
        Ok(barrier)
    }

    fn connection(&mut self) -> std::result::Result<&mut (Client, Epoch), Error> {
        if self
            .connected
            .as_ref()
            .is_some_and(|(client, _)| client.is_closed())
        {
            self.connected = None;
        }
        if self.connected.is_none() {
            let mut client = open_client(&self.url)?;
            client.batch_execute(
                "SET synchronous_commit = on; SET application_name = 'messenger syncer';
                 SET client_min_messages = warning",
            )?;
            let epoch = client
                .query_one(&format!("SELECT {EPOCH_SQL}"), &[])?
                .get(0);
            self.connected = Some((client, epoch));
        }
        Ok(self.connected.as_mut().expect("connected above"))
    }

    /// Makes every commit made so far on the server durable; the server's epoch. On an error
    /// the connection is dropped, and the next barrier connects again.
    pub fn run(&mut self) -> std::result::Result<Epoch, Error> {
        let (client, epoch) = self.connection()?;
        let epoch = *epoch;
        match client.batch_execute(
            "BEGIN; SELECT pg_logical_emit_message(true, 'messenger', 'barrier'); COMMIT",
        ) {
            Ok(()) => Ok(epoch),
            Err(e) => {
                self.connected = None;
                Err(e.into())
            }
        }
    }
}

/// A connection set up for `role`, its backend process id and the server's epoch.
fn connect(url: &str, role: Role) -> std::result::Result<(Client, i32, Epoch), Error> {
    let (name, lock_timeout) = match role {
        Role::Reactor => ("messenger", LOCK_TIMEOUT),
        Role::Worker => ("messenger worker", STATEMENT_TIMEOUT),
    };
    let mut client = open_client(url)?;
    client.batch_execute(&format!(
        "SET synchronous_commit = off; SET lock_timeout = '{lock_timeout}';
         SET statement_timeout = '{STATEMENT_TIMEOUT}'; SET application_name = '{name}';
         SET client_min_messages = warning; SET standard_conforming_strings = on"
    ))?;
    let row = client.query_one(&format!("SELECT pg_backend_pid(), {EPOCH_SQL}"), &[])?;
    Ok((client, row.get(0), row.get(1)))
}

/// Applies the steps not applied yet, each in a transaction of its own that first takes the
/// migrations' advisory lock: a node that starts while another migrates waits, then finds the
/// step recorded and skips it.
fn migrate(client: &mut Client) -> std::result::Result<(), Error> {
    for (index, (name, sql)) in migrations::POSTGRES.iter().enumerate() {
        let version = index as i32 + 1;
        let mut tx = client.transaction()?;
        // Another node's migration may hold the lock for as long as its step takes: wait
        // for it (the connection's own timeouts are for requests, and would make a node
        // that starts beside another exit).
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{MIGRATION_WAIT}'; \
             SET LOCAL statement_timeout = '{MIGRATION_WAIT}'"
        ))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )?;
        let done = tx
            .query_opt(
                "SELECT 1 FROM schema_migrations WHERE version = $1",
                &[&version],
            )?
            .is_some();
        if !done {
            tx.batch_execute(sql)
                .map_err(|e| Error(format!("migration {name}: {}", Error::from(e))))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[&version, name],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn u32_of(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

impl Storage for PgStore {
    fn has_uncommitted(&self) -> bool {
        self.in_transaction.get()
            || self.poisoned.borrow().is_some()
            || !self.notifies.borrow().is_empty()
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_deliveries(&self, recipient: &str) -> Result<bool> {
        if self.claimed.borrow().contains(recipient) {
            return Ok(true);
        }
        // Session-level: a rollback of the turn does not drop it, the connection's end does.
        let got: bool = self.query(
            "SELECT pg_try_advisory_lock($1, hashtext($2))",
            &[&DELIVERY_LOCKS, &recipient],
        )?[0]
            .get(0);
        if got {
            self.claimed.borrow_mut().insert(recipient.to_string());
        }
        Ok(got)
    }

    fn node(&self) -> Option<i32> {
        Some(self.backend.get())
    }

    fn publish(&self, payload: &str) -> Result<()> {
        // PostgreSQL's limit, checked here so that one event cannot fail the turn's commit.
        if payload.len() >= crate::bus::MAX_PAYLOAD {
            return Err(Error(format!(
                "a session-bus event of {} bytes (PostgreSQL takes fewer than {})",
                payload.len(),
                crate::bus::MAX_PAYLOAD
            )));
        }
        self.notifies.borrow_mut().push(payload.to_string());
        Ok(())
    }

    fn with_pending(&self, aliases: &[String]) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT DISTINCT recipient FROM pending_messages WHERE recipient = ANY($1)",
                &[&aliases],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    fn live_nodes(&self, nodes: &[i32]) -> Result<Vec<i32>> {
        Ok(self
            .query(
                "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&nodes],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    fn background(&self) -> Result<()> {
        self.write(|db| {
            db.client().batch_execute(&format!(
                "SET LOCAL lock_timeout = '{BACKGROUND_LOCK_WAIT}'"
            ))?;
            Ok(())
        })
    }

    fn fold_mailbox_sizes(&self) -> Result<()> {
        self.write(|db| {
            let folding: bool =
                db.query("SELECT pg_try_advisory_xact_lock($1, 0)", &[&FOLD_LOCK])?[0].get(0);
            if !folding {
                return Ok(());
            }
            // In the recipients' order, like any other fold would take their rows' locks.
            db.execute(
                "WITH moved AS (DELETE FROM mailbox_size_changes RETURNING recipient, change)
                 INSERT INTO mailbox_sizes (recipient, messages)
                 SELECT recipient, sum(change) FROM moved GROUP BY recipient ORDER BY recipient
                 ON CONFLICT (recipient)
                 DO UPDATE SET messages = mailbox_sizes.messages + excluded.messages",
                &[],
            )?;
            db.execute("DELETE FROM mailbox_sizes WHERE messages = 0", &[])?;
            Ok(())
        })
    }

    fn reconnect_if_lost(&self) {
        // Fails at once on a connection whose backend is gone, which marks it closed; the
        // next call then connects again.
        let _ = self.client().batch_execute("");
        let _ = self.client();
    }

    fn release_deliveries(&self, recipient: &str) -> Result<()> {
        if self.claimed.borrow_mut().remove(recipient) {
            self.query(
                "SELECT pg_advisory_unlock($1, hashtext($2))",
                &[&DELIVERY_LOCKS, &recipient],
            )?;
        }
        Ok(())
    }

    fn commit(&self) -> std::result::Result<(), String> {
        let notifies = std::mem::take(&mut *self.notifies.borrow_mut());
        if let Some(why) = self.poisoned.borrow_mut().take() {
            if self.in_transaction.get() {
                // A failed ROLLBACK means the connection is gone, which rolled back too.
                let _ = self.end_transaction("ROLLBACK");
            }
            return Err(why);
        }
        if !self.in_transaction.get() && notifies.is_empty() {
            return Ok(());
        }
        // One round trip: the events, then the COMMIT that lets them out.
        let mut batch = String::new();
        if !self.in_transaction.get() {
            batch.push_str("BEGIN;");
        }
        for payload in &notifies {
            batch.push_str("SELECT pg_notify('");
            batch.push_str(crate::bus::CHANNEL);
            batch.push_str("', ");
            push_literal(&mut batch, payload);
            batch.push_str(");");
        }
        batch.push_str("COMMIT");
        self.end_transaction(&batch).inspect_err(|_| {
            // A statement of the batch failed: the rest was skipped, and the transaction is
            // left aborted until a ROLLBACK (which fails harmlessly if none is open).
            let _ = self.client.borrow_mut().batch_execute("ROLLBACK");
        })
    }

    fn user(&self, alias: &str) -> Result<Option<User>> {
        let rows = self.query(
            "SELECT alias, connected, ip, port, last_id, password_hash, listener_pin FROM users
             WHERE alias = $1",
            &[&alias],
        )?;
        Ok(rows.first().map(|row| User {
            alias: row.get(0),
            connected: row.get(1),
            ip: row.get(2),
            port: row
                .get::<_, Option<i32>>(3)
                .and_then(|p| u16::try_from(p).ok()),
            last_id: u32_of(row.get(4)),
            password: row.get(5),
            listener_pin: row.get(6),
        }))
    }

    fn insert_user(
        &self,
        alias: &str,
        full_name: Option<&str>,
        birth_date: Option<&str>,
    ) -> Result<bool> {
        self.write(|db| {
            let inserted = db.execute(
                "INSERT INTO users (alias, full_name, birth_date, registered_at)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (alias) DO NOTHING",
                &[&alias, &full_name, &birth_date, &unix_now()],
            )?;
            Ok(inserted == 1)
        })
    }

    fn set_password(&self, alias: &str, hash: Option<&str>) -> Result<bool> {
        self.write(|db| {
            Ok(db.execute(
                "UPDATE users SET password_hash = $2 WHERE alias = $1",
                &[&alias, &hash],
            )? == 1)
        })
    }

    fn delete_user(&self, alias: &str) -> Result<bool> {
        self.write(|db| {
            // The cascade would do it too; deleting first keeps the order of row locks the
            // same as a delivery's (messages, then the user).
            db.execute(
                "DELETE FROM pending_messages WHERE recipient = $1",
                &[&alias],
            )?;
            Ok(db.execute("DELETE FROM users WHERE alias = $1", &[&alias])? == 1)
        })
    }

    fn set_connected(&self, alias: &str, ip: &str, port: u16, pin: Option<&str>) -> Result<()> {
        self.write(|db| {
            db.execute(
                "UPDATE users SET connected = true, ip = $2, port = $3, listener_pin = $4
                 WHERE alias = $1",
                &[&alias, &ip, &i32::from(port), &pin],
            )?;
            Ok(())
        })
    }

    fn set_disconnected(&self, alias: &str) -> Result<()> {
        self.write(|db| {
            db.execute(
                "UPDATE users SET connected = false, ip = NULL, port = NULL, listener_pin = NULL
                 WHERE alias = $1",
                &[&alias],
            )?;
            Ok(())
        })
    }

    fn connected_users(&self) -> Result<Vec<(String, String, u16)>> {
        Ok(self
            .query(
                "SELECT alias, ip, port FROM users WHERE connected ORDER BY alias COLLATE \"C\"",
                &[],
            )?
            .iter()
            .map(|row| {
                let port: Option<i32> = row.get(2);
                (
                    row.get(0),
                    row.get::<_, Option<String>>(1).unwrap_or_default(),
                    port.and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
                )
            })
            .collect())
    }

    fn accept_message(
        &self,
        sender: &str,
        recipient: &str,
        text: &[u8],
        attachment: Option<&[u8]>,
    ) -> Result<u32> {
        self.write(|db| {
            // The row lock orders two sends of one sender through different nodes: the second
            // reads the id the first committed.
            let rows = db.query(
                "SELECT last_id FROM users WHERE alias = $1 FOR UPDATE",
                &[&sender],
            )?;
            let last_id = rows
                .first()
                .map(|row| u32_of(row.get(0)))
                .ok_or_else(|| Error(format!("no user {sender}")))?;
            let id = wire::next_message_id(last_id);
            db.execute(
                "UPDATE users SET last_id = $2 WHERE alias = $1",
                &[&sender, &i64::from(id)],
            )?;
            db.execute(
                "INSERT INTO pending_messages (recipient, sender, id, text, attachment, accepted_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&recipient, &sender, &i64::from(id), &text, &attachment, &unix_now()],
            )?;
            Ok(id)
        })
    }

    fn pending_batch(&self, recipient: &str, limit: usize) -> Result<Vec<Pending>> {
        Ok(self
            .query(
                "SELECT seq, sender, id, text, attachment FROM pending_messages
                 WHERE recipient = $1 ORDER BY seq LIMIT $2",
                &[&recipient, &(limit as i64)],
            )?
            .iter()
            .map(|row| Pending {
                seq: row.get(0),
                sender: row.get(1),
                id: u32_of(row.get(2)),
                text: row.get(3),
                attachment: row.get(4),
            })
            .collect())
    }

    fn delete_pending(&self, seq: i64) -> Result<bool> {
        self.write(|db| {
            Ok(db.execute("DELETE FROM pending_messages WHERE seq = $1", &[&seq])? == 1)
        })
    }

    fn pending_count(&self, recipient: &str, cap: usize) -> Result<usize> {
        let rows = self.query(
            "SELECT count(*) FROM (SELECT 1 FROM pending_messages WHERE recipient = $1 LIMIT $2) AS p",
            &[&recipient, &(cap as i64)],
        )?;
        Ok(rows.first().map_or(0, |row| row.get::<_, i64>(0) as usize))
    }

    fn expire_pending(&self, before: i64) -> Result<Vec<(String, String, u32)>> {
        self.write(|db| {
            Ok(db
                .query(
                    "DELETE FROM pending_messages WHERE accepted_at < $1 RETURNING recipient, sender, id",
                    &[&before],
                )?
                .iter()
                .map(|row| (row.get(0), row.get(1), u32_of(row.get(2))))
                .collect())
        })
    }

    fn connected_with_pending(&self) -> Result<Vec<String>> {
        Ok(self
            .query(
                "SELECT alias FROM users WHERE connected
                 AND EXISTS (SELECT 1 FROM pending_messages WHERE recipient = alias)",
                &[],
            )?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    fn rooms(&self) -> Result<Vec<(String, bool)>> {
        Ok(self
            .query(
                "SELECT name, key_hash IS NOT NULL FROM rooms ORDER BY seq",
                &[],
            )?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    fn create_room(&self, name: &str, creator: &str) -> Result<bool> {
        self.write(|db| {
            Ok(db.execute(
                "INSERT INTO rooms (name, created_at, creator) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &unix_now(), &creator],
            )? == 1)
        })
    }

    fn room_access(&self, room: &str) -> Result<Option<RoomAccess>> {
        let rows = self.query(
            "SELECT creator, key_hash FROM rooms WHERE name = $1",
            &[&room],
        )?;
        Ok(rows.first().map(|row| RoomAccess {
            creator: row.get(0),
            key: row.get(1),
        }))
    }

    fn set_room_key(&self, room: &str, hash: Option<&str>) -> Result<()> {
        self.write(|db| {
            db.execute(
                "UPDATE rooms SET key_hash = $2 WHERE name = $1",
                &[&room, &hash],
            )?;
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
        self.write(|db| {
            db.execute(
                "INSERT INTO room_messages (room, sender, text, sent_at) VALUES ($1, $2, $3, $4)",
                &[&room, &sender, &text, &unix_now()],
            )?;
            if let Some(keep) = prune_to {
                db.execute(
                    "DELETE FROM room_messages WHERE room = $1 AND seq <= (SELECT seq FROM
                     room_messages WHERE room = $1 ORDER BY seq DESC LIMIT 1 OFFSET $2)",
                    &[&room, &(keep as i64)],
                )?;
            }
            Ok(())
        })
    }

    fn room_history(&self, room: &str, limit: usize) -> Result<Vec<(String, String)>> {
        // The room's row, locked against its key-share locks: a line's insert takes one
        // through its foreign key and keeps it until it commits. So the lines read are
        // exactly those committed before this transaction commits.
        self.write(|db| {
            db.query("SELECT 1 FROM rooms WHERE name = $1 FOR UPDATE", &[&room])?;
            db.pairs(
                "SELECT sender, text FROM (SELECT seq, sender, text FROM room_messages
                 WHERE room = $1 ORDER BY seq DESC LIMIT $2) AS last ORDER BY seq",
                &[&room, &(limit as i64)],
            )
        })
    }

    fn add_broadcast(&self, sender: &str, text: &str, keep: usize) -> Result<()> {
        self.write(|db| {
            let rows = db.query(
                "INSERT INTO chat_broadcasts (sender, text, sent_at) VALUES ($1, $2, $3) RETURNING seq",
                &[&sender, &text, &unix_now()],
            )?;
            let seq: i64 = rows.first().map_or(0, |row| row.get(0));
            db.execute(
                "DELETE FROM chat_broadcasts WHERE seq <= $1",
                &[&(seq - keep as i64)],
            )?;
            Ok(())
        })
    }

    fn broadcast_history(&self, limit: usize) -> Result<Vec<(String, String)>> {
        self.pairs(
            "SELECT sender, text FROM (SELECT seq, sender, text FROM chat_broadcasts
             ORDER BY seq DESC LIMIT $1) AS last ORDER BY seq",
            &[&(limit as i64)],
        )
    }

    fn canvas(&self) -> Result<Vec<u8>> {
        let rows = self.query("SELECT pixels FROM canvas WHERE id = 1", &[])?;
        rows.first()
            .map(|row| row.get(0))
            .ok_or_else(|| Error("the canvas row is missing".into()))
    }

    fn paint_canvas(&self, _pixels: &[u8], paints: &[(usize, u8)]) -> Result<()> {
        // The stored board, locked until the turn commits, with this turn's paints on top:
        // another node's paints committed meanwhile stay, and nodes' turns apply in one order.
        self.write(|db| {
            let rows = db.query("SELECT pixels FROM canvas WHERE id = 1 FOR UPDATE", &[])?;
            let mut stored: Vec<u8> = rows
                .first()
                .map(|row| row.get(0))
                .ok_or_else(|| Error("the canvas row is missing".into()))?;
            for &(index, colour) in paints {
                if let Some(pixel) = stored.get_mut(index) {
                    *pixel = colour;
                }
            }
            db.execute("UPDATE canvas SET pixels = $1 WHERE id = 1", &[&stored])?;
            Ok(())
        })
    }

    fn save_canvas(&self, pixels: &[u8]) -> Result<()> {
        self.write(|db| {
            db.execute("UPDATE canvas SET pixels = $1 WHERE id = 1", &[&pixels])?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::push_literal;

    #[test]
    fn literals_double_quotes_and_keep_backslashes() {
        let mut sql = String::from("SELECT ");
        push_literal(&mut sql, r#"{"text":"it's C:\\tmp\'; --"}"#);
        assert_eq!(sql, r#"SELECT '{"text":"it''s C:\\tmp\''; --"}'"#);
    }
}
