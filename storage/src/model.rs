//! The data model shared by the streamer, the broker and the store.

use bincode::{Decode, Encode};
use rustc_hash::{FxHashMap, FxHashSet};

use crate::workload::{id_of_value, Workload, WORKLOAD_METRIC};
use crate::{Result, StorageError};

/// Milliseconds since the Unix epoch (UTC).
pub type Timestamp = i64;

/// Longest GPU UUID or metric name accepted (they become storage keys).
pub const MAX_NAME_BYTES: usize = 1024;

/// Upper bound on the decoded size of one batch: a corrupt length prefix is refused, not allocated.
pub const MAX_BATCH_DECODE_BYTES: usize = 64 << 20;

fn decode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BATCH_DECODE_BYTES>()
}

/// A GPU's attributes: they belong to the GPU and are stored once, not with every sample.
/// (`Default` is an unknown GPU: empty UUID and attributes.)
///
/// `container`, `pod`, `namespace` and `hpc_job` are what a source read with a sample: the
/// [`BatchBuilder`] turns them into workload observations ([`crate::workload`]) and stores the
/// GPU without them, so a stored GPU never carries a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct GpuInfo {
    /// The GPU's UUID, its identity across the fleet (`GPU-5fd4f087-…`).
    pub uuid: String,
    /// Host the GPU is installed in.
    pub hostname: String,
    /// Index of the GPU inside its host (DCGM `gpu_id`, 0–7 on a DGX).
    pub gpu_index: u32,
    /// Device name (`nvidia0`).
    pub device: String,
    /// Model name (`NVIDIA H100 80GB HBM3`).
    pub model: String,
    /// Kubernetes container using the GPU, when DCGM reported one.
    pub container: Option<String>,
    /// Kubernetes pod using the GPU, when DCGM reported one.
    pub pod: Option<String>,
    /// Kubernetes namespace of that pod, when DCGM reported one.
    pub namespace: Option<String>,
    /// Prometheus' `instance` of the exporter the GPU was read from, when known.
    pub instance: Option<String>,
    /// Prometheus' `job` that scraped it, when known.
    pub job: Option<String>,
    /// NVIDIA driver version (dcgm-exporter's `DCGM_FI_DRIVER_VERSION` label), when known.
    pub driver_version: Option<String>,
    /// PCI bus id (dcgm-exporter's `pci_bus_id` label), when known.
    pub pci_bus_id: Option<String>,
    /// HPC job using the GPU (dcgm-exporter's `hpc_job` label), when reported.
    pub hpc_job: Option<String>,
}

/// A GPU as batches and stores written before `instance` and `job` existed hold it (store
/// format 2, batches without [`BATCH_MARK`]); read, never written.
#[derive(Decode)]
struct LegacyGpuInfo {
    uuid: String,
    hostname: String,
    gpu_index: u32,
    device: String,
    model: String,
    container: Option<String>,
    pod: Option<String>,
    namespace: Option<String>,
}

impl From<LegacyGpuInfo> for GpuInfo {
    fn from(g: LegacyGpuInfo) -> Self {
        Self {
            uuid: g.uuid,
            hostname: g.hostname,
            gpu_index: g.gpu_index,
            device: g.device,
            model: g.model,
            container: g.container,
            pod: g.pod,
            namespace: g.namespace,
            instance: None,
            job: None,
            driver_version: None,
            pci_bus_id: None,
            hpc_job: None,
        }
    }
}

/// A GPU as batch version 1 and store format 3 hold it (before `hpc_job`); read, never
/// written.
#[derive(Decode)]
struct GpuInfoV3 {
    uuid: String,
    hostname: String,
    gpu_index: u32,
    device: String,
    model: String,
    container: Option<String>,
    pod: Option<String>,
    namespace: Option<String>,
    instance: Option<String>,
    job: Option<String>,
    driver_version: Option<String>,
    pci_bus_id: Option<String>,
}

impl From<GpuInfoV3> for GpuInfo {
    fn from(g: GpuInfoV3) -> Self {
        Self {
            uuid: g.uuid,
            hostname: g.hostname,
            gpu_index: g.gpu_index,
            device: g.device,
            model: g.model,
            container: g.container,
            pod: g.pod,
            namespace: g.namespace,
            instance: g.instance,
            job: g.job,
            driver_version: g.driver_version,
            pci_bus_id: g.pci_bus_id,
            hpc_job: None,
        }
    }
}

/// A batch of [`BATCH_VERSION`] 1 (GPUs before `hpc_job`, workloads not yet observations); read,
/// never written.
#[derive(Decode)]
struct SampleBatchV1 {
    gpus: Vec<GpuInfoV3>,
    metrics: Vec<String>,
    samples: Vec<BatchSample>,
    trace: Option<String>,
}

/// A batch as written before [`BATCH_MARK`] (legacy GPUs); read, never written.
#[derive(Decode)]
struct LegacySampleBatch {
    gpus: Vec<LegacyGpuInfo>,
    metrics: Vec<String>,
    samples: Vec<BatchSample>,
    trace: Option<String>,
}

/// First byte of a versioned batch encoding: never the first byte of a legacy one (bincode's
/// varint uses 251–254 as markers and never writes 255).
pub const BATCH_MARK: u8 = 0xFF;
/// Version of the batch encoding after [`BATCH_MARK`].
pub const BATCH_VERSION: u8 = 2;

/// Decodes a `gpus` keyspace record, `(id, GpuInfo)`, of this format or of formats 3 and 2.
pub(crate) fn decode_gpu_record(value: &[u8]) -> std::result::Result<(u32, GpuInfo), String> {
    let config = bincode::config::standard();
    if let Ok((rec, used)) = bincode::decode_from_slice::<(u32, GpuInfo), _>(value, config) {
        if used == value.len() {
            return Ok(rec);
        }
    }
    if let Ok(((id, g), used)) = bincode::decode_from_slice::<(u32, GpuInfoV3), _>(value, config) {
        if used == value.len() {
            return Ok((id, g.into()));
        }
    }
    match bincode::decode_from_slice::<(u32, LegacyGpuInfo), _>(value, config) {
        Ok(((id, g), used)) if used == value.len() => Ok((id, g.into())),
        Ok((_, used)) => Err(format!("{} trailing bytes", value.len() - used)),
        Err(e) => Err(e.to_string()),
    }
}

impl GpuInfo {
    /// An empty record, standing in for an id gap while the catalog loads.
    pub(crate) fn placeholder() -> Self {
        Self {
            uuid: String::new(),
            hostname: String::new(),
            gpu_index: 0,
            device: String::new(),
            model: String::new(),
            container: None,
            pod: None,
            namespace: None,
            instance: None,
            job: None,
            driver_version: None,
            pci_bus_id: None,
            hpc_job: None,
        }
    }
}

/// One sample inside a [`SampleBatch`]; GPU and metric are indexes into the batch's dictionaries.
#[derive(Debug, Clone, Copy, PartialEq, Encode, Decode)]
pub struct BatchSample {
    /// Index into [`SampleBatch::gpus`].
    pub gpu: u32,
    /// Index into [`SampleBatch::metrics`].
    pub metric: u32,
    /// Sample time.
    pub timestamp: Timestamp,
    /// Sample value.
    pub value: f64,
}

/// A batch of samples with per-batch dictionaries, so UUIDs and metric names travel once per batch.
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct SampleBatch {
    /// GPUs referenced by the samples.
    pub gpus: Vec<GpuInfo>,
    /// Metric names referenced by the samples.
    pub metrics: Vec<String>,
    /// The samples.
    pub samples: Vec<BatchSample>,
    /// W3C `traceparent` of the trace the batch belongs to, so the collector continues it.
    pub trace: Option<String>,
    /// The workloads its [`WORKLOAD_METRIC`] samples (observations) name, each once.
    pub workloads: Vec<Workload>,
}

impl SampleBatch {
    /// Number of samples in the batch.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when the batch holds no sample.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Encodes the batch for the broker log and the wire: [`BATCH_MARK`], [`BATCH_VERSION`],
    /// then bincode 2 (standard config).
    #[allow(clippy::expect_used)] // an invariant of the types, not of any input
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![BATCH_MARK, BATCH_VERSION];
        bincode::encode_into_std_write(self, &mut out, bincode::config::standard())
            .expect("a SampleBatch always encodes: strings, integers and floats into a Vec");
        out
    }

    /// Decodes and validates a batch of this encoding or a legacy one (logs written by an
    /// older version replay); dangling dictionary indexes are an error, not a panic later.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let corrupt = |detail: String| StorageError::Corrupt {
            what: "batch",
            detail,
        };
        let (batch, used, len) = match bytes {
            [BATCH_MARK, BATCH_VERSION, body @ ..] => {
                let (b, used): (SampleBatch, usize) =
                    bincode::decode_from_slice(body, decode_config())
                        .map_err(|e| corrupt(e.to_string()))?;
                (b, used, body.len())
            }
            [BATCH_MARK, 1, body @ ..] => {
                let (b, used): (SampleBatchV1, usize) =
                    bincode::decode_from_slice(body, decode_config())
                        .map_err(|e| corrupt(e.to_string()))?;
                let gpus = b.gpus.into_iter().map(GpuInfo::from).collect();
                (
                    rebuilt(gpus, b.metrics, &b.samples, b.trace),
                    used,
                    body.len(),
                )
            }
            [BATCH_MARK, v, ..] => return Err(corrupt(format!("batch encoding version {v}"))),
            _ => {
                let (b, used): (LegacySampleBatch, usize) =
                    bincode::decode_from_slice(bytes, decode_config())
                        .map_err(|e| corrupt(e.to_string()))?;
                let gpus = b.gpus.into_iter().map(GpuInfo::from).collect();
                (
                    rebuilt(gpus, b.metrics, &b.samples, b.trace),
                    used,
                    bytes.len(),
                )
            }
        };
        if used != len {
            return Err(corrupt(format!("{} trailing bytes", len - used)));
        }
        batch.validate()?;
        Ok(batch)
    }

    /// Checks that every sample's indexes point into the dictionaries and that UUIDs and metric
    /// names are non-empty and at most [`MAX_NAME_BYTES`] long.
    pub fn validate(&self) -> Result<()> {
        let names = self.gpus.iter().map(|g| &g.uuid).chain(&self.metrics);
        if let Some(bad) = names
            .into_iter()
            .find(|n| n.is_empty() || n.len() > MAX_NAME_BYTES)
        {
            return Err(StorageError::InvalidBatch(format!(
                "GPU UUIDs and metric names must be 1 to {MAX_NAME_BYTES} bytes, got {} bytes",
                bad.len()
            )));
        }
        let (g, m) = (self.gpus.len(), self.metrics.len());
        if let Some(s) = self
            .samples
            .iter()
            .find(|s| s.gpu as usize >= g || s.metric as usize >= m)
        {
            return Err(StorageError::InvalidBatch(format!(
                "sample refers to gpu {} of {g} / metric {} of {m}",
                s.gpu, s.metric
            )));
        }
        self.validate_workloads()
    }

    /// Stored GPUs carry no workload, and every observation names a workload of the batch.
    fn validate_workloads(&self) -> Result<()> {
        if let Some(g) = self.gpus.iter().find(|g| Workload::of(g).is_some()) {
            return Err(StorageError::InvalidBatch(format!(
                "GPU {} carries a workload: workloads travel as observations",
                g.uuid
            )));
        }
        let Some(metric) = self.metrics.iter().position(|m| m == WORKLOAD_METRIC) else {
            return Ok(());
        };
        let ids: FxHashSet<u64> = self.workloads.iter().map(Workload::id).collect();
        match self
            .samples
            .iter()
            .filter(|s| s.metric as usize == metric)
            .find(|s| !id_of_value(s.value).is_some_and(|id| ids.contains(&id)))
        {
            Some(s) => Err(StorageError::InvalidBatch(format!(
                "observation at {} names no workload of the batch (value {})",
                s.timestamp, s.value
            ))),
            None => Ok(()),
        }
    }
}

/// A batch of an older encoding as today's builder would have made it: the GPUs' workloads
/// become observations.
fn rebuilt(
    gpus: Vec<GpuInfo>,
    metrics: Vec<String>,
    samples: &[BatchSample],
    trace: Option<String>,
) -> SampleBatch {
    let mut b = BatchBuilder::default();
    for s in samples {
        if let (Some(g), Some(m)) = (gpus.get(s.gpu as usize), metrics.get(s.metric as usize)) {
            b.push(g, m, s.timestamp, s.value);
        }
    }
    let mut batch = b.take();
    batch.trace = trace;
    batch
}

/// A GPU of the batch being built.
#[derive(Debug)]
struct BuiltGpu {
    index: u32,
    /// The workload the GPU carried at its last push, with its id.
    workload: Option<(Workload, u64)>,
}

/// Builds a [`SampleBatch`], interning GPUs and metric names as samples are added, and turning
/// the workload each sample's GPU carries into an observation at its timestamp.
#[derive(Debug, Default)]
pub struct BatchBuilder {
    batch: SampleBatch,
    // FxHash: these are looked up once per sample on the streamer's hot path; SipHash's
    // flooding resistance buys nothing for keys from our own input.
    gpu_index: FxHashMap<String, BuiltGpu>,
    metric_index: FxHashMap<String, u32>,
    /// (batch GPU, timestamp) pairs observed: a row's metrics share one observation.
    observed: FxHashSet<(u32, Timestamp)>,
    workload_ids: FxHashSet<u64>,
}

impl BatchBuilder {
    /// Adds one sample; `gpu` is cloned only the first time this batch sees its UUID. When the
    /// GPU carries a workload, the batch also observes it at `timestamp`.
    pub fn push(&mut self, gpu: &GpuInfo, metric: &str, timestamp: Timestamp, value: f64) {
        let (gpu_idx, workload) = self.gpu(gpu);
        let metric_idx = self.metric(metric);
        self.batch.samples.push(BatchSample {
            gpu: gpu_idx,
            metric: metric_idx,
            timestamp,
            value,
        });
        if let Some(id) = workload {
            if self.observed.insert((gpu_idx, timestamp)) {
                let m = self.metric(WORKLOAD_METRIC);
                self.batch.samples.push(BatchSample {
                    gpu: gpu_idx,
                    metric: m,
                    timestamp,
                    value: id as f64,
                });
            }
        }
    }

    /// Makes `w` known to the batch, for observations pushed as plain samples of
    /// [`WORKLOAD_METRIC`] (a copy between stores).
    pub fn add_workload(&mut self, w: &Workload) {
        if self.workload_ids.insert(w.id()) {
            self.batch.workloads.push(w.clone());
        }
    }

    /// The GPU's batch index and the id of the workload it carries now.
    fn gpu(&mut self, gpu: &GpuInfo) -> (u32, Option<u64>) {
        let entry = match self.gpu_index.get_mut(gpu.uuid.as_str()) {
            Some(e) => {
                // Attributes can change; the latest row's attributes win.
                if let Some(existing) = self.batch.gpus.get_mut(e.index as usize) {
                    if !same_hardware(existing, gpu) {
                        *existing = without_workload(gpu);
                    }
                }
                e
            }
            None => {
                let index = self.batch.gpus.len() as u32;
                self.batch.gpus.push(without_workload(gpu));
                self.gpu_index.entry(gpu.uuid.clone()).or_insert(BuiltGpu {
                    index,
                    workload: None,
                })
            }
        };
        if !entry.workload.as_ref().is_some_and(|(w, _)| w.matches(gpu)) {
            entry.workload = Workload::of(gpu).map(|w| {
                let id = w.id();
                (w, id)
            });
            if let Some((w, id)) = &entry.workload {
                if self.workload_ids.insert(*id) {
                    self.batch.workloads.push(w.clone());
                }
            }
        }
        (entry.index, entry.workload.as_ref().map(|(_, id)| *id))
    }

    fn metric(&mut self, metric: &str) -> u32 {
        match self.metric_index.get(metric) {
            Some(&i) => i,
            None => {
                let i = self.batch.metrics.len() as u32;
                self.batch.metrics.push(metric.to_string());
                self.metric_index.insert(metric.to_string(), i);
                i
            }
        }
    }

    /// Number of samples added so far (observations included).
    pub fn len(&self) -> usize {
        self.batch.samples.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.batch.samples.is_empty()
    }

    /// Returns the batch built so far and resets the builder.
    pub fn take(&mut self) -> SampleBatch {
        self.gpu_index.clear();
        self.metric_index.clear();
        self.observed.clear();
        self.workload_ids.clear();
        std::mem::take(&mut self.batch)
    }
}

/// The GPU as stored: its attributes without the workload it carried.
fn without_workload(gpu: &GpuInfo) -> GpuInfo {
    GpuInfo {
        container: None,
        pod: None,
        namespace: None,
        hpc_job: None,
        ..gpu.clone()
    }
}

/// Whether two records of a GPU agree on everything but the workload.
fn same_hardware(stored: &GpuInfo, gpu: &GpuInfo) -> bool {
    // Exhaustive, so a new attribute cannot be forgotten here.
    let GpuInfo {
        uuid,
        hostname,
        gpu_index,
        device,
        model,
        container: _,
        pod: _,
        namespace: _,
        instance,
        job,
        driver_version,
        pci_bus_id,
        hpc_job: _,
    } = gpu;
    (
        &stored.uuid,
        &stored.hostname,
        stored.gpu_index,
        &stored.device,
        &stored.model,
    ) == (uuid, hostname, *gpu_index, device, model)
        && (
            &stored.instance,
            &stored.job,
            &stored.driver_version,
            &stored.pci_bus_id,
        ) == (instance, job, driver_version, pci_bus_id)
}

/// One point of a range read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Sample time.
    pub timestamp: Timestamp,
    /// Index of the metric name in the page's `metrics`.
    pub metric: u16,
    /// Sample value.
    pub value: f64,
}

/// A GPU with the metrics stored for it and the time span of its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDetail {
    /// The GPU's attributes.
    pub info: GpuInfo,
    /// Metric names with at least one sample, sorted.
    pub metrics: Vec<String>,
    /// Earliest sample time, if any sample is stored.
    pub first_timestamp: Option<Timestamp>,
    /// Latest sample time, if any sample is stored.
    pub last_timestamp: Option<Timestamp>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A GPU with placeholder attributes, for tests across the crate.
    pub(crate) fn gpu(uuid: &str) -> GpuInfo {
        GpuInfo {
            uuid: uuid.into(),
            hostname: "h".into(),
            gpu_index: 0,
            device: "nvidia0".into(),
            model: "m".into(),
            container: None,
            pod: None,
            namespace: None,
            instance: None,
            job: None,
            driver_version: None,
            pci_bus_id: None,
            hpc_job: None,
        }
    }

    #[test]
    fn batches_and_gpu_records_of_the_previous_format_still_decode() {
        type Legacy = (
            String,
            String,
            u32,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let g: Legacy = (
            "GPU-1".into(),
            "h".into(),
            2,
            "nvidia2".into(),
            "m".into(),
            None,
            Some("p".into()),
            None,
        );
        let s = BatchSample {
            gpu: 0,
            metric: 0,
            timestamp: 5,
            value: 1.5,
        };
        let legacy = (
            vec![g.clone()],
            vec!["T".to_string()],
            vec![s],
            None::<String>,
        );
        let bytes = bincode::encode_to_vec(&legacy, bincode::config::standard()).expect("encodes");
        let batch = SampleBatch::decode(&bytes).expect("a legacy batch decodes");
        // The GPU's pod became an observation at the sample's time.
        assert_eq!(batch.gpus[0].pod, None);
        let p = Workload {
            pod: "p".into(),
            ..Workload::default()
        };
        assert_eq!(batch.workloads, vec![p.clone()]);
        assert_eq!(batch.metrics, vec!["T".to_string(), WORKLOAD_METRIC.into()]);
        assert_eq!(
            (batch.gpus[0].instance.as_ref(), batch.samples[0]),
            (None, s)
        );
        assert_eq!(
            (batch.samples[1].timestamp, batch.samples[1].value),
            (5, p.id() as f64)
        );
        // Version 1: GPUs with instance and job, before hpc_job.
        let v3 = (
            "GPU-1",
            "h",
            2u32,
            "nvidia2",
            "m",
            None::<String>,
            Some("q"),
            Some("ns"),
            Some("10.0.0.1:9400"),
            None::<String>,
            None::<String>,
            None::<String>,
        );
        let mut v1 = vec![BATCH_MARK, 1];
        let body = (vec![v3.clone()], vec!["T"], vec![s], None::<String>);
        v1.extend(bincode::encode_to_vec(&body, bincode::config::standard()).expect("encodes"));
        let batch1 = SampleBatch::decode(&v1).expect("a version-1 batch decodes");
        assert_eq!(batch1.gpus[0].instance.as_deref(), Some("10.0.0.1:9400"));
        assert_eq!(batch1.workloads[0].namespace, "ns");
        let rec = bincode::encode_to_vec((3u32, v3), bincode::config::standard()).expect("encodes");
        assert_eq!(
            decode_gpu_record(&rec).expect("format 3").1.pod.as_deref(),
            Some("q")
        );
        // Today's encoding round-trips, with instance and job.
        let mut now = batch.clone();
        now.gpus[0].instance = Some("10.0.0.1:9400".into());
        assert_eq!(SampleBatch::decode(&now.encode()).expect("decodes"), now);
        assert!(SampleBatch::decode(&[BATCH_MARK, 9, 0]).is_err());
        // The store's GPU records: both layouts.
        let old = bincode::encode_to_vec((7u32, g), bincode::config::standard()).expect("encodes");
        assert_eq!(decode_gpu_record(&old).expect("legacy").1.uuid, "GPU-1");
        let new = bincode::encode_to_vec((7u32, &now.gpus[0]), bincode::config::standard())
            .expect("encodes");
        assert_eq!(
            decode_gpu_record(&new).expect("current"),
            (7, now.gpus[0].clone())
        );
    }

    #[test]
    fn builder_interns_and_round_trips() {
        let mut b = BatchBuilder::default();
        b.push(&gpu("a"), "T", 1, 1.0);
        b.push(&gpu("b"), "T", 1, 2.0);
        b.push(&gpu("a"), "U", 2, 3.5);
        let batch = b.take();
        assert_eq!(batch.gpus.len(), 2);
        assert_eq!(batch.metrics, vec!["T".to_string(), "U".to_string()]);
        let back = SampleBatch::decode(&batch.encode()).expect("decodes");
        assert_eq!(back, batch);
        assert!(b.is_empty());
    }

    #[test]
    fn decode_rejects_garbage_and_dangling_indexes() {
        assert!(SampleBatch::decode(&[0xff, 0xff, 0xff]).is_err());
        let bad = SampleBatch {
            gpus: vec![],
            metrics: vec!["T".into()],
            samples: vec![BatchSample {
                gpu: 3,
                metric: 0,
                timestamp: 0,
                value: 0.0,
            }],
            trace: None,
            workloads: vec![],
        };
        assert!(SampleBatch::decode(&bad.encode()).is_err());
        let mut empty_uuid = BatchBuilder::default();
        empty_uuid.push(&gpu(""), "T", 1, 1.0);
        assert!(SampleBatch::decode(&empty_uuid.take().encode()).is_err());
        let mut long_metric = BatchBuilder::default();
        long_metric.push(&gpu("a"), &"M".repeat(MAX_NAME_BYTES + 1), 1, 1.0);
        assert!(SampleBatch::decode(&long_metric.take().encode()).is_err());
        let mut trailing = SampleBatch::default().encode();
        trailing.push(0);
        assert!(SampleBatch::decode(&trailing).is_err());
    }
}
