//! Per-workload totals over GPUs' spans: by namespace, by pod and by HPC job.

use std::collections::{BTreeMap, BTreeSet};

use telemetry_actors::cluster::protocol::GpuSpans;

/// What totals are grouped by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WorkloadKey {
    /// A Kubernetes namespace.
    Namespace(String),
    /// A pod: (namespace, pod).
    Pod(String, String),
    /// An HPC job.
    Job(String),
}

/// One workload's use of the GPUs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    /// Distinct GPUs it held.
    pub gpus: BTreeSet<String>,
    /// GPU time held (ms), summed over GPUs.
    pub held_ms: i64,
    /// Sum and count of utilisation samples (%).
    pub util: (f64, u64),
    /// Energy (J).
    pub energy_j: f64,
    /// First and last observation (ms).
    pub seen: Option<(i64, i64)>,
}

impl Totals {
    /// Mean utilisation (%), when a sample was attributed.
    pub fn mean_util(&self) -> Option<f64> {
        (self.util.1 > 0).then(|| self.util.0 / self.util.1 as f64)
    }
}

/// Totals of every namespace, pod and HPC job the spans name.
pub fn totals(gpus: &[GpuSpans]) -> BTreeMap<WorkloadKey, Totals> {
    let mut out: BTreeMap<WorkloadKey, Totals> = BTreeMap::new();
    for g in gpus {
        for s in &g.spans {
            let w = &s.workload;
            let keys = [
                (!w.namespace.is_empty()).then(|| WorkloadKey::Namespace(w.namespace.clone())),
                (!w.pod.is_empty()).then(|| WorkloadKey::Pod(w.namespace.clone(), w.pod.clone())),
                (!w.hpc_job.is_empty()).then(|| WorkloadKey::Job(w.hpc_job.clone())),
            ];
            for key in keys.into_iter().flatten() {
                let t = out.entry(key).or_default();
                if !t.gpus.contains(&g.uuid) {
                    t.gpus.insert(g.uuid.clone());
                }
                t.held_ms += s.held_ms;
                t.util.0 += s.util_sum;
                t.util.1 += s.util_samples;
                t.energy_j += s.energy_j;
                t.seen = Some(
                    t.seen
                        .map_or((s.start, s.end), |(a, b)| (a.min(s.start), b.max(s.end))),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_actors::cluster::protocol::Span;
    use telemetry_storage::Workload;

    fn span(ns: &str, pod: &str, job: &str, (start, end): (i64, i64), util: f64) -> Span {
        Span {
            workload: Workload {
                namespace: ns.into(),
                pod: pod.into(),
                container: "c".into(),
                hpc_job: job.into(),
            },
            start,
            end,
            held_ms: end - start + 10,
            util_sum: util,
            util_samples: 1,
            energy_j: 5.0,
        }
    }

    #[test]
    fn a_pod_on_two_gpus_counts_both_and_its_namespace_sums_its_pods() {
        let gpus = vec![
            GpuSpans {
                uuid: "GPU-1".into(),
                observations: 3,
                spans: vec![
                    span("ml", "a", "", (0, 90), 80.0),
                    span("ml", "b", "", (100, 190), 20.0),
                ],
            },
            GpuSpans {
                uuid: "GPU-2".into(),
                observations: 2,
                spans: vec![
                    span("ml", "a", "", (0, 40), 60.0),
                    span("", "", "j7", (50, 60), 10.0),
                ],
            },
        ];
        let t = totals(&gpus);
        let pod_a = &t[&WorkloadKey::Pod("ml".into(), "a".into())];
        assert_eq!(pod_a.gpus.len(), 2);
        assert_eq!(pod_a.held_ms, 100 + 50);
        assert_eq!(pod_a.mean_util(), Some(70.0));
        assert_eq!(pod_a.seen, Some((0, 90)));
        let ns = &t[&WorkloadKey::Namespace("ml".into())];
        assert_eq!((ns.gpus.len(), ns.held_ms, ns.energy_j), (2, 250, 15.0));
        assert_eq!(t[&WorkloadKey::Job("j7".into())].gpus.len(), 1);
        assert_eq!(t.len(), 4, "ml, ml/a, ml/b, j7");
    }
}
