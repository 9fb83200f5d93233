//! Guessing, slowed down: after [`FREE_FAILURES`] failed attempts in a row at one name (or
//! room key) from one client address, each further attempt from there is refused until a
//! wait has passed, twice as long after each failure, up to [`MAX_WAIT`]. Addresses are
//! followed apart (IPv6 by /64), so the owner logging in from elsewhere is never locked out,
//! and nobody else's attempts slow down. A success forgets the failures.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed attempts in a row that cost nothing.
pub const FREE_FAILURES: u32 = 5;

/// The wait after the first failure past the free ones; it doubles with each.
pub const FIRST_WAIT: Duration = Duration::from_secs(1);

pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// Failures older than this are forgotten (the longest wait is long over).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);

/// `(subject, address)` pairs followed at once.
const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub struct Throttle {
    /// Failures in a row and when the last was, by subject and address.
    failures: HashMap<(String, IpAddr), (u32, Instant)>,
}

/// How long must pass after `failures` failures in a row before the next attempt.
pub fn wait_after(failures: u32) -> Duration {
    match failures.checked_sub(FREE_FAILURES) {
        None => Duration::ZERO,
        Some(past) => FIRST_WAIT
            .saturating_mul(1u32.checked_shl(past).unwrap_or(u32::MAX))
            .min(MAX_WAIT),
    }
}

impl Throttle {
    /// Ok if `from` may try a secret for `subject` now, else how long it must still wait.
    pub fn allows(&self, subject: &str, from: IpAddr, now: Instant) -> Result<(), Duration> {
        let key = (subject.to_string(), crate::net::client_key(from));
        match self.failures.get(&key) {
            Some(&(count, last)) => {
                let free_at = last + wait_after(count);
                if now < free_at {
                    Err(free_at - now)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// True if no failure is followed.
    pub fn is_empty(&self) -> bool {
        self.failures.is_empty()
    }

    /// Records a failed attempt; returns how many in a row.
    pub fn failed(&mut self, subject: &str, from: IpAddr, now: Instant) -> u32 {
        if self.failures.len() >= MAX_ENTRIES {
            self.make_room(now);
        }
        let key = (subject.to_string(), crate::net::client_key(from));
        if self.failures.len() >= MAX_ENTRIES && !self.failures.contains_key(&key) {
            log::warn!(
                "the password throttle follows {MAX_ENTRIES} name and address pairs, each \
                 past its free failures; a failure at {subject:?} from {from} is not followed"
            );
            return 0;
        }
        let entry = self.failures.entry(key).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        entry.0
    }

    /// Records a success: the failures from `from` at `subject` are forgotten.
    pub fn succeeded(&mut self, subject: &str, from: IpAddr) {
        self.failures
            .remove(&(subject.to_string(), crate::net::client_key(from)));
    }

    /// Forgets old failures, then those that throttle nobody yet.
    fn make_room(&mut self, now: Instant) {
        self.failures
            .retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
        if self.failures.len() >= MAX_ENTRIES {
            self.failures
                .retain(|_, (count, _)| *count >= FREE_FAILURES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_past_five_failures_up_to_a_minute() {
        assert_eq!(wait_after(4), Duration::ZERO);
        assert_eq!(wait_after(5), Duration::from_secs(1));
        assert_eq!(wait_after(6), Duration::from_secs(2));
        assert_eq!(wait_after(10), Duration::from_secs(32));
        assert_eq!(wait_after(11), MAX_WAIT);
        assert_eq!(wait_after(u32::MAX), MAX_WAIT);
    }

    #[test]
    fn addresses_and_names_are_throttled_apart_and_a_success_forgets() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        let attacker: IpAddr = "198.51.100.7".parse().unwrap();
        let owner: IpAddr = "203.0.113.9".parse().unwrap();
        for _ in 0..5 {
            assert!(throttle.allows("bob", attacker, now).is_ok());
            throttle.failed("bob", attacker, now);
        }
        assert_eq!(
            throttle.allows("bob", attacker, now),
            Err(Duration::from_secs(1))
        );
        assert!(throttle
            .allows("bob", attacker, now + Duration::from_secs(1))
            .is_ok());
        assert!(throttle.allows("bob", owner, now).is_ok());
        assert!(throttle.allows("ana", attacker, now).is_ok());
        throttle.failed("bob", attacker, now);
        assert_eq!(
            throttle.allows("bob", attacker, now),
            Err(Duration::from_secs(2))
        );
        throttle.succeeded("bob", attacker);
        assert!(throttle.allows("bob", attacker, now).is_ok());
        // One client holds a whole IPv6 /64.
        let one: IpAddr = "2001:db8::1".parse().unwrap();
        let same: IpAddr = "2001:db8::ffff".parse().unwrap();
        for _ in 0..6 {
            throttle.failed("bob", one, now);
        }
        assert!(throttle.allows("bob", same, now).is_err());
    }
}
