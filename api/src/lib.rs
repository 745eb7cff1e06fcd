//! The REST API served by every node: axum handlers and the OpenAPI document generated from them.
//!
//! Handlers parse a request, call the node's service ([`telemetry_service`]) and shape its typed
//! answer as JSON; nothing here knows about peers.
//!
//! # Layout
//!
//! | module | serves |
//! |---|---|
//! | `gpus`, `telemetry`, `summary` | the REST reads: GPUs, metric names, samples, fleet table, steps |
//! | `prometheus` | `/prometheus/api/v1/…` for Grafana (PromQL selectors and aggregations) |
//! | `workloads` | who used which GPU: workloads in a window, a pod's GPUs, a GPU's history |
//! | `ingest` | `POST /api/v1/ingest` (a CSV chunk, answered when durable) |
//! | `cluster`, `decommission` | `/api/v1/cluster`, `/healthz`, `/readyz`, decommission |
//! | `metrics` | `/metrics` and the request-latency middleware |
//! | `dashboard` | the embedded web dashboard at `/` |
//! | `params`, `error`, `limits`, `openapi`, `state` | parsing, error bodies, bounds, the document, shared state |

mod cluster;
mod dashboard;
mod decommission;
mod error;
mod gpus;
mod ingest;
mod limits;
mod metrics;
mod openapi;
mod params;
mod prometheus;
mod remote_write;
mod state;
mod summary;
mod telemetry;
mod workloads;

use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

use openapi::Shared as SharedResponses;

// The response types, also for clients (the CLI, the tests) that read answers.
pub use cluster::{ClusterView, DamagedPartition, Health, Member, PartitionInfo};
pub use decommission::DecommissionStatus;
pub use error::ApiError;
pub use error::{ErrorBody, ErrorDetail};
pub use gpus::{Gpu, GpuDetail, GpuList, MetricList};
pub use gpus::{DEFAULT_GPU_LIMIT, MAX_GPU_LIMIT};
pub use ingest::IngestSummary;
pub use ingest::INGEST_DEADLINE;
pub use limits::{
    INGEST_REQUEST_TIMEOUT, MAX_BODY_BYTES, MAX_CONCURRENT_REQUESTS, MAX_INGEST_BYTES,
    REQUEST_TIMEOUT,
};
pub use metrics::Metrics;
pub use prometheus::MAX_PROM_SAMPLES;
pub use state::{Api, AppState};
pub use summary::MAX_STEPS;
pub use summary::{FleetGpu, FleetPage, LatestValue, StepSeries, StepsPage};
pub use telemetry::{
    decode_cursor, encode_cursor, DEFAULT_TELEMETRY_LIMIT, MAX_COLUMNAR_LIMIT, MAX_TELEMETRY_LIMIT,
};
pub use telemetry::{ColumnarPage, ColumnarSeries, TelemetryAnswer, TelemetryPage, TelemetryPoint};
pub use workloads::{
    AttributedSpan, GpuAttribution, GpuSpansView, PodAttribution, WorkloadList, WorkloadUse,
};

/// The OpenAPI document of the REST API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "GPU telemetry node",
        description = "DCGM GPU telemetry: streamed, queued, stored and queried on every node."
    ),
    paths(
        gpus::list_gpus,
        gpus::get_gpu,
        gpus::list_metrics,
        telemetry::get_telemetry,
        summary::fleet_latest,
        summary::gpu_steps,
        workloads::list_workloads,
        workloads::get_pod,
        workloads::get_gpu_attribution,
        ingest::ingest,
        cluster::get_cluster,
        cluster::healthz,
        cluster::readyz,
        metrics::get_metrics,
        decommission::start_decommission,
        decommission::get_decommission
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&SharedResponses)
)]
pub struct ApiDoc;

/// The OpenAPI document as pretty JSON (what `telemetry-node openapi` prints).
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

/// The node's HTTP router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/gpus", get(gpus::list_gpus))
        .route("/api/v1/gpus/{uuid}", get(gpus::get_gpu))
        .route(
            "/api/v1/gpus/{uuid}/telemetry",
            get(telemetry::get_telemetry),
        )
        .route("/api/v1/metrics", get(gpus::list_metrics))
        .route("/api/v1/latest", get(summary::fleet_latest))
        .route("/api/v1/ingest", axum::routing::post(ingest::ingest))
        .route("/api/v1/write", axum::routing::post(remote_write::write))
        .route(
            "/prometheus/api/v1/query_range",
            get(prometheus::query_range).post(prometheus::query_range),
        )
        .route(
            "/prometheus/api/v1/query",
            get(prometheus::query).post(prometheus::query),
        )
        .route(
            "/prometheus/api/v1/series",
            get(prometheus::series).post(prometheus::series),
        )
        .route(
            "/prometheus/api/v1/labels",
            get(prometheus::labels).post(prometheus::labels),
        )
        .route(
            "/prometheus/api/v1/label/{name}/values",
            get(prometheus::label_values),
        )
        .route(
            "/prometheus/api/v1/status/buildinfo",
            get(prometheus::buildinfo),
        )
        .route("/prometheus/api/v1/metadata", get(prometheus::metadata))
        .route("/api/v1/gpus/{uuid}/steps", get(summary::gpu_steps))
        .route(
            "/api/v1/gpus/{uuid}/attribution",
            get(workloads::get_gpu_attribution),
        )
        .route("/api/v1/workloads", get(workloads::list_workloads))
        .route(
            "/api/v1/workloads/{namespace}/{pod}",
            get(workloads::get_pod),
        )
        .route("/api/v1/cluster", get(cluster::get_cluster))
        .route(
            "/api/v1/cluster/nodes/{name}/decommission",
            get(decommission::get_decommission).post(decommission::start_decommission),
        )
        .route("/", get(dashboard::index))
        .route("/assets/{*path}", get(dashboard::asset))
        .route("/healthz", get(cluster::healthz))
        .route("/readyz", get(cluster::readyz))
        .route("/metrics", get(metrics::get_metrics))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits::InFlight::default(),
            limits::enforce,
        ))
        .with_state(state)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
}
