//! Samples not yet in chunks: the **active** generation writers add to, and at most one
//! **frozen** generation a checkpoint is writing out.
//!
//! A checkpoint freezes under the store's lock by swapping the active heads for an empty set
//! ([`Heads::freeze`], constant time: the per-series vectors are moved, not visited). Readers
//! merge disk, frozen and active samples, newest last, so they see every write throughout;
//! writers go on into the new active generation. Once the checkpoint's batch is committed the
//! frozen generation is released and its vectors, emptied outside the lock ([`recycle`]), are
//! the next freeze's active set, so a steady load allocates nothing per checkpoint.
//!
//! Memory: at most two generations of samples (16 bytes each) are held, each bounded by
//! `StoreOptions::max_head_samples` (a write that fills the active heads waits for the running
//! checkpoint, then freezes them), plus one `Vec` (24 bytes) per series in each generation.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::codec::Sample;
use crate::digest::Digest;
use crate::keys::SeriesId;
use crate::model::GpuInfo;
use crate::workload::Workload;
use crate::Timestamp;
use rustc_hash::FxHashMap;

/// One frozen generation: the heads and the catalog changes one checkpoint commits.
#[derive(Default)]
pub(crate) struct Frozen {
    /// Heads by series slot (empty for series not written in this generation).
    pub heads: Vec<Vec<Sample>>,
    /// Slots whose head is not empty.
    pub dirty: Vec<u32>,
    /// The checkpoint generation that commits it.
    pub generation: u64,
    /// Series created since the previous freeze, by slot from `first_new_slot`.
    pub new_series: Vec<SeriesId>,
    /// Slot of `new_series[0]`.
    pub first_new_slot: u32,
    /// GPUs added or changed (by id).
    pub gpus: Vec<(u32, GpuInfo)>,
    /// Metrics added (by id).
    pub metrics: Vec<(u16, Arc<str>)>,
    /// Workload records to write, by id: names and newest observation.
    pub workloads: FxHashMap<u64, (Workload, Timestamp)>,
    /// Digests of the GPUs whose samples changed, as of the freeze.
    pub digests: Vec<(u32, Digest)>,
    /// Distinct samples on disk once this generation is committed.
    pub count: u64,
    /// Latest sample time ever written, as of the freeze.
    pub high_water: Option<Timestamp>,
}

impl Frozen {
    /// The frozen head of a slot.
    pub fn head(&self, slot: u32) -> &[Sample] {
        self.heads.get(slot as usize).map_or(&[], Vec::as_slice)
    }

    /// Empties every head (keeping its allocation) so the set can serve as active heads again.
    fn clear(mut self) -> Vec<Vec<Sample>> {
        for slot in self.dirty.drain(..) {
            if let Some(h) = self.heads.get_mut(slot as usize) {
                h.clear();
            }
        }
        self.heads
    }
}

/// The active and frozen heads.
#[derive(Default)]
pub(crate) struct Heads {
    /// Active heads by series slot; grown on demand.
    active: Vec<Vec<Sample>>,
    /// Slots whose active head is not empty.
    pub dirty: Vec<u32>,
    /// Samples in the active heads.
    pub samples: usize,
    /// Distinct samples only in the active heads (in neither the frozen generation nor on disk).
    pub new: u64,
    /// The generation being checkpointed, readable until its batch is committed.
    pub frozen: Option<Arc<Frozen>>,
}

impl Heads {
    /// The active head of a slot.
    pub fn active(&self, slot: u32) -> &[Sample] {
        self.active.get(slot as usize).map_or(&[], Vec::as_slice)
    }

    /// The frozen head of a slot (empty when no checkpoint runs).
    pub fn frozen(&self, slot: u32) -> &[Sample] {
        self.frozen.as_ref().map_or(&[], |f| f.head(slot))
    }

    /// The active head of a slot, to write to; marks the slot dirty when it was empty.
    pub fn head_mut(&mut self, slot: u32) -> &mut Vec<Sample> {
        let i = slot as usize;
        if self.active.len() <= i {
            // Grown to twice the need so a run of new series resizes a few times, not each.
            self.active
                .resize_with((i + 1).max(self.active.len() * 2), Vec::new);
        }
        if self.active[i].is_empty() {
            self.dirty.push(slot);
        }
        &mut self.active[i]
    }

    /// Takes the active heads out as a frozen generation (with the catalog changes made since
    /// the last freeze) and makes `spare` (empty heads) the active set. Constant time but for
    /// the catalog changes, which are few once the fleet's GPUs and series exist.
    pub fn freeze(
        &mut self,
        catalog: &mut Catalog,
        (generation, disk_count): (u64, u64),
        spare: Vec<Vec<Sample>>,
    ) -> Frozen {
        let mut gpus = std::mem::take(&mut catalog.dirty_gpus);
        gpus.sort_unstable();
        gpus.dedup();
        let mut digested = std::mem::take(&mut catalog.dirty_digests);
        digested.sort_unstable();
        digested.dedup();
        let first_new_slot = catalog.persisted_series;
        catalog.persisted_series = catalog.series.len() as u32;
        let frozen = Frozen {
            heads: std::mem::replace(&mut self.active, spare),
            dirty: std::mem::take(&mut self.dirty),
            generation,
            new_series: catalog.series[first_new_slot as usize..]
                .iter()
                .map(|s| s.id)
                .collect(),
            first_new_slot,
            gpus: gpus
                .into_iter()
                .filter_map(|id| Some((id, catalog.gpus.get(id as usize)?.clone())))
                .collect(),
            metrics: std::mem::take(&mut catalog.dirty_metrics)
                .into_iter()
                .filter_map(|id| Some((id, catalog.metric_names.get(usize::from(id))?.clone())))
                .collect(),
            workloads: std::mem::take(&mut catalog.workloads.dirty),
            digests: digested
                .into_iter()
                .filter_map(|id| Some((id, *catalog.gpu_digests.get(id as usize)?)))
                .collect(),
            count: disk_count + self.new,
            high_water: None,
        };
        self.samples = 0;
        self.new = 0;
        frozen
    }
}

/// Empties a released generation outside the lock, for the next freeze; `None` when someone
/// else still holds it (it is then dropped by the last holder).
pub(crate) fn recycle(frozen: Arc<Frozen>) -> Option<Vec<Vec<Sample>>> {
    Arc::try_unwrap(frozen).ok().map(Frozen::clear)
}
