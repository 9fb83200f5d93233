//! The database a test server runs on, in the engine this run tests: SQLite files by default,
//! PostgreSQL with `E2E_ENGINE=postgres` (`scripts/test` runs the suite both ways).
//!
//! For PostgreSQL the harness starts one throw-away cluster per test process (`pgcluster`:
//! the Debian package's binaries in a temporary directory, as `nobody` under root, a Unix
//! socket only, no fsync). Each server gets a new database owned by an ordinary role
//! (`messenger`: no superuser, no CREATEDB), which is how operators deploy it. The cluster
//! stops when the test process ends (a parent-death signal, and an `atexit` hook that also
//! removes the directory).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use pgcluster::{Cluster, Durability};

/// Where a server keeps its data.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(PathBuf),
    /// A libpq-style URL.
    Postgres(String),
}

/// Which engine the end-to-end suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// `E2E_ENGINE`: `sqlite` (the default) or `postgres`.
pub fn engine() -> Engine {
    match std::env::var("E2E_ENGINE").as_deref() {
        Ok("postgres") => Engine::Postgres,
        Ok("sqlite") | Err(_) => Engine::Sqlite,
        Ok(other) => panic!("E2E_ENGINE={other}: expected sqlite or postgres"),
    }
}

impl Db {
    /// A new, empty database for one server, in the engine under test.
    pub fn fresh(dir: &Path) -> Db {
        match engine() {
            Engine::Sqlite => Db::sqlite_in(dir),
            Engine::Postgres => Db::Postgres(cluster().new_database()),
        }
    }

    /// A new PostgreSQL database whatever the engine under test (the multi-node tests).
    pub fn postgres() -> Db {
        Db::Postgres(cluster().new_database())
    }

    /// `messages.db` in `dir`: for what only SQLite has (its files, its locks, its fsyncs).
    pub fn sqlite_in(dir: &Path) -> Db {
        Db::Sqlite(dir.join("messages.db"))
    }

    /// The `--db` argument.
    pub fn arg(&self) -> std::ffi::OsString {
        match self {
            Db::Sqlite(path) => path.clone().into_os_string(),
            Db::Postgres(url) => url.into(),
        }
    }

    /// The SQLite file; a test that needs it runs on SQLite whatever the engine under test.
    pub fn path(&self) -> &Path {
        match self {
            Db::Sqlite(path) => path,
            Db::Postgres(url) => panic!("{url} is not a SQLite file"),
        }
    }

    /// Every row of `sql`, each cell as text: numbers in decimal, booleans as 1 and 0, bytes
    /// as (lossy) UTF-8, NULL as None. `sql` must mean the same in both dialects.
    pub fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                let mut stmt = conn.prepare(sql).unwrap();
                let columns = stmt.column_count();
                let rows = stmt
                    .query_map([], |row| {
                        (0..columns)
                            .map(|i| {
                                use rusqlite::types::ValueRef;
                                Ok(match row.get_ref(i)? {
                                    ValueRef::Null => None,
                                    ValueRef::Integer(n) => Some(n.to_string()),
                                    ValueRef::Real(x) => Some(x.to_string()),
                                    ValueRef::Text(b) | ValueRef::Blob(b) => {
                                        Some(String::from_utf8_lossy(b).into_owned())
                                    }
                                })
                            })
                            .collect()
                    })
                    .unwrap();
                rows.map(Result::unwrap).collect()
            }
            Db::Postgres(url) => {
                use postgres::types::Type;
                let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
                let rows = client.query(sql, &[]).unwrap();
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| {
                                let ty = row.columns()[i].type_().clone();
                                if ty == Type::BYTEA {
                                    row.get::<_, Option<Vec<u8>>>(i)
                                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                                } else if ty == Type::INT8 {
                                    row.get::<_, Option<i64>>(i).map(|n| n.to_string())
                                } else if ty == Type::INT4 {
                                    row.get::<_, Option<i32>>(i).map(|n| n.to_string())
                                } else if ty == Type::BOOL {
                                    row.get::<_, Option<bool>>(i)
                                        .map(|b| u8::from(b).to_string())
                                } else {
                                    row.get::<_, Option<String>>(i)
                                }
                            })
                            .collect()
                    })
                    .collect()
            }
        }
    }

    /// The bytes of the SQLite file and its WAL (None on PostgreSQL, whose files are the
    /// cluster's): to look for what must never be stored.
    pub fn file_bytes(&self) -> Option<Vec<u8>> {
        let Db::Sqlite(path) = self else {
            return None;
        };
        let mut bytes = std::fs::read(path).unwrap_or_default();
        let wal = format!("{}-wal", path.display());
        bytes.extend(std::fs::read(wal).unwrap_or_default());
        Some(bytes)
    }

    /// The one value of `sql`, as text.
    pub fn text(&self, sql: &str) -> String {
        let rows = self.rows(sql);
        assert_eq!(rows.len(), 1, "{sql}: one row expected, got {rows:?}");
        rows[0][0].clone().unwrap_or_else(|| panic!("{sql}: NULL"))
    }

    /// The one value of `sql`, as a number.
    pub fn int(&self, sql: &str) -> i64 {
        self.text(sql).parse().expect("a number")
    }

    /// Runs each statement on its own as the PostgreSQL cluster's superuser, for what only
    /// it may do (`ALTER SYSTEM`, which no transaction may hold): the cluster is the test
    /// process's own.
    pub fn postgres_admin(statements: &[&str]) {
        let mut admin = postgres::Client::connect(&cluster().admin_url(), postgres::NoTls).unwrap();
        for sql in statements {
            admin.batch_execute(sql).unwrap();
        }
    }

    /// Runs statements that return nothing (while no server runs on the database, unless
    /// the test means to race it).
    pub fn execute(&self, sql: &str) {
        match self {
            Db::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Db::Postgres(url) => postgres::Client::connect(url, postgres::NoTls)
                .unwrap()
                .batch_execute(sql)
                .unwrap(),
        }
    }
}

/// The test process's PostgreSQL cluster; statics are never dropped, so an `atexit` hook
/// stops it.
static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let cluster = Cluster::start(Durability::NoFsync);
        // SAFETY: registering a plain extern "C" function; it reads the cluster once stored.
        unsafe { libc::atexit(stop_cluster) };
        cluster
    })
}

extern "C" fn stop_cluster() {
    if let Some(cluster) = CLUSTER.get() {
        cluster.stop();
    }
}
