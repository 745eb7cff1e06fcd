//! The write path: a batch goes into the active heads under the store's lock, with the distinct
//! count and the GPU digests kept exact (a sample is new only if neither a head nor the disk
//! holds its timestamp).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::Instant;

use parking_lot::MutexGuard;
use rustc_hash::FxHashMap;

use crate::bucket::read_bucket;
use crate::codec::Sample;
use crate::digest::{metric_hash, sample_hash, Digest};
use crate::keys::{bucket_of, SeriesId};
use crate::model::SampleBatch;
use crate::store::{Inner, Store, WriteStats};
use crate::workload::{id_of_value, WORKLOAD_METRIC};
use crate::{Result, StorageError, Timestamp};

/// Samples written per hold of the store's lock. A longer batch is written in slices, and
/// between two the lock goes to a waiting reader or writer first (a fair hand-over), so a read
/// never waits behind more than one slice (~0.1 ms of work) however large the batches. Each
/// slice's samples are counted and digested before the lock is handed over, so a checkpoint
/// that freezes between two slices commits exact counts.
pub const WRITE_SLICE_SAMPLES: usize = 1024;

/// A batch's GPUs and metrics resolved to catalog ids, and its series slots as found.
struct Resolved {
    gpu_ids: Vec<u32>,
    metric_ids: Vec<u16>,
    metric_hashes: Vec<u64>,
    /// (batch GPU index, batch metric index) → series slot.
    slots: FxHashMap<(u32, u32), u32>,
    /// Digests of one slice's new samples by batch GPU index; emptied after each slice.
    new_by_gpu: Vec<Digest>,
}

/// The newest observation of each workload id a batch holds.
fn newest_observations(batch: &SampleBatch) -> FxHashMap<u64, Timestamp> {
    let mut out = FxHashMap::default();
    let Some(m) = batch.metrics.iter().position(|m| m == WORKLOAD_METRIC) else {
        return out;
    };
    for s in batch.samples.iter().filter(|s| s.metric as usize == m) {
        if let Some(id) = id_of_value(s.value) {
            let t = out.entry(id).or_insert(s.timestamp);
            *t = (*t).max(s.timestamp);
        }
    }
    out
}

impl Store {
    /// Writes a batch; the same (GPU, metric, timestamp) overwrites (last write wins).
    ///
    /// The samples are readable at once (a batch longer than [`WRITE_SLICE_SAMPLES`] becomes
    /// readable a slice at a time) and durable once [`Store::durable_generation`] reaches the
    /// returned generation. A write that fills the heads (`max_head_samples`) checkpoints
    /// before it returns, waiting for a checkpoint already running: that is the bound's
    /// back-pressure.
    pub fn write(&self, batch: &SampleBatch) -> Result<WriteStats> {
        batch.validate()?;
        self.check_poisoned()?;
        let metric_hashes: Vec<u64> = batch.metrics.iter().map(|m| metric_hash(m)).collect();
        let epoch = self.epoch();
        let mut guard = self.lock();
        let cat = &mut guard.catalog;
        if cat.metric_names.len() + cat.unknown_metrics(batch.metrics.iter()) > 1 << 16 {
            return Err(StorageError::InvalidBatch("more than 65536 metrics".into()));
        }
        let newest = newest_observations(batch);
        for w in &batch.workloads {
            let last = newest.get(&w.id()).copied().unwrap_or(Timestamp::MIN);
            cat.workloads.add(w, last, self.width);
        }
        let mut ids = Resolved {
            gpu_ids: batch.gpus.iter().map(|g| cat.gpu_id(g)).collect(),
            metric_ids: batch
                .metrics
                .iter()
                .map(|m| cat.metric_id(m).unwrap_or(u16::MAX))
                .collect(),
            metric_hashes,
            slots: FxHashMap::default(),
            new_by_gpu: vec![Digest::default(); batch.gpus.len()],
        };
        let mut new_samples = 0u64;
        for (i, slice) in batch.samples.chunks(WRITE_SLICE_SAMPLES).enumerate() {
            if i > 0 {
                MutexGuard::bump(&mut guard);
                if self.epoch() != epoch {
                    // A recovery replaced the catalog: the ids resolved above mean nothing now.
                    return Err(StorageError::Recovering);
                }
            }
            new_samples += self.write_slice(&mut guard, slice, &mut ids)?;
        }
        let full = guard.heads.samples >= self.opts.max_head_samples;
        let generation = guard.generation;
        drop(guard);
        if full {
            self.checkpoint()?;
        }
        Ok(WriteStats {
            new_samples,
            generation,
        })
    }

    /// One slice of a batch into the active heads, counted and digested; returns the new
    /// samples.
    fn write_slice(
        &self,
        inner: &mut Inner,
        slice: &[crate::model::BatchSample],
        ids: &mut Resolved,
    ) -> Result<u64> {
        let cat = &mut inner.catalog;
        let mut late: Vec<(u32, Sample)> = Vec::new();
        let mut new_samples = 0u64;
        let mut high = inner.high_water;
        let mut low = inner.head_min;
        for s in slice {
            low = Some(low.map_or(s.timestamp, |l| l.min(s.timestamp)));
            let slot = *ids.slots.entry((s.gpu, s.metric)).or_insert_with(|| {
                cat.series_slot(SeriesId {
                    gpu: ids.gpu_ids[s.gpu as usize],
                    metric: ids.metric_ids[s.metric as usize],
                })
            });
            let series = &mut cat.series[slot as usize];
            match series.extent {
                Some((_, last)) if s.timestamp <= last => late.push((slot, (s.timestamp, s.value))),
                extent => {
                    let head = inner.heads.head_mut(slot);
                    if head.is_empty() {
                        series.before_head = extent.map(|e| e.1);
                    }
                    head.push((s.timestamp, s.value));
                    series.extend(s.timestamp);
                    new_samples += 1;
                    ids.new_by_gpu[s.gpu as usize].add(sample_hash(
                        ids.metric_hashes[s.metric as usize],
                        s.timestamp,
                    ));
                    inner.heads.samples += 1;
                    high = high.max(Some(s.timestamp));
                }
            }
        }
        inner.high_water = high;
        inner.head_min = low;
        for (i, d) in ids.new_by_gpu.iter_mut().enumerate() {
            if d.count > 0 {
                inner.catalog.add_samples(ids.gpu_ids[i], std::mem::take(d));
            }
        }
        if !late.is_empty() {
            new_samples += self.write_late(inner, late)?;
        }
        inner.heads.new += new_samples;
        inner.last_write = Instant::now();
        Ok(new_samples)
    }

    /// Samples at or before a series' last time: overwritten in the active head, or inserted
    /// there (new only when neither the frozen head nor the disk holds that timestamp). Returns
    /// the new ones.
    fn write_late(&self, inner: &mut Inner, late: Vec<(u32, Sample)>) -> Result<u64> {
        let eng = self.engine()?;
        let snapshot = eng.db.snapshot();
        let mut decoded: HashMap<(u32, i64), Vec<Sample>> = HashMap::new();
        let mut new_samples = 0;
        for (slot, (ts, v)) in late {
            let series = &mut inner.catalog.series[slot as usize];
            let active = inner.heads.active(slot);
            let at = match active.binary_search_by_key(&ts, |x| x.0) {
                Ok(i) => {
                    inner.heads.head_mut(slot)[i].1 = v;
                    continue;
                }
                Err(i) => i,
            };
            let stored = match series.stored_last(active.is_empty()) {
                Some(last) if ts <= last => {
                    let frozen = inner.heads.frozen(slot);
                    if frozen.binary_search_by_key(&ts, |x| x.0).is_ok() {
                        true
                    } else {
                        let bucket = bucket_of(ts, self.width);
                        let samples = match decoded.entry((slot, bucket)) {
                            Entry::Occupied(e) => e.into_mut(),
                            Entry::Vacant(e) => e.insert(
                                read_bucket(&snapshot, &eng.ks.samples, series.id, bucket)?.0,
                            ),
                        };
                        samples.binary_search_by_key(&ts, |x| x.0).is_ok()
                    }
                }
                _ => false,
            };
            let was_empty = active.is_empty();
            if was_empty {
                series.before_head = series.extent.map(|e| e.1);
            }
            inner.heads.head_mut(slot).insert(at, (ts, v));
            series.extend(ts);
            let id = series.id;
            inner.heads.samples += 1;
            if !stored {
                new_samples += 1;
                let mut d = Digest::default();
                d.add(sample_hash(inner.catalog.metric_hash(id.metric), ts));
                inner.catalog.add_samples(id.gpu, d);
            }
        }
        Ok(new_samples)
    }
}
