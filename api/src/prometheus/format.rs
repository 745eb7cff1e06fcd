//! Prometheus' JSON shapes: errors, sample times and values, matrices, warnings.

use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use telemetry_promql::{EvalError, Grid, StepSeries};
use telemetry_service::Coverage;

/// A Prometheus API error: status and `{"status":"error","errorType":…,"error":…}`.
pub type PromError = (StatusCode, Json<Value>);

/// An error of `kind` (`bad_data` 400, `execution` 422, `timeout` 503).
pub fn error(kind: &str, msg: impl Into<String>) -> PromError {
    let status = match kind {
        "execution" => StatusCode::UNPROCESSABLE_ENTITY,
        "timeout" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    (
        status,
        Json(json!({"status": "error", "errorType": kind, "error": msg.into()})),
    )
}

/// An evaluation error: unsupported PromQL is the query's fault (400), the rest 422.
pub fn eval_error(e: EvalError) -> PromError {
    if e.is_bad_query() {
        error("bad_data", e.to_string())
    } else {
        error("execution", e.to_string())
    }
}

/// A sample time as Prometheus writes it: Unix seconds, fractional only when needed.
pub fn prom_time(ms: i64) -> Value {
    if ms % 1000 == 0 {
        json!(ms / 1000)
    } else {
        json!(ms as f64 / 1000.0)
    }
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)` as Prometheus prints sample values.
pub fn prom_value(v: f64) -> String {
    telemetry_promql::format_value(v)
}

/// A range query's vector result: every series with a value, sorted by labels.
pub fn matrix(mut series: Vec<StepSeries>, grid: Grid) -> Value {
    series.retain(|s| s.values.iter().any(Option::is_some));
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let out: Vec<Value> = series
        .into_iter()
        .map(|s| {
            let values: Vec<Value> = grid
                .times()
                .zip(s.values)
                .filter_map(|(t, v)| v.map(|v| json!([prom_time(t), prom_value(v)])))
                .collect();
            json!({"metric": s.labels, "values": values})
        })
        .collect();
    json!(out)
}

/// The warning of a partial answer.
pub fn warnings(coverage: &Coverage) -> Option<Vec<String>> {
    (!coverage.complete()).then(|| {
        vec![format!(
            "partial answer: it may miss data on {}",
            crate::error::missing_members(coverage)
        )]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_like_prometheus() {
        assert_eq!(prom_value(61.0), "61");
        assert_eq!(prom_value(512.25), "512.25");
        assert_eq!(prom_value(1e6), "1000000");
        assert_eq!(prom_value(f64::NAN), "NaN");
        assert_eq!(prom_value(f64::INFINITY), "+Inf");
        assert_eq!(prom_time(1500), json!(1.5));
        assert_eq!(prom_time(2000), json!(2));
    }
}
