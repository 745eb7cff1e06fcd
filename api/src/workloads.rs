//! Who used which GPU: `GET /api/v1/workloads`, `GET /api/v1/workloads/{namespace}/{pod}` and
//! `GET /api/v1/gpus/{uuid}/attribution`. The rules of spans and totals are
//! `telemetry_service::attribution`'s.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_actors::cluster::protocol::{GpuSpans, Span};
use telemetry_service::attribution::{self, Totals, WorkloadKey};
use telemetry_service::query::gpus;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::params::{format_time, Params};
use crate::state::AppState;

/// One workload's use of the GPUs in the window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkloadUse {
    /// Kubernetes namespace (for a namespace or a pod).
    pub namespace: Option<String>,
    /// Kubernetes pod (for a pod).
    pub pod: Option<String>,
    /// HPC job (for a job).
    pub hpc_job: Option<String>,
    /// Distinct GPUs it held.
    pub gpus: usize,
    /// GPU time it held, summed over its GPUs (s).
    pub gpu_seconds: f64,
    /// Mean utilisation of its GPUs while it held them (%), when a sample was attributed.
    pub mean_utilization: Option<f64>,
    /// Energy its GPUs drew while it held them (J), from their power samples.
    pub energy_joules: f64,
    /// First observation (RFC 3339).
    pub first_seen: String,
    /// Last observation (RFC 3339).
    pub last_seen: String,
}

/// The workloads seen in a window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkloadList {
    /// Per namespace, by name.
    pub namespaces: Vec<WorkloadUse>,
    /// Per pod, by namespace and name.
    pub pods: Vec<WorkloadUse>,
    /// Per HPC job, by id.
    pub jobs: Vec<WorkloadUse>,
    /// True when some node did not answer: GPUs may be missing.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// A run of one GPU's samples carrying one workload.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributedSpan {
    /// Kubernetes namespace, if any.
    pub namespace: Option<String>,
    /// Kubernetes pod, if any.
    pub pod: Option<String>,
    /// Container, if any.
    pub container: Option<String>,
    /// HPC job, if any.
    pub hpc_job: Option<String>,
    /// First observation (RFC 3339).
    pub start: String,
    /// Last observation (RFC 3339).
    pub end: String,
    /// GPU time held (s): the span plus one sampling interval.
    pub gpu_seconds: f64,
    /// Mean utilisation in the span (%), when a sample was taken.
    pub mean_utilization: Option<f64>,
    /// Energy drawn in the span (J).
    pub energy_joules: f64,
}

/// A GPU's workload history in a window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuAttribution {
    /// GPU UUID.
    pub gpu: String,
    /// Spans in time order.
    pub spans: Vec<AttributedSpan>,
    /// True when some node did not answer.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// A pod's GPUs in a window.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PodAttribution {
    /// The pod's totals.
    #[serde(flatten)]
    pub totals: WorkloadUse,
    /// Each GPU it held, with its spans there.
    pub items: Vec<GpuSpansView>,
    /// True when some node did not answer.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// One GPU's spans of a pod.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct GpuSpansView {
    /// GPU UUID.
    pub gpu: String,
    /// Spans in time order.
    pub spans: Vec<AttributedSpan>,
}

fn window(p: &Params) -> Result<(i64, i64), ApiError> {
    let start = p.time("start_time")?.unwrap_or(i64::MIN / 2);
    let end = p.time("end_time")?.unwrap_or(i64::MAX / 2);
    if start > end {
        return Err(ApiError::bad_request("start_time is after end_time"));
    }
    Ok((start, end))
}

fn opt(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

fn view(s: Span) -> AttributedSpan {
    AttributedSpan {
        mean_utilization: mean(s.util_sum, s.util_samples),
        namespace: opt(&s.workload.namespace),
        pod: opt(&s.workload.pod),
        container: opt(&s.workload.container),
        hpc_job: opt(&s.workload.hpc_job),
        start: format_time(s.start),
        end: format_time(s.end),
        gpu_seconds: s.held_ms as f64 / 1000.0,
        energy_joules: s.energy_j,
    }
}

fn use_of(key: &WorkloadKey, t: &Totals) -> WorkloadUse {
    let (namespace, pod, hpc_job) = match key {
        WorkloadKey::Namespace(ns) => (Some(ns.clone()), None, None),
        WorkloadKey::Pod(ns, pod) => (opt(ns), Some(pod.clone()), None),
        WorkloadKey::Job(j) => (None, None, Some(j.clone())),
    };
    let (first, last) = t.seen.unwrap_or_default();
    WorkloadUse {
        namespace,
        pod,
        hpc_job,
        gpus: t.gpus.len(),
        gpu_seconds: t.held_ms as f64 / 1000.0,
        mean_utilization: t.mean_util(),
        energy_joules: t.energy_j,
        first_seen: format_time(first),
        last_seen: format_time(last),
    }
}

/// Lists the namespaces, pods and HPC jobs that held GPUs in a window.
#[utoipa::path(get, path = "/api/v1/workloads", tag = "workloads",
    params(
        ("start_time" = Option<String>, Query, format = DateTime, description = "Inclusive start, RFC 3339 (default: earliest)"),
        ("end_time" = Option<String>, Query, format = DateTime, description = "Inclusive end, RFC 3339 (default: latest)"),
    ),
    responses(
        (status = 200, description = "Workloads with GPU count, GPU time, mean utilisation and energy", body = WorkloadList),
        (status = 400, description = "Bad parameter, or a window holding too many spans", body = ErrorBody),
    ))]
pub async fn list_workloads(
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<WorkloadList>, ApiError> {
    let w = window(&Params::parse(q.as_deref()))?;
    let a = attribution::read(&api.node, None, w, None).await?;
    let mut out = WorkloadList {
        namespaces: Vec::new(),
        pods: Vec::new(),
        jobs: Vec::new(),
        partial: a.partial(),
        unavailable_nodes: a.coverage.unavailable.clone(),
    };
    for (key, t) in attribution::totals(&a.value) {
        let u = use_of(&key, &t);
        match key {
            WorkloadKey::Namespace(_) => out.namespaces.push(u),
            WorkloadKey::Pod(..) => out.pods.push(u),
            WorkloadKey::Job(_) => out.jobs.push(u),
        }
    }
    Ok(Json(out))
}

/// One pod's GPUs and spans in a window.
#[utoipa::path(get, path = "/api/v1/workloads/{namespace}/{pod}", tag = "workloads",
    params(
        ("namespace" = String, Path, description = "Kubernetes namespace"),
        ("pod" = String, Path, description = "Pod name"),
        ("start_time" = Option<String>, Query, format = DateTime, description = "Inclusive start, RFC 3339 (default: earliest)"),
        ("end_time" = Option<String>, Query, format = DateTime, description = "Inclusive end, RFC 3339 (default: latest)"),
    ),
    responses(
        (status = 200, description = "The pod's totals and each GPU it held", body = PodAttribution),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "The pod held no GPU in the window", body = ErrorBody),
    ))]
pub async fn get_pod(
    State(api): State<AppState>,
    Path((namespace, pod)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Result<Json<PodAttribution>, ApiError> {
    let w = window(&Params::parse(q.as_deref()))?;
    let only = Some((namespace.clone(), pod.clone()));
    let a = attribution::read(&api.node, None, w, only).await?;
    let held: Vec<GpuSpans> = a
        .value
        .into_iter()
        .filter(|g| !g.spans.is_empty())
        .collect();
    let key = WorkloadKey::Pod(namespace.clone(), pod.clone());
    let Some(t) = attribution::totals(&held).remove(&key) else {
        return Err(ApiError::not_found(format!(
            "pod {namespace}/{pod} held no GPU in the window"
        )));
    };
    Ok(Json(PodAttribution {
        totals: use_of(&key, &t),
        items: held
            .into_iter()
            .map(|g| GpuSpansView {
                gpu: g.uuid,
                spans: g.spans.into_iter().map(view).collect(),
            })
            .collect(),
        partial: !a.coverage.complete(),
        unavailable_nodes: a.coverage.unavailable,
    }))
}

/// One GPU's workload history in a window.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}/attribution", tag = "workloads",
    params(
        ("uuid" = String, Path, description = "GPU UUID"),
        ("start_time" = Option<String>, Query, format = DateTime, description = "Inclusive start, RFC 3339 (default: earliest)"),
        ("end_time" = Option<String>, Query, format = DateTime, description = "Inclusive end, RFC 3339 (default: latest)"),
    ),
    responses(
        (status = 200, description = "The GPU's spans, in time order", body = GpuAttribution),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown GPU", body = ErrorBody),
    ))]
pub async fn get_gpu_attribution(
    State(api): State<AppState>,
    Path(uuid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<GpuAttribution>, ApiError> {
    let w = window(&Params::parse(q.as_deref()))?;
    // Unknown GPUs are a 404, told apart from a GPU that carried no workload.
    let known = gpus::one(&api.node, &uuid).await?;
    let a = attribution::read(&api.node, Some(vec![uuid.clone()]), w, None).await?;
    let coverage = known.coverage.join(a.coverage);
    let spans = a
        .value
        .into_iter()
        .flat_map(|g| g.spans)
        .map(view)
        .collect();
    Ok(Json(GpuAttribution {
        gpu: uuid,
        spans,
        partial: !coverage.complete(),
        unavailable_nodes: coverage.unavailable,
    }))
}
