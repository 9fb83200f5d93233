//! The database a test server runs on, in the engine this run tests: SQLite files by default,
//! PostgreSQL with `E2E_ENGINE=postgres` (`scripts/test` runs the suite both ways).
//!
//! For PostgreSQL the harness starts one throw-away cluster per test process, from the Debian
//! package's binaries, in a temporary directory: `initdb`, then `postgres` listening on a Unix
//! socket in that directory only. PostgreSQL refuses to run as root, so under root both run as
//! `nobody`. Each server gets a new database owned by an ordinary role (`messenger`: no
//! superuser, no CREATEDB), which is how the issue says operators deploy it. The cluster stops
//! when the test process ends (a parent-death signal, and an `atexit` hook that also removes
//! the directory).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Debian package's binaries (postgresql-15).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

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
        let cluster = cluster();
        let mut admin =
            postgres::Client::connect(&cluster.url("postgres", "postgres"), postgres::NoTls)
                .unwrap();
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

/// The test process's PostgreSQL cluster.
struct Cluster {
    /// The temporary directory: the data directory, the socket and the log.
    dir: PathBuf,
    postmaster: u32,
    databases: AtomicU32,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(Cluster::start)
}

/// `(uid, gid)` of `nobody` when we are root: PostgreSQL refuses to run as root.
fn postgres_user() -> Option<(libc::uid_t, libc::gid_t)> {
    // SAFETY: geteuid cannot fail; getpwnam's result is read before any other call.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let nobody = libc::getpwnam(c"nobody".as_ptr());
        assert!(
            !nobody.is_null(),
            "PostgreSQL needs a user other than root: nobody"
        );
        Some(((*nobody).pw_uid, (*nobody).pw_gid))
    }
}

/// Runs the child as [`postgres_user`], and stops it with SIGQUIT (PostgreSQL's immediate
/// shutdown) when the thread that started it ends.
fn as_postgres_user(command: &mut Command) -> &mut Command {
    // Looked up before the fork: getpwnam is not async-signal-safe.
    let user = postgres_user();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After the uid change, which would clear it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
            Ok(())
        })
    }
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("e2e-pg-")
            .tempdir()
            .expect("a directory for the cluster")
            .keep();
        if let Some((uid, gid)) = postgres_user() {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown cluster dir");
        }
        let data = dir.join("data");
        let initdb = as_postgres_user(
            Command::new(format!("{PG_BIN}/initdb"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
                .args(["--locale", "C", "-D"])
                .arg(&data)
                .stdout(Stdio::null()),
        )
        .output()
        .unwrap_or_else(|e| panic!("{PG_BIN}/initdb: {e} (is postgresql-15 installed?)"));
        assert!(
            initdb.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&initdb.stderr)
        );
        // A thread that lives as long as the process starts the postmaster, so that the
        // parent-death signal fires only when the process ends.
        let (started, pid) = std::sync::mpsc::channel();
        let (data_dir, socket_dir) = (data.clone(), dir.clone());
        std::thread::spawn(move || {
            let log = std::fs::File::create(socket_dir.join("postgres.log")).unwrap();
            let mut child = as_postgres_user(
                Command::new(format!("{PG_BIN}/postgres"))
                    .arg("-D")
                    .arg(&data_dir)
                    .arg("-k")
                    .arg(&socket_dir)
                    // Unix socket only; no fsync: the tests kill servers, not the cluster.
                    .args(["-c", "listen_addresses=", "-c", "fsync=off"])
                    .args(["-c", "max_connections=300", "-c", "shared_buffers=32MB"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(log),
            )
            .spawn()
            .expect("start postgres");
            started.send(child.id()).unwrap();
            let _ = child.wait();
        });
        let cluster = Cluster {
            dir,
            postmaster: pid.recv().expect("postgres started"),
            databases: AtomicU32::new(0),
        };
        // SAFETY: registering a plain extern "C" function; it reads the cluster once stored.
        unsafe { libc::atexit(stop_cluster) };
        let start = Instant::now();
        let mut admin = loop {
            match postgres::Client::connect(&cluster.url("postgres", "postgres"), postgres::NoTls) {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "postgres did not start: {e}; see {}/postgres.log",
                        cluster.dir.display()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        admin
            .batch_execute("CREATE ROLE messenger LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            .unwrap();
        cluster
    }

    fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@/{database}?host={}", self.dir.display())
    }

    /// A new empty database owned by the ordinary role, and its URL.
    fn new_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("e2e_{n}");
        let mut admin =
            postgres::Client::connect(&self.url("postgres", "postgres"), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER messenger"))
            .unwrap();
        self.url("messenger", &name)
    }
}

extern "C" fn stop_cluster() {
    if let Some(cluster) = CLUSTER.get() {
        // SAFETY: signalling the postmaster we started.
        unsafe { libc::kill(cluster.postmaster as i32, libc::SIGQUIT) };
        let pid_file = cluster.dir.join("data/postmaster.pid");
        let start = Instant::now();
        while pid_file.exists() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&cluster.dir);
    }
}
