//! Partitioning and ownership: pure functions every node computes identically.
//!
//! `partition = xxh64(uuid, seed 0) mod P`: xxh64 is a fixed, specified algorithm, so the mapping
//! never changes between versions (a golden test pins it). The owner of a partition is the live
//! member with the highest `xxh64(member name ‖ partition)` (rendezvous hashing), so a join or a
//! leave moves only the partitions won or lost by that member, about 1/N of them. The replicas
//! of a partition are the first members in that same order ([`replicas`]).

use xxhash_rust::xxh64::xxh64;

/// Default number of virtual partitions of a cluster; must be the same on every node.
pub const DEFAULT_PARTITIONS: u32 = 64;

/// Largest `--replication-factor` (and write quorum) a node accepts.
pub const MAX_REPLICATION_FACTOR: u32 = 5;

/// How many copies of each partition the cluster keeps and how many a write needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// Copies of every partition (the first `factor` live members in rendezvous order).
    pub factor: usize,
    /// Copies a write needs to be acknowledged (≤ `factor`); with fewer live members it waits.
    pub write_quorum: usize,
}

impl Replication {
    /// One copy: a node alone, or a cluster without replication.
    pub const SINGLE: Self = Self {
        factor: 1,
        write_quorum: 1,
    };
}

/// The partition of a GPU.
pub fn partition_of(uuid: &str, partitions: u32) -> u32 {
    (xxh64(uuid.as_bytes(), 0) % u64::from(partitions.max(1))) as u32
}

fn weight(member: &str, partition: u32) -> u64 {
    let mut key = Vec::with_capacity(member.len() + 5);
    key.extend_from_slice(member.as_bytes());
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    xxh64(&key, 0)
}

/// The owner of `partition` among `members` (highest random weight; ties broken by name).
pub fn owner<S: AsRef<str>>(partition: u32, members: &[S]) -> Option<&str> {
    members.iter().map(AsRef::as_ref).max_by(|a, b| {
        weight(a, partition)
            .cmp(&weight(b, partition))
            .then(b.cmp(a))
    })
}

/// The replicas of `partition` among `members`: the first `n` in rendezvous order (highest
/// weight first, ties broken by name), so the first is [`owner`], each is distinct, a smaller
/// `n` gives a prefix of a larger one, and a member's join or leave changes only the replica
/// sets it enters or leaves (about `n`/N of them). Fewer than `n` members: all of them.
pub fn replicas<S: AsRef<str>>(partition: u32, members: &[S], n: usize) -> Vec<&str> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .map(|m| (weight(m.as_ref(), partition), m.as_ref()))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(n).map(|(_, m)| m).collect()
}

/// The partitions `me` holds a replica of among `members` with `n` replicas each (for `n` = 1,
/// those it owns).
pub fn replicated_by<S: AsRef<str>>(
    me: &str,
    partitions: u32,
    members: &[S],
    n: usize,
) -> Vec<u32> {
    (0..partitions)
        .filter(|p| replicas(*p, members, n).contains(&me))
        .collect()
}

/// The partitions `me` owns among `members`.
pub fn owned_by<S: AsRef<str>>(me: &str, partitions: u32, members: &[S]) -> Vec<u32> {
    (0..partitions)
        .filter(|p| owner(*p, members) == Some(me))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_of_is_pinned() {
        // Golden values: changing the hash would silently re-home every GPU.
        let got: Vec<u32> = [
            "GPU-5fd4f087-86f3-7a43-b711-4771313afc50",
            "GPU-bc7a12ab-4998-fdc5-0785-2678a929a142",
            "",
        ]
        .iter()
        .map(|u| partition_of(u, 64))
        .collect();
        assert_eq!(got, GOLDEN);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(
            partition_of("anything", 0),
            0,
            "zero partitions is treated as one"
        );
    }

    /// Cross-checked with Python's `xxhash.xxh64(uuid, seed=0).intdigest() % 64`.
    const GOLDEN: [u32; 3] = [14, 3, 25];

    #[test]
    fn replicas_rank_members_and_the_first_is_the_owner() {
        let members: Vec<String> = (0..5).map(|i| format!("telemetry-{i}")).collect();
        for p in 0..256 {
            let all = replicas(p, &members, 5);
            assert_eq!(all.len(), 5);
            assert_eq!(Some(all[0]), owner(p, &members), "partition {p}");
            for n in 0..=6 {
                let some = replicas(p, &members, n);
                assert_eq!(some.len(), n.min(5));
                assert_eq!(some[..], all[..n.min(5)], "a prefix");
            }
            let mut distinct = all.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), 5);
        }
        // (members, n, replicas of partition 7): golden, so placement never changes silently.
        let table: [(&[&str], usize, &[&str]); 4] = [
            (&[], 2, &[]),
            (&["a"], 2, &["a"]),
            (&["a", "a"], 2, &["a"]),
            (&["a", "b", "c"], 3, &GOLDEN_ABC),
        ];
        for (m, n, want) in table {
            assert_eq!(replicas(7, m, n), want, "{m:?} n={n}");
        }
    }

    /// Rendezvous order of a, b, c for partition 7, cross-checked with Python's
    /// `xxhash.xxh64(name + b"\0" + partition.to_bytes(4, "big"), seed=0)`, highest first.
    const GOLDEN_ABC: [&str; 3] = ["a", "c", "b"];

    #[test]
    fn a_leave_replaces_only_the_leaver_in_replica_sets() {
        let before: Vec<String> = (0..5).map(|i| format!("telemetry-{i}")).collect();
        let after: Vec<String> = before
            .iter()
            .filter(|m| *m != "telemetry-2")
            .cloned()
            .collect();
        let (mut changed, p) = (0, 1024);
        for part in 0..p {
            let (b, a) = (replicas(part, &before, 2), replicas(part, &after, 2));
            if b.contains(&"telemetry-2") {
                changed += 1;
                // The survivor keeps its place; the next in rendezvous order fills in.
                let kept: Vec<&str> = b.iter().copied().filter(|m| *m != "telemetry-2").collect();
                assert!(kept.iter().all(|m| a.contains(m)), "{b:?} -> {a:?}");
            } else {
                assert_eq!(a, b, "partition {part} moved without cause");
            }
        }
        // About n/N = 2/5 of the replica sets held the leaver.
        assert!((300..520).contains(&changed), "{changed} of {p}");
    }

    #[test]
    fn each_member_holds_about_n_over_m_and_every_partition_n_times() {
        let members: Vec<String> = (0..3).map(|i| format!("telemetry-{i}")).collect();
        for n in 1..=3 {
            let held: Vec<Vec<u32>> = members
                .iter()
                .map(|m| replicated_by(m, 64, &members, n))
                .collect();
            for p in 0..64 {
                let copies = held.iter().filter(|h| h.contains(&p)).count();
                assert_eq!(copies, n, "partition {p}, n={n}");
            }
            assert_eq!(
                replicated_by("telemetry-0", 64, &members, 1),
                owned_by("telemetry-0", 64, &members)
            );
        }
        assert!(replicated_by("stranger", 64, &members, 2).is_empty());
    }

    #[test]
    fn single_member_owns_everything() {
        assert_eq!(owned_by("n0", 64, &["n0"]), (0..64).collect::<Vec<_>>());
        assert_eq!(owner(3, &[] as &[&str]), None);
    }

    #[test]
    fn a_join_moves_about_one_nth_and_only_to_the_joiner() {
        let before: Vec<String> = (0..4).map(|i| format!("telemetry-{i}")).collect();
        let mut after = before.clone();
        after.push("telemetry-4".into());
        let p = 1024;
        let mut moved = 0;
        for part in 0..p {
            let (a, b) = (owner(part, &before), owner(part, &after));
            if a != b {
                moved += 1;
                assert_eq!(
                    b,
                    Some("telemetry-4"),
                    "a partition moved between old members"
                );
            }
        }
        // Expected 1/5 of 1024 ≈ 205; allow generous hash variance.
        assert!((120..290).contains(&moved), "moved {moved}");
    }

    #[test]
    fn ownership_is_order_independent() {
        let a = ["x", "y", "z"];
        let b = ["z", "x", "y"];
        for part in 0..64 {
            assert_eq!(owner(part, &a), owner(part, &b));
        }
    }
}
