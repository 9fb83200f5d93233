//! Counters and gauges for `--admin-addr`: plain atomics that the reactor and the syncer bump
//! and the admin thread reads, so watching the server never makes it wait.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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

/// Upper bounds of the fsync histogram, in seconds.
const FSYNC_BUCKETS: [f64; 10] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0,
];

/// Why a request was refused, as the refusals counter labels it.
pub const REFUSALS: [&str; 4] = [
    "mailbox_full",
    "new_names_per_minute",
    "flood",
    "password_checks_busy",
];

#[derive(Default)]
pub struct Metrics {
    broadcasts_dropped: [AtomicU64; SESSION_FRONTENDS.len()],
    rate_limited: [AtomicU64; SESSION_FRONTENDS.len()],
    refusals: [AtomicU64; REFUSALS.len()],
    auth_failures: [AtomicU64; crate::accounts::DENIALS.len()],
    /// TLS handshakes finished, and TLS connections closed before theirs finished.
    tls_handshakes: [AtomicU64; 2],
    requests: [[AtomicU64; 4]; OPS.len()],
    pushes: [AtomicU64; PUSH_RESULTS.len()],
    sessions: [AtomicI64; SESSION_FRONTENDS.len()],
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS.len()],
    fsync_count: AtomicU64,
    fsync_micros: AtomicU64,
}

impl Metrics {
    /// A messenger request answered with result code `code`.
    pub fn request(&self, op: &str, code: u8) {
        let counter = OPS
            .iter()
            .position(|o| *o == op)
            .and_then(|op| self.requests[op].get(usize::from(code)));
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn push(&self, result: &str) {
        if let Some(n) = PUSH_RESULTS.iter().position(|r| *r == result) {
            self.pushes[n].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A session of `frontend` started (`+1`) or ended (`-1`).
    pub fn session(&self, frontend: &str, change: i64) {
        if let Some(n) = SESSION_FRONTENDS.iter().position(|f| *f == frontend) {
            self.sessions[n].fetch_add(change, Ordering::Relaxed);
        }
    }

    /// `count` broadcasts to a client of `frontend` that read too slowly were dropped.
    pub fn broadcasts_dropped(&self, frontend: &str, count: u64) {
        if let Some(n) = SESSION_FRONTENDS.iter().position(|f| *f == frontend) {
            self.broadcasts_dropped[n].fetch_add(count, Ordering::Relaxed);
        }
    }

    /// A client of `frontend` went over its request rate and was slowed down.
    pub fn rate_limited(&self, frontend: &str) {
        if let Some(n) = SESSION_FRONTENDS.iter().position(|f| *f == frontend) {
            self.rate_limited[n].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request was refused for `reason` (one of [`REFUSALS`]).
    pub fn refused(&self, reason: &str) {
        debug_assert!(REFUSALS.contains(&reason), "unknown refusal {reason}");
        if let Some(n) = REFUSALS.iter().position(|r| *r == reason) {
            self.refusals[n].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request was refused on the accounts' account (`accounts::Denial::label`).
    pub fn auth_failure(&self, reason: &str) {
        let labels = crate::accounts::DENIALS.map(crate::accounts::Denial::label);
        if let Some(n) = labels.iter().position(|r| *r == reason) {
            self.auth_failures[n].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A TLS handshake finished (`true`), or its connection ended before it did.
    pub fn tls_handshake(&self, finished: bool) {
        self.tls_handshakes[usize::from(!finished)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn sessions(&self, frontend: &str) -> i64 {
        SESSION_FRONTENDS
            .iter()
            .position(|f| *f == frontend)
            .map_or(0, |n| self.sessions[n].load(Ordering::Relaxed))
    }

    pub fn observe_fsync(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bound, bucket) in FSYNC_BUCKETS.iter().zip(&self.fsync_buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.fsync_count.fetch_add(1, Ordering::Relaxed);
        self.fsync_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// Requests answered so far, all operations and results.
    pub fn requests_total(&self) -> u64 {
        self.requests
            .iter()
            .flatten()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The Prometheus text format, with the gauges read from the database by the caller.
    pub fn render(&self, pending: i64, messenger_online: i64) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP messenger_requests_total Messenger requests answered, by operation and result code.");
        let _ = writeln!(out, "# TYPE messenger_requests_total counter");
        for (op, results) in OPS.iter().zip(&self.requests) {
            for (code, counter) in results.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "messenger_requests_total{{op=\"{op}\",result=\"{code}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP messenger_pending_messages Messages waiting for their recipients."
        );
        let _ = writeln!(out, "# TYPE messenger_pending_messages gauge");
        let _ = writeln!(out, "messenger_pending_messages {pending}");
        let _ = writeln!(
            out,
            "# HELP messenger_online_users Users online, by front-end (canvas: viewers)."
        );
        let _ = writeln!(out, "# TYPE messenger_online_users gauge");
        let _ = writeln!(
            out,
            "messenger_online_users{{frontend=\"messenger\"}} {messenger_online}"
        );
        for frontend in SESSION_FRONTENDS {
            let _ = writeln!(
                out,
                "messenger_online_users{{frontend=\"{frontend}\"}} {}",
                self.sessions(frontend)
            );
        }
        let _ = writeln!(
            out,
            "# HELP messenger_pushes_total Deliveries of stored messages, by how they ended."
        );
        let _ = writeln!(out, "# TYPE messenger_pushes_total counter");
        for (result, counter) in PUSH_RESULTS.iter().zip(&self.pushes) {
            let _ = writeln!(
                out,
                "messenger_pushes_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP messenger_fsync_seconds Time the syncer's fdatasync of the WAL took."
        );
        let _ = writeln!(out, "# TYPE messenger_fsync_seconds histogram");
        for (bound, bucket) in FSYNC_BUCKETS.iter().zip(&self.fsync_buckets) {
            let _ = writeln!(
                out,
                "messenger_fsync_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.fsync_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "messenger_fsync_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "messenger_fsync_seconds_sum {}",
            self.fsync_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "messenger_fsync_seconds_count {count}");
        let labelled = [
            (
                "messenger_broadcasts_dropped_total",
                "Broadcasts dropped for sessions that read slower than they came, by front-end.",
                &self.broadcasts_dropped,
            ),
            (
                "messenger_rate_limited_total",
                "Times a session went over its request rate and was slowed down, by front-end.",
                &self.rate_limited,
            ),
        ];
        for (name, help, counters) in labelled {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (frontend, counter) in SESSION_FRONTENDS.iter().zip(counters) {
                let _ = writeln!(
                    out,
                    "{name}{{frontend=\"{frontend}\"}} {}",
                    counter.load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP messenger_refusals_total Requests refused by a limit, by reason."
        );
        let _ = writeln!(out, "# TYPE messenger_refusals_total counter");
        for (reason, counter) in REFUSALS.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "messenger_refusals_total{{reason=\"{reason}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP messenger_auth_failures_total Requests refused by the accounts: a missing \
             or wrong password or room key, a throttled address, a busy password checker, an \
             address that may not act for the user, by reason."
        );
        let _ = writeln!(out, "# TYPE messenger_auth_failures_total counter");
        for (denial, counter) in crate::accounts::DENIALS.iter().zip(&self.auth_failures) {
            let _ = writeln!(
                out,
                "messenger_auth_failures_total{{reason=\"{}\"}} {}",
                denial.label(),
                counter.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP messenger_tls_handshakes_total TLS handshakes on the TLS ports: finished, \
             or failed (a bad handshake, plaintext, a stall to the deadline)."
        );
        let _ = writeln!(out, "# TYPE messenger_tls_handshakes_total counter");
        for (result, counter) in ["finished", "failed"].iter().zip(&self.tls_handshakes) {
            let _ = writeln!(
                out,
                "messenger_tls_handshakes_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        out
    }
}
