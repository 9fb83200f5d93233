//! Command-line arguments.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::messenger::RegisterForm;

/// The most `--max-connections` may say (the reactor numbers connections below it).
pub const MAX_CONNECTIONS: u32 = 1_000_000;

/// When an answer that reports a write may leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// Once the write is committed and the WAL is synced to disk: it survives power loss.
    Full,
    /// Once the write is committed: it survives a crash of the server, not of the machine.
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushStyleArg {
    /// `SEND MESSAGE`, `SEND MESS ACK`, ... as the seeds write them.
    Spaces,
    /// `SEND_MESSAGE`, `SEND_MESS_ACK`, ... as about half the real clients expect.
    Underscores,
}

impl From<PushStyleArg> for wire::PushStyle {
    fn from(style: PushStyleArg) -> Self {
        match style {
            PushStyleArg::Spaces => wire::PushStyle::Spaces,
            PushStyleArg::Underscores => wire::PushStyle::Underscores,
        }
    }
}

/// Which diagnostics reach stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    pub fn filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

/// The messaging server of seeds 000/003: users register, connect with a listening port, and
/// send each other messages that wait on disk until the recipient is connected.
#[derive(Debug, Clone, Parser)]
#[command(name = "server", version)]
pub struct Config {
    /// TCP port to listen on; 0 picks a free one (the `init server` line shows it).
    #[arg(short = 'p', long = "port")]
    pub port: u16,

    /// Address to listen on: an IP, or a host name such as `localhost`.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED), value_parser = parse_bind)]
    pub bind: IpAddr,

    /// The database: a SQLite file (created with its schema if missing, upgraded in place if
    /// old), or a PostgreSQL URL such as `postgres://USER@/DBNAME?host=/socket/dir` or
    /// `postgres://USER:PASSWORD@HOST:PORT/DBNAME`, shared by every node started with it.
    #[arg(long, default_value = "messages.db", value_parser = parse_database)]
    pub db: Database,

    /// Op names of the pushes to client listeners.
    #[arg(long, value_enum, default_value_t = PushStyleArg::Spaces)]
    pub push_style: PushStyleArg,

    /// Number of deliverer threads; each runs many pushes at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub deliverers: u16,

    /// Push connections open at once over all deliverers (each holds a descriptor; one
    /// recipient's run of pushes keeps up to two open); recipients beyond it wait their turn.
    /// A listener that never reads holds one until its push timeout.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_pushes: u32,

    /// Client connections open at once; more are closed at accept.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=MAX_CONNECTIONS as i64))]
    pub max_connections: u32,

    /// Milliseconds a client has to send a whole request (and to read the answer).
    #[arg(long, default_value_t = 10_000)]
    pub idle_timeout_ms: u64,

    /// Milliseconds to wait for the longer form of REGISTER and for the alias of USERS.
    #[arg(long, default_value_t = 50)]
    pub grace_ms: u64,

    /// REGISTER form to expect; pinning one removes the grace wait.
    #[arg(long, value_enum, default_value_t = RegisterForm::Auto)]
    pub register_form: RegisterForm,

    /// Milliseconds a push may take: connect, write, and the listener closing its end.
    #[arg(long, default_value_t = 3_000)]
    pub push_timeout_ms: u64,

    /// Milliseconds after CONNECT during which a refused push is retried instead of marking the
    /// user disconnected (some clients listen only after reading the CONNECT answer).
    #[arg(long, default_value_t = 2_000)]
    pub connect_window_ms: u64,

    /// Milliseconds that SIGINT/SIGTERM leave requests in progress to finish.
    #[arg(long, default_value_t = 2_000)]
    pub shutdown_grace_ms: u64,

    /// `full` answers a write only once it is synced to disk (group commit: one fsync covers
    /// every write that arrived meanwhile); `normal` answers once it is committed, which
    /// survives a crash of the server but not a power loss.
    #[arg(long, value_enum, default_value_t = Durability::Full)]
    pub durability: Durability,

    /// Cap on the database size in 4 KiB pages (SQLite `max_page_count`; the default is
    /// 1 GiB); when it is reached, SEND answers 2 until delivered messages free space. 0: no
    /// limit.
    #[arg(long, default_value_t = 262_144)]
    pub max_db_pages: u64,

    /// Port for the chat of seed 001 (myChatProtocol); none if absent.
    #[arg(long)]
    pub chat_port: Option<u16>,

    /// Port for the rooms of seed 004 (Wassop); none if absent.
    #[arg(long)]
    pub rooms_port: Option<u16>,

    /// Diagnostics on stderr from this level up: error (the server's own failures), warn
    /// (degraded service: refused connections, failed pushes), info (rejected requests, closed
    /// connections), debug. Without it, `RUST_LOG` may name a level; the default is info.
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,

    /// Address (`IP:PORT` or `host:PORT`) for the admin HTTP server: `GET /metrics`
    /// (Prometheus) and `GET /` (a status page). None if absent.
    #[arg(long, value_parser = parse_admin_addr)]
    pub admin_addr: Option<std::net::SocketAddr>,

    /// A file whose first line is the token every `--admin-addr` request must carry
    /// (`Authorization: Bearer TOKEN`, or basic auth with the token as the password, for
    /// browsers). Required when `--admin-addr` is not a loopback address: the status page
    /// names users and their addresses.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,

    /// Port for the shared canvas of seed 002 (DrawColorCanvas); none if absent.
    #[arg(long)]
    pub canvas_port: Option<u16>,

    /// The server's certificate chain for its TLS ports (PEM, the server's own first); read
    /// again on SIGHUP.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM; RSA or ECDSA); read again on SIGHUP.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// The messenger over TLS on this port too (needs `--tls-cert` and `--tls-key`).
    #[arg(long, requires = "tls_cert")]
    pub tls_port: Option<u16>,

    /// The chat over TLS on this port (line framing from the first byte: docs/tls.md).
    #[arg(long, requires = "tls_cert")]
    pub chat_tls_port: Option<u16>,

    /// The rooms over TLS on this port.
    #[arg(long, requires = "tls_cert")]
    pub rooms_tls_port: Option<u16>,

    /// The canvas over TLS on this port.
    #[arg(long, requires = "tls_cert")]
    pub canvas_tls_port: Option<u16>,

    /// Room messages replayed on joining a room, and chat broadcasts replayed on logging in.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub history: u16,

    /// Most rooms that may exist.
    #[arg(long, default_value_t = 10_000)]
    pub max_rooms: u32,

    /// Bytes a chat or rooms session may have waiting to be written; a client that lets more
    /// pile up (it stopped reading) is disconnected.
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u32).range(4096..))]
    pub session_buffer_bytes: u32,

    /// Requests a second a chat or rooms session may keep up; past it the session is slowed
    /// down (not read until it is back under), told once, and disconnected if it stays behind
    /// for `--flood-disconnect-secs`. 0: no limit.
    #[arg(long, default_value_t = 10)]
    pub flood_rate: u32,

    /// Requests a chat or rooms session may make at once after a quiet spell.
    #[arg(long, default_value_t = 60)]
    pub flood_burst: u32,

    /// Paints (and other requests) a second a canvas session may keep up (a drag paints many
    /// pixels). 0: no limit.
    #[arg(long, default_value_t = 200)]
    pub canvas_flood_rate: u32,

    /// Requests a canvas session may make at once after a quiet spell.
    #[arg(long, default_value_t = 400)]
    pub canvas_flood_burst: u32,

    /// Seconds a session may stay behind its flood limit (sending faster than it is served)
    /// before it is disconnected.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub flood_disconnect_secs: u64,

    /// Milliseconds between two messages written to a chat client of the original framing
    /// (no delimiter): long enough for it to read the first alone.
    #[arg(long, default_value_t = 20)]
    pub chat_pause_ms: u64,

    /// Most messages that may wait for one user; SEND to a user whose mailbox is full answers
    /// 2 (the chat: ERROR 507). 0: no limit.
    #[arg(long, default_value_t = 10_000)]
    pub max_pending_per_user: u32,

    /// Seconds a message may wait for its recipient (the default is 30 days); older ones are
    /// dropped, each counted on stderr. 0: kept for ever.
    #[arg(long, default_value_t = 30 * 24 * 3600)]
    pub pending_ttl: u64,

    /// Names one client address (an IPv6 address by its /64) may register a minute, through
    /// REGISTER or by logging in to the chat or the rooms under a new name; more are refused
    /// with each protocol's failure answer. 0: no limit.
    #[arg(long, default_value_t = 20)]
    pub max_new_names_per_minute: u32,

    /// No name without a password may log in, register, connect or send: the original
    /// clients, which never send one, get their protocols' failure answers
    /// (docs/accounts.md). Operators set passwords with `server account set-password`.
    #[arg(long)]
    pub require_passwords: bool,

    /// Threads that check and hash passwords and room keys, off the event loop (argon2id:
    /// tens of milliseconds and 19 MiB each while it runs).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub password_workers: u16,

    /// Password checks that may wait for those threads; past it (or past 4 from one client
    /// address) a login with a password is refused at once with its protocol's failure.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_password_checks: u32,

    /// Lines kept in each room's stored history (what a newcomer can be shown); older ones
    /// are deleted as new ones come. 0: all kept.
    #[arg(long, default_value_t = 1000)]
    pub room_history_kept: u32,

    /// WAL size in pages at which the checkpointer thread copies the WAL back into the
    /// database file (the reactor itself never checkpoints).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkpoint_pages: u32,

    /// PostgreSQL only: storage workers for requests that write mailboxes (SEND,
    /// UNREGISTER), as many for the other requests, and as many for work that runs in
    /// order (deliveries, broadcasts, rooms, the session bus and the canvas), each with a
    /// connection of its own: all storage work runs on them, beside the event loop, which
    /// never waits on the database's round trips.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub db_workers: u16,

    /// Every client connection on the protocol ports begins with a PROXY protocol header
    /// (HAProxy's v1 or v2) naming the client's address, which then stands for the
    /// connection's own (pushes go to it; DISCONNECT is allowed from it). Connections without
    /// one are closed. For nodes behind a TCP load balancer only.
    #[arg(long)]
    pub proxy_protocol: bool,
}

/// Where the server keeps its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded engine: one file, one server.
    Sqlite(PathBuf),
    /// A PostgreSQL database, as a libpq-style URL: several nodes may share it.
    Postgres(String),
}

impl std::fmt::Display for Database {
    /// The file's path, or the URL without its password (it goes to logs and error lines).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => match (url.find("://"), url.find('@')) {
                (Some(scheme), Some(at)) if scheme < at => {
                    let credentials = &url[scheme + 3..at];
                    match credentials.split_once(':') {
                        Some((user, _)) => {
                            write!(f, "{}{user}:***{}", &url[..scheme + 3], &url[at..])
                        }
                        None => f.write_str(url),
                    }
                }
                _ => f.write_str(url),
            },
        }
    }
}

/// `postgres://...` or `postgresql://...` is PostgreSQL; anything else a SQLite file.
pub(crate) fn parse_database(text: &str) -> Result<Database, String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        text.parse::<postgres::Config>()
            .map_err(|e| format!("{text}: not a PostgreSQL URL: {e}"))?;
        Ok(Database::Postgres(text.to_string()))
    } else if text.is_empty() {
        Err("the database path is empty".into())
    } else {
        Ok(Database::Sqlite(PathBuf::from(text)))
    }
}

/// An IP address, or a host name resolved to its first address (IPv4 first).
fn parse_bind(text: &str) -> Result<IpAddr, String> {
    if let Ok(ip) = text.parse() {
        return Ok(ip);
    }
    let addrs: Vec<IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(text, 0))
        .map_err(|e| format!("{text} is neither an IP address nor a host name here: {e}"))?
        .map(|addr| addr.ip())
        .collect();
    addrs
        .iter()
        .find(|ip| ip.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{text} has no address"))
}

/// `IP:PORT` or `host:PORT`.
fn parse_admin_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("{text}: expected ADDRESS:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("{port} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(std::net::SocketAddr::new(parse_bind(host)?, port))
}

impl Config {
    /// `--log-level`, else a level named in `RUST_LOG`, else info.
    pub fn log_filter(&self) -> log::LevelFilter {
        if let Some(level) = self.log_level {
            return level.filter();
        }
        std::env::var("RUST_LOG")
            .ok()
            .and_then(|name| name.trim().parse().ok())
            .unwrap_or(log::LevelFilter::Info)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }
    pub fn push_timeout(&self) -> Duration {
        Duration::from_millis(self.push_timeout_ms)
    }
    pub fn connect_window(&self) -> Duration {
        Duration::from_millis(self.connect_window_ms)
    }
    pub fn chat_pause(&self) -> Duration {
        Duration::from_millis(self.chat_pause_ms)
    }
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
    /// What the accounts enforce.
    pub fn policy(&self) -> crate::accounts::Policy {
        crate::accounts::Policy {
            require_passwords: self.require_passwords,
        }
    }

    /// The flood limits of chat and rooms sessions.
    pub fn session_flood(&self) -> Option<crate::flood::Limits> {
        crate::flood::Limits::new(
            self.flood_rate,
            self.flood_burst,
            Duration::from_secs(self.flood_disconnect_secs),
        )
    }
    /// The flood limits of canvas sessions.
    pub fn canvas_flood(&self) -> Option<crate::flood::Limits> {
        crate::flood::Limits::new(
            self.canvas_flood_rate,
            self.canvas_flood_burst,
            Duration::from_secs(self.flood_disconnect_secs),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_flag_tells_files_from_postgres_urls_and_never_shows_a_password() {
        assert_eq!(
            parse_database("m.db"),
            Ok(Database::Sqlite(PathBuf::from("m.db")))
        );
        let url = "postgres://msg:secret@db.example:5432/msg";
        let db = parse_database(url).unwrap();
        assert_eq!(db, Database::Postgres(url.into()));
        assert_eq!(db.to_string(), "postgres://msg:***@db.example:5432/msg");
        let socket = "postgres://msg@/msg?host=/run/postgresql";
        assert_eq!(parse_database(socket).unwrap().to_string(), socket);
        assert!(parse_database("postgres://msg@/msg?nonsense_option=1").is_err());
        assert!(parse_database("").is_err());
    }
}
