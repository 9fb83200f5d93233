//! A throw-away PostgreSQL cluster: `initdb` and `postgres` from the Debian package
//! (postgresql-15) in a temporary directory, listening on a Unix socket in that directory
//! only. PostgreSQL refuses to run as root, so under root both run as `nobody`. Each caller
//! gets new databases owned by an ordinary role (`messenger`: no superuser, no CREATEDB),
//! which is how operators deploy the server.
//!
//! The postmaster gets SIGQUIT (PostgreSQL's immediate shutdown) when the thread that started
//! it ends, which for [`Cluster::start`] is a thread that lives as long as the process; and
//! [`Cluster::stop`] (also on drop) stops it and removes the directory.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The Debian package's binaries.
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// Whether the cluster syncs its WAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync = on`: what a deployment runs, for measurements.
    Fsync,
    /// `fsync = off`: tests kill servers, never the cluster, and need no flush.
    NoFsync,
}

pub struct Cluster {
    /// The temporary directory: the data directory, the socket and `postgres.log`.
    pub dir: PathBuf,
    /// The running postmaster's process id (0 while it is shut down).
    postmaster: AtomicU32,
    fsync: &'static str,
    databases: AtomicU32,
}

/// How [`Cluster::shut_down`] stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// SIGINT: sessions are ended, the WAL is flushed by a checkpoint, then the server exits.
    Fast,
    /// SIGQUIT: the server exits at once, as after a crash; recovery replays the WAL on start.
    Immediate,
}

/// `(uid, gid)` of `nobody` when we are root.
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

/// Runs the child as [`postgres_user`], and stops it with SIGQUIT when the thread that
/// started it ends.
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
    /// Creates and starts a cluster, and the `messenger` role.
    pub fn start(durability: Durability) -> Cluster {
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
        let fsync = match durability {
            Durability::Fsync => "fsync=on",
            Durability::NoFsync => "fsync=off",
        };
        let cluster = Cluster {
            dir,
            postmaster: AtomicU32::new(0),
            fsync,
            databases: AtomicU32::new(0),
        };
        cluster.spawn_postmaster();
        let mut admin = cluster.wait_ready();
        admin
            .batch_execute("CREATE ROLE messenger LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE")
            .unwrap();
        cluster
    }

    /// Starts the postmaster on the cluster's data directory. A thread that lives as long as
    /// the process starts it, so that the parent-death signal fires only when the process
    /// ends.
    fn spawn_postmaster(&self) {
        let (started, pid) = std::sync::mpsc::channel();
        let (data_dir, socket_dir, fsync) = (self.dir.join("data"), self.dir.clone(), self.fsync);
        std::thread::spawn(move || {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(socket_dir.join("postgres.log"))
                .unwrap();
            let mut child = as_postgres_user(
                Command::new(format!("{PG_BIN}/postgres"))
                    .arg("-D")
                    .arg(&data_dir)
                    .arg("-k")
                    .arg(&socket_dir)
                    // Unix socket only.
                    .args(["-c", "listen_addresses=", "-c", fsync])
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
        self.postmaster
            .store(pid.recv().expect("postgres started"), Ordering::SeqCst);
    }

    /// Stops the server (`mode`) and waits until it is gone; the data stays.
    pub fn shut_down(&self, mode: Shutdown) {
        let pid = self.postmaster.swap(0, Ordering::SeqCst);
        assert!(pid != 0, "the cluster is not running");
        let signal = match mode {
            Shutdown::Fast => libc::SIGINT,
            Shutdown::Immediate => libc::SIGQUIT,
        };
        // SAFETY: signalling the postmaster we started.
        unsafe { libc::kill(pid as i32, signal) };
        let pid_file = self.dir.join("data/postmaster.pid");
        let start = Instant::now();
        while pid_file.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "postgres did not stop; see {}/postgres.log",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts the server again on the same data after [`Cluster::shut_down`], and waits until
    /// it takes connections.
    pub fn start_again(&self) {
        assert_eq!(self.postmaster.load(Ordering::SeqCst), 0, "still running");
        self.spawn_postmaster();
        self.wait_ready();
    }

    /// Waits until the server takes connections; a connection of the superuser.
    fn wait_ready(&self) -> postgres::Client {
        let start = Instant::now();
        loop {
            match postgres::Client::connect(&self.admin_url(), postgres::NoTls) {
                Ok(client) => return client,
                Err(e) => {
                    assert!(
                        start.elapsed() < Duration::from_secs(30),
                        "postgres did not start: {e}; see {}/postgres.log",
                        self.dir.display()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    fn url(&self, user: &str, database: &str) -> String {
        format!("postgres://{user}@/{database}?host={}", self.dir.display())
    }

    /// The superuser's URL, for what only it may do.
    pub fn admin_url(&self) -> String {
        self.url("postgres", "postgres")
    }

    /// A new empty database owned by the ordinary role, and its URL.
    pub fn new_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("e2e_{n}");
        let mut admin = postgres::Client::connect(&self.admin_url(), postgres::NoTls).unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE {name} OWNER messenger"))
            .unwrap();
        self.url("messenger", &name)
    }

    /// Stops the postmaster at once and removes the directory.
    pub fn stop(&self) {
        let pid = self.postmaster.swap(0, Ordering::SeqCst);
        if pid != 0 {
            // SAFETY: signalling the postmaster we started.
            unsafe { libc::kill(pid as i32, libc::SIGQUIT) };
            let pid_file = self.dir.join("data/postmaster.pid");
            let start = Instant::now();
            while pid_file.exists() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
