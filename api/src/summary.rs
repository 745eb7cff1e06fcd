//! `GET /api/v1/latest` (the fleet table: newest value of each metric per GPU) and
//! `GET /api/v1/gpus/{uuid}/steps` (a GPU's metrics averaged per step, for charts over long
//! ranges), both scatter-gathered like every read.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::Serialize;
use telemetry_actors::cluster::protocol::{LatestPart, Request, Response, StepsPart};
use telemetry_storage::Store;
use utoipa::ToSchema;

use crate::context::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::gpus::{unknown_gpu, Gpu, DEFAULT_GPU_LIMIT, MAX_GPU_LIMIT};
use crate::params::{format_time, Params};
use crate::scatter::{gather, local_gpus, merge_gpus};

/// Most steps one metric may have in a `steps` answer.
pub const MAX_STEPS: i64 = 10_000;
/// Steps a chart gets when no `step` is given.
const DEFAULT_STEPS: i64 = 300;
/// Window of a `steps` read without `start_time`.
const DEFAULT_WINDOW_MS: i64 = 3_600_000;

/// A metric's newest sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestValue {
    /// Sample time (RFC 3339).
    pub timestamp: String,
    /// Value.
    pub value: f64,
}

/// A GPU with the newest value of each of its metrics.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetGpu {
    /// The GPU.
    #[serde(flatten)]
    pub gpu: Gpu,
    /// Newest sample per metric name.
    pub latest: BTreeMap<String, LatestValue>,
}

/// A page of the fleet, ordered by UUID.
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetPage {
    /// GPUs of this page with their newest values.
    pub items: Vec<FleetGpu>,
    /// GPUs in total (all pages).
    pub total: usize,
    /// True when some node did not answer.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// One metric averaged per step, as columns (what charting libraries take).
#[derive(Debug, Serialize, ToSchema)]
pub struct StepSeries {
    /// Metric name.
    pub metric: String,
    /// Start of each step (ms since the epoch); steps without samples are left out.
    pub timestamps: Vec<i64>,
    /// Mean of the samples in each step.
    pub avg: Vec<f64>,
    /// Samples in each step.
    pub count: Vec<u32>,
}

/// A GPU's metrics averaged per step.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepsPage {
    /// GPU UUID.
    pub gpu: String,
    /// Step (ms).
    pub step_ms: i64,
    /// Window start (RFC 3339).
    pub start: String,
    /// Window end (RFC 3339).
    pub end: String,
    /// One entry per metric, sorted by name.
    pub series: Vec<StepSeries>,
    /// True when some node did not answer.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// This node's newest samples of these GPUs.
pub fn local_latest(store: &Store, uuids: &[String], metrics: &[String]) -> Vec<LatestPart> {
    uuids
        .iter()
        .filter_map(|u| {
            let latest = store.latest(u, metrics).ok()??;
            let values = latest
                .into_iter()
                .map(|l| (l.metric, l.timestamp, l.value))
                .collect();
            Some((u.clone(), values))
        })
        .collect()
}

/// This node's steps of one GPU.
pub fn local_steps(
    store: &Store,
    uuid: &str,
    metrics: &[String],
    (start, end, step): (i64, i64, i64),
) -> Result<Option<Vec<StepsPart>>, String> {
    let steps = store
        .steps(uuid, metrics, start, end, step)
        .map_err(|e| e.to_string())?;
    Ok(steps.map(|v| v.into_iter().map(|s| (s.metric, s.steps)).collect()))
}

/// The fleet: every GPU (paged) with the newest value of each metric.
#[utoipa::path(get, path = "/api/v1/latest", tag = "gpus",
    params(
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "Page size, 1 to 10000 (default 1000)"),
        ("offset" = Option<usize>, Query, minimum = 0, maximum = 2147483647, description = "GPUs to skip, 0 to 2147483647 (default 0)"),
        ("metric" = Option<Vec<String>>, Query, description = "Metric names; repeat or comma-separate (default: all)"),
    ),
    responses(
        (status = 200, description = "A page of GPUs ordered by UUID, with newest values", body = FleetPage),
        (status = 400, description = "Bad parameter", body = ErrorBody),
    ))]
pub async fn fleet_latest(
    State(node): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<FleetPage>, ApiError> {
    let p = Params::parse(q.as_deref());
    let limit = p.bounded("limit", DEFAULT_GPU_LIMIT, 1, MAX_GPU_LIMIT)?;
    let offset = p.bounded("offset", 0, 0, crate::params::MAX_OFFSET)?;
    let metrics = p.all("metric");
    let g = gather(&node, local_gpus(&node.store), Request::Gpus, |r| match r {
        Response::Gpus(v) => Some(v),
        _ => None,
    })
    .await;
    let all = merge_gpus(g.answers);
    let total = all.len();
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    let uuids: Vec<String> = page.iter().map(|g| g.uuid.clone()).collect();
    let store = node.store.clone();
    let (u, m) = (uuids.clone(), metrics.clone());
    let local = tokio::task::spawn_blocking(move || local_latest(&store, &u, &m))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let request = Request::Latest { uuids, metrics };
    let l = gather(&node, local, request, |r| match r {
        Response::Latest(v) => Some(v),
        _ => None,
    })
    .await;
    // Newest wins: a GPU's series can sit on two nodes after an ownership move.
    let mut newest: BTreeMap<String, BTreeMap<String, (i64, f64)>> = BTreeMap::new();
    for (uuid, values) in l.answers.into_iter().flatten() {
        let per = newest.entry(uuid).or_default();
        for (metric, t, v) in values {
            let e = per.entry(metric).or_insert((t, v));
            if t > e.0 {
                *e = (t, v);
            }
        }
    }
    let mut unavailable = g.unavailable;
    unavailable.extend(l.unavailable);
    unavailable.sort();
    unavailable.dedup();
    let items = page
        .into_iter()
        .map(|info| {
            let latest = newest
                .remove(&info.uuid)
                .unwrap_or_default()
                .into_iter()
                .map(|(m, (t, v))| {
                    let value = LatestValue {
                        timestamp: format_time(t),
                        value: v,
                    };
                    (m, value)
                })
                .collect();
            FleetGpu {
                gpu: Gpu::from(info),
                latest,
            }
        })
        .collect();
    Ok(Json(FleetPage {
        items,
        total,
        partial: !unavailable.is_empty(),
        unavailable_nodes: unavailable,
    }))
}

/// A GPU's metrics averaged per step over a window.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}/steps", tag = "telemetry",
    params(
        ("uuid" = String, Path, description = "GPU UUID"),
        ("start_time" = Option<String>, Query, format = DateTime, description = "Inclusive start, RFC 3339 (default: one hour before end)"),
        ("end_time" = Option<String>, Query, format = DateTime, description = "Inclusive end, RFC 3339 (default: now)"),
        ("step" = Option<String>, Query, pattern = r"^[1-9][0-9]{0,8}(ms|s|m|h|d)$", description = "Step (`10s`, `1m`, `5m`); default: the window / 300. At most 10,000 steps: a finer step is widened to fit, and `step_ms` in the answer is the step used."),
        ("metric" = Option<Vec<String>>, Query, description = "Metric names; repeat or comma-separate (default: all)"),
    ),
    responses(
        (status = 200, description = "Steps per metric", body = StepsPage),
        (status = 400, description = "Bad parameter (start_time after end_time)", body = ErrorBody),
        (status = 404, description = "Unknown GPU", body = ErrorBody),
    ))]
pub async fn gpu_steps(
    State(node): State<AppState>,
    Path(uuid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<StepsPage>, ApiError> {
    let p = Params::parse(q.as_deref());
    let end = match p.time("end_time")? {
        Some(t) => t,
        None => chrono::Utc::now().timestamp_millis(),
    };
    let start = p.time("start_time")?.unwrap_or(end - DEFAULT_WINDOW_MS);
    if start > end {
        return Err(ApiError::bad_request("start_time is after end_time"));
    }
    let step = match p.get("step") {
        Some(s) => humantime::parse_duration(s)
            .ok()
            .and_then(|d| i64::try_from(d.as_millis()).ok())
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "step must be a duration such as 10s or 5m, got {s:?}"
                ))
            })?,
        None => ((end - start) / DEFAULT_STEPS).max(1000),
    };
    // The finest step that keeps (end - start) / step + 1 within MAX_STEPS.
    let step = step.max((end - start + MAX_STEPS - 2) / (MAX_STEPS - 1));
    let metrics = p.all("metric");
    let store = node.store.clone();
    let (u, m) = (uuid.clone(), metrics.clone());
    let local =
        tokio::task::spawn_blocking(move || local_steps(&store, &u, &m, (start, end, step)))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(ApiError::internal)?;
    let request = Request::Steps {
        uuid: uuid.clone(),
        metrics,
        start,
        end,
        step,
    };
    let g = gather(&node, local, request, |r| match r {
        Response::Steps(v) => Some(v),
        _ => None,
    })
    .await;
    let parts: Vec<Vec<StepsPart>> = g.answers.into_iter().flatten().collect();
    if parts.is_empty() {
        return Err(unknown_gpu(&uuid, &g.unavailable));
    }
    // Sums and counts add up across nodes (a node holds each sample once; during an ownership
    // move a sample on two nodes is counted twice, a small bias of the mean at worst).
    let mut merged: BTreeMap<String, BTreeMap<i64, (f64, u32)>> = BTreeMap::new();
    for (metric, steps) in parts.into_iter().flatten() {
        let m = merged.entry(metric).or_default();
        for (t, sum, n) in steps {
            let e = m.entry(t).or_insert((0.0, 0));
            e.0 += sum;
            e.1 += n;
        }
    }
    let series = merged
        .into_iter()
        .map(|(metric, steps)| {
            let mut s = StepSeries {
                metric,
                timestamps: Vec::with_capacity(steps.len()),
                avg: Vec::with_capacity(steps.len()),
                count: Vec::with_capacity(steps.len()),
            };
            for (t, (sum, n)) in steps {
                s.timestamps.push(t);
                s.avg.push(sum / f64::from(n.max(1)));
                s.count.push(n);
            }
            s
        })
        .collect();
    Ok(Json(StepsPage {
        gpu: uuid,
        step_ms: step,
        start: format_time(start),
        end: format_time(end),
        series,
        partial: !g.unavailable.is_empty(),
        unavailable_nodes: g.unavailable,
    }))
}
