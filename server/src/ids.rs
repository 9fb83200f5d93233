//! Maps keyed by the server's own counters: session ids, job ids, storage tickets.
//!
//! The standard map hashes with SipHash, whose keys are random so that a client cannot choose
//! names that collide; these keys are counted up by the server, never chosen by a client, so
//! a multiply-and-rotate hash (FxHash's) serves them, at a fraction of SipHash's cost on the
//! path every private message takes. A name, or anything else a client chooses, stays in a
//! standard map.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by a server-made id.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FxHash's step: the key's bits spread upwards by one multiplication (the map takes the
/// bucket from the low bits, which consecutive ids fill evenly, and its tag from the high).
#[derive(Default)]
pub struct IdHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.add(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.add(id);
    }

    fn write_usize(&mut self, id: usize) {
        self.add(id as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_land_in_distinct_buckets_and_keep_their_values() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in 0..10_000u64 {
            map.insert(id, id * 2);
        }
        assert!((0..10_000u64).all(|id| map[&id] == id * 2));
        // The low bits of consecutive ids' hashes differ: no two of 1024 share a bucket of
        // 1024.
        let buckets: std::collections::HashSet<u64> = (0..1024u64)
            .map(|id| {
                let mut hasher = IdHasher::default();
                hasher.write_u64(id);
                hasher.finish() & 1023
            })
            .collect();
        assert_eq!(buckets.len(), 1024);
    }
}
