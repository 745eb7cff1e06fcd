//! A Prometheus-compatible read API under `/prometheus/api/v1/`, as Grafana's Prometheus data
//! source calls it: `query_range`, `query`, `series`, `labels`, `label/{name}/values` (GET, or
//! POST with a form body, Grafana's default), `status/buildinfo` and `metadata`.
//!
//! Queries are parsed with `promql-parser` and evaluated by `telemetry-promql` (Prometheus
//! 2.42's semantics; what it supports is listed there, anything else is a 400 naming the
//! construct). Each series is `DCGM_FI_…{UUID, gpu, device, modelName, Hostname, container,
//! pod, namespace}` (the last three when set), as dcgm-exporter labels it. A query first lists
//! what it reads ([`telemetry_promql::selections`]), reads it from the cluster by
//! scatter-gather ([`fetch`]), then evaluates without I/O on a blocking thread. Responses use
//! Prometheus' JSON format; a partial answer carries a warning.

mod attribute;
mod fetch;
pub use fetch::MAX_PROM_SAMPLES;
mod format;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use promql_parser::parser::{Expr, VectorSelector};
use serde_json::{json, Value as Json_};
use telemetry_actors::dcgm::{fields, labels as dcgm_labels};
use telemetry_promql::{evaluate, selections, Grid, Value};

use crate::params::Params;
use crate::state::AppState;
use format::{error, matrix_body, prom_time, prom_value, warnings, PromError};

/// Most steps of one `query_range` (Prometheus' own limit is 11,000).
pub const MAX_PROM_STEPS: i64 = 11_000;
/// Longest a query may take unless its `timeout` parameter asks for less (Prometheus' default).
pub const MAX_QUERY_TIME: Duration = Duration::from_secs(120);
/// The Prometheus version whose semantics and API this answers like (for Grafana's checks).
pub const PROMETHEUS_VERSION: &str = "2.42.0";

type Labels = BTreeMap<String, String>;
type PromResult = Result<Json<Json_>, PromError>;

/// Query-string and form-body parameters together (Grafana POSTs a form by default).
fn params(query: Option<&str>, body: &Bytes) -> Result<Params, PromError> {
    let body =
        std::str::from_utf8(body).map_err(|_| error("bad_data", "the form body is not UTF-8"))?;
    let joined = match (query.unwrap_or(""), body) {
        ("", b) => b.to_string(),
        (q, "") => q.to_string(),
        (q, b) => format!("{q}&{b}"),
    };
    Ok(Params::parse(Some(&joined)))
}

/// Parses a time: Unix seconds (fractional) or RFC 3339.
fn time(p: &Params, key: &str) -> Result<Option<i64>, PromError> {
    let Some(v) = p.get(key) else { return Ok(None) };
    if let Ok(secs) = v.parse::<f64>() {
        return Ok(Some((secs * 1000.0).round() as i64));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| Some(t.timestamp_millis()))
        .map_err(|_| {
            error(
                "bad_data",
                format!("invalid parameter \"{key}\": cannot parse {v:?} to a valid timestamp"),
            )
        })
}

fn duration_ms(v: &str) -> Option<i64> {
    if let Ok(secs) = v.parse::<f64>() {
        return Some((secs * 1000.0).round() as i64).filter(|ms| *ms > 0);
    }
    promql_parser::util::parse_duration(v)
        .ok()
        .or_else(|| humantime::parse_duration(v).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
}

fn parse_query(p: &Params) -> Result<Expr, PromError> {
    let q = p
        .get("query")
        .ok_or_else(|| error("bad_data", "query is missing"))?;
    promql_parser::parser::parse(q)
        .map_err(|e| error("bad_data", format!("invalid parameter \"query\": {e}")))
}

/// The `timeout` parameter, at most [`MAX_QUERY_TIME`].
fn timeout(p: &Params) -> Result<Duration, PromError> {
    match p.get("timeout") {
        None => Ok(MAX_QUERY_TIME),
        Some(v) => duration_ms(v)
            .map(|ms| Duration::from_millis(ms as u64).min(MAX_QUERY_TIME))
            .ok_or_else(|| error("bad_data", format!("invalid parameter \"timeout\": {v:?}"))),
    }
}

/// Plans, fetches and evaluates `expr` over `grid`, within `limit`.
async fn run(
    api: &AppState,
    expr: Expr,
    grid: Grid,
    limit: Duration,
) -> Result<(Value, Option<Vec<String>>), PromError> {
    let work = async {
        let plan = selections(&expr, grid).map_err(format::eval_error)?;
        let (fetched, coverage) = fetch::fetch(&api.node, &plan, api.query_max_samples)
            .await
            .map_err(|e| error("execution", e))?;
        let value = tokio::task::spawn_blocking(move || evaluate(&expr, grid, &fetched))
            .await
            .map_err(|e| error("execution", e.to_string()))?
            .map_err(format::eval_error)?;
        Ok((value, warnings(&coverage)))
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| error("timeout", "query timed out in expression evaluation"))?
}

/// `GET`/`POST /prometheus/api/v1/query_range`.
pub async fn query_range(
    State(api): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, PromError> {
    let p = params(q.as_deref(), &body)?;
    let expr = parse_query(&p)?;
    let start = time(&p, "start")?.ok_or_else(|| error("bad_data", "start is missing"))?;
    let end = time(&p, "end")?.ok_or_else(|| error("bad_data", "end is missing"))?;
    let step = p
        .get("step")
        .and_then(duration_ms)
        .ok_or_else(|| error("bad_data", "step must be a positive duration"))?;
    if end < start {
        return Err(error(
            "bad_data",
            "end timestamp must not be before start time",
        ));
    }
    if (end - start) / step >= MAX_PROM_STEPS {
        return Err(error(
            "bad_data",
            format!("exceeded maximum resolution of {MAX_PROM_STEPS} points per timeseries"),
        ));
    }
    let grid = Grid { start, end, step };
    let (value, warn) = run(&api, expr, grid, timeout(&p)?).await?;
    let result = match value {
        Value::Vector(series) => {
            let body = matrix_body(series, grid, warn);
            return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
        }
        Value::Scalar(v) => json!([{"metric": {}, "values": grid.times().zip(v)
            .map(|(t, v)| json!([prom_time(t), prom_value(v)])).collect::<Vec<_>>()}]),
        Value::String(_) | Value::Range(_) => {
            return Err(error(
                "bad_data",
                "invalid expression type for range query, must be Scalar or instant Vector",
            ))
        }
    };
    let mut body = json!({"status": "success", "data": {"resultType": "matrix", "result": result}});
    if let Some(w) = warn {
        body["warnings"] = json!(w);
    }
    Ok(Json(body).into_response())
}

/// `GET`/`POST /prometheus/api/v1/query`: an instant query.
pub async fn query(State(api): State<AppState>, RawQuery(q): RawQuery, body: Bytes) -> PromResult {
    let p = params(q.as_deref(), &body)?;
    let expr = parse_query(&p)?;
    let t = time(&p, "time")?.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let (value, warn) = run(&api, expr, Grid::instant(t), timeout(&p)?).await?;
    let data = match value {
        Value::Vector(series) => {
            let result: Vec<Json_> = series
                .into_iter()
                .filter_map(|s| {
                    let v = s.values.first().copied().flatten()?;
                    Some(json!({"metric": s.labels, "value": [prom_time(t), prom_value(v)]}))
                })
                .collect();
            json!({"resultType": "vector", "result": result})
        }
        Value::Scalar(v) => {
            let v = v.first().copied().unwrap_or(f64::NAN);
            json!({"resultType": "scalar", "result": [prom_time(t), prom_value(v)]})
        }
        Value::String(s) => json!({"resultType": "string", "result": [prom_time(t), s]}),
        Value::Range(series) => {
            let result: Vec<Json_> = series
                .into_iter()
                .map(|s| {
                    let values: Vec<Json_> = s
                        .points
                        .iter()
                        .map(|(t, v)| json!([prom_time(*t), prom_value(*v)]))
                        .collect();
                    json!({"metric": s.labels, "values": values})
                })
                .collect();
            json!({"resultType": "matrix", "result": result})
        }
    };
    let mut body = json!({"status": "success", "data": data});
    if let Some(w) = warn {
        body["warnings"] = json!(w);
    }
    Ok(Json(body))
}

/// `GET`/`POST /prometheus/api/v1/series?match[]=…` (`limit` caps the answer).
pub async fn series(State(api): State<AppState>, RawQuery(q): RawQuery, body: Bytes) -> PromResult {
    let p = params(q.as_deref(), &body)?;
    let selectors = p.repeated("match[]");
    if selectors.is_empty() {
        return Err(error("bad_data", "no match[] parameter provided"));
    }
    let limit = limit(&p)?;
    let listing = fetch::Listing::of(&api.node).await;
    let mut out: Vec<Labels> = Vec::new();
    for s in selectors {
        let Ok(Expr::VectorSelector(sel)) = promql_parser::parser::parse(&s) else {
            return Err(error(
                "bad_data",
                format!("invalid parameter \"match[]\": {s:?} is not a selector"),
            ));
        };
        let picked = listing.select(&sel).map_err(|e| error("execution", e))?;
        out.extend(with_workloads(&api, &p, &sel, picked).await?);
    }
    out.sort();
    out.dedup();
    out.truncate(limit);
    Ok(Json(json!({"status": "success", "data": out})))
}

/// The series a selector's picks stand for once split by workload: each GPU series with every
/// workload it carried in the window (`start`/`end`), among those its workload matchers let
/// through, and the GPU series itself unless a workload matcher asks for a workload. (Whether a
/// GPU also had idle samples in the window is not looked up: its unlabelled series is listed.)
async fn with_workloads(
    api: &AppState,
    p: &Params,
    sel: &VectorSelector,
    picked: Vec<(Labels, String, String)>,
) -> Result<Vec<Labels>, PromError> {
    let matchers: Vec<_> = sel
        .matchers
        .matchers
        .iter()
        .filter(|m| attribute::is_workload_matcher(m))
        .collect();
    let window = (
        time(p, "start")?.unwrap_or(i64::MIN / 2),
        time(p, "end")?.unwrap_or(i64::MAX / 2),
    );
    let mut uuids: Vec<String> = picked.iter().map(|(_, u, _)| u.clone()).collect();
    uuids.sort();
    uuids.dedup();
    let spans = telemetry_service::attribution::read(&api.node, Some(uuids), window, None)
        .await
        .map_err(|e| error("execution", e.to_string()))?;
    let mut held: BTreeMap<&str, Vec<&telemetry_storage::Workload>> = BTreeMap::new();
    for g in &spans.value {
        let list = held.entry(g.uuid.as_str()).or_default();
        list.extend(g.spans.iter().map(|s| &s.workload));
        list.sort();
        list.dedup();
    }
    let passes = |l: &Labels| {
        matchers
            .iter()
            .all(|m| m.is_match(l.get(&m.name).map_or("", String::as_str)))
    };
    let mut out = Vec::new();
    for (labels, uuid, _) in picked {
        for w in held.get(uuid.as_str()).into_iter().flatten() {
            let mut l = labels.clone();
            l.extend(w.labels().map(|(k, v)| (k.to_string(), v.to_string())));
            if passes(&l) {
                out.push(l);
            }
        }
        if passes(&labels) {
            out.push(labels);
        }
    }
    Ok(out)
}

/// The `limit` parameter (0 or absent: no limit).
fn limit(p: &Params) -> Result<usize, PromError> {
    match p.get("limit") {
        None => Ok(usize::MAX),
        Some(v) => match v.parse::<usize>() {
            Ok(0) => Ok(usize::MAX),
            Ok(n) => Ok(n),
            Err(_) => Err(error(
                "bad_data",
                format!("invalid parameter \"limit\": {v:?}"),
            )),
        },
    }
}

/// `GET`/`POST /prometheus/api/v1/labels`.
pub async fn labels(RawQuery(q): RawQuery, body: Bytes) -> PromResult {
    let p = params(q.as_deref(), &body)?;
    let mut names: Vec<&str> = dcgm_labels::NAMES.to_vec();
    names.push("__name__");
    names.sort_unstable();
    names.truncate(limit(&p)?);
    Ok(Json(json!({"status": "success", "data": names})))
}

/// `GET /prometheus/api/v1/label/{name}/values` (`match[]` narrows, `limit` caps).
pub async fn label_values(
    State(api): State<AppState>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> PromResult {
    let p = params(q.as_deref(), &Bytes::new())?;
    let mut selectors: Vec<VectorSelector> = Vec::new();
    for s in p.repeated("match[]") {
        match promql_parser::parser::parse(&s) {
            Ok(Expr::VectorSelector(sel)) => selectors.push(sel),
            _ => {
                return Err(error(
                    "bad_data",
                    format!("invalid parameter \"match[]\": {s:?} is not a selector"),
                ))
            }
        }
    }
    if selectors.is_empty() {
        selectors.push(VectorSelector::new(
            None,
            promql_parser::label::Matchers::empty(),
        ));
    }
    let listing = fetch::Listing::of(&api.node).await;
    if telemetry_storage::WORKLOAD_LABELS.contains(&name.as_str()) {
        let window = (
            time(&p, "start")?.unwrap_or(i64::MIN / 2),
            time(&p, "end")?.unwrap_or(i64::MAX / 2),
        );
        let mut values = workload_values(&api, &listing, &selectors, &name, window).await?;
        values.truncate(limit(&p)?);
        return Ok(Json(json!({"status": "success", "data": values})));
    }
    let mut values: Vec<String> = Vec::new();
    for sel in &selectors {
        let picked = listing.select(sel).map_err(|e| error("execution", e))?;
        values.extend(
            picked
                .into_iter()
                .filter_map(|(l, _, _)| l.get(&name).cloned()),
        );
    }
    values.sort();
    values.dedup();
    values.truncate(limit(&p)?);
    Ok(Json(json!({"status": "success", "data": values})))
}

/// The values a workload label took in the window on the GPUs the selectors pick, among the
/// workloads their workload matchers let through.
async fn workload_values(
    api: &AppState,
    listing: &fetch::Listing,
    selectors: &[VectorSelector],
    name: &str,
    window: (i64, i64),
) -> Result<Vec<String>, PromError> {
    let mut values = std::collections::BTreeSet::new();
    for sel in selectors {
        let picked = listing.select(sel).map_err(|e| error("execution", e))?;
        let mut uuids: Vec<String> = picked.into_iter().map(|(_, uuid, _)| uuid).collect();
        uuids.sort();
        uuids.dedup();
        let spans = telemetry_service::attribution::read(&api.node, Some(uuids), window, None)
            .await
            .map_err(|e| error("execution", e.to_string()))?;
        let matchers: Vec<_> = sel
            .matchers
            .matchers
            .iter()
            .filter(|m| attribute::is_workload_matcher(m))
            .collect();
        for s in spans.value.iter().flat_map(|g| &g.spans) {
            let labels: Labels = s
                .workload
                .labels()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let get = |k: &str| labels.get(k).map_or("", String::as_str);
            if matchers.iter().all(|m| m.is_match(get(&m.name))) && !get(name).is_empty() {
                values.insert(get(name).to_string());
            }
        }
    }
    Ok(values.into_iter().collect())
}

/// `GET /prometheus/api/v1/status/buildinfo`: what Grafana's data-source check reads.
pub async fn buildinfo() -> Json<Json_> {
    Json(json!({"status": "success", "data": {
        "version": PROMETHEUS_VERSION,
        "revision": "",
        "branch": "",
        "buildUser": "",
        "buildDate": "",
        "goVersion": "",
        "application": concat!("telemetry-node ", env!("CARGO_PKG_VERSION")),
    }}))
}

/// `GET /prometheus/api/v1/metadata`: every metric a gauge, with dcgm-exporter's help text
/// where known (Grafana's metric browser).
pub async fn metadata(State(api): State<AppState>, RawQuery(q): RawQuery) -> PromResult {
    let p = params(q.as_deref(), &Bytes::new())?;
    let names = telemetry_service::query::metrics::list(&api.node)
        .await
        .value;
    let wanted = p.get("metric");
    let mut data = serde_json::Map::new();
    for name in names.into_iter().filter(|n| wanted.is_none_or(|w| w == n)) {
        let (kind, help) = fields::describe(&name).unwrap_or((fields::Kind::Gauge, "DCGM field"));
        data.insert(
            name,
            json!([{"type": kind.as_str(), "help": help, "unit": ""}]),
        );
        if data.len() >= limit(&p)? {
            break;
        }
    }
    Ok(Json(json!({"status": "success", "data": data})))
}
