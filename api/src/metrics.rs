//! `GET /metrics`: the node's metrics in the Prometheus text format, and the REST layer's own
//! metrics (request latency by route and status, partial scatter-gather answers).
//!
//! Pipeline counters live with the pipeline ([`telemetry_actors::stats`]); gauges that describe
//! the present (log depth and consumer lag per partition, members up and down, partitions owned,
//! samples stored) are refreshed from the node at each scrape.

use std::sync::Mutex;
use std::time::Instant;

use tracing::Instrument;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use telemetry_actors::stats::PipelineStats;
use telemetry_service::query::cluster as status;
use telemetry_service::{FanoutStats, NodeContext};

use crate::state::AppState;

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template (`/api/v1/gpus/{uuid}`), not the raw path.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// A partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    /// Partition number.
    pub partition: u32,
}

/// A member status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `up` or `down`.
    pub status: String,
}

/// The node's metric registry and the metrics the API updates itself.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// REST request latency by route and status.
    pub http_seconds: Family<HttpLabels, Histogram>,
    log_depth: Family<PartitionLabel, Gauge>,
    consumer_lag: Family<PartitionLabel, Gauge>,
    members: Family<StatusLabel, Gauge>,
    partitions_owned: Gauge,
    samples_in_store: Gauge,
    series_in_store: Gauge,
    workloads_in_store: Gauge,
    storage_bytes: Gauge,
    broker_bytes: Gauge,
    disk_free_bytes: Gauge,
    disk_full: Gauge,
    syncing: Gauge,
    repair_passes: Gauge,
    repair_partitions_pending: Gauge,
    repair_samples_copied: Gauge,
}

impl Metrics {
    /// A registry holding the pipeline's metrics, the service's and the API's.
    pub fn new(stats: &PipelineStats, fanout: &FanoutStats) -> Self {
        let mut registry = Registry::default();
        stats.register(&mut registry);
        fanout.register(&mut registry);
        let m = Self {
            registry: Mutex::new(Registry::default()),
            http_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            log_depth: Family::default(),
            consumer_lag: Family::default(),
            members: Family::default(),
            partitions_owned: Gauge::default(),
            samples_in_store: Gauge::default(),
            series_in_store: Gauge::default(),
            workloads_in_store: Gauge::default(),
            storage_bytes: Gauge::default(),
            broker_bytes: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            disk_full: Gauge::default(),
            syncing: Gauge::default(),
            repair_passes: Gauge::default(),
            repair_partitions_pending: Gauge::default(),
            repair_samples_copied: Gauge::default(),
        };
        let r = &mut registry;
        r.register_with_unit(
            "telemetry_http_request_duration",
            "REST request latency by route and status",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register_with_unit(
            "telemetry_broker_log_depth",
            "Bytes a partition's log holds beyond its collector's committed offset",
            Unit::Bytes,
            m.log_depth.clone(),
        );
        r.register(
            "telemetry_broker_consumer_lag_records",
            "Records appended to a partition but not yet committed (durable in the store)",
            m.consumer_lag.clone(),
        );
        r.register(
            "telemetry_cluster_members",
            "Cluster members as this node sees them, by status",
            m.members.clone(),
        );
        r.register(
            "telemetry_partitions_owned",
            "Partitions this node owns",
            m.partitions_owned.clone(),
        );
        r.register(
            "telemetry_store_samples",
            "Distinct samples in this node's store (workload observations included)",
            m.samples_in_store.clone(),
        );
        r.register(
            "telemetry_store_series",
            "Series in this node's store: one per GPU and metric, plus one of workload observations per GPU that carried a workload",
            m.series_in_store.clone(),
        );
        r.register(
            "telemetry_store_workloads",
            "Workloads (namespace, pod, container, HPC job) in this node's dictionary",
            m.workloads_in_store.clone(),
        );
        r.register_with_unit(
            "telemetry_store_disk",
            "Disk space of the store's directory (allocated blocks)",
            Unit::Bytes,
            m.storage_bytes.clone(),
        );
        r.register_with_unit(
            "telemetry_broker_disk",
            "Disk space of the broker's partition logs (allocated blocks)",
            Unit::Bytes,
            m.broker_bytes.clone(),
        );
        r.register_with_unit(
            "telemetry_disk_free",
            "Bytes free on the data volume at the last check",
            Unit::Bytes,
            m.disk_free_bytes.clone(),
        );
        r.register(
            "telemetry_disk_full",
            "1 while the node refuses new data for lack of disk space (below --min-free-disk or after ENOSPC)",
            m.disk_full.clone(),
        );
        r.register(
            "telemetry_repair_syncing",
            "1 while the node repairs and may miss data it should hold (its answers do not count as a complete copy)",
            m.syncing.clone(),
        );
        r.register(
            "telemetry_repair_passes",
            "Repair passes finished since start",
            m.repair_passes.clone(),
        );
        r.register(
            "telemetry_repair_partitions_pending",
            "Partitions the current repair pass has yet to compare",
            m.repair_partitions_pending.clone(),
        );
        r.register(
            "telemetry_repair_samples_copied",
            "Samples copied from peers by repairs since start",
            m.repair_samples_copied.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    /// Refreshes the gauges from the node and renders everything.
    async fn render(&self, node: &NodeContext) -> String {
        let g = status::gauges(node).await;
        self.log_depth.clear();
        self.consumer_lag.clear();
        for (p, bytes, lag) in g.partitions {
            let l = PartitionLabel { partition: p };
            self.log_depth
                .get_or_create(&l)
                .set(bytes.min(i64::MAX as u64) as i64);
            self.consumer_lag
                .get_or_create(&l)
                .set(lag.min(i64::MAX as u64) as i64);
        }
        for (status, n) in [("up", g.members_up), ("down", g.members_down)] {
            self.members
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n as i64);
        }
        self.partitions_owned.set(g.partitions_owned as i64);
        self.samples_in_store
            .set(node.store.samples_stored().min(i64::MAX as u64) as i64);
        self.series_in_store
            .set(node.store.series_count().min(i64::MAX as u64) as i64);
        self.workloads_in_store
            .set(node.store.workload_count().min(i64::MAX as usize) as i64);
        self.storage_bytes
            .set(node.store.disk_space().min(i64::MAX as u64) as i64);
        self.broker_bytes
            .set(node.broker_bytes().min(i64::MAX as u64) as i64);
        self.disk_free_bytes
            .set(node.disk.free_bytes().min(i64::MAX as u64) as i64);
        self.disk_full.set(i64::from(node.disk.is_full()));
        let repair = node.repair_progress();
        self.syncing.set(i64::from(node.is_syncing()));
        self.repair_passes
            .set(repair.passes.min(i64::MAX as u64) as i64);
        self.repair_partitions_pending.set(i64::from(
            repair
                .partitions_total
                .saturating_sub(repair.partitions_done),
        ));
        self.repair_samples_copied
            .set(repair.samples_copied.min(i64::MAX as u64) as i64);
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        to_prometheus_text(&out)
    }
}

/// Rewrites prometheus-client's OpenMetrics text into the classic Prometheus text format (what
/// `promtool check metrics` and every Prometheus version parse): a counter family `x` is
/// announced as `x_total`, the name its samples carry, and `# UNIT` / `# EOF` lines go.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(rewritten.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_announced_under_their_sample_names() {
        let om = "# HELP a_things Things.\n# TYPE a_things counter\na_things_total 3\n\
                  # HELP b_seconds Time.\n# TYPE b_seconds histogram\n# UNIT b_seconds seconds\n\
                  b_seconds_sum 1.0\nb_seconds_count 2\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP a_things_total Things.\n# TYPE a_things_total counter\na_things_total 3\n\
             # HELP b_seconds Time.\n# TYPE b_seconds histogram\nb_seconds_sum 1.0\nb_seconds_count 2\n"
        );
    }
}

/// The node's metrics in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text exposition", content_type = "text/plain")))]
pub async fn get_metrics(State(api): State<AppState>) -> Response {
    let body = api.metrics.render(&api.node).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Middleware: observes each request's latency under its route template and status.
pub async fn observe(State(api): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let span = tracing::info_span!(
        "http.request",
        method = %req.method(),
        route = %route,
        status = tracing::field::Empty,
        trace_id = tracing::field::Empty
    );
    telemetry_actors::trace::record_trace_id(&span);
    let started = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    span.in_scope(|| tracing::debug!(status = resp.status().as_u16(), "request served"));
    api.metrics
        .http_seconds
        .get_or_create(&HttpLabels {
            route,
            status: resp.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    resp
}
