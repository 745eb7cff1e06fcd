//! `GET /api/v1/gpus`, `GET /api/v1/gpus/{uuid}`, `GET /api/v1/metrics`.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_storage::GpuInfo;
use utoipa::ToSchema;

use telemetry_service::attribution;
use telemetry_service::query::{gpus, metrics};

use crate::error::{ApiError, ErrorBody};
use crate::params::{format_time, Params};
use crate::state::AppState;

/// Default page size of the GPU list.
pub const DEFAULT_GPU_LIMIT: usize = 1000;
/// Largest page of the GPU list.
pub const MAX_GPU_LIMIT: usize = 10_000;

/// A GPU and its attributes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Gpu {
    /// GPU UUID.
    pub uuid: String,
    /// Host the GPU is in.
    pub hostname: String,
    /// Index of the GPU in its host.
    pub gpu_index: u32,
    /// Device name.
    pub device: String,
    /// Model name.
    pub model: String,
    /// Kubernetes container of the GPU's newest workload observation (GPU detail only: null
    /// in lists, and when the newest sample carried no workload).
    pub container: Option<String>,
    /// Kubernetes pod, as `container`.
    pub pod: Option<String>,
    /// Kubernetes namespace, as `container`.
    pub namespace: Option<String>,
}

impl From<GpuInfo> for Gpu {
    fn from(g: GpuInfo) -> Self {
        Self {
            uuid: g.uuid,
            hostname: g.hostname,
            gpu_index: g.gpu_index,
            device: g.device,
            model: g.model,
            container: g.container,
            pod: g.pod,
            namespace: g.namespace,
        }
    }
}

/// A page of GPUs, ordered by UUID.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuList {
    /// The GPUs of this page.
    pub items: Vec<Gpu>,
    /// GPUs in total (all pages).
    pub total: usize,
    /// True when some node did not answer: the list may be incomplete.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// One GPU with its metrics and sample span.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuDetail {
    /// The GPU.
    #[serde(flatten)]
    pub gpu: Gpu,
    /// Metric names with samples.
    pub metrics: Vec<String>,
    /// Earliest sample time (RFC 3339).
    pub first_timestamp: Option<String>,
    /// Latest sample time (RFC 3339).
    pub last_timestamp: Option<String>,
    /// True when some node did not answer: metrics and span may be incomplete.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// Metric names known to the cluster.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricList {
    /// Sorted metric names.
    pub items: Vec<String>,
    /// True when some node did not answer.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// Lists GPUs.
#[utoipa::path(get, path = "/api/v1/gpus", tag = "gpus",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "Page size, 1 to 10000 (default 1000)"),
        ("offset" = Option<usize>, Query, minimum = 0, maximum = 2147483647, description = "GPUs to skip, 0 to 2147483647 (default 0)"),
    ),
    responses(
        (status = 200, description = "A page of GPUs ordered by UUID", body = GpuList),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub async fn list_gpus(
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<GpuList>, ApiError> {
    let p = Params::parse(q.as_deref());
    let limit = p.bounded("limit", DEFAULT_GPU_LIMIT, 1, MAX_GPU_LIMIT)?;
    let offset = p.bounded("offset", 0, 0, crate::params::MAX_OFFSET)?;
    let g = gpus::list(&api.node).await;
    let total = g.value.len();
    let items = g
        .value
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(Gpu::from)
        .collect();
    Ok(Json(GpuList {
        items,
        total,
        partial: !g.coverage.complete(),
        unavailable_nodes: g.coverage.unavailable,
    }))
}

/// One GPU.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}", tag = "gpus",
    params(("uuid" = String, Path, description = "GPU UUID")),
    responses(
        (status = 200, description = "The GPU", body = GpuDetail),
        (status = 404, description = "Unknown GPU", body = ErrorBody),
    ))]
pub async fn get_gpu(
    State(api): State<AppState>,
    Path(uuid): Path<String>,
) -> Result<Json<GpuDetail>, ApiError> {
    let g = gpus::one(&api.node, &uuid).await?;
    let partial = g.partial();
    let d = g.value;
    let mut gpu = Gpu::from(d.info);
    if let Some(last) = d.last {
        // The workload now: a span still open at the GPU's newest sample.
        let window = (last.saturating_sub(attribution::MAX_GAP), last);
        let a = attribution::read(&api.node, Some(vec![uuid.clone()]), window, None).await?;
        let newest = a.value.into_iter().flat_map(|g| g.spans).next_back();
        if let Some(s) = newest.filter(|s| s.end == last) {
            let opt = |v: String| (!v.is_empty()).then_some(v);
            gpu.container = opt(s.workload.container);
            gpu.pod = opt(s.workload.pod);
            gpu.namespace = opt(s.workload.namespace);
        }
    }
    Ok(Json(GpuDetail {
        gpu,
        metrics: d.metrics,
        first_timestamp: d.first.map(format_time),
        last_timestamp: d.last.map(format_time),
        partial,
        unavailable_nodes: g.coverage.unavailable,
    }))
}

/// Lists metric names.
#[utoipa::path(get, path = "/api/v1/metrics", tag = "gpus",
    responses((status = 200, description = "Metric names", body = MetricList)))]
pub async fn list_metrics(State(api): State<AppState>) -> Json<MetricList> {
    let g = metrics::list(&api.node).await;
    Json(MetricList {
        partial: g.partial(),
        items: g.value,
        unavailable_nodes: g.coverage.unavailable,
    })
}
