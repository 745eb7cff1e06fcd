//! Partitioning and ownership: pure functions every node computes identically.
//!
//! `partition = xxh64(uuid, seed 0) mod P`: xxh64 is a fixed, specified algorithm, so the mapping
//! never changes between versions (a golden test pins it). The owner of a partition is the live
//! member with the highest `xxh64(member name ‖ partition)` (rendezvous hashing), so a join or a
//! leave moves only the partitions won or lost by that member, about 1/N of them.

use xxhash_rust::xxh64::xxh64;

/// Default number of virtual partitions of a cluster; must be the same on every node.
pub const DEFAULT_PARTITIONS: u32 = 64;

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
