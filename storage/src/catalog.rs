//! The in-memory catalog: GPUs, metric names, and the state of every series.
//!
//! It mirrors the `gpus`, `metrics` and `series` keyspaces, which are written only at checkpoints
//! (together with the chunks they describe), so after a crash the catalog and the chunks agree.

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::dictionary::Dictionary;
use crate::digest::Digest;
use crate::keys::{parse_series_key, SeriesId};
use crate::model::GpuInfo;
use crate::{Result, StorageError, Timestamp};

/// One series as writers and readers see it (its heads are in [`crate::heads::Heads`], its
/// chunks' state in [`crate::flush::Disk`]).
#[derive(Debug)]
pub struct Series {
    /// Catalog ids.
    pub id: SeriesId,
    /// First and last sample time, heads included; `None` when the series holds nothing.
    pub extent: Option<(Timestamp, Timestamp)>,
    /// The last sample time when the active head received its first sample: samples after it
    /// can only be in the active head (meaningless while the active head is empty).
    pub before_head: Option<Timestamp>,
}

impl Series {
    fn new(id: SeriesId) -> Self {
        Self {
            id,
            extent: None,
            before_head: None,
        }
    }

    /// The last sample time outside the active head (frozen or on disk); `active_empty` says
    /// whether the active head is empty.
    pub fn stored_last(&self, active_empty: bool) -> Option<Timestamp> {
        if active_empty {
            self.extent.map(|e| e.1)
        } else {
            self.before_head
        }
    }

    /// Widens the extent to include `ts`.
    pub fn extend(&mut self, ts: Timestamp) {
        self.extent = Some(match self.extent {
            Some((f, l)) => (f.min(ts), l.max(ts)),
            None => (ts, ts),
        });
    }
}

/// GPUs, metrics and series.
#[derive(Debug, Default)]
pub struct Catalog {
    gpu_ids: HashMap<String, u32>,
    /// GPU attributes by id.
    pub gpus: Vec<GpuInfo>,
    /// Series slots of each GPU, by GPU id.
    pub gpu_series: Vec<Vec<u32>>,
    metric_ids: HashMap<String, u16>,
    /// Metric names by id.
    pub metric_names: Vec<Arc<str>>,
    /// FxHash: catalog ids, not user input, looked up once per series per written batch.
    series_slots: FxHashMap<SeriesId, u32>,
    /// Every series, by slot.
    pub series: Vec<Series>,
    /// GPUs whose attributes the next checkpoint persists.
    pub dirty_gpus: Vec<u32>,
    /// Metrics the next checkpoint persists.
    pub dirty_metrics: Vec<u16>,
    /// Digest (distinct count and hash-sum) of each GPU's samples, heads included, by GPU id:
    /// what replicas compare, and the distinct count a cluster sums per partition.
    pub gpu_digests: Vec<Digest>,
    /// GPUs whose digest the next checkpoint persists.
    pub dirty_digests: Vec<u32>,
    /// Series slots below this one are known to the checkpoint's disk state; the next freeze
    /// hands it the rest.
    pub persisted_series: u32,
    /// The workload dictionary.
    pub workloads: Dictionary,
}

fn corrupt(what: &'static str, detail: impl ToString) -> StorageError {
    StorageError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

impl Catalog {
    /// The id of a GPU, adding it (or updating changed attributes) as needed.
    pub fn gpu_id(&mut self, info: &GpuInfo) -> u32 {
        if let Some(&id) = self.gpu_ids.get(&info.uuid) {
            if let Some(stored) = self.gpus.get_mut(id as usize) {
                if stored != info {
                    *stored = info.clone();
                    self.dirty_gpus.push(id);
                }
            }
            return id;
        }
        let id = self.gpus.len() as u32;
        self.gpu_ids.insert(info.uuid.clone(), id);
        self.gpus.push(info.clone());
        self.gpu_series.push(Vec::new());
        self.gpu_digests.push(Digest::default());
        self.dirty_gpus.push(id);
        id
    }

    /// Adds the digest of new distinct samples of GPU `gpu`.
    pub fn add_samples(&mut self, gpu: u32, d: Digest) {
        if let Some(g) = self.gpu_digests.get_mut(gpu as usize) {
            g.count += d.count;
            g.hash = g.hash.wrapping_add(d.hash);
            self.dirty_digests.push(gpu);
        }
    }

    /// Takes the digest of dropped samples (retention) out of GPU `gpu`'s.
    pub fn remove_samples(&mut self, gpu: u32, d: Digest) {
        if let Some(g) = self.gpu_digests.get_mut(gpu as usize) {
            g.count = g.count.saturating_sub(d.count);
            g.hash = g.hash.wrapping_sub(d.hash);
            self.dirty_digests.push(gpu);
        }
    }

    /// The hash of a metric by id ([`crate::digest::metric_hash`] of its name).
    pub fn metric_hash(&self, metric: u16) -> u64 {
        self.metric_names
            .get(usize::from(metric))
            .map_or(0, |n| crate::digest::metric_hash(n))
    }

    /// The id of a known GPU.
    pub fn find_gpu(&self, uuid: &str) -> Option<u32> {
        self.gpu_ids.get(uuid).copied()
    }

    /// Number of metric names that would be new.
    pub fn unknown_metrics<'a>(&self, names: impl Iterator<Item = &'a String>) -> usize {
        names.filter(|n| !self.metric_ids.contains_key(*n)).count()
    }

    /// The id of a metric, adding it as needed; `None` past `u16::MAX` metrics.
    pub fn metric_id(&mut self, name: &str) -> Option<u16> {
        if let Some(&id) = self.metric_ids.get(name) {
            return Some(id);
        }
        let id = u16::try_from(self.metric_names.len()).ok()?;
        self.metric_ids.insert(name.to_string(), id);
        self.metric_names.push(Arc::from(name));
        self.dirty_metrics.push(id);
        Some(id)
    }

    /// The slot of a series, adding it as needed.
    pub fn series_slot(&mut self, id: SeriesId) -> u32 {
        if let Some(&slot) = self.series_slots.get(&id) {
            return slot;
        }
        let slot = self.series.len() as u32;
        self.series.push(Series::new(id));
        self.series_slots.insert(id, slot);
        if let Some(list) = self.gpu_series.get_mut(id.gpu as usize) {
            list.push(slot);
        }
        slot
    }

    /// Loads a GPU record of the `gpus` keyspace.
    pub fn load_gpu(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let uuid = std::str::from_utf8(key).map_err(|e| corrupt("gpu", e))?;
        let (id, mut info) =
            crate::model::decode_gpu_record(value).map_err(|e| corrupt("gpu", e))?;
        // A record of format 3 may hold the pod it last saw; workloads are observations now.
        (info.container, info.pod, info.namespace, info.hpc_job) = (None, None, None, None);
        if info.uuid != uuid {
            return Err(corrupt("gpu", format!("key {uuid} holds {}", info.uuid)));
        }
        let slot = id as usize;
        if self.gpus.len() <= slot {
            self.gpus.resize_with(slot + 1, GpuInfo::placeholder);
            self.gpu_series.resize_with(slot + 1, Vec::new);
            self.gpu_digests.resize(slot + 1, Digest::default());
        }
        self.gpu_ids.insert(info.uuid.clone(), id);
        self.gpus[slot] = info;
        Ok(())
    }

    /// Checks that GPU ids are dense after loading (a gap means a damaged catalog).
    pub fn check_gpus(&self) -> Result<()> {
        if self.gpu_ids.len() != self.gpus.len() {
            return Err(corrupt("gpu", "ids are not dense"));
        }
        Ok(())
    }

    /// Loads the `metrics` keyspace's records (name → id), which must form dense ids.
    pub fn load_metrics(&mut self, mut records: Vec<(u16, String)>) -> Result<()> {
        records.sort();
        for (expected, (id, name)) in records.into_iter().enumerate() {
            if usize::from(id) != expected {
                return Err(corrupt("metric", format!("ids not dense at {id}")));
            }
            self.metric_ids.insert(name.clone(), id);
            self.metric_names.push(Arc::from(name));
        }
        Ok(())
    }

    /// Loads a record of the `series` keyspace: its extent, all of it on disk.
    pub fn load_series(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let id = parse_series_key(key).ok_or_else(|| corrupt("series", "key length"))?;
        let (first, last) = decode_extent(value)?;
        if id.gpu as usize >= self.gpus.len() || usize::from(id.metric) >= self.metric_names.len() {
            return Err(corrupt(
                "series",
                format!("{id:?} refers to no GPU or metric"),
            ));
        }
        let slot = self.series_slot(id);
        self.series[slot as usize].extent = Some((first, last));
        self.persisted_series = self.series.len() as u32;
        Ok(())
    }
}

/// Encodes a series extent for the `series` keyspace.
pub fn encode_extent(first: Timestamp, last: Timestamp) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&first.to_be_bytes());
    v[8..].copy_from_slice(&last.to_be_bytes());
    v
}

pub fn decode_extent(v: &[u8]) -> Result<(Timestamp, Timestamp)> {
    let v: &[u8; 16] = v.try_into().map_err(|_| corrupt("series", "extent"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&v[..8]);
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[8..]);
    Ok((i64::from_be_bytes(a), i64::from_be_bytes(b)))
}
