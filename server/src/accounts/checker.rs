//! The password checker: threads that verify and hash secrets off the reactor, reporting
//! through a bounded channel and the reactor's waker, like the storage workers.
//!
//! Bounded everywhere: `--password-workers` threads (each argon2id hash holds 19 MiB while it
//! runs), `--max-password-checks` jobs waiting, of which one client address may hold
//! [`PER_ADDRESS`]; past either, the request is refused at once ([`Denial::Busy`]), so a flood
//! of logins fills nobody's memory and delays nobody without a password.
//!
//! A messenger client proves its user's password on every operation (one connection each),
//! so a password verified a moment ago is remembered ([`Verified`]): a keyed BLAKE2b digest
//! of the secret under a key made at start-up, never the secret, for [`VERIFIED_FOR`], and
//! only while the stored hash is the one it matched.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2bMac512;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use subtle::ConstantTimeEq;

use super::password::{self, Secret};
use crate::beside::Ticket;

/// Jobs one client address may have waiting or in hand at once.
pub const PER_ADDRESS: usize = 4;

/// How long a verified password spares its user the next hash.
pub const VERIFIED_FOR: Duration = Duration::from_secs(600);

/// Verified passwords remembered at once; past it the oldest half is forgotten.
const MAX_VERIFIED: usize = 65_536;

/// What to do with a request's secrets.
#[derive(Debug)]
pub struct CheckJob {
    pub ticket: Ticket,
    /// The given secret and the hash stored for it.
    pub verify: Option<(Secret, String)>,
    /// A secret to hash: it claims a new name.
    pub claim: Option<Secret>,
    /// A new password or key to hash.
    pub new: Option<Secret>,
}

/// What the checker found.
#[derive(Debug)]
pub struct Checked {
    pub ticket: Ticket,
    pub verified: Option<bool>,
    pub claim: Option<Result<String, String>>,
    pub new: Option<Result<String, String>>,
}

/// The threads end with the process (what they hold is a login nobody waits for any more).
pub struct Checker {
    jobs: Sender<CheckJob>,
    done: Receiver<Checked>,
    /// Jobs in the checker per client address, and the address of each ticket.
    per_address: HashMap<IpAddr, usize>,
    address_of: HashMap<Ticket, IpAddr>,
    verified: Verified,
}

impl Checker {
    /// Starts `workers` threads with room for `queue` jobs waiting.
    pub fn start(
        workers: usize,
        queue: usize,
        wake: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<Checker, String> {
        assert!(
            workers > 0 && queue > 0,
            "the password checker needs a thread and a queue"
        );
        let (jobs, incoming) = crossbeam_channel::bounded::<CheckJob>(queue);
        // Room for every job waiting or in hand: a worker never waits to report.
        let (report, done) = crossbeam_channel::bounded(queue + workers);
        for n in 0..workers {
            let (incoming, report, wake) = (incoming.clone(), report.clone(), wake.clone());
            std::thread::Builder::new()
                .name(format!("passwords-{n}"))
                .spawn(move || {
                    for job in incoming {
                        if report.send(check(job)).is_err() {
                            return;
                        }
                        wake();
                    }
                })
                .map_err(|e| format!("cannot start password checker {n}: {e}"))?;
        }
        Ok(Checker {
            jobs,
            done,
            per_address: HashMap::new(),
            address_of: HashMap::new(),
            verified: Verified::new(),
        })
    }

    /// Hands `job` to the threads; false (and nothing done) when the queue, or the share of
    /// `from`, is full.
    pub fn try_start(&mut self, job: CheckJob, from: IpAddr) -> bool {
        let from = crate::net::client_key(from);
        if self.per_address.get(&from).copied().unwrap_or(0) >= PER_ADDRESS {
            return false;
        }
        let ticket = job.ticket;
        match self.jobs.try_send(job) {
            Ok(()) => {
                *self.per_address.entry(from).or_default() += 1;
                self.address_of.insert(ticket, from);
                true
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// What the threads finished since the last call.
    pub fn finished(&mut self) -> Vec<Checked> {
        let done: Vec<Checked> = self.done.try_iter().collect();
        for checked in &done {
            if let Some(from) = self.address_of.remove(&checked.ticket) {
                if let Some(count) = self.per_address.get_mut(&from) {
                    *count -= 1;
                    if *count == 0 {
                        self.per_address.remove(&from);
                    }
                }
            }
        }
        done
    }

    /// True if `secret` for `subject` matched `stored` a moment ago.
    pub fn recently_verified(
        &self,
        subject: &str,
        secret: &Secret,
        stored: &str,
        now: Instant,
    ) -> bool {
        self.verified.matches(subject, secret, stored, now)
    }

    /// Remembers that `secret` for `subject` matched `stored`.
    pub fn remember(&mut self, subject: &str, secret: &Secret, stored: &str, now: Instant) {
        self.verified.insert(subject, secret, stored, now);
    }

    /// Forgets what was verified for `subject` (its password changed or was refused).
    pub fn forget(&mut self, subject: &str) {
        self.verified.entries.remove(subject);
    }
}

fn check(job: CheckJob) -> Checked {
    Checked {
        ticket: job.ticket,
        verified: job
            .verify
            .as_ref()
            .map(|(secret, stored)| password::verify(secret, stored)),
        claim: job.claim.as_ref().map(password::hash),
        new: job.new.as_ref().map(password::hash),
    }
}

/// Passwords verified a moment ago, as keyed digests.
struct Verified {
    key: [u8; 64],
    /// By subject: the stored hash the secret matched, the secret's digest, and when.
    entries: HashMap<String, (String, [u8; 64], Instant)>,
}

impl Verified {
    fn new() -> Verified {
        let mut key = [0u8; 64];
        OsRng.fill_bytes(&mut key);
        Verified {
            key,
            entries: HashMap::new(),
        }
    }

    fn digest(&self, subject: &str, secret: &Secret) -> [u8; 64] {
        let mut mac = Blake2bMac512::new_from_slice(&self.key).expect("a 64-byte key fits BLAKE2b");
        // The subject's length first, so that no two (subject, secret) pairs collide.
        mac.update(&(subject.len() as u64).to_le_bytes());
        mac.update(subject.as_bytes());
        mac.update(secret.expose().as_bytes());
        mac.finalize_fixed().into()
    }

    fn matches(&self, subject: &str, secret: &Secret, stored: &str, now: Instant) -> bool {
        match self.entries.get(subject) {
            Some((hash, digest, at))
                if hash == stored && now.duration_since(*at) < VERIFIED_FOR =>
            {
                bool::from(self.digest(subject, secret).ct_eq(digest))
            }
            _ => false,
        }
    }

    fn insert(&mut self, subject: &str, secret: &Secret, stored: &str, now: Instant) {
        if self.entries.len() >= MAX_VERIFIED {
            let mut ages: Vec<Instant> = self.entries.values().map(|(_, _, at)| *at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            self.entries.retain(|_, (_, _, at)| *at > cut);
        }
        let digest = self.digest(subject, secret);
        self.entries
            .insert(subject.to_string(), (stored.to_string(), digest, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_password_is_remembered_only_for_its_stored_hash_and_a_while() {
        let mut verified = Verified::new();
        let now = Instant::now();
        let secret = Secret::new("pw".into());
        verified.insert("bob", &secret, "$h1", now);
        assert!(verified.matches("bob", &secret, "$h1", now));
        assert!(!verified.matches("bob", &Secret::new("pX".into()), "$h1", now));
        assert!(
            !verified.matches("bob", &secret, "$h2", now),
            "the password changed"
        );
        assert!(!verified.matches("ana", &secret, "$h1", now));
        assert!(!verified.matches("bob", &secret, "$h1", now + VERIFIED_FOR));
    }

    #[test]
    fn one_address_holds_a_few_jobs_at_most() {
        // No threads take jobs, so they stay queued.
        let (jobs, _incoming) = crossbeam_channel::bounded(100);
        let (_report, done) = crossbeam_channel::bounded(1);
        let mut checker = Checker {
            jobs,
            done,
            per_address: HashMap::new(),
            address_of: HashMap::new(),
            verified: Verified::new(),
        };
        let job = |ticket| CheckJob {
            ticket,
            verify: None,
            claim: Some(Secret::new("x".into())),
            new: None,
        };
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        for ticket in 0..PER_ADDRESS as u64 {
            assert!(checker.try_start(job(ticket), one));
        }
        assert!(!checker.try_start(job(99), one));
        assert!(checker.try_start(job(100), other));
        assert_eq!(checker.address_of.len(), PER_ADDRESS + 1);
    }
}
