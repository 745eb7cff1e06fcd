//! Samples → one encoded batch per partition, as every writer sends them: the streamer, the
//! ingest endpoint, the benchmark's ceiling run.

use telemetry_storage::{BatchBuilder, GpuInfo, SampleBatch, Timestamp};

use crate::routing::partition_of;

/// Samples per batch: far below the broker's record limit and the 16 MiB cluster frame.
pub const BATCH_MAX_SAMPLES: usize = 4096;

/// One batch being built per partition.
#[derive(Debug)]
pub struct PartitionBatches {
    builders: Vec<BatchBuilder>,
    partitions: u32,
}

impl PartitionBatches {
    /// Empty batches for a cluster of `partitions` partitions (at least one).
    pub fn new(partitions: u32) -> Self {
        let partitions = partitions.max(1);
        Self {
            builders: (0..partitions).map(|_| BatchBuilder::default()).collect(),
            partitions,
        }
    }

    /// The partition a GPU's samples go to.
    pub fn partition_of(&self, uuid: &str) -> u32 {
        partition_of(uuid, self.partitions)
    }

    /// Adds a sample to its partition's batch; returns the partition and whether that batch
    /// has reached [`BATCH_MAX_SAMPLES`] (take it before pushing more).
    pub fn push(&mut self, gpu: &GpuInfo, metric: &str, ts: Timestamp, value: f64) -> (u32, bool) {
        let p = self.partition_of(&gpu.uuid);
        let b = &mut self.builders[p as usize];
        b.push(gpu, metric, ts, value);
        (p, b.len() >= BATCH_MAX_SAMPLES)
    }

    /// Partition `p`'s batch so far, leaving it empty; `None` when it holds nothing.
    pub fn take(&mut self, p: u32) -> Option<SampleBatch> {
        let b = self.builders.get_mut(p as usize)?;
        (!b.is_empty()).then(|| b.take())
    }

    /// Every non-empty batch, by partition, leaving all empty.
    pub fn take_all(&mut self) -> Vec<(u32, SampleBatch)> {
        (0..self.partitions)
            .filter_map(|p| self.take(p).map(|b| (p, b)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_their_gpu_partition_and_fill_up() {
        let gpu = |uuid: &str| GpuInfo {
            uuid: uuid.into(),
            ..GpuInfo::default()
        };
        let mut b = PartitionBatches::new(8);
        let a = gpu("GPU-a");
        for t in 0..BATCH_MAX_SAMPLES as i64 {
            let (p, full) = b.push(&a, "T", t, 1.0);
            assert_eq!(p, partition_of("GPU-a", 8));
            assert_eq!(full, t == BATCH_MAX_SAMPLES as i64 - 1);
        }
        let others: Vec<GpuInfo> = (0..32).map(|i| gpu(&format!("GPU-{i}"))).collect();
        for g in &others {
            b.push(g, "T", 0, 0.0);
        }
        let all = b.take_all();
        let total: usize = all.iter().map(|(_, x)| x.len()).sum();
        assert_eq!(total, BATCH_MAX_SAMPLES + others.len());
        assert!(all.len() > 1, "32 GPUs spread over partitions");
        assert!(all.iter().all(|(p, x)| !x.is_empty() && *p < 8));
        assert!(b.take_all().is_empty());
        assert!(b.take(99).is_none());
    }
}
