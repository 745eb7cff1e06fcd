//! Node-wide pipeline counters, shared by the actors and read by the API.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one node's pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// CSV data rows read (valid or not).
    pub rows_read: Counter,
    /// CSV rows skipped because they did not parse.
    pub rows_rejected: Counter,
    /// Samples handed to the broker (first attempt).
    pub samples_streamed: Counter,
    /// Samples whose batch was acknowledged durable by the broker.
    pub samples_acked: Counter,
    /// Batch appends retried (refused, failed, timed out or unroutable).
    pub append_retries: Counter,
    /// Appends acknowledged by this node's partitions.
    pub broker_appends: Counter,
    /// Appends refused by this node's partitions (backpressure).
    pub append_refusals: Counter,
    /// Samples written to the store by collectors.
    pub samples_written: Counter,
    /// Broker records that could not be decoded and were not stored.
    pub records_rejected: Counter,
    /// Streamers that finished all their passes.
    pub streamers_finished: Counter,
}
