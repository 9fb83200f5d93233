//! Flood control of persistent sessions: a token bucket per connection, as IRC servers' flood
//! limits and fakelag work.
//!
//! Every request a session makes takes a token; tokens come back at `rate` a second up to
//! `burst`. A session without a token is not read until one comes back (it is slowed, and
//! its bytes wait in the kernel, which pushes back on the client); the first time it is told
//! so with its protocol's error; a session that stays behind for `disconnect_after` (its
//! requests never caught up with it) is disconnected. A client that types, pastes a few
//! lines or paints a drag never notices; one that floods costs everybody else nothing more
//! than its rate.

use std::time::{Duration, Instant};

/// A front-end's flood limits (`--flood-rate`, `--flood-burst`, `--flood-disconnect-secs` and
/// the canvas's own).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Requests a second a session may keep up.
    pub rate: f64,
    /// Requests a session may make at once after a quiet spell.
    pub burst: f64,
    /// How long a session may stay behind its rate before it is disconnected.
    pub disconnect_after: Duration,
}

impl Limits {
    /// The limits, or none when `rate` is 0 (flood control off).
    pub fn new(rate: u32, burst: u32, disconnect_after: Duration) -> Option<Limits> {
        (rate > 0).then(|| Limits {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            disconnect_after,
        })
    }
}

/// What the bucket says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it.
    Serve,
    /// Not before `until`. `first` when the session was not being slowed just before: tell
    /// it once.
    Wait { until: Instant, first: bool },
    /// Behind its rate for longer than the limits allow.
    Disconnect,
}

/// One session's tokens.
#[derive(Debug, Clone)]
pub struct Bucket {
    limits: Limits,
    tokens: f64,
    at: Instant,
    /// Since when the session has been behind its rate without ever catching up.
    behind_since: Option<Instant>,
}

impl Bucket {
    pub fn new(limits: Limits, now: Instant) -> Bucket {
        Bucket {
            limits,
            tokens: limits.burst,
            at: now,
            behind_since: None,
        }
    }

    /// Takes a token for a request, if there is one.
    pub fn take(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limits.rate).min(self.limits.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Serve;
        }
        let first = self.behind_since.is_none();
        let since = *self.behind_since.get_or_insert(now);
        if now.saturating_duration_since(since) > self.limits.disconnect_after {
            return Verdict::Disconnect;
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.limits.rate);
        Verdict::Wait {
            until: now + wait,
            first,
        }
    }

    /// The session read everything it had sent: it is no longer behind.
    pub fn caught_up(&mut self) {
        self.behind_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::new(10, 5, Duration::from_secs(3)).unwrap()
    }

    #[test]
    fn a_burst_is_served_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(limits(), start);
        for _ in 0..5 {
            assert_eq!(bucket.take(start), Verdict::Serve);
        }
        let Verdict::Wait { until, first } = bucket.take(start) else {
            panic!("the sixth waits");
        };
        assert!(first);
        assert_eq!(until - start, Duration::from_millis(100));
        let Verdict::Wait { first, .. } = bucket.take(start) else {
            panic!("still waits");
        };
        assert!(!first, "told once");
        assert_eq!(bucket.take(until), Verdict::Serve);
        bucket.caught_up();
        let Verdict::Wait { first, .. } = bucket.take(until) else {
            panic!("no token left");
        };
        assert!(first, "caught up, then behind again: told again");
    }

    #[test]
    fn a_session_behind_for_too_long_is_disconnected() {
        let start = Instant::now();
        let mut bucket = Bucket::new(limits(), start);
        let mut now = start;
        loop {
            match bucket.take(now) {
                Verdict::Serve => {}
                Verdict::Wait { until, .. } => now = until,
                Verdict::Disconnect => break,
            }
            assert!(now - start < Duration::from_secs(5), "never disconnected");
        }
        assert!(now - start > Duration::from_secs(3));
    }

    #[test]
    fn rate_zero_is_no_limit() {
        assert_eq!(Limits::new(0, 10, Duration::from_secs(1)), None);
    }
}
