//! How many new names one address may register a minute (`--max-new-names-per-minute`): a
//! client that logs in under fresh names, or REGISTERs in a loop, would otherwise fill the
//! users table for good. Only registrations count; logging in under an existing name never
//! does, so a busy address of real users (a NAT) is held back only in what it creates.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The window the limit counts in.
const WINDOW: Duration = Duration::from_secs(60);

/// Addresses followed at once; past it, addresses seen for the first time may register
/// nothing until old windows expire (a flood from many addresses is refused, not remembered).
const MAX_ADDRESSES: usize = 65_536;

pub struct NewNames {
    limit: Option<u32>,
    /// Each address's window: when it began and how many names it registered since.
    windows: HashMap<IpAddr, (Instant, u32)>,
}

use crate::net::client_key as key;

impl NewNames {
    /// No limit when `limit` is None.
    pub fn new(limit: Option<u32>) -> NewNames {
        NewNames {
            limit,
            windows: HashMap::new(),
        }
    }

    /// Whether `ip` may register one more name now.
    pub fn allows(&mut self, ip: IpAddr, now: Instant) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        match self.windows.get(&key(ip)) {
            Some(&(since, count)) if now.duration_since(since) < WINDOW => count < limit,
            Some(_) => true,
            None => {
                if self.windows.len() >= MAX_ADDRESSES {
                    self.windows
                        .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
                }
                self.windows.len() < MAX_ADDRESSES
            }
        }
    }

    /// `ip` registered a name.
    pub fn registered(&mut self, ip: IpAddr, now: Instant) {
        if self.limit.is_none() {
            return;
        }
        let window = self.windows.entry(key(ip)).or_insert((now, 0));
        if now.duration_since(window.0) >= WINDOW {
            *window = (now, 0);
        }
        window.1 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_registers_its_limit_a_minute_and_others_are_not_held_back() {
        let start = Instant::now();
        let mut names = NewNames::new(Some(3));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..3 {
            assert!(names.allows(a, start));
            names.registered(a, start);
        }
        assert!(!names.allows(a, start));
        assert!(names.allows(b, start));
        assert!(names.allows(a, start + WINDOW));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let start = Instant::now();
        let mut names = NewNames::new(Some(1));
        names.registered("2001:db8::1".parse().unwrap(), start);
        assert!(!names.allows("2001:db8::ffff".parse().unwrap(), start));
        assert!(names.allows("2001:db8:0:1::1".parse().unwrap(), start));
    }

    #[test]
    fn no_limit_allows_everything() {
        let mut names = NewNames::new(None);
        let ip = "10.0.0.1".parse().unwrap();
        for _ in 0..1000 {
            names.registered(ip, Instant::now());
        }
        assert!(names.allows(ip, Instant::now()));
    }
}
