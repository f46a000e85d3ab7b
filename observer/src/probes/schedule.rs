//! When each target is probed and by which replica: pure functions of the target's
//! [`SeriesKey`], the interval, the clock and the live replicas, so every replica
//! computes the same answers without talking to the others.
//!
//! * **Offset**: a target is probed at `t ≡ offset (mod interval)` on the Unix clock,
//!   with `offset = hash(key) mod interval`. Offsets are spread uniformly over the
//!   interval (no thundering herd after a restart or a resync), stable across restarts
//!   and replicas (a target that moves to another replica keeps its phase).
//! * **Assignment**: rendezvous (highest random weight) hashing: the replica with the
//!   highest `hash(replica, key)` probes the target. Each target has exactly one owner
//!   for a given replica list; when a replica leaves, only its targets move (each to
//!   the replica that scored second for it); when one joins, it takes about `1/n` of
//!   the targets and nothing else moves.
//!
//! The hash is SHA-256 (first 8 bytes, big-endian): stable across Rust versions,
//! processes and architectures, unlike `std`'s hasher, and cheap at the rate targets
//! are (re)assigned.

use std::time::Duration;

use sha2::{Digest, Sha256};

use super::config::SeriesKey;

fn hash(parts: &[&[u8]]) -> u64 {
    let mut hasher = Sha256::new();
    for part in parts {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The target's phase within the interval, in milliseconds.
pub fn offset_ms(key: &SeriesKey, interval: Duration) -> u64 {
    let interval_ms = interval_ms(interval);
    hash(&[b"offset", key.to_string().as_bytes()]) % interval_ms
}

fn interval_ms(interval: Duration) -> u64 {
    u64::try_from(interval.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// How long to wait from `now_ms` (Unix milliseconds) until the target's next slot: the
/// first `t > now_ms` with `t ≡ offset_ms (mod interval)`.
pub fn delay_until_slot(now_ms: u64, interval: Duration, offset_ms: u64) -> Duration {
    let interval_ms = interval_ms(interval);
    let phase = now_ms % interval_ms;
    let offset = offset_ms % interval_ms;
    let delay = if offset > phase {
        offset - phase
    } else {
        interval_ms - phase + offset
    };
    Duration::from_millis(delay)
}

/// Whether `me` probes `key` among `replicas` (which should contain `me`; it is added if
/// not, so a replica that has not yet appeared in the list still probes its share).
pub fn is_assigned(key: &SeriesKey, me: &str, replicas: &[String]) -> bool {
    owner(key, me, replicas) == me
}

/// The replica that probes `key`: the highest rendezvous score, ties broken by name.
pub fn owner<'a>(key: &SeriesKey, me: &'a str, replicas: &'a [String]) -> &'a str {
    let key = key.to_string();
    let score = |replica: &str| {
        (
            hash(&[replica.as_bytes(), key.as_bytes()]),
            replica.to_owned(),
        )
    };
    replicas
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(me))
        .max_by_key(|replica| score(replica))
        .unwrap_or(me)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn key(i: usize) -> SeriesKey {
        SeriesKey {
            cluster: format!("c{}", i % 7),
            tenant: "shop".into(),
            target: format!("https://e{i}.example/healthz"),
            module: "http",
        }
    }

    #[test]
    fn offsets_are_stable_and_spread_over_the_interval() {
        let interval = Duration::from_secs(30);
        let offsets: Vec<u64> = (0..3000).map(|i| offset_ms(&key(i), interval)).collect();
        assert_eq!(
            offsets,
            (0..3000)
                .map(|i| offset_ms(&key(i), interval))
                .collect::<Vec<_>>()
        );
        assert!(offsets.iter().all(|&o| o < 30_000));
        // Ten buckets of 3 s each get about 300 targets; none gets twice its share.
        let mut buckets = [0usize; 10];
        for offset in &offsets {
            buckets[usize::try_from(offset / 3000).unwrap()] += 1;
        }
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                (150..450).contains(count),
                "bucket {i}: {count} of 3000 ({buckets:?})"
            );
        }
        // A different target gets a different offset (almost always).
        assert_ne!(offset_ms(&key(1), interval), offset_ms(&key(2), interval));
    }

    #[test]
    fn the_next_slot_is_strictly_after_now_at_the_offset() {
        let interval = Duration::from_secs(10);
        // now = 1_000_000_003_000 ms: phase 3_000.
        let now = 1_000_000_003_000;
        assert_eq!(
            delay_until_slot(now, interval, 5_000),
            Duration::from_millis(2_000)
        );
        assert_eq!(
            delay_until_slot(now, interval, 1_000),
            Duration::from_millis(8_000)
        );
        assert_eq!(
            delay_until_slot(now, interval, 3_000),
            Duration::from_millis(10_000)
        );
        assert_eq!(
            delay_until_slot(now + 1, interval, 3_000),
            Duration::from_millis(9_999)
        );
        for offset in (0..10_000).step_by(137) {
            let delay = delay_until_slot(now, interval, offset);
            assert!(delay > Duration::ZERO && delay <= interval);
            assert_eq!(
                (now + u64::try_from(delay.as_millis()).unwrap()) % 10_000,
                offset
            );
        }
    }

    fn owners(replicas: &[String], keys: usize) -> Vec<String> {
        (0..keys)
            .map(|i| owner(&key(i), &replicas[0], replicas).to_owned())
            .collect()
    }

    #[test]
    fn each_target_has_exactly_one_replica() {
        let replicas: Vec<String> = ["observer-0", "observer-1", "observer-2"]
            .map(String::from)
            .to_vec();
        for i in 0..1000 {
            let assigned: Vec<&String> = replicas
                .iter()
                .filter(|me| is_assigned(&key(i), me, &replicas))
                .collect();
            assert_eq!(assigned.len(), 1, "target {i}: {assigned:?}");
        }
        // And the share is fair: each of three gets about a third.
        let mut counts = BTreeMap::new();
        for owner in owners(&replicas, 3000) {
            *counts.entry(owner).or_insert(0) += 1;
        }
        assert!(
            counts.values().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn when_a_replica_leaves_only_its_targets_move() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let before = owners(&three, 2000);
        let after = owners(&two, 2000);
        let mut moved = 0;
        for (old, new) in before.iter().zip(&after) {
            if old == "b" {
                moved += 1;
                assert_ne!(new, "b");
            } else {
                assert_eq!(old, new, "a target of a surviving replica moved");
            }
        }
        assert!(moved > 400, "b owned {moved} of 2000");
        // When b comes back, exactly the same targets return to it.
        assert_eq!(owners(&three, 2000), before);
    }

    #[test]
    fn a_replica_missing_from_the_list_counts_itself_in() {
        let others: Vec<String> = vec!["b".into()];
        let alone: Vec<String> = Vec::new();
        assert!((0..100).all(|i| is_assigned(&key(i), "a", &alone)));
        let mine = (0..1000)
            .filter(|&i| is_assigned(&key(i), "a", &others))
            .count();
        assert!((350..650).contains(&mine), "{mine}");
    }
}
