//! Workload labels at each sample's time: a GPU's series splits into one series per workload
//! it carried (and one for the samples of no workload), labelled `namespace`, `pod`,
//! `container` and `hpc_job` as dcgm-exporter labels them. These are exactly the series a
//! Prometheus holds when the same samples arrive with those labels on them, so queries over
//! them answer as Prometheus does, while the store keeps one series per GPU and metric.

use std::collections::BTreeMap;

use promql_parser::label::Matcher;
use rustc_hash::FxHashMap;
use telemetry_promql::RawSeries;
use telemetry_storage::{id_of_value, Workload, WORKLOAD_LABELS};

use super::Labels;

/// Workload names by id, for one GPU's observations.
pub type Names = FxHashMap<u64, Workload>;

/// Whether a matcher is on a workload label (decided per sample, not per GPU).
pub fn is_workload_matcher(m: &Matcher) -> bool {
    WORKLOAD_LABELS.contains(&m.name.as_str())
}

/// Splits one GPU series by the workload observed at each sample's timestamp (`observed`:
/// the GPU's observations, in time order), keeping the pieces whose labels pass `matchers`.
///
/// Where the workload changes, the piece it leaves goes stale at the next sample's time, as
/// Prometheus' scrape loop marks a series that left its target: a pod's series stops at once
/// when the GPU moves on, rather than lingering for the lookback.
pub fn split(
    labels: Labels,
    points: Vec<(i64, f64)>,
    observed: &[(i64, f64)],
    names: &Names,
    matchers: &[Matcher],
) -> Vec<RawSeries> {
    // By workload id (0: none): the piece's samples and its staleness markers. Only pieces
    // the matchers keep are built; whether they do is decided once per workload. Samples come
    // in runs of one workload (a pod holds a GPU for many scrapes): a run is gathered, then
    // added to its piece.
    type Piece = (Vec<(i64, f64)>, Vec<i64>);
    let mut pieces: BTreeMap<u64, Piece> = BTreeMap::new();
    let mut kept: FxHashMap<u64, bool> = FxHashMap::default();
    let mut run: Option<(u64, bool)> = None;
    let mut gathered: Vec<(i64, f64)> = Vec::new();
    // The last observation's value and the id it names, since runs repeat one value.
    let mut named: Option<(u64, u64)> = None;
    let mut at = 0;
    for p in points {
        // Both in time order: one walk, no search.
        while observed.get(at).is_some_and(|o| o.0 < p.0) {
            at += 1;
        }
        let id = match observed.get(at) {
            Some(&(t, v)) if t == p.0 => match named {
                Some((bits, id)) if bits == v.to_bits() => id,
                _ => {
                    let id = id_of_value(v).filter(|id| names.contains_key(id));
                    let id = id.unwrap_or(0);
                    named = Some((v.to_bits(), id));
                    id
                }
            },
            _ => 0,
        };
        if run.is_none_or(|(current, _)| current != id) {
            if let Some((left, true)) = run {
                let piece = pieces.entry(left).or_default();
                piece.0.append(&mut gathered);
                piece.1.push(p.0);
            }
            let keep = *kept
                .entry(id)
                .or_insert_with(|| passes(names.get(&id), matchers));
            run = Some((id, keep));
        }
        if run.is_some_and(|(_, keep)| keep) {
            gathered.push(p);
        }
    }
    if let Some((left, true)) = run {
        pieces.entry(left).or_default().0.append(&mut gathered);
    }
    pieces
        .into_iter()
        .map(|(id, (points, stale))| {
            let mut l = labels.clone();
            if let Some(w) = names.get(&id) {
                l.extend(w.labels().map(|(k, v)| (k.to_string(), v.to_string())));
            }
            RawSeries {
                labels: l,
                points,
                stale,
            }
        })
        .collect()
}

/// Whether samples of no workload pass `matchers` (then every GPU may have some; true when
/// there are none).
pub fn idle_passes(matchers: &[Matcher]) -> bool {
    passes(None, matchers)
}

/// Whether any of a GPU's observations names a workload whose samples pass `matchers`.
pub fn any_passes(observed: &[(i64, f64)], names: &Names, matchers: &[Matcher]) -> bool {
    let mut seen = rustc_hash::FxHashSet::default();
    observed
        .iter()
        .filter_map(|o| id_of_value(o.1))
        .filter(|&id| seen.insert(id))
        .any(|id| names.get(&id).is_some_and(|w| passes(Some(w), matchers)))
}

/// Whether the samples of workload `w` (`None`: of no workload) pass workload matchers.
fn passes(w: Option<&Workload>, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| {
        let value = w
            .and_then(|w| w.labels().find(|(k, _)| *k == m.name))
            .map_or("", |(_, v)| v);
        m.is_match(value)
    })
}

/// The names of workloads sent with a read, by id.
pub fn names(workloads: impl IntoIterator<Item = Workload>) -> Names {
    workloads.into_iter().map(|w| (w.id(), w)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use promql_parser::label::MatchOp;

    fn w(ns: &str, pod: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            pod: pod.into(),
            ..Workload::default()
        }
    }

    #[test]
    fn a_gpu_series_splits_at_its_workload_changes_and_idle_samples_stay_unlabelled() {
        let (a, b) = (w("ml", "train"), w("ml", "eval"));
        let names = names([a.clone(), b.clone()]);
        let observed = [
            (10, a.id() as f64),
            (20, a.id() as f64),
            (30, b.id() as f64),
            (50, a.id() as f64),
            (60, 12345.0), // an id no read named: no labels rather than wrong ones
        ];
        let points: Vec<(i64, f64)> = [5, 10, 20, 30, 40, 50, 60]
            .iter()
            .map(|&t| (t, t as f64))
            .collect();
        let base: Labels = [("UUID".to_string(), "GPU-1".to_string())].into();
        let got = split(base.clone(), points.clone(), &observed, &names, &[]);
        let by_pod: BTreeMap<Option<&str>, Vec<i64>> = got
            .iter()
            .map(|s| {
                (
                    s.labels.get("pod").map(String::as_str),
                    s.points.iter().map(|p| p.0).collect(),
                )
            })
            .collect();
        let want: BTreeMap<Option<&str>, Vec<i64>> = [
            (None, vec![5, 40, 60]),
            (Some("train"), vec![10, 20, 50]),
            (Some("eval"), vec![30]),
        ]
        .into();
        assert_eq!(by_pod, want);
        let stale: BTreeMap<Option<&str>, Vec<i64>> = got
            .iter()
            .map(|s| (s.labels.get("pod").map(String::as_str), s.stale.clone()))
            .collect();
        let want: BTreeMap<Option<&str>, Vec<i64>> = [
            (None, vec![10, 50]),
            (Some("train"), vec![30, 60]),
            (Some("eval"), vec![40]),
        ]
        .into();
        assert_eq!(
            stale, want,
            "each piece goes stale when the next sample is another's"
        );
        assert!(got
            .iter()
            .all(|s| s.labels.get("UUID").map(String::as_str) == Some("GPU-1")));
        // Matchers on workload labels pick pieces: `pod=""` is the idle one.
        let only = |m: Matcher| split(base.clone(), points.clone(), &observed, &names, &[m]);
        let eval = only(Matcher::new(MatchOp::Equal, "pod", "eval"));
        assert_eq!(eval.len(), 1);
        assert_eq!(
            eval[0].labels.get("namespace").map(String::as_str),
            Some("ml")
        );
        let idle = only(Matcher::new(MatchOp::Equal, "pod", ""));
        assert_eq!(idle[0].points.len(), 3);
        assert!(only(Matcher::new(MatchOp::Equal, "namespace", "other")).is_empty());
        // No observations: the series as it was.
        let whole = split(base.clone(), points.clone(), &[], &names, &[]);
        assert_eq!((whole.len(), whole[0].labels.clone()), (1, base));
    }
}
