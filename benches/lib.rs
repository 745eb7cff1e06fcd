//! Data sets shared by the benchmarks: `gen-csv` output and the shared reference CSV replayed,
//! as store batches and as per-series sample runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use std::collections::HashMap;

use telemetry_node::gencsv::{for_each_row, sample_args, GenCsvArgs};
use telemetry_storage::{codec::Sample, BatchBuilder, GpuInfo, SampleBatch};

/// The shared reference CSV (absent on machines without `../shared`).
pub const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/dcgm_metrics_20250718_134233.csv"
);

/// Samples per batch, as the streamer sends them.
pub const BATCH_SAMPLES: usize = 4096;

/// One row of a data set.
#[derive(Debug, Clone)]
pub struct Row {
    /// GPU attributes.
    pub gpu: GpuInfo,
    /// Metric name.
    pub metric: String,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// Value.
    pub value: f64,
}

/// A data set: rows in scrape order.
#[derive(Debug, Clone, Default)]
pub struct DataSet {
    /// What it is, for reports.
    pub name: String,
    /// The rows.
    pub rows: Vec<Row>,
}

fn gpu(uuid: &str, host: &str, index: u32, model: &str) -> GpuInfo {
    GpuInfo {
        uuid: uuid.to_string(),
        hostname: host.to_string(),
        gpu_index: index,
        device: format!("nvidia{index}"),
        model: model.to_string(),
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

impl DataSet {
    /// `gen-csv` output: `hosts` × 8 GPUs × 10 metrics, one scrape a second for `seconds`.
    pub fn generated(hosts: u32, seconds: u32) -> Self {
        let args = GenCsvArgs {
            hosts,
            scrapes: seconds,
            ..sample_args()
        };
        let mut rows = Vec::new();
        let mut gpus: HashMap<String, GpuInfo> = HashMap::new();
        let res = for_each_row(&args, |r| {
            let info = gpus
                .entry(r.uuid.to_string())
                .or_insert_with(|| gpu(r.uuid, r.host, r.gpu_index, r.model));
            rows.push(Row {
                gpu: info.clone(),
                metric: r.metric.to_string(),
                timestamp: r.timestamp_ms,
                value: r.value.parse()?,
            });
            Ok(())
        });
        if let Err(e) = res {
            panic!("gen-csv data: {e}");
        }
        Self {
            name: format!("gen-csv {} GPUs x 10 metrics x {seconds} s", hosts * 8),
            rows,
        }
    }

    /// The shared reference CSV (one scrape of 247 GPUs) replayed `passes` times, one second
    /// apart; `None` when the file is absent.
    pub fn reference_replayed(passes: u32) -> Option<Self> {
        let mut rdr = csv::Reader::from_path(SHARED_CSV).ok()?;
        let mut once = Vec::new();
        for rec in rdr.records() {
            let rec = rec.ok()?;
            let index: u32 = rec.get(2)?.parse().ok()?;
            once.push(Row {
                gpu: gpu(rec.get(4)?, rec.get(6)?, index, rec.get(5)?),
                metric: rec.get(1)?.to_string(),
                timestamp: 1_752_871_354_000,
                value: rec.get(10)?.parse().ok()?,
            });
        }
        let mut rows = Vec::with_capacity(once.len() * passes as usize);
        for p in 0..passes {
            rows.extend(once.iter().map(|r| Row {
                timestamp: r.timestamp + i64::from(p) * 1000,
                ..r.clone()
            }));
        }
        Some(Self {
            name: format!(
                "reference CSV ({} rows) replayed {passes} times",
                once.len()
            ),
            rows,
        })
    }

    /// Samples in the data set.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the data set has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The rows as store batches of [`BATCH_SAMPLES`].
    pub fn batches(&self) -> Vec<SampleBatch> {
        self.rows
            .chunks(BATCH_SAMPLES)
            .map(|chunk| {
                let mut b = BatchBuilder::default();
                for r in chunk {
                    b.push(&r.gpu, &r.metric, r.timestamp, r.value);
                }
                b.take()
            })
            .collect()
    }

    /// The samples of every series with its metric name, each in time order.
    pub fn series(&self) -> Vec<(String, Vec<Sample>)> {
        let mut by: HashMap<(&str, &str), Vec<Sample>> = HashMap::new();
        for r in &self.rows {
            by.entry((&r.gpu.uuid, &r.metric))
                .or_default()
                .push((r.timestamp, r.value));
        }
        let mut v: Vec<(String, Vec<Sample>)> = by
            .into_iter()
            .map(|((_, m), s)| (m.to_string(), s))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// The UUID of the first GPU.
    pub fn first_uuid(&self) -> String {
        self.rows
            .first()
            .map(|r| r.gpu.uuid.clone())
            .unwrap_or_default()
    }
}
