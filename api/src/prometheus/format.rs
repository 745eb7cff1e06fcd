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

/// A range query's answer with a vector result (every series with a value, sorted by labels),
/// written straight into the body: a dashboard's answer is thousands of `[time, "value"]` pairs,
/// and building them as JSON values first cost as much as the evaluation.
pub fn matrix_body(
    mut series: Vec<StepSeries>,
    grid: Grid,
    warnings: Option<Vec<String>>,
) -> String {
    series.retain(|s| s.values.iter().any(Option::is_some));
    series.sort_by(|a, b| a.labels.cmp(&b.labels));
    let points: usize = series.iter().map(|s| s.values.len()).sum();
    let mut out = String::with_capacity(64 + points * 24);
    out.push_str(r#"{"status":"success","data":{"resultType":"matrix","result":["#);
    for (i, s) in series.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"metric":"#);
        out.push_str(&json!(s.labels).to_string());
        out.push_str(r#","values":["#);
        let mut first = true;
        for (t, v) in grid.times().zip(&s.values) {
            let Some(v) = v else { continue };
            if !first {
                out.push(',');
            }
            first = false;
            out.push('[');
            out.push_str(&prom_time(t).to_string());
            out.push_str(",\"");
            out.push_str(&prom_value(*v));
            out.push_str("\"]");
        }
        out.push_str("]}");
    }
    out.push_str("]}");
    if let Some(w) = warnings {
        out.push_str(r#","warnings":"#);
        out.push_str(&Value::from(w).to_string());
    }
    out.push('}');
    out
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
    fn a_written_matrix_is_the_json_of_its_values() {
        let labels = |h: &str| {
            [("__name__", "t"), ("Hostname", h)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let series = vec![
            StepSeries {
                labels: labels("b\"q"),
                values: vec![Some(1.5), None, Some(f64::NAN)],
            },
            StepSeries {
                labels: labels("a"),
                values: vec![None, Some(2.0), None],
            },
            StepSeries {
                labels: labels("none"),
                values: vec![None, None, None],
            },
        ];
        let grid = Grid {
            start: 1_000,
            end: 2_000,
            step: 500,
        };
        let body: Value =
            serde_json::from_str(&matrix_body(series, grid, Some(vec!["w".into()]))).expect("JSON");
        assert_eq!(
            body,
            json!({"status": "success", "warnings": ["w"], "data": {"resultType": "matrix", "result": [
                {"metric": {"__name__": "t", "Hostname": "a"}, "values": [[1.5, "2"]]},
                {"metric": {"__name__": "t", "Hostname": "b\"q"}, "values": [[1, "1.5"], [2, "NaN"]]},
            ]}})
        );
    }

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
