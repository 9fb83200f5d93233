//! `--admin-addr`: `GET /metrics` in the Prometheus text format and `GET /` a small HTML status
//! page, served by one tiny_http thread of its own. It reads the metrics' atomics and, for what
//! the database knows (pending messages, users online through the messenger, rooms), a
//! read-only connection of its own: in WAL mode SQLite's readers never block the reactor, and
//! PostgreSQL's never block anybody's writes.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::config::Database;
use crate::metrics::{Metrics, SESSION_FRONTENDS};

/// Rows of the pending-messages table on the status page.
const PENDING_ROWS: usize = 20;

/// Rooms listed on the status page.
const ROOM_ROWS: usize = 50;

/// Request counts kept for the status page's recent rates: one a second, a minute's worth.
const RATE_SAMPLES: usize = 60;

/// Binds `addr` and serves until the process ends. Returns the bound address.
pub fn start(addr: SocketAddr, db: Database, metrics: Arc<Metrics>) -> Result<SocketAddr, String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("admin: cannot listen on {addr}: {e}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or("admin: not an IP address")?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || serve(&server, &db, &metrics))
        .map_err(|e| format!("admin: {e}"))?;
    Ok(bound)
}

/// What the database says, read at each request.
#[derive(Default)]
struct Stored {
    pending: i64,
    messenger_online: i64,
    pending_by_recipient: Vec<(String, i64)>,
    rooms: Vec<(String, i64)>,
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

    fn stored(&mut self) -> Result<Stored, String> {
        Ok(Stored {
            pending: self.count("SELECT count(*) FROM pending_messages")?,
            messenger_online: self.count("SELECT count(*) FROM users WHERE connected")?,
            pending_by_recipient: self.rows(
                "SELECT recipient, count(*) AS n FROM pending_messages GROUP BY recipient
                 ORDER BY n DESC, recipient LIMIT $1",
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

fn serve(server: &tiny_http::Server, db: &Database, metrics: &Metrics) {
    let mut reader: Option<Reader> = None;
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::with_capacity(RATE_SAMPLES + 1);
    loop {
        let request = match server.recv_timeout(Duration::from_secs(1)) {
            Ok(request) => request,
            Err(e) => {
                log::error!("admin: {e}");
                return;
            }
        };
        if samples
            .back()
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(1))
        {
            samples.push_back((Instant::now(), metrics.requests_total()));
            if samples.len() > RATE_SAMPLES {
                samples.pop_front();
            }
        }
        let Some(request) = request else { continue };
        if reader.is_none() {
            reader = Reader::open(db)
                .inspect_err(|e| log::warn!("admin: opening the database: {e}"))
                .ok();
        }
        let stored = match reader.as_mut().map(Reader::stored) {
            Some(Ok(stored)) => stored,
            Some(Err(e)) => {
                log::warn!("admin: reading the database: {e}");
                // Opened again at the next request: the connection may be what failed.
                reader = None;
                Stored::default()
            }
            None => Stored::default(),
        };
        let (status, content_type, body) = match (request.method(), request.url()) {
            (tiny_http::Method::Get, "/metrics") => (
                200,
                "text/plain; version=0.0.4",
                metrics.render(stored.pending, stored.messenger_online),
            ),
            (tiny_http::Method::Get, "/") => (
                200,
                "text/html; charset=utf-8",
                status_page(metrics, &stored, &samples),
            ),
            _ => (
                404,
                "text/plain",
                "not found: try / or /metrics\n".to_string(),
            ),
        };
        let header =
            tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
        let response = tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header);
        let _ = request.respond(response);
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Requests per second over the last `window` of samples.
fn rate(samples: &VecDeque<(Instant, u64)>, now: (Instant, u64), window: Duration) -> f64 {
    let Some((at, count)) = samples
        .iter()
        .find(|(at, _)| now.0.duration_since(*at) <= window)
    else {
        return 0.0;
    };
    let seconds = now.0.duration_since(*at).as_secs_f64();
    if seconds < 0.5 {
        return 0.0;
    }
    (now.1 - count) as f64 / seconds
}

fn status_page(metrics: &Metrics, stored: &Stored, samples: &VecDeque<(Instant, u64)>) -> String {
    let now = (Instant::now(), metrics.requests_total());
    let mut page = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Messenger status</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}</style></head><body>\
         <h1>Messenger status</h1>",
    );
    let _ = write!(
        page,
        "<h2>Online</h2><table id=\"online\"><tr><th>front-end</th><th>users</th></tr>\
         <tr><td>messenger</td><td>{}</td></tr>",
        stored.messenger_online
    );
    for frontend in SESSION_FRONTENDS {
        let label = if frontend == "canvas" {
            "canvas (viewers)"
        } else {
            frontend
        };
        let _ = write!(
            page,
            "<tr><td>{label}</td><td>{}</td></tr>",
            metrics.sessions(frontend)
        );
    }
    let _ = write!(
        page,
        "</table><h2>Pending messages: {}</h2><table id=\"pending\"><tr><th>recipient</th><th>waiting</th></tr>",
        stored.pending
    );
    for (recipient, count) in &stored.pending_by_recipient {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{count}</td></tr>",
            escape(recipient)
        );
    }
    let _ = write!(
        page,
        "</table><h2>Rooms</h2><table id=\"rooms\"><tr><th>room</th><th>messages</th></tr>"
    );
    for (room, count) in &stored.rooms {
        let _ = write!(page, "<tr><td>{}</td><td>{count}</td></tr>", escape(room));
    }
    let _ = write!(
        page,
        "</table><h2>Messenger requests</h2><p id=\"rates\">{} answered; {:.1}/s over the last 10 s, {:.1}/s over the last minute.</p>\
         <p><a href=\"/metrics\">/metrics</a></p></body></html>",
        now.1,
        rate(samples, now, Duration::from_secs(10)),
        rate(samples, now, Duration::from_secs(60)),
    );
    page
}
