//! Workload attribution: which (namespace, pod, container, HPC job) a GPU carried at each
//! sample's time.
//!
//! A GPU's series stay the GPU and a metric whatever pods come and go. What a sample carried is
//! an **observation**: one sample of the GPU's hidden series [`WORKLOAD_METRIC`] at the
//! sample's timestamp, whose value is the workload's [`Workload::id`]. The workload's names go
//! once into the store's dictionary (the `workloads` keyspace), keyed by that id. Being samples,
//! observations are idempotent under replays and order-free (the same GPU and time always
//! carries the same id), replicated, repaired and expired exactly as samples are, and compress
//! to a few bits a scrape (a run of equal ids is a run of zero deltas). A sample with no
//! observation at its timestamp belongs to no workload (an idle GPU).

use bincode::{Decode, Encode};
use xxhash_rust::xxh64::xxh64;

use crate::model::GpuInfo;

/// The hidden metric whose samples are a GPU's workload observations. Listings of metrics leave
/// it out; reads name it to get observations.
pub const WORKLOAD_METRIC: &str = "__workload__";

/// Ids are below 2^53, so an id is exact as a sample's f64 value; 0 is never an id.
const ID_BITS: u32 = 53;
const ID_SEED: u64 = 0x7765_726b_6c6f_6164;

/// Who a GPU worked for: empty strings are unset. Equal names are the same workload wherever
/// and whenever they are seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct Workload {
    /// Kubernetes namespace of the pod.
    pub namespace: String,
    /// Kubernetes pod.
    pub pod: String,
    /// Container in the pod.
    pub container: String,
    /// HPC job id (dcgm-exporter's `hpc_job` label, from its HPC job mapping).
    pub hpc_job: String,
}

impl Workload {
    /// The workload a source read with a GPU (its `container`, `pod`, `namespace` and
    /// `hpc_job`), if any is set.
    pub fn of(gpu: &GpuInfo) -> Option<Self> {
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        let w = Self {
            namespace: s(&gpu.namespace),
            pod: s(&gpu.pod),
            container: s(&gpu.container),
            hpc_job: s(&gpu.hpc_job),
        };
        (!w.is_empty()).then_some(w)
    }

    /// Whether `gpu` carries exactly this workload (no allocation: the builder asks it per sample).
    pub fn matches(&self, gpu: &GpuInfo) -> bool {
        let eq = |v: &Option<String>, w: &str| v.as_deref().unwrap_or_default() == w;
        eq(&gpu.namespace, &self.namespace)
            && eq(&gpu.pod, &self.pod)
            && eq(&gpu.container, &self.container)
            && eq(&gpu.hpc_job, &self.hpc_job)
    }

    /// True when no name is set (no workload).
    pub fn is_empty(&self) -> bool {
        self.namespace.is_empty()
            && self.pod.is_empty()
            && self.container.is_empty()
            && self.hpc_job.is_empty()
    }

    /// The workload's id: a 53-bit hash of its names, never 0, the same on every node and
    /// version. Two workloads share an id with probability about n²/2^54 (n workloads held).
    pub fn id(&self) -> u64 {
        let mut bytes = Vec::with_capacity(
            self.namespace.len() + self.pod.len() + self.container.len() + self.hpc_job.len() + 3,
        );
        for (i, part) in [&self.namespace, &self.pod, &self.container, &self.hpc_job]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                // Names cannot hold NUL (they come from labels and CSV text), so the parts
                // cannot run into each other.
                bytes.push(0);
            }
            bytes.extend_from_slice(part.as_bytes());
        }
        (xxh64(&bytes, ID_SEED) & ((1 << ID_BITS) - 1)).max(1)
    }

    /// The labels it puts on a series, as dcgm-exporter names them (only the set ones).
    pub fn labels(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("container", self.container.as_str()),
            ("hpc_job", self.hpc_job.as_str()),
            ("namespace", self.namespace.as_str()),
            ("pod", self.pod.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }
}

/// The workload id an observation's value holds, if it is one.
pub fn id_of_value(v: f64) -> Option<u64> {
    let id = v as u64;
    (v >= 1.0 && v < (1u64 << ID_BITS) as f64 && id as f64 == v).then_some(id)
}

/// The label names a workload may set, sorted.
pub const WORKLOAD_LABELS: [&str; 4] = ["container", "hpc_job", "namespace", "pod"];

#[cfg(test)]
mod tests {
    use super::*;

    fn w(ns: &str, pod: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            pod: pod.into(),
            ..Workload::default()
        }
    }

    #[test]
    fn ids_are_stable_exact_as_floats_and_tell_parts_apart() {
        let a = w("ml", "train-0");
        assert_eq!(a.id(), a.clone().id());
        assert_eq!(id_of_value(a.id() as f64), Some(a.id()));
        assert_ne!(a.id(), w("mltrain-0", "").id());
        assert_ne!(w("a", "b").id(), w("ab", "").id());
        assert_ne!(a.id(), 0);
        // Golden: ids are stored and compared across nodes, so they must never change.
        assert_eq!(w("ml", "train-0").id(), 7_766_976_691_368_428);
        for bad in [0.0, 0.5, -1.0, f64::NAN, 2f64.powi(53), 1.5] {
            assert_eq!(id_of_value(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_gpu_carries_a_workload_only_when_a_name_is_set() {
        let mut g = GpuInfo {
            uuid: "GPU-1".into(),
            ..GpuInfo::default()
        };
        assert_eq!(Workload::of(&g), None);
        g.pod = Some("p".into());
        g.namespace = Some(String::new());
        let got = Workload::of(&g).expect("a workload");
        assert_eq!(got, w("", "p"));
        assert!(got.matches(&g));
        assert!(!w("x", "p").matches(&g));
        assert_eq!(got.labels().collect::<Vec<_>>(), vec![("pod", "p")]);
    }
}
