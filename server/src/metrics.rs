//! The server's metrics for `--admin-addr`'s `/metrics`, kept in a `prometheus-client`
//! registry and written in the Prometheus text format (0.0.4): counters, gauges and a
//! histogram the reactor, the core, the accounts and the syncer bump through atomics, so
//! watching the server never makes it wait. Every family is registered once at start-up with
//! its HELP; a label's values are fixed lists (front-ends, operations, reasons), so no client
//! can grow the exposition. The messenger's families keep the names and labels dashboards
//! already use.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The messenger's operations, as the requests counter labels them.
pub const OPS: [&str; 10] = [
    "REGISTER",
    "UNREGISTER",
    "CONNECT",
    "DISCONNECT",
    "SEND",
    "SENDATTACH",
    "CONNECTEDUSERS",
    "USERS",
    "SETPASSWORD",
    "CONNECTTLS",
];

/// Front-ends with sessions, as the online gauge labels them (the messenger's online users
/// are counted in the database).
pub const SESSION_FRONTENDS: [&str; 3] = ["chat", "rooms", "canvas"];

/// How a push or a session delivery ended.
pub const PUSH_RESULTS: [&str; 4] = ["delivered", "failed", "retried", "cancelled"];

/// What a message written to a session is, as the deliveries counter labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Private,
    Broadcast,
    RoomLine,
    RoomEvent,
    UserList,
    Canvas,
}

impl Delivery {
    /// Every kind, in the order of the enum (the counters' index).
    const ALL: [Delivery; 6] = [
        Delivery::Private,
        Delivery::Broadcast,
        Delivery::RoomLine,
        Delivery::RoomEvent,
        Delivery::UserList,
        Delivery::Canvas,
    ];

    fn label(self) -> &'static str {
        match self {
            Delivery::Private => "private",
            Delivery::Broadcast => "broadcast",
            Delivery::RoomLine => "room_line",
            Delivery::RoomEvent => "room_event",
            Delivery::UserList => "user_list",
            Delivery::Canvas => "canvas",
        }
    }
}

/// What a message taken in is, as the messages counter labels it.
pub const MESSAGE_KINDS: [&str; 4] = ["private", "broadcast", "room_line", "paint"];

/// What the status page's chart follows, in [`Metrics::activity`]'s order.
pub const ACTIVITY: [&str; 4] = [
    "messenger requests",
    "chat deliveries",
    "rooms deliveries",
    "canvas deliveries",
];

/// The storage workers' queues (PostgreSQL), as the queue gauge labels them.
const STORAGE_QUEUES: [&str; 3] = ["mail", "requests", "ordered"];

/// Upper bounds of the fsync and commit histograms, in seconds.
const FSYNC_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Why a request was refused, as the refusals counter labels it.
pub const REFUSALS: [&str; 7] = [
    "mailbox_full",
    "new_names_per_minute",
    "flood",
    "password_checks_busy",
    "name_taken",
    // A turn's writes rolled back: the database is full, or it failed otherwise.
    "database_full",
    "storage_failed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    op: &'static str,
    result: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Frontend {
    frontend: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontendKind {
    frontend: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Result_ {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Connection {
    connection: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Direction {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Queue {
    queue: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

/// The registry and a handle on each of its series, taken once so that bumping one is an
/// atomic add, never a look-up.
pub struct Metrics {
    registry: Registry,
    requests: Vec<Vec<Counter>>,
    pushes: Vec<Counter>,
    /// Sessions online per front-end of [`SESSION_FRONTENDS`], then the messenger's (set
    /// from the database's snapshot).
    online: Vec<Gauge>,
    messenger_online: Gauge,
    pending: Gauge,
    logins: Vec<Counter>,
    login_failures: Vec<Counter>,
    deliveries: Vec<Vec<Counter>>,
    bytes_written: Vec<Counter>,
    slow_consumers: Vec<Counter>,
    broadcasts_dropped: Vec<Counter>,
    rate_limited: Vec<Counter>,
    refusals: Vec<Counter>,
    auth_failures: Vec<Counter>,
    /// TLS handshakes finished, and TLS connections closed before theirs finished.
    tls_handshakes: [Counter; 2],
    fsync: Histogram,
    commit: Histogram,
    messages: Vec<Counter>,
    /// Events heard from the other nodes, and published to them.
    bus_events: [Counter; 2],
    storage_queue: Vec<Gauge>,
    /// Connections to PostgreSQL made again: the reactor's, the storage workers'.
    reconnections: [Counter; 2],
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// Registers a family labelled by one fixed list of values, and returns its series in that
/// list's order.
fn series<L, M>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: &[&'static str],
    label: impl Fn(&'static str) -> L,
) -> Vec<M>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
    M: prometheus_client::metrics::TypedMetric
        + prometheus_client::encoding::EncodeMetric
        + Default
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let family = Family::<L, M>::default();
    registry.register(name, help, family.clone());
    values
        .iter()
        .map(|value| family.get_or_create(&label(value)).clone())
        .collect()
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests_family = Family::<Request, Counter>::default();
        registry.register(
            "messenger_requests",
            "Messenger requests answered, by operation and result code",
            requests_family.clone(),
        );
        let requests = OPS
            .iter()
            .map(|op| {
                (0..4)
                    .map(|result| {
                        requests_family
                            .get_or_create(&Request { op, result })
                            .clone()
                    })
                    .collect()
            })
            .collect();
        let pending = Gauge::default();
        registry.register(
            "messenger_pending_messages",
            "Messages waiting for their recipients",
            pending.clone(),
        );
        let mut online_fronts = vec!["messenger"];
        online_fronts.extend(SESSION_FRONTENDS);
        let mut online: Vec<Gauge> = series(
            &mut registry,
            "messenger_online_users",
            "Users online, by front-end (canvas: viewers)",
            &online_fronts,
            |frontend| Frontend { frontend },
        );
        let messenger_online = online.remove(0);
        let pushes = series(
            &mut registry,
            "messenger_pushes",
            "Deliveries of stored messages, by how they ended",
            &PUSH_RESULTS,
            |result| Result_ { result },
        );
        let fsync = Histogram::new(FSYNC_BUCKETS);
        registry.register(
            "messenger_fsync_seconds",
            "Time the syncer's fdatasync of the WAL took",
            fsync.clone(),
        );
        let broadcasts_dropped = series(
            &mut registry,
            "messenger_broadcasts_dropped",
            "Broadcasts dropped for sessions that read slower than they came, by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let rate_limited = series(
            &mut registry,
            "messenger_rate_limited",
            "Times a session went over its request rate and was slowed down, by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let refusals = series(
            &mut registry,
            "messenger_refusals",
            "Requests refused by a limit, by reason",
            &REFUSALS,
            |reason| Reason { reason },
        );
        let auth_failures = series(
            &mut registry,
            "messenger_auth_failures",
            "Requests refused by the accounts: a missing or wrong password or room key, a \
             throttled address, a busy password checker, an address that may not act for the \
             user, by reason",
            &crate::accounts::DENIALS.map(crate::accounts::Denial::label),
            |reason| Reason { reason },
        );
        let handshakes: Vec<Counter> = series(
            &mut registry,
            "messenger_tls_handshakes",
            "TLS handshakes on the TLS ports: finished, or failed (a bad handshake, plaintext, \
             a stall to the deadline)",
            &["finished", "failed"],
            |result| Result_ { result },
        );
        let logins = series(
            &mut registry,
            "messenger_session_logins",
            "Sessions established (a login accepted; on the canvas, a viewer), by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let login_failures = series(
            &mut registry,
            "messenger_session_login_failures",
            "Logins refused (a name in use, a wrong or missing password, too many new names \
             from one address), by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let deliveries_family = Family::<FrontendKind, Counter>::default();
        registry.register(
            "messenger_session_deliveries",
            "Messages queued to sessions' connections, by front-end and kind (a room line to \
             a room of 1000 counts 999)",
            deliveries_family.clone(),
        );
        let deliveries = SESSION_FRONTENDS
            .iter()
            .map(|frontend| {
                Delivery::ALL
                    .iter()
                    .map(|kind| {
                        let labels = FrontendKind {
                            frontend,
                            kind: kind.label(),
                        };
                        deliveries_family.get_or_create(&labels).clone()
                    })
                    .collect()
            })
            .collect();
        let bytes_written = series(
            &mut registry,
            "messenger_session_written_bytes",
            "Bytes written to sessions' connections (before TLS), by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let slow_consumers = series(
            &mut registry,
            "messenger_slow_consumers_disconnected",
            "Sessions disconnected because more than --session-buffer-bytes waited for them, \
             by front-end",
            &SESSION_FRONTENDS,
            |frontend| Frontend { frontend },
        );
        let messages = series(
            &mut registry,
            "messenger_messages",
            "Messages taken in and stored, by kind: private (a SEND, or a chat or rooms \
             private message), broadcast (chat), room_line (rooms), paint (canvas)",
            &MESSAGE_KINDS,
            |kind| Kind { kind },
        );
        let commit = Histogram::new(FSYNC_BUCKETS);
        registry.register(
            "messenger_commit_seconds",
            "Time the reactor's commit of a turn's writes took (SQLite: without the fsync, \
             which the syncer does; PostgreSQL: the round trip)",
            commit.clone(),
        );
        let bus: Vec<Counter> = series(
            &mut registry,
            "messenger_bus_events",
            "Events between the nodes on a shared PostgreSQL database: heard from the others \
             (in), published to them (out)",
            &["in", "out"],
            |direction| Direction { direction },
        );
        let storage_queue = series(
            &mut registry,
            "messenger_storage_queue_jobs",
            "Jobs waiting for the storage workers (PostgreSQL), by queue: mail (sends, \
             deliveries), requests (the others), ordered (per recipient or room)",
            &STORAGE_QUEUES,
            |queue| Queue { queue },
        );
        let reconnections: Vec<Counter> = series(
            &mut registry,
            "messenger_database_reconnections",
            "Connections to PostgreSQL made again after they were lost, by whose: the \
             reactor's, or a storage worker's",
            &["reactor", "worker"],
            |connection| Connection { connection },
        );
        let build = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        registry.register("messenger_build", "The server's build", build);
        let started = Gauge::<f64, AtomicU64>::default();
        started.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            started,
        );
        Metrics {
            registry,
            requests,
            pushes,
            online,
            messenger_online,
            pending,
            logins,
            login_failures,
            deliveries,
            bytes_written,
            slow_consumers,
            broadcasts_dropped,
            rate_limited,
            refusals,
            auth_failures,
            tls_handshakes: [handshakes[0].clone(), handshakes[1].clone()],
            fsync,
            commit,
            messages,
            bus_events: [bus[0].clone(), bus[1].clone()],
            storage_queue,
            reconnections: [reconnections[0].clone(), reconnections[1].clone()],
        }
    }

    /// A connection to PostgreSQL was made again: the reactor's, or a worker's.
    pub fn reconnected(&self, reactor: bool) {
        self.reconnections[usize::from(!reactor)].inc();
    }

    /// A message of `kind` (one of [`MESSAGE_KINDS`]) was taken in.
    pub fn message(&self, kind: &str) {
        debug_assert!(MESSAGE_KINDS.contains(&kind), "unknown message kind {kind}");
        if let Some(n) = MESSAGE_KINDS.iter().position(|k| *k == kind) {
            self.messages[n].inc();
        }
    }

    pub fn observe_commit(&self, took: Duration) {
        self.commit.observe(took.as_secs_f64());
    }

    /// `count` events heard from the other nodes (`heard`), or published to them.
    pub fn bus_events(&self, heard: bool, count: u64) {
        self.bus_events[usize::from(!heard)].inc_by(count);
    }

    /// The storage workers' queues as they are now.
    pub fn storage_queues(&self, depths: [(&'static str, usize); 3]) {
        for (queue, depth) in depths {
            if let Some(n) = STORAGE_QUEUES.iter().position(|q| *q == queue) {
                self.storage_queue[n].set(depth as i64);
            }
        }
    }

    /// A messenger request answered with result code `code`.
    pub fn request(&self, op: &str, code: u8) {
        let counter = OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|op| self.requests[op].get(usize::from(code)));
        if let Some(counter) = counter {
            counter.inc();
        }
    }

    pub fn push(&self, result: &str) {
        if let Some(n) = PUSH_RESULTS.iter().position(|r| *r == result) {
            self.pushes[n].inc();
        }
    }

    /// A session of `frontend` started (`+1`: a login too) or ended (`-1`).
    pub fn session(&self, frontend: &str, change: i64) {
        if let Some(n) = session_frontend(frontend) {
            self.online[n].inc_by(change);
            if change > 0 {
                self.logins[n].inc_by(change as u64);
            }
        }
    }

    /// A login to a session of `frontend` was refused.
    pub fn login_failed(&self, frontend: &str) {
        if let Some(n) = session_frontend(frontend) {
            self.login_failures[n].inc();
        }
    }

    /// A message of `kind` was queued to a session of the front-end at `frontend` (its index
    /// by [`session_frontend`]): an add, as the fan-out does it for every member.
    pub fn delivered(&self, frontend: usize, kind: Delivery) {
        self.deliveries[frontend][kind as usize].inc();
    }

    /// `bytes` were written to a session of the front-end at `frontend`.
    pub fn written(&self, frontend: usize, bytes: u64) {
        self.bytes_written[frontend].inc_by(bytes);
    }

    /// A session of the front-end at `frontend` was disconnected for not reading what it
    /// was sent.
    pub fn slow_consumer(&self, frontend: usize) {
        self.slow_consumers[frontend].inc();
    }

    /// `count` broadcasts to a client of `frontend` that read too slowly were dropped.
    pub fn broadcasts_dropped(&self, frontend: &str, count: u64) {
        if let Some(n) = session_frontend(frontend) {
            self.broadcasts_dropped[n].inc_by(count);
        }
    }

    /// A client of `frontend` went over its request rate and was slowed down.
    pub fn rate_limited(&self, frontend: &str) {
        if let Some(n) = session_frontend(frontend) {
            self.rate_limited[n].inc();
        }
    }

    /// A request was refused for `reason` (one of [`REFUSALS`]).
    pub fn refused(&self, reason: &str) {
        debug_assert!(REFUSALS.contains(&reason), "unknown refusal {reason}");
        if let Some(n) = REFUSALS.iter().position(|r| *r == reason) {
            self.refusals[n].inc();
        }
    }

    /// A request was refused on the accounts' account (`accounts::Denial::label`).
    pub fn auth_failure(&self, reason: &str) {
        let labels = crate::accounts::DENIALS.map(crate::accounts::Denial::label);
        if let Some(n) = labels.iter().position(|r| *r == reason) {
            self.auth_failures[n].inc();
        }
    }

    /// A TLS handshake finished (`true`), or its connection ended before it did.
    pub fn tls_handshake(&self, finished: bool) {
        self.tls_handshakes[usize::from(!finished)].inc();
    }

    pub fn sessions(&self, frontend: &str) -> i64 {
        session_frontend(frontend).map_or(0, |n| self.online[n].get())
    }

    pub fn observe_fsync(&self, took: Duration) {
        self.fsync.observe(took.as_secs_f64());
    }

    /// The counters of [`ACTIVITY`]: messenger requests answered, then messages delivered to
    /// each session front-end's sessions.
    pub fn activity(&self) -> [u64; ACTIVITY.len()] {
        let delivered = |n: usize| self.deliveries[n].iter().map(Counter::get).sum();
        [
            self.requests_total(),
            delivered(0),
            delivered(1),
            delivered(2),
        ]
    }

    /// Requests answered so far, all operations and results.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().map(Counter::get).sum()
    }

    /// The Prometheus text format, with the gauges read from the database by the caller.
    pub fn render(&self, pending: i64, messenger_online: i64) -> String {
        self.pending.set(pending);
        self.messenger_online.set(messenger_online);
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            log::error!("admin: encoding the metrics: {e}");
        }
        out
    }
}

/// The index of `frontend` in [`SESSION_FRONTENDS`]: None for the messenger (whose online
/// users the database counts) and the admin page.
pub fn session_frontend(frontend: &str) -> Option<usize> {
    SESSION_FRONTENDS.iter().position(|f| *f == frontend)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_kind_indexes_its_own_series() {
        for (n, kind) in Delivery::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, n, "{kind:?}");
        }
    }
}
