//! `--admin-addr`: `GET /metrics` in the Prometheus text format and `GET /` a small HTML status
//! page, served by the reactor as one more front-end: one request per connection, answered
//! with `Connection: close`, under the reactor's limits (a request head of 8 KiB at most,
//! `--idle-timeout-ms` to send it and to read the answer, `--max-connections`). No thread per
//! connection, nothing a client does (pipelining without reading, an endless header line,
//! slow connections) holds anybody else's request.
//!
//! On any address but a loopback one the server refuses to start without a token
//! (`--admin-token-file`), which every request must then carry: the page names people and
//! their addresses.
//!
//! A request never runs SQL: the metrics are atomics, sessions and rooms are the core's, and
//! what only the database knows (pending messages, users online through the messenger, each
//! room's stored lines) is a snapshot that a thread of its own reads again, at most once every
//! [`SNAPSHOT_EVERY`] and only while somebody looks, on a read-only connection of its own (in
//! WAL mode SQLite's readers never block the reactor; PostgreSQL's never block anybody's
//! writes). Nor does the snapshot count the mailbox: it reads the sizes the database keeps per
//! recipient (`mailbox_sizes`).

mod history;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::config::Database;
use crate::core::Core;
use crate::frontend::{Applied, Caller, Framing, Frontend, Input, Reply};
use crate::metrics::{Metrics, SESSION_FRONTENDS};
use crate::watched::Watched;

/// Rows of the pending-messages table on the status page.
const PENDING_ROWS: usize = 20;

/// Names of users online shown on the status page.
const ONLINE_NAMES: usize = 100;

/// Rooms listed on the status page.
const ROOM_ROWS: usize = 50;

/// Members named for each room on the status page.
const ROOM_MEMBERS: usize = 50;

/// Longest request head (request line and headers); longer: 431 and closed.
pub const MAX_HEAD: usize = 8 * 1024;

/// How often, at most, the snapshot of what the database knows is read again.
pub const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// What the database knows, as last read, and whether somebody looked since.
#[derive(Default)]
struct Snapshot {
    stored: Stored,
    read_at: Option<Instant>,
    wanted: bool,
}

/// The token `--admin-token-file` names, if any; an error if `addr` is not a loopback address
/// and there is none, or if the file cannot be read or is empty.
pub fn token(
    addr: Option<std::net::SocketAddr>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let Some(file) = file else {
        if addr.ip().is_loopback() {
            return Ok(None);
        }
        return Err(format!(
            "admin: --admin-addr {addr} is not a loopback address, and the status page names \
             users and their addresses: give --admin-token-file"
        ));
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("admin: --admin-token-file {}: {e}", file.display()))?;
    match text.lines().next().map(str::trim) {
        Some(token) if !token.is_empty() => Ok(Some(token.to_string())),
        _ => Err(format!(
            "admin: --admin-token-file {}: the first line is empty",
            file.display()
        )),
    }
}

/// Whether the request head `head` carries `token`: `Authorization: Bearer TOKEN`, or basic
/// auth whose password is the token (any user name). Compared in constant time.
fn authorized(head: &str, token: &str) -> bool {
    use base64::Engine as _;
    let Some(value) = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim())
    }) else {
        return false;
    };
    let given = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim().to_string(),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
                return false;
            };
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            match decoded.split_once(':') {
                Some((_, password)) => password.to_string(),
                None => return false,
            }
        }
        _ => return false,
    };
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// The admin front-end.
pub struct Admin {
    metrics: Arc<Metrics>,
    /// `--admin-token-file`: what every request must carry.
    token: Option<String>,
    snapshot: Arc<Watched<Snapshot>>,
    history: Arc<history::History>,
}

impl Admin {
    /// The front-end, and the thread that reads the database's snapshot for it.
    pub fn start(
        db: Database,
        metrics: Arc<Metrics>,
        token: Option<String>,
    ) -> Result<Admin, String> {
        let snapshot = Arc::new(Watched::new(Snapshot::default()));
        let reader = snapshot.clone();
        std::thread::Builder::new()
            .name("admin-snapshot".into())
            .spawn(move || read_snapshots(&db, &reader))
            .map_err(|e| format!("admin: {e}"))?;
        Ok(Admin {
            history: history::History::start(metrics.clone())?,
            metrics,
            token,
            snapshot,
        })
    }

    /// The last snapshot and when it was read; asks for a newer one.
    fn stored(&self) -> (Stored, Option<Instant>) {
        self.snapshot.change(|snapshot| {
            snapshot.wanted = true;
            (snapshot.stored.clone(), snapshot.read_at)
        })
    }

    fn status(&self, core: &Core) -> Status {
        Status::now(&self.metrics, &self.stored(), core, &self.history)
    }
}

/// Reads the snapshot whenever it is wanted, at most once every [`SNAPSHOT_EVERY`].
fn read_snapshots(db: &Database, snapshot: &Watched<Snapshot>) {
    let mut reader: Option<Reader> = None;
    loop {
        snapshot.wait_until(|s| s.wanted, |s| s.wanted = false);
        if reader.is_none() {
            reader = Reader::open(db)
                .inspect_err(|e| log::warn!("admin: opening the database: {e}"))
                .ok();
        }
        let stored = match reader.as_mut().map(Reader::stored) {
            Some(Ok(stored)) => Some(stored),
            Some(Err(e)) => {
                log::warn!("admin: reading the database: {e}");
                // Opened again next time: the connection may be what failed.
                reader = None;
                None
            }
            None => None,
        };
        if let Some(stored) = stored {
            snapshot.change(|s| {
                s.stored = stored;
                s.read_at = Some(Instant::now());
            });
        }
        std::thread::sleep(SNAPSHOT_EVERY);
    }
}

/// An HTTP/1.1 response that closes the connection.
fn response(status: u16, reason: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let challenge = if status == 401 {
        "WWW-Authenticate: Basic realm=\"messenger admin\"\r\n"
    } else {
        ""
    };
    let mut bytes = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{challenge}\
         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(body.as_bytes());
    }
    bytes
}

impl Frontend for Admin {
    fn name(&self) -> &'static str {
        "admin"
    }

    fn read_limit(&self) -> usize {
        MAX_HEAD
    }

    fn frame(&self, input: &Input) -> Framing {
        match input.buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(end) => Framing::Complete(end + 4),
            None if input.buf.len() >= MAX_HEAD => Framing::Refuse(
                Reply::bytes(response(
                    431,
                    "Request Header Fields Too Large",
                    "text/plain",
                    "request head over 8 KiB\n",
                    false,
                ))
                .diagnostic("admin: a request head over 8 KiB refused"),
            ),
            None if input.eof => Framing::Close("it ended inside its request".into()),
            None => Framing::Incomplete,
        }
    }

    fn apply(
        &mut self,
        request: &[u8],
        caller: &Caller,
        core: &mut Core,
        _now: Instant,
    ) -> Applied {
        let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split(' ');
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let head_only = method == "HEAD";
        if let Some(token) = &self.token {
            if !authorized(&String::from_utf8_lossy(request), token) {
                let answer = response(
                    401,
                    "Unauthorized",
                    "text/plain",
                    "this page needs the admin token\n",
                    head_only,
                );
                return Applied::read_only(Reply::bytes(answer).diagnostic(format!(
                    "admin: a request from {} without the token",
                    caller.peer
                )));
            }
        }
        let answer = match (method, path) {
            ("GET" | "HEAD", "/metrics") => {
                let (stored, _) = self.stored();
                if let Some(depths) = core.storage_queue_depths() {
                    self.metrics.storage_queues(depths);
                }
                response(
                    200,
                    "OK",
                    crate::metrics::CONTENT_TYPE,
                    &self.metrics.render(stored.pending, stored.messenger_online),
                    head_only,
                )
            }
            ("GET" | "HEAD", "/") => {
                let status = self.status(core);
                response(
                    200,
                    "OK",
                    "text/html; charset=utf-8",
                    &status_page(&status),
                    head_only,
                )
            }
            ("GET" | "HEAD", "/status.json") => {
                let status = self.status(core);
                let json = serde_json::to_string_pretty(&status).unwrap_or_default();
                response(200, "OK", "application/json", &json, head_only)
            }
            ("GET" | "HEAD", _) => response(
                404,
                "Not Found",
                "text/plain",
                "not found: try /, /status.json or /metrics\n",
                head_only,
            ),
            _ => response(
                405,
                "Method Not Allowed",
                "text/plain",
                "only GET and HEAD\n",
                false,
            ),
        };
        Applied::read_only(Reply::bytes(answer))
    }
}

/// What only the database knows.
#[derive(Default, Clone)]
struct Stored {
    pending: i64,
    messenger_online: i64,
    pending_by_recipient: Vec<(String, i64)>,
    rooms: Vec<(String, i64)>,
    database_bytes: Option<i64>,
    wal_bytes: Option<i64>,
    nodes: Vec<Node>,
}

/// A server node on the shared PostgreSQL database: its reactor's connection.
#[derive(Default, Clone, serde::Serialize)]
struct Node {
    /// The backend process id of its connection (what the node calls itself on the bus).
    id: i32,
    /// The address it connects from (None: a Unix socket).
    address: Option<String>,
    /// When it connected, in Unix seconds.
    since: i64,
}

/// The page's own read-only connection to the database.
enum Reader {
    Sqlite(rusqlite::Connection),
    Postgres(postgres::Client),
}

impl Reader {
    fn open(db: &Database) -> Result<Reader, String> {
        match db {
            Database::Sqlite(path) => {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .map_err(|e| e.to_string())?;
                conn.busy_timeout(Duration::from_secs(1))
                    .map_err(|e| e.to_string())?;
                Ok(Reader::Sqlite(conn))
            }
            Database::Postgres(url) => {
                let mut client = crate::storage::open_postgres(url).map_err(|e| e.to_string())?;
                client
                    .batch_execute(
                        "SET default_transaction_read_only = on; SET statement_timeout = '1s';
                         SET application_name = 'messenger admin'",
                    )
                    .map_err(|e| e.to_string())?;
                Ok(Reader::Postgres(client))
            }
        }
    }

    /// `(name, count)` rows of `sql`, whose one parameter (`$1`) is a row limit.
    fn rows(&mut self, sql: &str, limit: usize) -> Result<Vec<(String, i64)>, String> {
        match self {
            Reader::Sqlite(conn) => {
                let mut stmt = conn.prepare_cached(sql).map_err(|e| e.to_string())?;
                let rows = stmt
                    .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(|e| e.to_string())?;
                rows.collect::<rusqlite::Result<_>>()
                    .map_err(|e| e.to_string())
            }
            Reader::Postgres(client) => Ok(client
                .query(sql, &[&(limit as i64)])
                .map_err(|e| e.to_string())?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect()),
        }
    }

    fn count(&mut self, sql: &str) -> Result<i64, String> {
        match self {
            Reader::Sqlite(conn) => conn
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| e.to_string()),
            Reader::Postgres(client) => client
                .query_one(sql, &[])
                .map(|r| r.get(0))
                .map_err(|e| e.to_string()),
        }
    }

    /// The database's size and its WAL's: the files of SQLite; PostgreSQL's own figures
    /// (the WAL's only for a role allowed `pg_ls_waldir`).
    fn sizes(&mut self) -> (Option<i64>, Option<i64>) {
        match self {
            Reader::Sqlite(conn) => {
                let size = |path: String| std::fs::metadata(path).ok().map(|m| m.len() as i64);
                let path = conn.path().unwrap_or_default().to_string();
                (size(path.clone()), size(format!("{path}-wal")))
            }
            Reader::Postgres(client) => {
                let mut one = |sql: &str| {
                    client
                        .query_one(sql, &[])
                        .ok()
                        .and_then(|r| r.get::<_, Option<i64>>(0))
                };
                (
                    one("SELECT pg_database_size(current_database())"),
                    one("SELECT sum(size)::bigint FROM pg_ls_waldir()"),
                )
            }
        }
    }

    /// The nodes on PostgreSQL: each one's reactor connection (`application_name` is
    /// `messenger`).
    fn nodes(&mut self) -> Vec<Node> {
        let Reader::Postgres(client) = self else {
            return Vec::new();
        };
        client
            .query(
                "SELECT pid, host(client_addr), extract(epoch FROM backend_start)::bigint
                 FROM pg_stat_activity
                 WHERE application_name = 'messenger' AND datname = current_database()
                 ORDER BY backend_start LIMIT 100",
                &[],
            )
            .map(|rows| {
                rows.iter()
                    .map(|r| Node {
                        id: r.get(0),
                        address: r.get(1),
                        since: r.get(2),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn stored(&mut self) -> Result<Stored, String> {
        let (database_bytes, wal_bytes) = self.sizes();
        let nodes = self.nodes();
        Ok(Stored {
            database_bytes,
            wal_bytes,
            nodes,
            // The sizes the database keeps per recipient, never a count of the mailbox: a sum
            // over the recipients with mail (on PostgreSQL as of the last fold, a second ago
            // at most: migrations/postgres/0006_mailbox_sizes.sql).
            pending: self
                .count("SELECT CAST(coalesce(sum(messages), 0) AS BIGINT) FROM mailbox_sizes")?,
            messenger_online: self.count("SELECT count(*) FROM users WHERE connected")?,
            pending_by_recipient: self.rows(
                "SELECT recipient, messages FROM mailbox_sizes
                 ORDER BY messages DESC, recipient LIMIT $1",
                PENDING_ROWS,
            )?,
            rooms: self.rows(
                "SELECT r.name, (SELECT count(*) FROM room_messages m WHERE m.room = r.name)
                 FROM rooms r ORDER BY r.seq LIMIT $1",
                ROOM_ROWS,
            )?,
        })
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// What the status page and `/status.json` show, at one moment.
#[derive(serde::Serialize)]
struct Status {
    /// Users online by front-end (the canvas: viewers).
    online: Vec<(&'static str, i64)>,
    /// The first [`ONLINE_NAMES`] people online, in the order they came.
    people: Vec<crate::core::Presence>,
    people_online: usize,
    pending_messages: i64,
    /// The recipients with the most pending messages, most first.
    pending_by_recipient: Vec<(String, i64)>,
    rooms: Vec<RoomStatus>,
    requests_answered: u64,
    requests_per_second_10s: f64,
    requests_per_second_60s: f64,
    /// How old the database's figures are, in seconds (read beside the reactor).
    stored_age_seconds: Option<f64>,
    /// The database's size and its write-ahead log's, in bytes (None: not known, or not
    /// allowed to ask).
    database_bytes: Option<i64>,
    wal_bytes: Option<i64>,
    /// The nodes sharing a PostgreSQL database (empty on SQLite).
    nodes: Vec<Node>,
    /// The rates of `metrics::ACTIVITY`, every 10 s over the last hour, oldest first.
    rates_last_hour: Vec<history::Rates>,
}

#[derive(serde::Serialize)]
struct RoomStatus {
    name: String,
    /// Lines stored as its history (None: not in the last snapshot yet).
    messages: Option<i64>,
    /// Its first [`ROOM_MEMBERS`] members on this node.
    members: Vec<String>,
}

impl Status {
    fn now(
        metrics: &Metrics,
        stored: &(Stored, Option<Instant>),
        core: &Core,
        history: &history::History,
    ) -> Status {
        let (stored, read_at) = stored;
        let activity = metrics.activity();
        let now = (std::time::SystemTime::now(), activity);
        // Messenger requests are the first of `metrics::ACTIVITY`.
        let requests_per_second = |window| history.rates_since(now, window)[0];
        let mut online = vec![("messenger", stored.messenger_online)];
        online.extend(
            SESSION_FRONTENDS
                .iter()
                .map(|frontend| (*frontend, metrics.sessions(frontend))),
        );
        // The rooms the snapshot of the database lists; before its first read, the core's.
        let rooms: Vec<(String, Option<i64>)> = if read_at.is_some() {
            stored
                .rooms
                .iter()
                .map(|(name, count)| (name.clone(), Some(*count)))
                .collect()
        } else {
            core.room_names(ROOM_ROWS)
                .into_iter()
                .map(|name| (name, None))
                .collect()
        };
        let rooms = rooms
            .into_iter()
            .map(|(name, messages)| RoomStatus {
                members: core.members_of(&name, ROOM_MEMBERS),
                name,
                messages,
            })
            .collect();
        Status {
            online,
            people: core.presences(ONLINE_NAMES),
            people_online: core.online_count(),
            pending_messages: stored.pending,
            pending_by_recipient: stored.pending_by_recipient.clone(),
            rooms,
            requests_answered: activity[0],
            requests_per_second_10s: requests_per_second(Duration::from_secs(10)),
            requests_per_second_60s: requests_per_second(Duration::from_secs(60)),
            stored_age_seconds: read_at.map(|at| at.elapsed().as_secs_f64()),
            database_bytes: stored.database_bytes,
            wal_bytes: stored.wal_bytes,
            nodes: stored.nodes.clone(),
            rates_last_hour: history.rates(),
        }
    }
}

/// When, in UTC, as `YYYY-MM-DD HH:MM:SS` (the console's timestamp to the second).
fn utc(at: std::time::SystemTime) -> String {
    crate::console::timestamp(at)
        .get(..19)
        .unwrap_or_default()
        .replace('T', " ")
}

/// The status page: the same as `/status.json`, as HTML that refreshes itself every 5 s.
fn status_page(status: &Status) -> String {
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>Messenger status</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}</style></head><body>\
         <h1>Messenger status</h1>",
    );
    let _ = write!(
        page,
        "<h2>Online</h2><table id=\"online\"><tr><th>front-end</th><th>users</th></tr>"
    );
    for (frontend, count) in &status.online {
        let label = if *frontend == "canvas" {
            "canvas (viewers)"
        } else {
            frontend
        };
        let _ = write!(page, "<tr><td>{label}</td><td>{count}</td></tr>");
    }
    let _ = write!(
        page,
        "</table><h2>Who ({} online{})</h2><table id=\"people\"><tr><th>name</th><th>front-end</th>\
         <th>since (UTC)</th><th>address</th><th>room</th><th>node</th></tr>",
        status.people_online,
        if status.people_online > status.people.len() {
            format!(", the first {}", status.people.len())
        } else {
            String::new()
        }
    );
    for person in &status.people {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&person.name),
            person.frontend,
            person.since.map(utc).unwrap_or_default(),
            person.address.map(|a| a.to_string()).unwrap_or_default(),
            escape(person.room.as_deref().unwrap_or("")),
            person.node.map(|n| n.to_string()).unwrap_or_default(),
        );
    }
    let _ = write!(
        page,
        "</table><h2>Pending messages: {}</h2><table id=\"pending\"><tr><th>recipient</th><th>waiting</th></tr>",
        status.pending_messages
    );
    for (recipient, count) in &status.pending_by_recipient {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{count}</td></tr>",
            escape(recipient)
        );
    }
    let _ = write!(
        page,
        "</table><h2>Rooms</h2><table id=\"rooms\"><tr><th>room</th><th>messages</th><th>members here</th></tr>"
    );
    for room in &status.rooms {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&room.name),
            room.messages.map(|n| n.to_string()).unwrap_or_default(),
            escape(&room.members.join(", "))
        );
    }
    let _ = write!(
        page,
        "</table><h2>The last hour</h2>{}",
        history::svg(&status.rates_last_hour, std::time::SystemTime::now())
    );
    let bytes = |b: Option<i64>| {
        b.map_or("?".to_string(), |b| {
            format!("{:.1} MiB", b as f64 / 1048576.0)
        })
    };
    let _ = write!(
        page,
        "<h2>Database</h2><p id=\"database\">{} (write-ahead log: {})</p>",
        bytes(status.database_bytes),
        bytes(status.wal_bytes)
    );
    if !status.nodes.is_empty() {
        let _ = write!(
            page,
            "<h2>Nodes ({})</h2><table id=\"nodes\"><tr><th>node</th><th>address</th><th>since (UTC)</th></tr>",
            status.nodes.len()
        );
        for node in &status.nodes {
            let since = std::time::UNIX_EPOCH + Duration::from_secs(node.since.max(0) as u64);
            let _ = write!(
                page,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                node.id,
                escape(node.address.as_deref().unwrap_or("local socket")),
                utc(since)
            );
        }
        page.push_str("</table>");
    }
    let _ = write!(
        page,
        "<h2>Messenger requests</h2><p id=\"rates\">{} answered; {:.1}/s over the last 10 s, {:.1}/s over the last minute.</p>\
         <p><a href=\"/status.json\">/status.json</a> · <a href=\"/metrics\">/metrics</a></p></body></html>",
        status.requests_answered,
        status.requests_per_second_10s,
        status.requests_per_second_60s,
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_writes_the_calendar_date_and_time() {
        let at = |seconds| std::time::UNIX_EPOCH + Duration::from_secs(seconds);
        assert_eq!(utc(at(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(at(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(utc(at(1_796_601_599)), "2026-12-06 23:59:59");
    }

    #[test]
    fn a_request_carries_the_token_as_a_bearer_or_a_basic_password() {
        let with = |header: &str| format!("GET / HTTP/1.1\r\nHost: x\r\n{header}\r\n\r\n");
        assert!(authorized(&with("Authorization: Bearer s3cret"), "s3cret"));
        assert!(authorized(&with("authorization: bearer s3cret"), "s3cret"));
        // "op:s3cret"
        assert!(authorized(
            &with("Authorization: Basic b3A6czNjcmV0"),
            "s3cret"
        ));
        assert!(!authorized(&with("Authorization: Bearer s3cre"), "s3cret"));
        assert!(!authorized(
            &with("Authorization: Bearer s3cretx"),
            "s3cret"
        ));
        assert!(!authorized(&with("Authorization: Basic !!!"), "s3cret"));
        assert!(!authorized(&with("X-Other: Bearer s3cret"), "s3cret"));
        assert!(!authorized(
            "GET /?Authorization: Bearer s3cret HTTP/1.1\r\n\r\n",
            "s3cret"
        ));
    }

    #[test]
    fn a_non_loopback_address_needs_a_token_file() {
        let open: std::net::SocketAddr = "0.0.0.0:9100".parse().unwrap();
        let loopback: std::net::SocketAddr = "127.0.0.1:9100".parse().unwrap();
        assert!(token(Some(open), None)
            .unwrap_err()
            .contains("--admin-token-file"));
        assert_eq!(token(Some(loopback), None), Ok(None));
        assert_eq!(token(None, None), Ok(None));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        assert_eq!(token(Some(open), Some(&file)), Ok(Some("s3cret".into())));
        std::fs::write(&file, "\n").unwrap();
        assert!(token(Some(open), Some(&file)).is_err());
    }
}
