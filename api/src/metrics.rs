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
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use telemetry_actors::cluster::membership::Status;
use telemetry_actors::stats::PipelineStats;
use telemetry_actors::supervisor::partition_status;

use crate::cluster::STATUS_TIMEOUT;
use crate::context::{AppState, NodeContext};

/// Labels of an HTTP request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Route template (`/api/v1/gpus/{uuid}`), not the raw path.
    pub route: String,
    /// Status code.
    pub status: u16,
}

/// A route.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route template.
    pub route: String,
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
    /// Scatter-gather answers that were partial, by route.
    pub partial_answers: Family<RouteLabel, Counter>,
    log_depth: Family<PartitionLabel, Gauge>,
    consumer_lag: Family<PartitionLabel, Gauge>,
    members: Family<StatusLabel, Gauge>,
    partitions_owned: Gauge,
    samples_in_store: Gauge,
    storage_bytes: Gauge,
    broker_bytes: Gauge,
    disk_free_bytes: Gauge,
    disk_full: Gauge,
}

impl Metrics {
    /// A registry holding the pipeline's metrics and the API's.
    pub fn new(stats: &PipelineStats) -> Self {
        let mut registry = Registry::default();
        stats.register(&mut registry);
        let m = Self {
            registry: Mutex::new(Registry::default()),
            http_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 18))
            }),
            partial_answers: Family::default(),
            log_depth: Family::default(),
            consumer_lag: Family::default(),
            members: Family::default(),
            partitions_owned: Gauge::default(),
            samples_in_store: Gauge::default(),
            storage_bytes: Gauge::default(),
            broker_bytes: Gauge::default(),
            disk_free_bytes: Gauge::default(),
            disk_full: Gauge::default(),
        };
        let r = &mut registry;
        r.register_with_unit(
            "telemetry_http_request_duration",
            "REST request latency by route and status",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register(
            "telemetry_scatter_partial_answers",
            "Answers that missed at least one member, by route",
            m.partial_answers.clone(),
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
            "Distinct samples in this node's store",
            m.samples_in_store.clone(),
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
        // Series exist at 0 before the first partial answer, so dashboards show 0, not "no data".
        for route in ["gpus", "gpu", "metrics", "telemetry", "cluster"] {
            m.partial_answers
                .get_or_create(&RouteLabel {
                    route: route.into(),
                })
                .inc_by(0);
        }
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        m
    }

    /// Counts a partial answer of `route`.
    pub fn partial(&self, route: &str) {
        self.partial_answers
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .inc();
    }

    /// Refreshes the gauges from the node and renders everything.
    async fn render(&self, node: &NodeContext) -> String {
        let mut depth = Vec::new();
        for (p, broker) in node.registry.running() {
            if let Some(s) = partition_status(&broker, STATUS_TIMEOUT).await {
                let lag = s.next_offset.saturating_sub(s.committed_offset);
                depth.push((p, s.unconsumed_bytes, lag));
            }
        }
        self.log_depth.clear();
        self.consumer_lag.clear();
        for (p, bytes, lag) in depth {
            let l = PartitionLabel { partition: p };
            self.log_depth
                .get_or_create(&l)
                .set(bytes.min(i64::MAX as u64) as i64);
            self.consumer_lag
                .get_or_create(&l)
                .set(lag.min(i64::MAX as u64) as i64);
        }
        let view = node.cluster_view();
        let up = 1 + view.peers.iter().filter(|p| p.status == Status::Up).count();
        let down = view.peers.len() + 1 - up;
        for (status, n) in [("up", up), ("down", down)] {
            self.members
                .get_or_create(&StatusLabel {
                    status: status.into(),
                })
                .set(n as i64);
        }
        self.partitions_owned.set(node.owned().len() as i64);
        self.samples_in_store
            .set(node.store.samples_stored().min(i64::MAX as u64) as i64);
        self.storage_bytes
            .set(node.store.disk_space().min(i64::MAX as u64) as i64);
        self.broker_bytes
            .set(node.broker_bytes().min(i64::MAX as u64) as i64);
        self.disk_free_bytes
            .set(node.disk.free_bytes().min(i64::MAX as u64) as i64);
        self.disk_full.set(i64::from(node.disk.is_full()));
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
pub async fn get_metrics(State(node): State<AppState>) -> Response {
    let body = node.metrics.render(&node).await;
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
pub async fn observe(State(node): State<AppState>, req: Request, next: Next) -> Response {
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
    node.metrics
        .http_seconds
        .get_or_create(&HttpLabels {
            route,
            status: resp.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    resp
}
