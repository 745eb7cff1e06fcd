//! The store: fjall keyspaces plus an in-memory catalog of GPUs, metrics and series extents.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::Path;
use std::sync::{Mutex, RwLock};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use crate::keys::{sample_key, sample_key_ts, series_key, SAMPLE_KEY_LEN};
use crate::model::{GpuDetail, GpuInfo, Point, SampleBatch, Timestamp};
use crate::{Result, StorageError};

pub use crate::keys::BUCKET_WIDTH_MS;

const COUNT_KEY: &[u8] = b"samples_stored";

/// Tuning of the underlying engine.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Block cache size in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 64 << 20,
        }
    }
}

/// What one [`Store::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WriteStats {
    /// Samples that were not stored before (the rest overwrote an existing sample).
    pub new_samples: u64,
}

/// Position after the last point of a page: the next page starts strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCursor {
    /// Timestamp of the last point returned.
    pub timestamp: Timestamp,
    /// Metric of the last point returned (points are ordered by time, then metric name).
    pub metric: String,
}

/// A range read: one GPU, some metrics, an inclusive time window, a page size and a cursor.
#[derive(Debug, Clone)]
pub struct RangeQuery<'a> {
    /// GPU UUID.
    pub uuid: &'a str,
    /// Metric names to read; empty means all metrics of the GPU.
    pub metrics: &'a [String],
    /// Inclusive start.
    pub start: Timestamp,
    /// Inclusive end.
    pub end: Timestamp,
    /// Maximum points returned.
    pub limit: usize,
    /// Resume after this point.
    pub cursor: Option<RangeCursor>,
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Points ordered by (timestamp, metric).
    pub points: Vec<Point>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<RangeCursor>,
}

#[derive(Default)]
struct Catalog {
    gpus: HashMap<String, (u32, GpuInfo)>,
    metric_ids: HashMap<String, u16>,
    metric_names: Vec<String>,
    /// (gpu id, metric id) → (first, last) timestamp.
    series: BTreeMap<(u32, u16), (Timestamp, Timestamp)>,
    samples_stored: u64,
}

/// The node's time-series store. Cheap to share behind an `Arc`; all methods take `&self`.
pub struct Store {
    db: Database,
    samples: Keyspace,
    gpus_ks: Keyspace,
    metrics_ks: Keyspace,
    series_ks: Keyspace,
    meta_ks: Keyspace,
    catalog: RwLock<Catalog>,
    /// Serialises writers so id assignment and the distinct-sample count stay exact.
    write_lock: Mutex<()>,
}

fn corrupt(what: &'static str, detail: impl ToString) -> StorageError {
    StorageError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

fn be_u64(bytes: &[u8], what: &'static str) -> Result<u64> {
    Ok(u64::from_be_bytes(
        bytes.try_into().map_err(|_| corrupt(what, "bad length"))?,
    ))
}

impl Store {
    /// Opens (or creates) the store in `path` and loads its catalog.
    pub fn open(path: impl AsRef<Path>, opts: StoreOptions) -> Result<Self> {
        let db = Database::builder(path.as_ref())
            .cache_size(opts.cache_bytes)
            .open()?;
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        let store = Self {
            samples: ks("samples")?,
            gpus_ks: ks("gpus")?,
            metrics_ks: ks("metrics")?,
            series_ks: ks("series")?,
            meta_ks: ks("meta")?,
            db,
            catalog: RwLock::default(),
            write_lock: Mutex::default(),
        };
        store.load_catalog()?;
        Ok(store)
    }

    fn load_catalog(&self) -> Result<()> {
        let mut cat = Catalog::default();
        for kv in self.gpus_ks.iter() {
            let (k, v) = kv.into_inner()?;
            let uuid = String::from_utf8(k.to_vec()).map_err(|e| corrupt("gpu", e))?;
            let ((id, info), _): ((u32, GpuInfo), usize) =
                bincode::decode_from_slice(&v, bincode::config::standard())
                    .map_err(|e| corrupt("gpu", e))?;
            cat.gpus.insert(uuid, (id, info));
        }
        let mut metrics: Vec<(u16, String)> = Vec::new();
        for kv in self.metrics_ks.iter() {
            let (k, v) = kv.into_inner()?;
            let name = String::from_utf8(k.to_vec()).map_err(|e| corrupt("metric", e))?;
            let id: [u8; 2] = (*v).try_into().map_err(|_| corrupt("metric", "bad id"))?;
            metrics.push((u16::from_be_bytes(id), name));
        }
        metrics.sort();
        for (expected, (id, name)) in metrics.into_iter().enumerate() {
            if usize::from(id) != expected {
                return Err(corrupt("metric", format!("ids not dense at {id}")));
            }
            cat.metric_ids.insert(name.clone(), id);
            cat.metric_names.push(name);
        }
        for kv in self.series_ks.iter() {
            let (k, v) = kv.into_inner()?;
            let k: [u8; 6] = (*k).try_into().map_err(|_| corrupt("series", "key"))?;
            let gpu = u32::from_be_bytes([k[0], k[1], k[2], k[3]]);
            let metric = u16::from_be_bytes([k[4], k[5]]);
            let first = be_u64(v.get(0..8).unwrap_or_default(), "series")? as i64;
            let last = be_u64(v.get(8..16).unwrap_or_default(), "series")? as i64;
            cat.series.insert((gpu, metric), (first, last));
        }
        if let Some(v) = self.meta_ks.get(COUNT_KEY)? {
            cat.samples_stored = be_u64(&v, "meta")?;
        }
        *self.catalog.write().unwrap_or_else(|e| e.into_inner()) = cat;
        Ok(())
    }

    /// Writes a batch atomically; same (GPU, metric, timestamp) overwrites (last write wins).
    ///
    /// Not durable until [`Store::persist`] returns.
    pub fn write(&self, batch: &SampleBatch) -> Result<WriteStats> {
        batch.validate()?;
        let _writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let mut wb = self.db.batch();

        // Resolve ids, staging new catalog entries until the batch is committed.
        let mut new_gpus: Vec<(String, u32, GpuInfo)> = Vec::new();
        let mut gpu_ids = Vec::with_capacity(batch.gpus.len());
        let mut next_gpu = cat.gpus.len() as u32;
        for info in &batch.gpus {
            let id = match cat.gpus.get(&info.uuid) {
                Some((id, stored)) if stored == info => *id,
                Some((id, _)) => *id,
                None => {
                    next_gpu += 1;
                    next_gpu - 1
                }
            };
            if cat
                .gpus
                .get(&info.uuid)
                .is_none_or(|(_, stored)| stored != info)
            {
                let value = bincode::encode_to_vec((id, info), bincode::config::standard())
                    .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
                wb.insert(&self.gpus_ks, info.uuid.as_bytes(), value);
                new_gpus.push((info.uuid.clone(), id, info.clone()));
            }
            gpu_ids.push(id);
        }
        let mut new_metrics: Vec<(String, u16)> = Vec::new();
        let mut metric_ids = Vec::with_capacity(batch.metrics.len());
        for name in &batch.metrics {
            let id = match cat.metric_ids.get(name) {
                Some(id) => *id,
                None => match new_metrics.iter().find(|(n, _)| n == name) {
                    Some((_, id)) => *id,
                    None => {
                        let id = u16::try_from(cat.metric_names.len() + new_metrics.len())
                            .map_err(|_| StorageError::InvalidBatch("too many metrics".into()))?;
                        wb.insert(&self.metrics_ks, name.as_bytes(), id.to_be_bytes());
                        new_metrics.push((name.clone(), id));
                        id
                    }
                },
            };
            metric_ids.push(id);
        }

        // Last write wins inside the batch too: stable sort, keep the last of equal keys.
        let mut rows: Vec<([u8; SAMPLE_KEY_LEN], f64, u32, u16, Timestamp)> = batch
            .samples
            .iter()
            .map(|s| {
                let (g, m) = (gpu_ids[s.gpu as usize], metric_ids[s.metric as usize]);
                (sample_key(g, m, s.timestamp), s.value, g, m, s.timestamp)
            })
            .collect();
        rows.sort_by_key(|r| r.0);
        let mut new_samples = 0u64;
        let mut extents: BTreeMap<(u32, u16), (Timestamp, Timestamp)> = BTreeMap::new();
        for (i, (key, value, g, m, ts)) in rows.iter().enumerate() {
            if rows.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            if !self.samples.contains_key(key)? {
                new_samples += 1;
            }
            wb.insert(&self.samples, key.to_vec(), value.to_le_bytes());
            let e = extents
                .entry((*g, *m))
                .or_insert_with(|| cat.series.get(&(*g, *m)).copied().unwrap_or((*ts, *ts)));
            e.0 = e.0.min(*ts);
            e.1 = e.1.max(*ts);
        }
        extents.retain(|k, v| cat.series.get(k) != Some(v));
        for ((g, m), (first, last)) in &extents {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&(*first as u64).to_be_bytes());
            v[8..].copy_from_slice(&(*last as u64).to_be_bytes());
            wb.insert(&self.series_ks, series_key(*g, *m), v);
        }
        let total = cat.samples_stored + new_samples;
        wb.insert(&self.meta_ks, COUNT_KEY, total.to_be_bytes());
        drop(cat);
        wb.commit()?;

        let mut cat = self.catalog.write().unwrap_or_else(|e| e.into_inner());
        for (uuid, id, info) in new_gpus {
            cat.gpus.insert(uuid, (id, info));
        }
        for (name, id) in new_metrics {
            cat.metric_ids.insert(name.clone(), id);
            cat.metric_names.push(name);
        }
        cat.series.extend(extents);
        cat.samples_stored = total;
        Ok(WriteStats { new_samples })
    }

    /// Makes every write so far durable (fsync of the journal).
    pub fn persist(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// Reads one page of a GPU's samples ordered by (time, metric); `None` if the GPU is unknown.
    pub fn range(&self, q: &RangeQuery<'_>) -> Result<Option<Page>> {
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let Some((gpu_id, _)) = cat.gpus.get(q.uuid) else {
            return Ok(None);
        };
        let gpu_id = *gpu_id;
        let mut series: Vec<(String, u16)> = cat
            .series
            .range((gpu_id, 0)..=(gpu_id, u16::MAX))
            .filter_map(|(&(_, m), _)| {
                let name = cat.metric_names.get(usize::from(m))?;
                (q.metrics.is_empty() || q.metrics.contains(name)).then(|| (name.clone(), m))
            })
            .collect();
        drop(cat);
        series.sort();

        let from = match &q.cursor {
            Some(c) => q.start.max(c.timestamp),
            None => q.start,
        };
        let mut points = Vec::new();
        if from > q.end || q.limit == 0 {
            return Ok(Some(Page { points, next: None }));
        }
        let mut iters: Vec<_> = series
            .iter()
            .map(|(_, m)| {
                self.samples
                    .range(sample_key(gpu_id, *m, from)..=sample_key(gpu_id, *m, q.end))
            })
            .collect();
        let mut heap = BinaryHeap::new();
        for (rank, it) in iters.iter_mut().enumerate() {
            if let Some(p) = next_point(it)? {
                heap.push(Reverse((p.0, rank, p.1.to_bits())));
            }
        }
        let mut more = false;
        while let Some(Reverse((ts, rank, bits))) = heap.pop() {
            if let Some(p) = next_point(&mut iters[rank])? {
                heap.push(Reverse((p.0, rank, p.1.to_bits())));
            }
            let metric = &series[rank].0;
            if let Some(c) = &q.cursor {
                if ts == c.timestamp && metric.as_str() <= c.metric.as_str() {
                    continue;
                }
            }
            if points.len() == q.limit {
                more = true;
                break;
            }
            points.push(Point {
                timestamp: ts,
                metric: metric.clone(),
                value: f64::from_bits(bits),
            });
        }
        let next = if more {
            points.last().map(|p| RangeCursor {
                timestamp: p.timestamp,
                metric: p.metric.clone(),
            })
        } else {
            None
        };
        Ok(Some(Page { points, next }))
    }

    /// All GPUs, sorted by UUID.
    pub fn gpus(&self) -> Vec<GpuInfo> {
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<GpuInfo> = cat.gpus.values().map(|(_, i)| i.clone()).collect();
        v.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        v
    }

    /// One GPU with its metric names and the span of its samples.
    pub fn gpu(&self, uuid: &str) -> Option<GpuDetail> {
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let (id, info) = cat.gpus.get(uuid)?;
        let mut metrics = Vec::new();
        let (mut first, mut last) = (None::<Timestamp>, None::<Timestamp>);
        for (&(_, m), &(f, l)) in cat.series.range((*id, 0)..=(*id, u16::MAX)) {
            if let Some(name) = cat.metric_names.get(usize::from(m)) {
                metrics.push(name.clone());
            }
            first = Some(first.map_or(f, |x| x.min(f)));
            last = Some(last.map_or(l, |x| x.max(l)));
        }
        metrics.sort();
        Some(GpuDetail {
            info: info.clone(),
            metrics,
            first_timestamp: first,
            last_timestamp: last,
        })
    }

    /// Metric names with at least one stored sample, sorted.
    pub fn metrics(&self) -> Vec<String> {
        let cat = self.catalog.read().unwrap_or_else(|e| e.into_inner());
        let mut v = cat.metric_names.clone();
        v.sort();
        v
    }

    /// Distinct samples stored (a sample written twice counts once).
    pub fn samples_stored(&self) -> u64 {
        self.catalog
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .samples_stored
    }

    /// Bytes on disk of the flushed tables of all keyspaces (the journal is not counted: it is
    /// preallocated and recycled, so it says nothing about the size of the data).
    pub fn disk_space(&self) -> u64 {
        [
            &self.samples,
            &self.gpus_ks,
            &self.metrics_ks,
            &self.series_ks,
            &self.meta_ks,
        ]
        .iter()
        .map(|ks| ks.disk_space())
        .sum()
    }
}

fn next_point(it: &mut fjall::Iter) -> Result<Option<(Timestamp, f64)>> {
    let Some(guard) = it.next() else {
        return Ok(None);
    };
    let (k, v) = guard.into_inner()?;
    let ts = sample_key_ts(&k).ok_or_else(|| corrupt("sample", "key length"))?;
    let bytes: [u8; 8] = (*v)
        .try_into()
        .map_err(|_| corrupt("sample", "value length"))?;
    Ok(Some((ts, f64::from_le_bytes(bytes))))
}
