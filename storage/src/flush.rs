//! Checkpoint work on disk: a frozen generation of heads becomes chunks, open buckets are tiered
//! and sealed, retention drops whole buckets. It runs under the checkpoint lock only (retention
//! also under the store's lock), owns the per-series disk state ([`Disk`]) and writes one atomic
//! batch per checkpoint.
//!
//! Per series, every bucket older than its newest bucket on disk holds exactly one sealed chunk.
//! The newest ("open") bucket holds tiered parts: each checkpoint adds a level-0 part, and
//! [`TIER_FANOUT`] parts of one level merge into one part of the next level, so a bucket written
//! over many checkpoints keeps a handful of parts and each sample is rewritten a few times, not
//! once per checkpoint. A bucket is sealed (merged into one chunk) when the series moves on to a
//! newer bucket, when it has been idle for a bucket width, or when a late sample lands in it.

use std::collections::{HashMap, HashSet};

use fjall::{OwnedWriteBatch as WriteBatch, Readable, Snapshot};

use crate::bucket::{decode_chunk, merge_newer, read_bucket};
use crate::catalog::{encode_extent, Catalog};
use crate::codec::{encode, header, Sample, LEVEL_SEALED};
use crate::digest::{sample_hash, Digest};
use crate::heads::Frozen;
use crate::keys::{bucket_of, chunk_key, parse_chunk_key, series_key, SeriesId};
use crate::store::{gpu_digest_key, Engine, Inner, Keyspaces};
use crate::{Result, StorageError, Timestamp};

/// Parts of one level that merge into one part of the next level.
pub const TIER_FANOUT: usize = 4;

/// A tiered part of an open bucket: the chunk written at `generation`, at `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Generation of the checkpoint that wrote the chunk (its key suffix).
    pub generation: u64,
    /// Tier level ([`crate::codec::LEVEL_SEALED`] for a sealed bucket).
    pub level: u8,
}

/// The newest bucket of a series on disk, the only one that may hold several chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBucket {
    /// Bucket start.
    pub bucket: Timestamp,
    /// Its chunks, oldest first; `None` until read from disk (after a restart).
    pub parts: Option<Vec<Part>>,
}

/// One series on disk.
#[derive(Debug)]
pub struct SeriesDisk {
    /// Catalog ids.
    pub id: SeriesId,
    /// First and last sample time on disk (what its `series` record says).
    pub extent: Option<(Timestamp, Timestamp)>,
    /// The newest bucket on disk.
    pub open: Option<OpenBucket>,
}

/// What the checkpoint knows of every series on disk, by slot. Only checkpoints touch it.
#[derive(Debug, Default)]
pub struct Disk {
    /// By series slot.
    pub series: Vec<SeriesDisk>,
}

impl Disk {
    /// The disk state of a freshly loaded catalog (every extent is on disk).
    pub fn loaded(cat: &Catalog, width: i64) -> Self {
        let series = cat
            .series
            .iter()
            .map(|s| SeriesDisk {
                id: s.id,
                extent: s.extent,
                open: s.extent.map(|(_, last)| OpenBucket {
                    bucket: bucket_of(last, width),
                    parts: None,
                }),
            })
            .collect();
        Self { series }
    }

    /// Writes a frozen generation into `batch`: catalog records, chunks, due seals.
    pub fn flush(
        &mut self,
        frozen: &Frozen,
        eng: &Engine,
        batch: &mut WriteBatch,
        width: i64,
    ) -> Result<()> {
        let ks = &eng.ks;
        for (id, info) in &frozen.gpus {
            let value = bincode::encode_to_vec((id, info), bincode::config::standard())
                .map_err(|e| StorageError::InvalidBatch(e.to_string()))?;
            batch.insert(&ks.gpus, info.uuid.as_bytes(), value);
        }
        for (id, d) in &frozen.digests {
            batch.insert(&ks.meta, gpu_digest_key(*id), d.to_bytes());
        }
        for (id, w) in &frozen.workloads {
            batch.insert(
                &ks.workloads,
                crate::dictionary::key(*id),
                crate::dictionary::encode(w)?,
            );
        }
        for (id, name) in &frozen.metrics {
            batch.insert(&ks.metrics, name.as_bytes(), id.to_be_bytes());
        }
        if self.series.len() != frozen.first_new_slot as usize {
            return Err(StorageError::Corrupt {
                what: "checkpoint",
                detail: format!(
                    "{} series on disk, new ones from slot {}",
                    self.series.len(),
                    frozen.first_new_slot
                ),
            });
        }
        self.series
            .extend(frozen.new_series.iter().map(|&id| SeriesDisk {
                id,
                extent: None,
                open: None,
            }));
        let mut ctx = Ctx {
            snap: eng.db.snapshot(),
            ks,
            width,
            generation: frozen.generation,
            batch,
        };
        let dirty: HashSet<u32> = frozen.dirty.iter().copied().collect();
        for &slot in &frozen.dirty {
            if let Some(series) = self.series.get_mut(slot as usize) {
                ctx.flush_series(series, frozen.head(slot))?;
            }
        }
        if let Some(high) = frozen.high_water {
            let idle_before = high.saturating_sub(width.saturating_mul(2));
            for (slot, series) in self.series.iter_mut().enumerate() {
                if dirty.contains(&(slot as u32)) {
                    continue;
                }
                if let Some(open) = series.open.as_mut().filter(|o| o.bucket <= idle_before) {
                    ctx.seal_if_needed(series.id, open)?;
                }
            }
        }
        Ok(())
    }
}

struct Ctx<'a> {
    snap: Snapshot,
    ks: &'a Keyspaces,
    width: i64,
    generation: u64,
    batch: &'a mut WriteBatch,
}

impl Ctx<'_> {
    fn put(&mut self, id: SeriesId, bucket: Timestamp, samples: &[Sample], level: u8) {
        if !samples.is_empty() {
            let key = chunk_key(id, bucket, self.generation);
            self.batch
                .insert(&self.ks.samples, key.to_vec(), encode(samples, level));
        }
    }

    /// Merges every chunk of a bucket (and `run`, newest) into one sealed chunk.
    fn seal(&mut self, id: SeriesId, bucket: Timestamp, run: &[Sample]) -> Result<Vec<Part>> {
        let (merged, keys) = read_bucket(&self.snap, &self.ks.samples, id, bucket)?;
        for k in keys {
            self.batch.remove(&self.ks.samples, k);
        }
        let merged = merge_newer(merged, run);
        self.put(id, bucket, &merged, LEVEL_SEALED);
        Ok(if merged.is_empty() {
            Vec::new()
        } else {
            vec![Part {
                generation: self.generation,
                level: LEVEL_SEALED,
            }]
        })
    }

    /// The open bucket's parts, read from disk the first time after a restart.
    fn parts<'o>(&self, id: SeriesId, open: &'o mut OpenBucket) -> Result<&'o mut Vec<Part>> {
        if open.parts.is_none() {
            let mut parts = Vec::new();
            let prefix = crate::keys::bucket_prefix(id, open.bucket);
            for kv in self.snap.prefix(&self.ks.samples, prefix) {
                let (k, v) = kv.into_inner()?;
                let (_, _, generation) =
                    parse_chunk_key(&k).ok_or_else(|| corrupt("chunk key length"))?;
                parts.push(Part {
                    generation,
                    level: header(&v)?.level,
                });
            }
            open.parts = Some(parts);
        }
        Ok(open.parts.get_or_insert_with(Vec::new))
    }

    fn seal_if_needed(&mut self, id: SeriesId, open: &mut OpenBucket) -> Result<()> {
        let parts = self.parts(id, open)?;
        if parts.len() == 1 && parts[0].level == LEVEL_SEALED {
            return Ok(());
        }
        open.parts = Some(self.seal(id, open.bucket, &[])?);
        Ok(())
    }

    /// Adds `run` as a new part of the open bucket, merging full tiers.
    fn add_part(&mut self, id: SeriesId, open: &mut OpenBucket, run: &[Sample]) -> Result<()> {
        let bucket = open.bucket;
        let mut parts = std::mem::take(self.parts(id, open)?);
        let mut hand = run.to_vec();
        let mut level = 0u8;
        let mut scratch = Vec::new();
        loop {
            let k = parts.iter().rev().take_while(|p| p.level == level).count();
            if k + 1 < TIER_FANOUT || level >= LEVEL_SEALED - 1 {
                break;
            }
            let mut acc = Vec::new();
            for p in parts.split_off(parts.len() - k) {
                let key = chunk_key(id, bucket, p.generation);
                let v = self
                    .snap
                    .get(&self.ks.samples, key)?
                    .ok_or_else(|| corrupt("a part listed in memory is missing on disk"))?;
                scratch.clear();
                decode_chunk(&v, id, bucket, &mut scratch)?;
                acc = merge_newer(acc, &scratch);
                self.batch.remove(&self.ks.samples, key.to_vec());
            }
            hand = merge_newer(acc, &hand);
            level += 1;
        }
        self.put(id, bucket, &hand, level);
        parts.push(Part {
            generation: self.generation,
            level,
        });
        open.parts = Some(parts);
        Ok(())
    }

    fn flush_series(&mut self, series: &mut SeriesDisk, samples: &[Sample]) -> Result<()> {
        let (Some(&(first_ts, _)), Some(&(last_ts, _))) = (samples.first(), samples.last()) else {
            return Ok(());
        };
        let id = series.id;
        let last_bucket = bucket_of(last_ts, self.width);
        let mut rest = samples;
        while let Some(&(t0, _)) = rest.first() {
            let b = bucket_of(t0, self.width);
            let n = rest.partition_point(|s| bucket_of(s.0, self.width) == b);
            let (run, tail) = rest.split_at(n);
            rest = tail;
            match series.open.as_mut() {
                Some(open) if open.bucket == b && b == last_bucket => {
                    self.add_part(id, open, run)?
                }
                Some(open) if b <= open.bucket => {
                    let parts = self.seal(id, b, run)?;
                    if b == open.bucket {
                        open.parts = Some(parts);
                    }
                }
                open => {
                    if let Some(open) = open {
                        self.seal_if_needed(id, open)?;
                    }
                    let level = if b == last_bucket { 0 } else { LEVEL_SEALED };
                    self.put(id, b, run, level);
                    series.open = Some(OpenBucket {
                        bucket: b,
                        parts: Some(vec![Part {
                            generation: self.generation,
                            level,
                        }]),
                    });
                }
            }
        }
        let (first, last) = match series.extent {
            Some((f, l)) => (f.min(first_ts), l.max(last_ts)),
            None => (first_ts, last_ts),
        };
        series.extent = Some((first, last));
        self.batch
            .insert(&self.ks.series, series_key(id), encode_extent(first, last));
        Ok(())
    }
}

fn corrupt(detail: &str) -> StorageError {
    StorageError::Corrupt {
        what: "chunk",
        detail: detail.into(),
    }
}

impl Disk {
    /// Drops every bucket starting before `before` from disk and from the catalog (the heads
    /// must be empty: held under the store's lock right after a flush); returns samples removed.
    pub(crate) fn expire(
        &mut self,
        inner: &mut Inner,
        eng: &Engine,
        batch: &mut WriteBatch,
        (before, width): (Timestamp, i64),
    ) -> Result<u64> {
        let ks = &eng.ks;
        let snap = eng.db.snapshot();
        let mut removed = 0u64;
        let mut scratch = Vec::new();
        let mut by_gpu: HashMap<u32, Digest> = HashMap::new();
        let metric_hashes: Vec<u64> = (0..inner.catalog.metric_names.len())
            .map(|m| inner.catalog.metric_hash(m as u16))
            .collect();
        for (slot, series) in self.series.iter_mut().enumerate() {
            let Some((first, last)) = series.extent else {
                continue;
            };
            if bucket_of(first, width) >= before {
                continue;
            }
            let id = series.id;
            let m = metric_hashes
                .get(usize::from(id.metric))
                .copied()
                .unwrap_or_default();
            let dropped = by_gpu.entry(id.gpu).or_default();
            let mut bucket_samples: Vec<Sample> = Vec::new();
            let mut current: Option<Timestamp> = None;
            let range = chunk_key(id, i64::MIN, 0)..chunk_key(id, before, 0);
            for kv in snap.range(&ks.samples, range) {
                let (k, v) = kv.into_inner()?;
                let (_, b, _) = parse_chunk_key(&k).ok_or_else(|| corrupt("chunk key length"))?;
                if current != Some(b) {
                    removed += bucket_samples.len() as u64;
                    bucket_samples
                        .iter()
                        .for_each(|s| dropped.add(sample_hash(m, s.0)));
                    bucket_samples.clear();
                    current = Some(b);
                }
                scratch.clear();
                decode_chunk(&v, id, b, &mut scratch)?;
                bucket_samples = merge_newer(bucket_samples, &scratch);
                batch.remove(&ks.samples, k);
            }
            removed += bucket_samples.len() as u64;
            bucket_samples
                .iter()
                .for_each(|s| dropped.add(sample_hash(m, s.0)));
            if bucket_of(last, width) < before {
                series.extent = None;
                series.open = None;
                if let Some(s) = inner.catalog.series.get_mut(slot) {
                    s.extent = None;
                }
                batch.remove(&ks.series, series_key(id).to_vec());
                continue;
            }
            let next = chunk_key(id, before, 0)..=chunk_key(id, i64::MAX, u64::MAX);
            let mut new_first = last;
            if let Some(kv) = snap.range(&ks.samples, next).next() {
                let (k, _) = kv.into_inner()?;
                let (_, b, _) = parse_chunk_key(&k).ok_or_else(|| corrupt("chunk key length"))?;
                let (samples, _) = read_bucket(&snap, &ks.samples, id, b)?;
                new_first = samples.first().map_or(last, |s| s.0);
            }
            series.extent = Some((new_first, last));
            if let Some(s) = inner.catalog.series.get_mut(slot) {
                s.extent = Some((new_first, last));
            }
            batch.insert(&ks.series, series_key(id), encode_extent(new_first, last));
        }
        inner.disk_count = inner.disk_count.saturating_sub(removed);
        for (gpu, d) in by_gpu {
            inner.catalog.remove_samples(gpu, d);
            if let Some(g) = inner.catalog.gpu_digests.get(gpu as usize) {
                batch.insert(&ks.meta, gpu_digest_key(gpu), g.to_bytes());
            }
        }
        inner.catalog.dirty_digests.clear();
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchBuilder, GpuInfo, Store, StoreOptions};
    use std::time::Duration;

    fn chunks(store: &Store) -> Vec<(Timestamp, u8)> {
        store
            .engine()
            .expect("engine")
            .ks
            .samples
            .iter()
            .map(|kv| {
                let (k, v) = kv.into_inner().expect("read");
                let (_, bucket, _) = parse_chunk_key(&k).expect("key");
                (bucket, header(&v).expect("header").level)
            })
            .collect()
    }

    fn write_one(store: &Store, ts: Timestamp) {
        let mut b = BatchBuilder::default();
        let gpu = GpuInfo {
            uuid: "GPU-1".into(),
            ..GpuInfo::placeholder()
        };
        b.push(&gpu, "M", ts, ts as f64);
        store.write(&b.take()).expect("write");
    }

    #[test]
    fn open_bucket_parts_are_tiered_and_sealed_when_the_series_moves_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = StoreOptions {
            bucket_width: Some(Duration::from_secs(3600)),
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), opts).expect("open");
        for n in 1..=70i64 {
            write_one(&store, n * 1000);
            store.checkpoint().expect("checkpoint");
            // n checkpoints into one bucket leave one part per base-4 digit unit of n.
            let mut digits = 0;
            let mut m = n;
            while m > 0 {
                digits += m % 4;
                m /= 4;
            }
            let parts = chunks(&store);
            assert_eq!(
                parts.len() as i64,
                digits,
                "after {n} checkpoints: {parts:?}"
            );
        }
        // The next bucket seals the first into one chunk.
        write_one(&store, 3_600_000 + 5);
        store.checkpoint().expect("checkpoint");
        assert_eq!(chunks(&store), [(0, LEVEL_SEALED), (3_600_000, 0)]);
        assert_eq!(store.samples_stored(), 71);
        // A late sample in the sealed bucket is merged into its one chunk.
        write_one(&store, 500);
        store.checkpoint().expect("checkpoint");
        assert_eq!(chunks(&store), [(0, LEVEL_SEALED), (3_600_000, 0)]);
        assert_eq!(store.samples_stored(), 72);
    }
}
