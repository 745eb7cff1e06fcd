//! The pipeline's metrics: counters and histograms updated by the streamer, the broker and the
//! collector, read by the REST API and exposed at `/metrics` (Prometheus text format).
//!
//! Names follow Prometheus conventions: [`PipelineStats::register`] adds the `telemetry_` prefix,
//! counters get `_total`, durations are histograms in seconds.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter as PromCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// A monotonically increasing counter.
pub type Counter = PromCounter<u64>;

/// Why a CSV row was rejected.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Short reason (`bad_value`, `missing_uuid`, …).
    pub reason: String,
}

/// Buckets for latencies from 100 µs to about 26 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Counters and histograms of one node's pipeline.
#[derive(Debug)]
pub struct PipelineStats {
    /// CSV data rows read (valid or not).
    pub rows_read: Counter,
    /// CSV rows skipped because they did not parse.
    pub rows_rejected: Counter,
    /// CSV rows skipped, by reason.
    pub rows_rejected_by_reason: Family<ReasonLabel, Counter>,
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
    /// Partitions whose log was found damaged at start-up (they stay stopped).
    pub damaged_partitions: Gauge,
    /// Time from sending a batch to its acknowledgement (durable at the owner).
    pub append_seconds: Histogram,
    /// Time to write one batch to the store.
    pub store_write_seconds: Histogram,
    /// Samples received by remote write and durable.
    pub remote_write_samples: Counter,
    /// Remote-written series refused (not a DCGM field, no GPU), by reason.
    pub remote_write_refused_series: Family<ReasonLabel, Counter>,
    /// Labels of remote-written series that were not kept (once per series).
    pub remote_write_dropped_labels: Counter,
}

impl Default for PipelineStats {
    fn default() -> Self {
        Self {
            rows_read: Counter::default(),
            rows_rejected: Counter::default(),
            rows_rejected_by_reason: Family::default(),
            samples_streamed: Counter::default(),
            samples_acked: Counter::default(),
            append_retries: Counter::default(),
            broker_appends: Counter::default(),
            append_refusals: Counter::default(),
            samples_written: Counter::default(),
            records_rejected: Counter::default(),
            streamers_finished: Counter::default(),
            damaged_partitions: Gauge::default(),
            append_seconds: latency_histogram(),
            store_write_seconds: latency_histogram(),
            remote_write_samples: Counter::default(),
            remote_write_refused_series: Family::default(),
            remote_write_dropped_labels: Counter::default(),
        }
    }
}

impl PipelineStats {
    /// Counts a rejected CSV row under its reason.
    pub fn reject_row(&self, reason: &str) {
        self.rows_rejected.inc();
        self.rows_rejected_by_reason
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts `n` remote-written series refused under `reason`.
    pub fn refuse_remote_series(&self, reason: &str, n: u64) {
        self.remote_write_refused_series
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }

    /// Registers every metric (clones share their values) under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry;
        r.register(
            "telemetry_csv_rows_read",
            "CSV data rows read by this node's streamers",
            self.rows_read.clone(),
        );
        r.register(
            "telemetry_csv_rows_rejected",
            "CSV rows skipped because they did not parse, by reason",
            self.rows_rejected_by_reason.clone(),
        );
        r.register(
            "telemetry_samples_streamed",
            "Samples handed to the broker by this node's streamers",
            self.samples_streamed.clone(),
        );
        r.register(
            "telemetry_remote_write_samples",
            "Samples received by remote write and durable",
            self.remote_write_samples.clone(),
        );
        r.register(
            "telemetry_remote_write_refused_series",
            "Remote-written series refused (not a DCGM field, no GPU identity), by reason",
            self.remote_write_refused_series.clone(),
        );
        r.register(
            "telemetry_remote_write_dropped_labels",
            "Labels of remote-written series not kept as GPU attributes (once per series)",
            self.remote_write_dropped_labels.clone(),
        );
        r.register(
            "telemetry_samples_acked",
            "Samples whose batch the owner acknowledged as durable",
            self.samples_acked.clone(),
        );
        r.register(
            "telemetry_append_retries",
            "Batch appends retried (refused, failed, timed out, unroutable)",
            self.append_retries.clone(),
        );
        r.register(
            "telemetry_broker_appends",
            "Appends acknowledged by this node's partitions",
            self.broker_appends.clone(),
        );
        r.register(
            "telemetry_broker_refusals",
            "Appends refused by this node's partitions (backpressure)",
            self.append_refusals.clone(),
        );
        r.register(
            "telemetry_samples_stored",
            "Samples written to the store by this node's collectors",
            self.samples_written.clone(),
        );
        r.register(
            "telemetry_broker_damaged_partitions",
            "Partitions whose log was found damaged at start-up; each stays stopped until repaired",
            self.damaged_partitions.clone(),
        );
        r.register(
            "telemetry_broker_records_rejected",
            "Broker records that were not storable batches",
            self.records_rejected.clone(),
        );
        r.register_with_unit(
            "telemetry_append_duration",
            "Time from sending a batch to its durable acknowledgement",
            Unit::Seconds,
            self.append_seconds.clone(),
        );
        r.register_with_unit(
            "telemetry_store_write_duration",
            "Time to write one batch into the store",
            Unit::Seconds,
            self.store_write_seconds.clone(),
        );
    }
}
