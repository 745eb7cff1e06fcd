//! A Prometheus-compatible read API under `/prometheus/api/v1/` for Grafana's built-in
//! Prometheus datasource: `query_range`, `query`, `series`, `labels`, `label/{name}/values`.
//!
//! Queries are parsed with `promql-parser`. Supported: vector selectors with `=`, `!=`, `=~`,
//! `!~` matchers on the labels below, and `avg`/`min`/`max`/`sum`/`count` of one, optionally
//! `by`/`without` labels. Each series is `DCGM_FI_…{UUID, gpu, device, modelName, Hostname,
//! container, pod, namespace}` (the last three when set). Evaluation follows Prometheus: at each
//! step a series takes its newest sample within the 5-minute lookback (inclusive at its start,
//! as Prometheus 2.x does). Samples are read by
//! scatter-gather, so answers cover the cluster. Responses use Prometheus' JSON format.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{Expr, LabelModifier, VectorSelector};
use serde_json::{json, Value};
use telemetry_actors::dcgm::labels as dcgm_labels;
use telemetry_service::query::telemetry::{self, TelemetryQuery};
use telemetry_service::query::{gpus, metrics};
use telemetry_service::{Coverage, NodeContext, QueryError};
use telemetry_storage::GpuInfo;

use crate::params::Params;
use crate::state::AppState;

/// How far back a step looks for a series' newest sample (Prometheus' default).
pub const LOOKBACK_MS: i64 = 5 * 60_000;
/// Most steps of one `query_range` (Prometheus' own limit is 11,000).
pub const MAX_PROM_STEPS: i64 = 11_000;
/// Most samples one query may read; beyond it the query is refused rather than run unbounded.
pub const MAX_PROM_SAMPLES: usize = 5_000_000;

type Labels = BTreeMap<String, String>;

/// A Prometheus API error: `{"status":"error","errorType":…,"error":…}` with HTTP 400 or 422.
fn error(kind: &str, msg: impl Into<String>) -> (axum::http::StatusCode, Json<Value>) {
    let status = if kind == "execution" {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::BAD_REQUEST
    };
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
}

type PromResult = Result<Json<Value>, (axum::http::StatusCode, Json<Value>)>;

fn labels_of(gpu: &GpuInfo, metric: &str) -> Labels {
    let mut l: Labels = dcgm_labels::labels_of(gpu)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    l.insert("__name__".into(), metric.into());
    l
}

fn matches(m: &Matcher, labels: &Labels) -> bool {
    m.is_match(labels.get(&m.name).map_or("", String::as_str))
}

/// Parses a time: Unix seconds (fractional) or RFC 3339.
fn time(p: &Params, key: &str) -> Result<Option<i64>, (axum::http::StatusCode, Json<Value>)> {
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
    humantime::parse_duration(v)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .filter(|ms| *ms > 0)
}

/// Every (labels, gpu uuid, metric) a selector picks from the cluster's GPUs and metrics.
async fn select(
    node: &NodeContext,
    sel: &VectorSelector,
) -> Result<(Vec<(Labels, String, String)>, Coverage), String> {
    if !sel.matchers.or_matchers.is_empty() || sel.offset.is_some() || sel.at.is_some() {
        return Err("`or` matchers, offset and @ are not supported".into());
    }
    let mut matchers = sel.matchers.matchers.clone();
    if let Some(name) = &sel.name {
        matchers.push(Matcher::new(MatchOp::Equal, "__name__", name));
    }
    let g = gpus::list(node).await;
    let m = metrics::list(node).await;
    let mut out = Vec::new();
    for gpu in g.value {
        for metric in &m.value {
            let labels = labels_of(&gpu, metric);
            if matchers.iter().all(|m| matches(m, &labels)) {
                out.push((labels, gpu.uuid.clone(), metric.clone()));
            }
        }
    }
    Ok((out, g.coverage.join(m.coverage)))
}

/// All samples of one GPU's metrics in `[start, end]`, from every node, in time order per metric.
async fn samples(
    node: &NodeContext,
    uuid: &str,
    metrics: &[String],
    (start, end): (i64, i64),
    budget: &mut usize,
) -> Result<(BTreeMap<String, Vec<(i64, f64)>>, Coverage), String> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut cursor: Option<(i64, String)> = None;
    let mut coverage = Coverage::full(node.router.replication().write_quorum);
    loop {
        let q = TelemetryQuery {
            uuid: uuid.to_string(),
            metrics: metrics.to_vec(),
            start,
            end,
            limit: 10_000,
            cursor: cursor.take(),
        };
        let page = match telemetry::page(node, q).await {
            Ok(a) => {
                coverage = coverage.join(a.coverage);
                a.value
            }
            // Listed by a member that has not answered this read: nothing to add.
            Err(QueryError::UnknownGpu { coverage: c, .. }) => {
                coverage = coverage.join(c);
                break;
            }
            Err(e) => return Err(e.to_string()),
        };
        *budget = budget.checked_sub(page.points.len()).ok_or_else(|| {
            format!("the query reads more than {MAX_PROM_SAMPLES} samples; narrow it")
        })?;
        for (t, m, v) in &page.points {
            if let Some(name) = page.metrics.get(usize::from(*m)) {
                out.entry(name.clone()).or_default().push((*t, *v));
            }
        }
        match (page.more, page.points.last()) {
            (true, Some(last)) => {
                let name = page
                    .metrics
                    .get(usize::from(last.1))
                    .cloned()
                    .unwrap_or_default();
                cursor = Some((last.0, name));
            }
            _ => break,
        }
    }
    Ok((out, coverage))
}

/// The value of each series at each step: its newest sample within the lookback.
fn at_steps(points: &[(i64, f64)], steps: &[i64]) -> Vec<Option<f64>> {
    let mut i = 0;
    steps
        .iter()
        .map(|&t| {
            while i < points.len() && points[i].0 <= t {
                i += 1;
            }
            // Prometheus 2.x counts a sample exactly one lookback old (3.x does not).
            (i > 0 && points[i - 1].0 >= t - LOOKBACK_MS).then(|| points[i - 1].1)
        })
        .collect()
}

/// A sample time as Prometheus writes it: Unix seconds, fractional only when needed.
fn prom_time(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` as Prometheus prints sample values.
fn prom_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

/// Evaluates `expr` at `steps`: (labels, value per step).
/// Series of one evaluation: labels and a value (or none) per step.
type Evaluated = Vec<(Labels, Vec<Option<f64>>)>;

async fn evaluate(
    node: &NodeContext,
    expr: &Expr,
    steps: &[i64],
) -> Result<(Evaluated, Coverage), String> {
    let (sel, agg) = match expr {
        Expr::VectorSelector(s) => (s, None),
        Expr::Paren(p) => return Box::pin(evaluate(node, &p.expr, steps)).await,
        Expr::Aggregate(a) => match a.expr.as_ref() {
            Expr::VectorSelector(s) if a.param.is_none() => (s, Some(a)),
            _ => {
                return Err("only avg, min, max, sum and count of a selector are supported".into())
            }
        },
        _ => {
            return Err(
                "only selectors and avg/min/max/sum/count by (…) of them are supported".into(),
            )
        }
    };
    let (series, unavailable) = selected_at_steps(node, sel, steps).await?;
    match agg {
        // A selector's result keeps the metric name.
        None => Ok((series, unavailable)),
        Some(a) => Ok((aggregate(a, series, steps.len())?, unavailable)),
    }
}

/// Every series a selector picks, valued at each step, in label order (Prometheus aggregates
/// in that order, and float sums depend on it).
async fn selected_at_steps(
    node: &NodeContext,
    sel: &VectorSelector,
    steps: &[i64],
) -> Result<(Evaluated, Coverage), String> {
    let (picked, mut coverage) = select(node, sel).await?;
    let (first, last) = (
        steps.first().copied().unwrap_or(0),
        steps.last().copied().unwrap_or(0),
    );
    let mut by_gpu: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, uuid, metric) in &picked {
        by_gpu.entry(uuid.clone()).or_default().push(metric.clone());
    }
    let mut budget = MAX_PROM_SAMPLES;
    let mut data: BTreeMap<(String, String), Vec<(i64, f64)>> = BTreeMap::new();
    for (uuid, metrics) in by_gpu {
        let window = (first - LOOKBACK_MS, last);
        let (read, c) = samples(node, &uuid, &metrics, window, &mut budget).await?;
        coverage = coverage.join(c);
        for (metric, pts) in read {
            data.insert((uuid.clone(), metric), pts);
        }
    }
    let mut series: Evaluated = picked
        .into_iter()
        .map(|(labels, uuid, metric)| {
            let values = data
                .get(&(uuid, metric))
                .map_or_else(|| vec![None; steps.len()], |p| at_steps(p, steps));
            (labels, values)
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((series, coverage))
}

/// `op by/without (…)` of `series`, step by step.
fn aggregate(
    a: &promql_parser::parser::AggregateExpr,
    series: Evaluated,
    steps: usize,
) -> Result<Evaluated, String> {
    let op = a.op.to_string();
    if !matches!(op.as_str(), "sum" | "avg" | "min" | "max" | "count") {
        return Err(format!(
            "aggregation {op} is not supported (avg, min, max, sum, count are)"
        ));
    }
    let keep = |l: &Labels| -> Labels {
        match &a.modifier {
            Some(LabelModifier::Include(by)) => l
                .iter()
                .filter(|(k, _)| by.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            Some(LabelModifier::Exclude(without)) => l
                .iter()
                .filter(|(k, _)| *k != "__name__" && !without.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            None => Labels::new(),
        }
    };
    let mut groups: BTreeMap<Labels, Vec<Vec<Option<f64>>>> = BTreeMap::new();
    for (labels, values) in series {
        groups.entry(keep(&labels)).or_default().push(values);
    }
    Ok(groups
        .into_iter()
        .map(|(labels, members)| {
            let values = (0..steps)
                .map(|i| {
                    let vs: Vec<f64> = members.iter().filter_map(|m| m[i]).collect();
                    combine(&op, &vs)
                })
                .collect();
            (labels, values)
        })
        .collect())
}

/// One step of an aggregation over the values present (none present: no value).
fn combine(op: &str, vs: &[f64]) -> Option<f64> {
    if vs.is_empty() {
        return None;
    }
    Some(match op {
        "sum" => vs.iter().sum(),
        // Prometheus 2.x's running mean, for the same rounding.
        "avg" => vs.iter().enumerate().fold(0.0, |mean, (i, v)| {
            let n = (i + 1) as f64;
            if i == 0 {
                *v
            } else {
                mean + (v / n - mean / n)
            }
        }),
        "min" => vs.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => vs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => vs.len() as f64,
    })
}

fn parse_query(p: &Params) -> Result<Expr, (axum::http::StatusCode, Json<Value>)> {
    let q = p
        .get("query")
        .ok_or_else(|| error("bad_data", "query is missing"))?;
    promql_parser::parser::parse(q)
        .map_err(|e| error("bad_data", format!("invalid parameter \"query\": {e}")))
}

fn warnings(coverage: &Coverage) -> Option<Vec<String>> {
    (!coverage.complete()).then(|| {
        vec![format!(
            "partial answer: it may miss data on {}",
            crate::error::missing_members(coverage)
        )]
    })
}

/// `GET /prometheus/api/v1/query_range`.
pub async fn query_range(State(api): State<AppState>, RawQuery(q): RawQuery) -> PromResult {
    let p = Params::parse(q.as_deref());
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
    let steps: Vec<i64> = (0..=(end - start) / step)
        .map(|i| start + i * step)
        .collect();
    let (series, unavailable) = evaluate(&api.node, &expr, &steps)
        .await
        .map_err(|e| error("execution", e))?;
    let result: Vec<Value> = series
        .into_iter()
        .filter(|(_, v)| v.iter().any(Option::is_some))
        .map(|(labels, values)| {
            let values: Vec<Value> = steps
                .iter()
                .zip(values)
                .filter_map(|(t, v)| v.map(|v| json!([prom_time(*t), prom_value(v)])))
                .collect();
            json!({"metric": labels, "values": values})
        })
        .collect();
    let mut body = json!({"status": "success", "data": {"resultType": "matrix", "result": result}});
    if let Some(w) = warnings(&unavailable) {
        body["warnings"] = json!(w);
    }
    Ok(Json(body))
}

/// `GET /prometheus/api/v1/query`: an instant query.
pub async fn query(State(api): State<AppState>, RawQuery(q): RawQuery) -> PromResult {
    let p = Params::parse(q.as_deref());
    let expr = parse_query(&p)?;
    let t = time(&p, "time")?.unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
    let (series, unavailable) = evaluate(&api.node, &expr, &[t])
        .await
        .map_err(|e| error("execution", e))?;
    let result: Vec<Value> = series
        .into_iter()
        .filter_map(|(labels, v)| {
            v[0].map(|v| json!({"metric": labels, "value": [prom_time(t), prom_value(v)]}))
        })
        .collect();
    let mut body = json!({"status": "success", "data": {"resultType": "vector", "result": result}});
    if let Some(w) = warnings(&unavailable) {
        body["warnings"] = json!(w);
    }
    Ok(Json(body))
}

/// `GET /prometheus/api/v1/series?match[]=…`.
pub async fn series(State(api): State<AppState>, RawQuery(q): RawQuery) -> PromResult {
    let p = Params::parse(q.as_deref());
    let selectors = p.all("match[]");
    if selectors.is_empty() {
        return Err(error("bad_data", "no match[] parameter provided"));
    }
    let mut out: Vec<Labels> = Vec::new();
    for s in selectors {
        let Ok(Expr::VectorSelector(sel)) = promql_parser::parser::parse(&s) else {
            return Err(error(
                "bad_data",
                format!("invalid parameter \"match[]\": {s:?} is not a selector"),
            ));
        };
        let (picked, _) = select(&api.node, &sel)
            .await
            .map_err(|e| error("execution", e))?;
        out.extend(picked.into_iter().map(|(l, _, _)| l));
    }
    out.sort();
    out.dedup();
    Ok(Json(json!({"status": "success", "data": out})))
}

/// `GET /prometheus/api/v1/labels`.
pub async fn labels() -> Json<Value> {
    let mut names: Vec<&str> = dcgm_labels::NAMES.to_vec();
    names.push("__name__");
    names.sort_unstable();
    Json(json!({"status": "success", "data": names}))
}

/// `GET /prometheus/api/v1/label/{name}/values`.
pub async fn label_values(State(api): State<AppState>, Path(name): Path<String>) -> PromResult {
    let all = Expr::VectorSelector(VectorSelector::new(
        None,
        promql_parser::label::Matchers::empty(),
    ));
    let Expr::VectorSelector(sel) = all else {
        return Err(error("execution", "internal"));
    };
    let (picked, _) = select(&api.node, &sel)
        .await
        .map_err(|e| error("execution", e))?;
    let mut values: Vec<String> = picked
        .into_iter()
        .filter_map(|(l, _, _)| l.get(&name).cloned())
        .collect();
    values.sort();
    values.dedup();
    Ok(Json(json!({"status": "success", "data": values})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_take_the_newest_sample_within_the_lookback() {
        let pts = [(0, 1.0), (10_000, 2.0), (400_000, 3.0)];
        let got = at_steps(
            &pts,
            &[
                -1, 0, 5_000, 10_000, 310_000, 310_001, 400_000, 700_000, 700_001,
            ],
        );
        assert_eq!(
            got,
            [
                None,
                Some(1.0),
                Some(1.0),
                Some(2.0),
                Some(2.0),
                None,
                Some(3.0),
                Some(3.0),
                None
            ]
        );
    }

    #[test]
    fn values_print_like_prometheus() {
        assert_eq!(prom_value(61.0), "61");
        assert_eq!(prom_value(512.25), "512.25");
        assert_eq!(prom_value(1e6), "1000000");
        assert_eq!(prom_value(f64::NAN), "NaN");
        assert_eq!(prom_value(f64::INFINITY), "+Inf");
    }
}
