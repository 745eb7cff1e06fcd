//! The streamer's reading thread: a source (CSV files or live scrapes) → samples → per-partition
//! encoded batches.
//!
//! It runs on a blocking thread so parsing never stalls the async runtime, and hands batches to
//! the streamer actor through a bounded channel ([`SOURCE_QUEUE_BATCHES`]): when the actor's
//! windows are full the channel fills and this thread waits, so backpressure reaches the input.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_storage::{GpuInfo, SampleBatch, Timestamp};
use tokio::sync::mpsc;

use super::files::CsvConfig;
use super::scrape::ScrapeConfig;
use crate::dcgm::PartitionBatches;
use crate::stats::PipelineStats;

/// Encoded batches buffered between the reading thread and the streamer actor.
pub const SOURCE_QUEUE_BATCHES: usize = 64;
/// A partial batch is sent after waiting this long, so slow streams still arrive promptly.
pub const BATCH_LINGER: Duration = Duration::from_millis(100);
/// How often a source that waits (for its rate or its next scrape) checks for a stop.
pub(super) const STOP_CHECK: Duration = Duration::from_millis(50);

/// What one streamer streams and how.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Where the samples come from.
    pub input: Input,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// `(index, count)`: this streamer handles the GPUs whose partition modulo `count` is
    /// `index`, so `count` streamers share an input without overlap (malformed rows, which have
    /// no GPU, are counted by streamer 0 only).
    pub shard: (u32, u32),
}

/// A streamer's input.
#[derive(Debug, Clone)]
pub enum Input {
    /// DCGM CSV files ([`super::files`]).
    Csv(CsvConfig),
    /// dcgm-exporter `/metrics` endpoints ([`super::scrape`]).
    Scrape(ScrapeConfig),
}

/// A source of samples: runs until done or stopped, handing samples to `out`.
pub(super) trait Source {
    /// Streams until the input is exhausted, `stop` is set or the actor is gone.
    fn run(&mut self, out: &mut Batcher, stop: &AtomicBool);
}

/// One encoded batch bound for a partition.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Target partition.
    pub partition: u32,
    /// Encoded `SampleBatch`.
    pub payload: Arc<Vec<u8>>,
    /// Samples inside.
    pub samples: u64,
    /// W3C `traceparent` of the batch's trace (also inside the payload).
    pub trace: Option<String>,
}

pub(super) fn now_ms() -> Timestamp {
    chrono::Utc::now().timestamp_millis()
}

/// This streamer's share of the samples, batched per partition and sent to the actor.
pub(super) struct Batcher {
    batches: PartitionBatches,
    tx: mpsc::Sender<Outgoing>,
    shard: (u32, u32),
    last_flush: Instant,
    pub(super) stats: Arc<PipelineStats>,
}

impl Batcher {
    /// True for the streamer that counts rows without a GPU (shard 0).
    pub(super) fn counts_rejects(&self) -> bool {
        self.shard.0 == 0
    }

    /// True when this streamer's shard handles the GPU.
    pub(super) fn handles(&self, uuid: &str) -> bool {
        let (shard, shards) = self.shard;
        self.batches.partition_of(uuid) % shards.max(1) == shard
    }

    /// Adds a sample (of a GPU this shard [handles](Self::handles)); sends its partition's
    /// batch when full. False once the actor is gone.
    pub(super) fn push(&mut self, gpu: &GpuInfo, metric: &str, ts: Timestamp, value: f64) -> bool {
        self.stats.samples_streamed.inc();
        let (partition, full) = self.batches.push(gpu, metric, ts, value);
        !full || self.emit(partition)
    }

    /// True when partial batches have waited [`BATCH_LINGER`].
    pub(super) fn lingered(&self) -> bool {
        self.last_flush.elapsed() >= BATCH_LINGER
    }

    /// Sends one partition's batch; false once the actor is gone.
    fn emit(&mut self, partition: u32) -> bool {
        match self.batches.take(partition) {
            Some(batch) => self.send(partition, batch),
            None => true,
        }
    }

    /// Sends every partial batch; false once the actor is gone.
    pub(super) fn emit_all(&mut self) -> bool {
        self.last_flush = Instant::now();
        let all = self.batches.take_all();
        all.into_iter().all(|(p, batch)| self.send(p, batch))
    }

    fn send(&mut self, partition: u32, mut batch: SampleBatch) -> bool {
        // The root of the batch's trace; sampled or not, its context rides in the batch.
        let span = tracing::info_span!(
            "streamer.batch",
            partition,
            samples = batch.len(),
            trace_id = tracing::field::Empty
        );
        crate::trace::record_trace_id(&span);
        batch.trace = crate::trace::traceparent(&span);
        let out = Outgoing {
            partition,
            samples: batch.len() as u64,
            trace: batch.trace.clone(),
            payload: Arc::new(batch.encode()),
        };
        self.tx.blocking_send(out).is_ok()
    }
}

/// Streams the configured input; returns when done, stopped, or the actor went away.
pub fn run(
    cfg: SourceConfig,
    tx: mpsc::Sender<Outgoing>,
    stop: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
) {
    let mut out = Batcher {
        batches: PartitionBatches::new(cfg.partitions),
        tx,
        shard: cfg.shard,
        last_flush: Instant::now(),
        stats,
    };
    let mut source: Box<dyn Source> = match cfg.input {
        Input::Csv(c) => Box::new(super::files::CsvFiles::new(c)),
        Input::Scrape(c) => Box::new(super::scrape::Scraper::new(c)),
    };
    source.run(&mut out, &stop);
    out.emit_all();
}
