//! A file source: DCGM CSV files streamed in order, pass after pass, at a set rate or as fast
//! as the pipeline takes them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use telemetry_storage::Timestamp;

use super::source::{now_ms, Batcher, Source, BATCH_LINGER, STOP_CHECK};
use crate::dcgm::{CsvRows, Rejected, TimestampCache};

/// Rejected rows logged individually per file and pass; the rest are only counted.
const MAX_LOGGED_REJECTS: u64 = 20;
/// How often an unthrottled stream checks the linger clock (every this many samples): reading
/// the clock for every row was a visible cost.
const LINGER_CHECK_EVERY: u64 = 64;
/// A throttled stream sleeps only when it is this far ahead of its rate.
const PACE_SLACK: Duration = Duration::from_millis(2);

/// Which timestamp a sample gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimestampMode {
    /// The time the streamer processed the row (the default).
    #[default]
    Now,
    /// The CSV's own `timestamp` column (backfills, reproducible benchmarks).
    Csv,
}

/// What a file source streams.
#[derive(Debug, Clone, Default)]
pub struct CsvConfig {
    /// CSV files, streamed in order each pass.
    pub files: Vec<PathBuf>,
    /// Which timestamp samples get.
    pub timestamps: TimestampMode,
    /// Samples per second; 0 = as fast as the pipeline takes them.
    pub rate: u64,
    /// Passes over the files; 0 = forever.
    pub passes: u64,
}

/// Streams [`CsvConfig::files`].
pub(super) struct CsvFiles {
    cfg: CsvConfig,
    /// The last stamp given in `Now` mode: stamps only increase across files and passes.
    last_stamp: Timestamp,
    started: Instant,
    streamed: u64,
}

impl CsvFiles {
    pub(super) fn new(cfg: CsvConfig) -> Self {
        Self {
            cfg,
            last_stamp: i64::MIN,
            started: Instant::now(),
            streamed: 0,
        }
    }
}

impl Source for CsvFiles {
    fn run(&mut self, out: &mut Batcher, stop: &AtomicBool) {
        let mut pass = 0u64;
        while self.cfg.passes == 0 || pass < self.cfg.passes {
            pass += 1;
            for path in self.cfg.files.clone() {
                if !self.stream_file(&path, pass, out, stop) || !out.emit_all() {
                    return;
                }
            }
            if self.cfg.files.is_empty() {
                break;
            }
        }
    }
}

impl CsvFiles {
    /// One pass over one file; false when stopped or the actor is gone.
    fn stream_file(
        &mut self,
        path: &Path,
        pass: u64,
        out: &mut Batcher,
        stop: &AtomicBool,
    ) -> bool {
        let mut rows = match std::fs::File::open(path)
            .map_err(|e| e.to_string())
            .and_then(|f| CsvRows::open(f).map_err(|e| e.to_string()))
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "CSV unusable; skipped this pass");
                return true;
            }
        };
        let mut times = TimestampCache::default();
        let mut group: Option<String> = None;
        let mut logged = 0u64;
        while let Some(read) = rows.next() {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let parsed = read.and_then(|(row, gpu, line)| {
                let ts = match self.cfg.timestamps {
                    TimestampMode::Csv => times.parse(row.csv_timestamp).map_err(|e| e.at(line))?,
                    TimestampMode::Now => {
                        // One scrape (rows sharing a CSV timestamp) gets one stamp; stamps only
                        // increase, so a series never gets two samples at the same instant.
                        if group.as_deref() != Some(row.csv_timestamp) {
                            group = Some(row.csv_timestamp.to_string());
                            self.last_stamp = now_ms().max(self.last_stamp.saturating_add(1));
                        }
                        self.last_stamp
                    }
                };
                Ok((row, gpu, ts))
            });
            let (row, gpu, ts) = match parsed {
                Ok(x) => x,
                Err(rejected) => {
                    reject(out, path, &rejected, &mut logged);
                    continue;
                }
            };
            if !out.handles(row.uuid) {
                continue;
            }
            out.stats.rows_read.inc();
            if !out.push(gpu, row.metric, ts, row.value) || !self.pace(out, stop) {
                return false;
            }
        }
        if logged >= MAX_LOGGED_REJECTS {
            tracing::warn!(file = %path.display(), pass, "more rejected rows than logged; see the rows_rejected counter");
        }
        true
    }

    /// Holds the configured rate and sends partial batches that waited too long; false once
    /// the actor is gone.
    fn pace(&mut self, out: &mut Batcher, stop: &AtomicBool) -> bool {
        self.streamed += 1;
        let rate = self.cfg.rate;
        if rate > 0 {
            let due = self.started + Duration::from_secs_f64(self.streamed as f64 / rate as f64);
            let now = Instant::now();
            if due > now + PACE_SLACK {
                if due - now >= BATCH_LINGER && !out.emit_all() {
                    return false;
                }
                sleep_until(due, stop);
            }
        }
        // A throttled stream sleeps between rows anyway and checks every one.
        let check = rate > 0 || self.streamed.is_multiple_of(LINGER_CHECK_EVERY);
        !(check && out.lingered()) || out.emit_all()
    }
}

/// Counts (streamer 0 only: every streamer reads every row) and logs a skipped row.
fn reject(out: &Batcher, path: &Path, r: &Rejected, logged: &mut u64) {
    if !out.counts_rejects() {
        return;
    }
    out.stats.rows_read.inc();
    out.stats.reject_row(r.reason);
    if *logged < MAX_LOGGED_REJECTS {
        *logged += 1;
        tracing::warn!(file = %path.display(), line = r.line, reason = r.reason, detail = %r.detail, "CSV row skipped");
    }
}

fn sleep_until(due: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= due {
            return;
        }
        std::thread::sleep((due - now).min(STOP_CHECK));
    }
}
