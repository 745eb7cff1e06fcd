//! Repair planning, pure: given this node's digests and its peers', what to copy from whom.
//!
//! Two levels, so replicas in sync cost one small message per partition: first the digests of
//! the partition's GPUs ([`gpus_to_compare`]); then, for a GPU whose digests differ, its span
//! digests ([`spans_to_fetch`]). A peer whose copy differs from ours and counts more samples (or
//! as many, other ones) holds samples we lack, so we copy what it has there; identical digests
//! of several peers are fetched once. A peer that counts fewer is left alone: it is the one
//! behind, and its own pass copies from us. Two copies with disjoint holes therefore converge in
//! turns (the smaller one copies the larger, which then counts fewer than the union and copies
//! back), and a copy is never fetched just to learn it was a subset of ours. Copies are
//! idempotent writes, so fetching what we hold costs a transfer, never a duplicate.

use std::collections::BTreeMap;
use std::hash::Hash;

use telemetry_storage::Digest;

/// What to do about one GPU of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuStep {
    /// We hold nothing of it: copy all of it from each of these peers.
    CopyAll(Vec<String>),
    /// We hold some of it, and these peers' digests differ: compare spans with them.
    Compare(Vec<String>),
}

/// Per key, the peers to ask: those whose digest differs from `mine` (absent counts as empty)
/// and counts at least as many samples, one per distinct digest, first by order of `theirs`.
fn differing<K: Ord + Clone + Hash>(
    mine: &BTreeMap<K, Digest>,
    theirs: &[(String, BTreeMap<K, Digest>)],
) -> BTreeMap<K, Vec<String>> {
    let mut out: BTreeMap<K, Vec<(String, Digest)>> = BTreeMap::new();
    for (peer, digests) in theirs {
        for (key, d) in digests {
            let ours = mine.get(key).copied().unwrap_or_default();
            if d.count == 0 || *d == ours || d.count < ours.count {
                continue;
            }
            let asked = out.entry(key.clone()).or_default();
            if !asked.iter().any(|(_, seen)| seen == d) {
                asked.push((peer.clone(), *d));
            }
        }
    }
    out.into_iter()
        .map(|(k, v)| (k, v.into_iter().map(|(p, _)| p).collect()))
        .collect()
}

/// The GPUs of a partition to repair, by UUID.
pub fn gpus_to_compare(
    mine: &BTreeMap<String, Digest>,
    theirs: &[(String, BTreeMap<String, Digest>)],
) -> BTreeMap<String, GpuStep> {
    differing(mine, theirs)
        .into_iter()
        .map(|(uuid, peers)| {
            let ours = mine.get(&uuid).is_some_and(|d| d.count > 0);
            let step = if ours {
                GpuStep::Compare(peers)
            } else {
                GpuStep::CopyAll(peers)
            };
            (uuid, step)
        })
        .collect()
}

/// The spans of one GPU to copy: (span start, peer), in span order.
pub fn spans_to_fetch(
    mine: &BTreeMap<i64, Digest>,
    theirs: &[(String, BTreeMap<i64, Digest>)],
) -> Vec<(i64, String)> {
    differing(mine, theirs)
        .into_iter()
        .flat_map(|(span, peers)| peers.into_iter().map(move |p| (span, p)))
        .collect()
}

/// The last time two copies of a GPU are compared up to: the older of their newest samples
/// (samples after it may still be on their way to that copy: a collector a moment behind the
/// other). Either unknown: everything.
pub fn settled_until(mine: Option<i64>, theirs: Option<i64>) -> i64 {
    match (mine, theirs) {
        (Some(a), Some(b)) => a.min(b),
        _ => i64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(count: u64, hash: u64) -> Digest {
        Digest { count, hash }
    }

    fn map<K: Ord + Clone>(entries: &[(K, Digest)]) -> BTreeMap<K, Digest> {
        entries.iter().cloned().collect()
    }

    #[test]
    fn gpus_table() {
        let g = |s: &str| s.to_string();
        // (mine, theirs, plan)
        type Row = (
            Vec<(String, Digest)>,
            Vec<(&'static str, Vec<(String, Digest)>)>,
            Vec<(String, GpuStep)>,
        );
        let table: Vec<Row> = vec![
            // In sync: nothing to do.
            (
                vec![(g("a"), d(3, 9))],
                vec![("n1", vec![(g("a"), d(3, 9))])],
                vec![],
            ),
            // Wiped: copy everything, once per distinct copy.
            (
                vec![],
                vec![
                    ("n1", vec![(g("a"), d(3, 9))]),
                    ("n2", vec![(g("a"), d(3, 9)), (g("b"), d(1, 1))]),
                ],
                vec![
                    (g("a"), GpuStep::CopyAll(vec![g("n1")])),
                    (g("b"), GpuStep::CopyAll(vec![g("n2")])),
                ],
            ),
            // Holes: compare with each peer whose copy differs and is not smaller (each distinct
            // copy once); the smaller one (n3) is behind and copies from us.
            (
                vec![(g("a"), d(2, 5))],
                vec![
                    ("n1", vec![(g("a"), d(3, 9))]),
                    ("n2", vec![(g("a"), d(3, 9))]),
                    ("n3", vec![(g("a"), d(1, 4))]),
                    ("n4", vec![(g("a"), d(2, 6))]),
                ],
                vec![(g("a"), GpuStep::Compare(vec![g("n1"), g("n4")]))],
            ),
            // A peer with nothing of a GPU it lists is never asked; ours alone needs nothing.
            (
                vec![(g("a"), d(2, 5)), (g("c"), d(1, 1))],
                vec![("n1", vec![(g("a"), d(2, 5)), (g("b"), d(0, 0))])],
                vec![],
            ),
        ];
        for (mine, theirs, want) in table {
            let theirs: Vec<(String, BTreeMap<String, Digest>)> = theirs
                .into_iter()
                .map(|(p, e)| (p.to_string(), map(&e)))
                .collect();
            let got = gpus_to_compare(&map(&mine), &theirs);
            assert_eq!(got, want.into_iter().collect(), "mine {mine:?}");
        }
    }

    #[test]
    fn copies_are_compared_up_to_the_older_newest_sample() {
        assert_eq!(settled_until(Some(10), Some(7)), 7);
        assert_eq!(settled_until(Some(7), Some(10)), 7);
        assert_eq!(settled_until(None, Some(7)), i64::MAX);
        assert_eq!(settled_until(Some(7), None), i64::MAX);
    }

    #[test]
    fn spans_table() {
        let mine = map(&[(0, d(10, 1)), (3600, d(5, 2))]);
        let theirs = vec![
            (
                "n1".to_string(),
                map(&[(0, d(10, 1)), (3600, d(8, 3)), (7200, d(4, 4))]),
            ),
            ("n2".to_string(), map(&[(3600, d(8, 3)), (7200, d(2, 5))])),
            // Behind us in span 0: left alone.
            ("n3".to_string(), map(&[(0, d(9, 7))])),
        ];
        assert_eq!(
            spans_to_fetch(&mine, &theirs),
            [
                (3600, "n1".to_string()),
                (7200, "n1".to_string()),
                (7200, "n2".to_string()),
            ]
        );
        assert!(spans_to_fetch(&mine, &[("n1".into(), mine.clone())]).is_empty());
    }
}
