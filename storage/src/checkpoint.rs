//! Checkpoints without stopping the world.
//!
//! Under the store's lock a checkpoint only freezes the active heads ([`Inner::freeze`]: a swap,
//! and a copy of the catalog changes since the last one). Encoding, tier merges, the batch
//! commit and the fsync run under the checkpoint lock alone, while writers fill the next active
//! generation and readers see disk + frozen + active. The lock is taken again for a moment to
//! release the frozen generation once its batch is visible on disk.
//!
//! Retention is the exception: dropping buckets holds the store's lock (after writing out the
//! heads that arrived meanwhile), as it must see heads and disk at rest. It runs when the cutoff
//! enters a new bucket (once per bucket width) or a write went behind it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fjall::PersistMode;

use crate::codec::Sample;
use crate::flush::Disk;
use crate::heads::{recycle, Frozen, Heads};
use crate::keys::bucket_of;
use crate::store::{
    Engine, Inner, Store, IDLE_CHECKPOINT, MAX_CHECKPOINT_DELAY, META_COUNT, META_GENERATION,
    MIN_CHUNK_SAMPLES,
};
use crate::{Result, Timestamp};

/// What the checkpoint lock guards: the disk state of every series and the emptied heads the
/// next freeze makes active.
#[derive(Default)]
pub(crate) struct Checkpointer {
    pub disk: Disk,
    spare: Vec<Vec<Sample>>,
}

impl Checkpointer {
    /// A checkpointer over a freshly loaded disk state.
    pub fn new(disk: Disk) -> Self {
        Self {
            disk,
            spare: Vec::new(),
        }
    }
}

impl Inner {
    /// Whether a checkpoint has anything to write.
    fn pending(&self) -> bool {
        !self.heads.dirty.is_empty()
            || !self.catalog.dirty_gpus.is_empty()
            || !self.catalog.dirty_metrics.is_empty()
            || !self.catalog.workloads.dirty.is_empty()
            || !self.catalog.dirty_digests.is_empty()
    }

    /// Freezes the active heads as the next generation (see [`crate::heads::Heads::freeze`]).
    fn freeze(&mut self, spare: Vec<Vec<Sample>>) -> Frozen {
        let generation = self.generation;
        self.generation += 1;
        let mut frozen = self
            .heads
            .freeze(&mut self.catalog, (generation, self.disk_count), spare);
        frozen.high_water = self.high_water;
        self.disk_count = frozen.count;
        self.head_min = None;
        self.last_checkpoint = Instant::now();
        frozen
    }
}

/// Whether heads `age` old are due by time: past the interval once they average
/// [`MIN_CHUNK_SAMPLES`] per written series, past [`MAX_CHECKPOINT_DELAY`] (or the interval, if
/// longer) whatever they hold.
fn due_by_time(age: Duration, interval: Duration, heads: &Heads) -> bool {
    age >= interval
        && (heads.samples >= MIN_CHUNK_SAMPLES.saturating_mul(heads.dirty.len())
            || age >= interval.max(MAX_CHECKPOINT_DELAY))
}

impl Store {
    /// The newest checkpoint generation that is durable on disk.
    pub fn durable_generation(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Checkpoints if one is due: heads are non-empty and either no write came for
    /// [`IDLE_CHECKPOINT`], or the last checkpoint is older than the checkpoint interval and the
    /// heads are worth writing ([`MIN_CHUNK_SAMPLES`] per written series, or older than
    /// [`MAX_CHECKPOINT_DELAY`]); or retention has buckets to drop. Returns the durable
    /// generation.
    pub fn maybe_checkpoint(&self) -> Result<u64> {
        let due = {
            let inner = self.lock();
            (inner.pending()
                && (inner.last_write.elapsed() >= IDLE_CHECKPOINT
                    || due_by_time(
                        inner.last_checkpoint.elapsed(),
                        self.opts.checkpoint_interval,
                        &inner.heads,
                    )))
                || self
                    .retention_cutoff()
                    .is_some_and(|c| inner.retention_due(bucket_of(c, self.width)))
        };
        if due {
            self.checkpoint()
        } else {
            Ok(self.durable_generation())
        }
    }

    /// Writes every head into chunks, applies retention, and makes it all durable (fsync).
    /// Returns the durable generation. Writes and reads go on meanwhile. An I/O error here
    /// poisons the store until [`Store::recover`]; the broker replays whatever was not durable.
    pub fn checkpoint(&self) -> Result<u64> {
        self.checkpoint_with(self.retention_cutoff(), false)
    }

    /// Same as [`Store::checkpoint`]: every write so far is durable when it returns.
    pub fn persist(&self) -> Result<()> {
        self.checkpoint().map(|_| ())
    }

    /// Checkpoints and drops every bucket that ends at or before `cutoff` (ms since the epoch).
    pub fn expire(&self, cutoff: Timestamp) -> Result<u64> {
        self.checkpoint_with(Some(cutoff), true)
    }

    pub(crate) fn retention_cutoff(&self) -> Option<Timestamp> {
        let keep = i64::try_from(self.opts.retention?.as_millis()).ok()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?;
        Some(i64::try_from(now.as_millis()).ok()?.saturating_sub(keep))
    }

    /// `force` applies the cutoff even when an equal or later one was applied already.
    fn checkpoint_with(&self, cutoff: Option<Timestamp>, force: bool) -> Result<u64> {
        self.check_poisoned()?;
        let mut ck = self
            .checkpoint_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let res = self.checkpoint_locked(&mut ck, cutoff, force);
        if res.is_err() {
            self.poisoned.store(true, Ordering::Release);
        }
        res
    }

    fn checkpoint_locked(
        &self,
        ck: &mut Checkpointer,
        cutoff: Option<Timestamp>,
        force: bool,
    ) -> Result<u64> {
        let eng = self.engine()?;
        let (frozen, expire) = {
            let mut inner = self.lock();
            let expire = cutoff
                .map(|c| bucket_of(c, self.width))
                .filter(|c| force || inner.retention_due(*c));
            if !inner.pending() && expire.is_none() {
                inner.last_checkpoint = Instant::now();
                return Ok(self.durable_generation());
            }
            let frozen = Arc::new(inner.freeze(std::mem::take(&mut ck.spare)));
            inner.heads.frozen = Some(frozen.clone());
            (frozen, expire)
        };
        let mut generation = frozen.generation;
        self.commit_generation(&mut ck.disk, &eng, &frozen)?;
        let released = self.lock().heads.frozen.take();
        drop(released);
        if let Some(heads) = recycle(frozen) {
            ck.spare = heads;
        }
        let mut compact = false;
        if let Some(before) = expire {
            let (g, removed) = self.expire_locked(&mut ck.disk, &eng, before)?;
            generation = g;
            compact = removed > 0;
        }
        eng.db.persist(PersistMode::SyncAll)?;
        self.durable.store(generation, Ordering::Release);
        if compact {
            // Dropped chunks leave tombstones (some still in the memtable): flushing them and
            // compacting everything gives the disk space back.
            eng.ks.samples.rotate_memtable_and_wait()?;
            eng.ks.samples.major_compact()?;
        }
        Ok(generation)
    }

    /// Writes a frozen generation with the store's generation and count, in one atomic batch.
    fn commit_generation(&self, disk: &mut Disk, eng: &Engine, frozen: &Frozen) -> Result<()> {
        let mut batch = eng.db.batch();
        disk.flush(frozen, eng, &mut batch, self.width)?;
        batch.insert(
            &eng.ks.meta,
            META_GENERATION,
            frozen.generation.to_be_bytes(),
        );
        batch.insert(&eng.ks.meta, META_COUNT, frozen.count.to_be_bytes());
        batch.commit()?;
        Ok(())
    }

    /// Drops every bucket starting before `before`, holding the store's lock, after writing out
    /// the heads that arrived since the freeze. Returns the generation committed and the number
    /// of samples removed.
    fn expire_locked(
        &self,
        disk: &mut Disk,
        eng: &Engine,
        before: Timestamp,
    ) -> Result<(u64, u64)> {
        let mut inner = self.lock();
        let frozen = inner.freeze(Vec::new());
        self.commit_generation(disk, eng, &frozen)?;
        let mut batch = eng.db.batch();
        let removed = disk.expire(&mut inner, eng, &mut batch, (before, self.width))?;
        for id in inner.catalog.workloads.expire(before, self.width) {
            batch.remove(&eng.ks.workloads, crate::dictionary::key(id));
            self.names.remove(&id);
        }
        batch.insert(&eng.ks.meta, META_COUNT, inner.disk_count.to_be_bytes());
        batch.commit()?;
        inner.expired_before = inner.expired_before.max(Some(before));
        if removed > 0 {
            tracing::info!(removed, before, "retention dropped expired buckets");
        }
        Ok((frozen.generation, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_waits_for_heads_worth_a_chunk_but_not_past_the_delay() {
        let s = Duration::from_secs;
        let max = MAX_CHECKPOINT_DELAY;
        // (age, interval, samples, written series, due)
        let table = [
            (s(1), s(5), 10_000, 10, false),
            (s(5), s(5), 10_000, 10, true),
            (s(5), s(5), MIN_CHUNK_SAMPLES * 10, 10, true),
            (s(5), s(5), MIN_CHUNK_SAMPLES * 10 - 1, 10, false),
            (s(30), s(5), 1_000_000, 1_000_000, false),
            (max, s(5), 1_000_000, 1_000_000, true),
            (max, max * 2, 1, 1, false),
            (max * 2, max * 2, 1, 1, true),
        ];
        for (age, interval, samples, series, want) in table {
            let mut heads = Heads::default();
            heads.samples = samples;
            heads.dirty = (0..series as u32).collect();
            assert_eq!(
                due_by_time(age, interval, &heads),
                want,
                "{age:?} {interval:?} {samples} {series}"
            );
        }
    }
}
