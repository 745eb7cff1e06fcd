//! `GET /api/v1/latest` (the fleet table: newest value of each metric per GPU) and
//! `GET /api/v1/gpus/{uuid}/steps` (a GPU's metrics averaged per step, for charts over long
//! ranges), both scatter-gathered like every read.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_service::query::{latest, steps};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::gpus::{Gpu, DEFAULT_GPU_LIMIT, MAX_GPU_LIMIT};
use crate::params::{format_time, Params};
use crate::state::AppState;

/// Most steps one metric may have in a `steps` answer.
pub const MAX_STEPS: i64 = 10_000;
/// Steps a chart gets when no `step` is given.
const DEFAULT_STEPS: i64 = 300;
/// Window of a `steps` read without `start_time`.
const DEFAULT_WINDOW_MS: i64 = 3_600_000;

/// A metric's newest sample.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LatestValue {
    /// Sample time (RFC 3339).
    pub timestamp: String,
    /// Value.
    pub value: f64,
}

/// A GPU with the newest value of each of its metrics.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetGpu {
    /// The GPU.
    #[serde(flatten)]
    pub gpu: Gpu,
    /// Newest sample per metric name.
    pub latest: BTreeMap<String, LatestValue>,
}

/// A page of the fleet, ordered by UUID.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
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
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Json<FleetPage>, ApiError> {
    let p = Params::parse(q.as_deref());
    let limit = p.bounded("limit", DEFAULT_GPU_LIMIT, 1, MAX_GPU_LIMIT)?;
    let offset = p.bounded("offset", 0, 0, crate::params::MAX_OFFSET)?;
    let metrics = p.all("metric");
    let g = latest::fleet(&api.node, offset, limit, metrics).await?;
    let partial = g.partial();
    let items = g
        .value
        .gpus
        .into_iter()
        .map(|(info, newest)| {
            let latest = newest
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
        total: g.value.total,
        partial,
        unavailable_nodes: g.coverage.unavailable,
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
    State(api): State<AppState>,
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
    let window = steps::Window { start, end, step };
    let g = steps::run(&api.node, &uuid, metrics, window).await?;
    let partial = g.partial();
    let series = g
        .value
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
        partial,
        unavailable_nodes: g.coverage.unavailable,
    }))
}
