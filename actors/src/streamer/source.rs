//! The streamer's reading thread: CSV rows → timestamped samples → per-partition encoded batches.
//!
//! It runs on a blocking thread so CSV parsing never stalls the async runtime, and hands batches to
//! the streamer actor through a bounded channel ([`SOURCE_QUEUE_BATCHES`]): when the actor's
//! windows are full the channel fills and this thread waits, so backpressure reaches the file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_storage::{BatchBuilder, Timestamp};
use tokio::sync::mpsc;

use super::dcgm::{open_reader, RowParser, TimestampCache};
use super::lines::MAX_CSV_LINE_BYTES;
use crate::routing::partition_of;
use crate::stats::PipelineStats;

/// Samples per batch: far below the broker's record limit and the 16 MiB cluster frame.
pub const BATCH_MAX_SAMPLES: usize = 4096;
/// Encoded batches buffered between the reading thread and the streamer actor.
pub const SOURCE_QUEUE_BATCHES: usize = 64;
/// A partial batch is sent after waiting this long, so slow streams still arrive promptly.
pub const BATCH_LINGER: Duration = Duration::from_millis(100);
/// Rejected rows logged individually per file and pass; the rest are only counted.
const MAX_LOGGED_REJECTS: u64 = 20;

/// Which timestamp a sample gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampMode {
    /// The time the streamer processed the row (the default).
    #[default]
    Now,
    /// The CSV's own `timestamp` column (backfills, reproducible benchmarks).
    Csv,
}

/// What one streamer streams and how.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// CSV files, streamed in order each pass.
    pub files: Vec<PathBuf>,
    /// Which timestamp samples get.
    pub timestamps: TimestampMode,
    /// Samples per second; 0 = as fast as the pipeline takes them.
    pub rate: u64,
    /// Passes over the files; 0 = forever.
    pub passes: u64,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// `(index, count)`: this streamer handles the GPUs whose partition modulo `count` is
    /// `index`, so `count` streamers share a file without overlap (malformed rows, which have
    /// no GPU, are counted by streamer 0 only).
    pub shard: (u32, u32),
    /// dcgm-exporter `/metrics` URLs scraped instead of reading files (see `scrape.rs`).
    pub scrape: Vec<String>,
    /// Time between two scrapes of a URL.
    pub scrape_interval: Duration,
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

pub(super) struct Batcher {
    pub(super) builders: Vec<BatchBuilder>,
    pub(super) tx: mpsc::Sender<Outgoing>,
    pub(super) last_flush: Instant,
}

impl Batcher {
    /// Sends one partition's batch; false once the actor is gone.
    pub(super) fn emit(&mut self, partition: u32) -> bool {
        let Some(b) = self.builders.get_mut(partition as usize) else {
            return true;
        };
        if b.is_empty() {
            return true;
        }
        let mut batch = b.take();
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

    pub(super) fn emit_all(&mut self) -> bool {
        self.last_flush = Instant::now();
        (0..self.builders.len() as u32).all(|p| self.emit(p))
    }
}

/// Streams every pass; returns when done, stopped, or the actor went away.
pub fn run(
    cfg: SourceConfig,
    tx: mpsc::Sender<Outgoing>,
    stop: Arc<AtomicBool>,
    stats: Arc<PipelineStats>,
) {
    let mut batcher = Batcher {
        builders: (0..cfg.partitions.max(1))
            .map(|_| BatchBuilder::default())
            .collect(),
        tx,
        last_flush: Instant::now(),
    };
    if !cfg.scrape.is_empty() {
        super::scrape::run(&cfg, &mut batcher, &stop, &stats);
        batcher.emit_all();
        return;
    }
    let mut last_stamp: Timestamp = i64::MIN;
    let mut pass = 0u64;
    let rate_start = Instant::now();
    let mut streamed = 0u64;
    while cfg.passes == 0 || pass < cfg.passes {
        pass += 1;
        for path in &cfg.files {
            let file = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot open CSV; skipped this pass");
                    continue;
                }
            };
            let (mut rdr, cols) = match open_reader(file) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "CSV header unusable; skipped this pass");
                    continue;
                }
            };
            let mut parser = RowParser::new(cols);
            let mut times = TimestampCache::default();
            let mut rec = csv::StringRecord::new();
            let mut group: Option<String> = None;
            let mut stamp = last_stamp;
            let mut logged = 0u64;
            loop {
                if stop.load(Ordering::Relaxed) {
                    batcher.emit_all();
                    return;
                }
                let line = rdr.position().line() + 1;
                let read = rdr.read_record(&mut rec);
                if rdr.get_ref().has_overlong() {
                    for long in rdr.get_mut().take_overlong() {
                        if cfg.shard.0 != 0 {
                            continue;
                        }
                        stats.rows_read.inc();
                        stats.reject_row("line_too_long");
                        if logged < MAX_LOGGED_REJECTS {
                            logged += 1;
                            tracing::warn!(file = %path.display(), line = long, limit = MAX_CSV_LINE_BYTES, "CSV record longer than the limit skipped");
                        }
                    }
                }
                match read {
                    Ok(true) => {}
                    Ok(false) => break,
                    // Every streamer reads every row; the first one counts the unreadable ones.
                    Err(e) if cfg.shard.0 != 0 && !e.is_io_error() => continue,
                    Err(e) => {
                        stats.rows_read.inc();
                        stats.reject_row("unreadable_row");
                        if logged < MAX_LOGGED_REJECTS {
                            logged += 1;
                            tracing::warn!(file = %path.display(), line, error = %e, "unreadable CSV row skipped");
                        }
                        if e.is_io_error() {
                            break;
                        }
                        continue;
                    }
                }
                let parsed = parser.parse(&rec).and_then(|(row, gpu)| {
                    let ts = match cfg.timestamps {
                        TimestampMode::Csv => times.parse(row.csv_timestamp)?,
                        TimestampMode::Now => {
                            // One scrape (rows sharing a CSV timestamp) gets one stamp; stamps only
                            // increase, so a series never gets two samples at the same instant.
                            if group.as_deref() != Some(row.csv_timestamp) {
                                group = Some(row.csv_timestamp.to_string());
                                stamp = now_ms().max(stamp.saturating_add(1));
                            }
                            stamp
                        }
                    };
                    Ok((row, gpu, ts))
                });
                let (shard, shards) = cfg.shard;
                let (row, gpu, ts) = match parsed {
                    Ok(x) => x,
                    Err(_) if shard != 0 => continue,
                    Err(e) => {
                        stats.rows_read.inc();
                        stats.reject_row(e.reason);
                        if logged < MAX_LOGGED_REJECTS {
                            logged += 1;
                            tracing::warn!(file = %path.display(), line, reason = e.reason, detail = %e.detail, "CSV row skipped");
                        }
                        continue;
                    }
                };
                let partition = partition_of(row.uuid, cfg.partitions);
                if partition % shards.max(1) != shard {
                    continue;
                }
                stats.rows_read.inc();
                let Some(builder) = batcher.builders.get_mut(partition as usize) else {
                    continue;
                };
                builder.push(gpu, row.metric, ts, row.value);
                stats.samples_streamed.inc();
                streamed += 1;
                if builder.len() >= BATCH_MAX_SAMPLES && !batcher.emit(partition) {
                    return;
                }
                if cfg.rate > 0 {
                    let due =
                        rate_start + Duration::from_secs_f64(streamed as f64 / cfg.rate as f64);
                    let now = Instant::now();
                    if due > now + Duration::from_millis(2) {
                        if due - now >= BATCH_LINGER && !batcher.emit_all() {
                            return;
                        }
                        sleep_until(due, &stop);
                    }
                }
                // Reading the clock for every row was a visible cost unthrottled; there every
                // 64th row is often enough for a 100 ms linger. A throttled stream sleeps
                // between rows anyway and checks every one.
                if (cfg.rate > 0 || streamed.is_multiple_of(64))
                    && batcher.last_flush.elapsed() >= BATCH_LINGER
                    && !batcher.emit_all()
                {
                    return;
                }
            }
            last_stamp = stamp;
            if logged >= MAX_LOGGED_REJECTS {
                tracing::warn!(file = %path.display(), pass, "more rejected rows than logged; see the rows_rejected counter");
            }
            if !batcher.emit_all() {
                return;
            }
        }
        if cfg.files.is_empty() {
            break;
        }
    }
}

fn sleep_until(due: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= due {
            return;
        }
        std::thread::sleep((due - now).min(Duration::from_millis(50)));
    }
}
