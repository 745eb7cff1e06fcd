//! `GET /api/v1/gpus/{uuid}/telemetry`: a GPU's samples by time, paginated with a cursor.
//!
//! The cursor encodes the (timestamp, metric) of the last point returned, not a position, so it
//! stays valid while data arrives and across nodes.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, Response as HttpResponse};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use telemetry_service::query::telemetry::{self, TelemetryPart, TelemetryQuery};
use telemetry_service::Coverage;
use telemetry_storage::RangeCursor;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::params::{format_time, format_time_into, Params, TIME_LEN};
use crate::state::AppState;

/// Default page size of telemetry reads.
pub const DEFAULT_TELEMETRY_LIMIT: usize = 1000;
/// Largest page of telemetry reads as points (an object per sample: about 87 bytes each).
pub const MAX_TELEMETRY_LIMIT: usize = 10_000;
/// Largest page of telemetry reads as columns (about 20 bytes a sample: 2 MB at most, well
/// under a peer message), so that a dashboard reads an hour of a GPU's metrics in one request.
pub const MAX_COLUMNAR_LIMIT: usize = 100_000;
/// Longest accepted cursor string.
const MAX_CURSOR_LEN: usize = 1100;

/// One sample.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TelemetryPoint {
    /// Sample time (RFC 3339, milliseconds, UTC).
    pub timestamp: String,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// A page of a GPU's samples ordered by (timestamp, metric).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TelemetryPage {
    /// GPU UUID.
    pub gpu: String,
    /// Samples of this page.
    pub items: Vec<TelemetryPoint>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// True when some node did not answer: the page may be incomplete.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// One metric's samples of a page, as columns.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColumnarSeries {
    /// Metric name.
    pub metric: String,
    /// Sample times, milliseconds since the epoch, ascending.
    pub timestamps: Vec<i64>,
    /// Values, one per timestamp (null for a non-finite value).
    pub values: Vec<Option<f64>>,
}

/// A page of a GPU's samples as one set of columns per metric (`format=columnar`): the same
/// points and cursor as [`TelemetryPage`], without repeating the metric and an RFC 3339 time in
/// every point (about a fifth of the bytes).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ColumnarPage {
    /// GPU UUID.
    pub gpu: String,
    /// Per metric, in the order of their first point on this page.
    pub series: Vec<ColumnarSeries>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// True when some node did not answer: the page may be incomplete.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// A telemetry page in the form `format` asked for.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum TelemetryAnswer {
    /// `format=points` (default): one object per sample.
    Points(TelemetryPage),
    /// `format=columnar`: columns per metric.
    Columnar(ColumnarPage),
}

/// The documented form of a cursor: empty (first page) or `TIMESTAMP_MS:METRIC`, the last point
/// returned. Every string of this form is a valid cursor: the next page starts after that point.
/// (The OpenAPI attribute needs the literal; a test holds the two equal.)
#[cfg(test)]
const CURSOR_PATTERN: &str = r"^(-?[0-9]{1,18}:[!-~]{0,1024})?$";

/// Encodes a cursor for clients: `TIMESTAMP_MS:METRIC` of the last point returned.
pub fn encode_cursor(c: &RangeCursor) -> String {
    format!("{}:{}", c.timestamp, c.metric)
}

/// Decodes a client's cursor, or says why it is not one. Cursors of earlier versions (base64 of
/// `v1\nTIMESTAMP\nMETRIC`, never containing `:`) are still understood.
pub fn decode_cursor(s: &str) -> Result<RangeCursor, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "cursor must be TIMESTAMP_MS:METRIC, the next_cursor of a previous page",
        )
    };
    if s.len() > MAX_CURSOR_LEN {
        return Err(bad());
    }
    if let Some((ts, metric)) = s.split_once(':') {
        return Ok(RangeCursor {
            timestamp: ts.parse().map_err(|_| bad())?,
            metric: metric.to_string(),
        });
    }
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let mut parts = text.splitn(3, '\n');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("v1"), Some(ts), Some(metric)) => Ok(RangeCursor {
            timestamp: ts.parse().map_err(|_| bad())?,
            metric: metric.to_string(),
        }),
        _ => Err(bad()),
    }
}

/// A GPU's samples.
#[utoipa::path(get, path = "/api/v1/gpus/{uuid}/telemetry", tag = "telemetry",
    params(
        ("uuid" = String, Path, description = "GPU UUID"),
        ("start_time" = Option<String>, Query, format = DateTime, description = "Inclusive start, RFC 3339 (default: earliest)"),
        ("end_time" = Option<String>, Query, format = DateTime, description = "Inclusive end, RFC 3339 (default: latest)"),
        ("metric" = Option<Vec<String>>, Query, description = "Metric name; repeat or comma-separate for several (default: all)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100000, description = "Page size, 1 to 10000 as points or 100000 as columns (default 1000)"),
        ("cursor" = Option<String>, Query, pattern = r"^(-?[0-9]{1,18}:[!-~]{0,1024})?$", max_length = 1044, description = "next_cursor of the previous page: `TIMESTAMP_MS:METRIC` of the last point returned; the page starts after it (empty or absent: the first page)"),
        ("format" = Option<String>, Query, pattern = r"^(points|columnar)$", description = "`points` (default): one object per sample; `columnar`: per metric, arrays of timestamps (ms) and values"),
    ),
    responses(
        (status = 200, description = "A page of samples", body = TelemetryAnswer),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown GPU", body = ErrorBody),
    ))]
pub async fn get_telemetry(
    State(api): State<AppState>,
    Path(uuid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<HttpResponse<Body>, ApiError> {
    let p = Params::parse(q.as_deref());
    let start = p.time("start_time")?.unwrap_or(i64::MIN / 2);
    let end = p.time("end_time")?.unwrap_or(i64::MAX / 2);
    if start > end {
        return Err(ApiError::bad_request("start_time is after end_time"));
    }
    let columnar = match p.get("format") {
        None | Some("points") => false,
        Some("columnar") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format {other:?} is not one of points, columnar"
            )))
        }
    };
    let max = if columnar {
        MAX_COLUMNAR_LIMIT
    } else {
        MAX_TELEMETRY_LIMIT
    };
    let limit = p.bounded("limit", DEFAULT_TELEMETRY_LIMIT, 1, max)?;
    // An empty cursor is the first page (a client that templates `cursor=` before it has one).
    let cursor = p
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let metrics = p.all("metric");
    let every_metric = metrics.is_empty();
    let query = TelemetryQuery {
        uuid: uuid.clone(),
        metrics,
        start,
        end,
        limit: limit as u32,
        cursor: cursor.map(|c| (c.timestamp, c.metric)),
    };
    let g = telemetry::page(&api.node, query).await?;
    let page = g.value;
    let next_cursor = match (page.more, page.points.last()) {
        (true, Some(last)) => Some(encode_cursor(&RangeCursor {
            timestamp: last.0,
            metric: page
                .metrics
                .get(usize::from(last.1))
                .cloned()
                .unwrap_or_default(),
        })),
        _ => None,
    };
    // The cursor above comes from the whole page; the hidden observations go after it.
    let page = if every_metric {
        telemetry::without_observations(page)
    } else {
        page
    };
    let body = if columnar {
        write_columnar(&uuid, &page, next_cursor.as_deref(), &g.coverage)
    } else {
        write_page(&uuid, &page, next_cursor.as_deref(), &g.coverage)
    };
    HttpResponse::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The JSON of a [`TelemetryPage`], written by hand: a page holds up to 10,000 points, and
/// going through serde's generic path escaped every key, time and metric name of every point
/// and formatted each timestamp anew (three quarters of a page's time). Metric names are escaped
/// once per page, a timestamp is formatted once per scrape (the points of one scrape share it),
/// values are written by serde_json so numbers look exactly as elsewhere in the API.
pub fn write_page(
    gpu: &str,
    page: &TelemetryPart,
    next_cursor: Option<&str>,
    coverage: &Coverage,
) -> Vec<u8> {
    let names: Vec<String> = page.metrics.iter().map(json).collect();
    let mut out = Vec::with_capacity(64 + page.points.len() * 88);
    out.extend_from_slice(b"{\"gpu\":");
    out.extend_from_slice(json(&gpu).as_bytes());
    out.extend_from_slice(b",\"items\":[");
    let mut stamp = [0u8; TIME_LEN];
    let mut stamp_of: Option<i64> = None;
    let mut stamp_text = String::new();
    for (i, (t, m, v)) in page.points.iter().enumerate() {
        if stamp_of != Some(*t) {
            stamp_text = match format_time_into(*t, &mut stamp) {
                Some(s) => s.to_string(),
                None => format_time(*t),
            };
            stamp_of = Some(*t);
        }
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        out.extend_from_slice(stamp_text.as_bytes());
        out.extend_from_slice(b"\",\"metric\":");
        out.extend_from_slice(
            names
                .get(usize::from(*m))
                .map_or("\"\"", String::as_str)
                .as_bytes(),
        );
        out.extend_from_slice(b",\"value\":");
        // serde_json writes non-finite numbers as null, as the rest of the API does.
        let _ = serde_json::to_writer(&mut out, v);
        out.push(b'}');
    }
    out.push(b']');
    close_page(&mut out, next_cursor, coverage);
    out
}

/// The JSON of a [`ColumnarPage`], written by hand like [`write_page`].
pub fn write_columnar(
    gpu: &str,
    page: &TelemetryPart,
    next_cursor: Option<&str>,
    coverage: &Coverage,
) -> Vec<u8> {
    // Per metric index: (times, values) in page order, metrics in order of first appearance.
    let mut order: Vec<usize> = Vec::new();
    let mut cols: Vec<(Vec<i64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); page.metrics.len()];
    for (t, m, v) in &page.points {
        let Some(c) = cols.get_mut(usize::from(*m)) else {
            continue;
        };
        if c.0.is_empty() {
            order.push(usize::from(*m));
        }
        c.0.push(*t);
        c.1.push(*v);
    }
    let mut out = Vec::with_capacity(128 + page.points.len() * 24);
    out.extend_from_slice(b"{\"gpu\":");
    out.extend_from_slice(json(&gpu).as_bytes());
    out.extend_from_slice(b",\"series\":[");
    let mut itoa = itoa::Buffer::new();
    for (n, &m) in order.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"metric\":");
        out.extend_from_slice(json(&page.metrics[m]).as_bytes());
        out.extend_from_slice(b",\"timestamps\":[");
        for (i, t) in cols[m].0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(itoa.format(*t).as_bytes());
        }
        out.extend_from_slice(b"],\"values\":[");
        for (i, v) in cols[m].1.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, v);
        }
        out.extend_from_slice(b"]}");
    }
    out.push(b']');
    close_page(&mut out, next_cursor, coverage);
    out
}

/// The fields both page forms end with: the cursor, `partial`, `unavailable_nodes`.
fn close_page(out: &mut Vec<u8>, next_cursor: Option<&str>, coverage: &Coverage) {
    out.extend_from_slice(b",\"next_cursor\":");
    out.extend_from_slice(json(&next_cursor).as_bytes());
    out.extend_from_slice(b",\"partial\":");
    out.extend_from_slice(if coverage.complete() {
        b"false"
    } else {
        b"true"
    });
    out.extend_from_slice(b",\"unavailable_nodes\":");
    out.extend_from_slice(json(&coverage.unavailable).as_bytes());
    out.push(b'}');
}

/// A small value's JSON text, escaped exactly as serde_json escapes it.
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_page_equals_the_documented_shape() {
        let part = TelemetryPart {
            metrics: vec![
                "A \"quoted\" \\ name\n".into(),
                "DCGM_FI_DEV_GPU_TEMP".into(),
                "é€".into(),
            ],
            points: vec![
                (1_752_871_354_000, 0, 1.5),
                (1_752_871_354_000, 1, 61.0),
                (1_752_871_355_001, 2, f64::NAN),
                (i64::MAX / 2, 1, -0.0),
                (-5, 1, 1e300),
            ],
            more: true,
            workloads: vec![],
        };
        let cov = |unavailable: Vec<String>, copies| Coverage {
            unavailable,
            syncing: vec![],
            copies,
        };
        for (cursor, coverage) in [
            (Some("djE"), cov(vec!["n-2".to_string()], 1)),
            (Some("djE"), cov(vec!["n-2".to_string()], 2)),
            (None, cov(vec![], 1)),
        ] {
            let fast: serde_json::Value =
                serde_json::from_slice(&write_page("GPU-\"x", &part, cursor, &coverage))
                    .expect("valid JSON");
            let slow = serde_json::to_value(TelemetryPage {
                gpu: "GPU-\"x".into(),
                items: part
                    .points
                    .iter()
                    .map(|(t, m, v)| TelemetryPoint {
                        timestamp: format_time(*t),
                        metric: part.metrics[usize::from(*m)].clone(),
                        value: *v,
                    })
                    .collect(),
                next_cursor: cursor.map(String::from),
                partial: !coverage.complete(),
                unavailable_nodes: coverage.unavailable.clone(),
            })
            .expect("serialises");
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn columnar_page_holds_the_same_points_per_metric() {
        let part = TelemetryPart {
            metrics: vec!["B".into(), "A \"q\"".into()],
            points: vec![(1, 1, 1.5), (1, 0, 2.0), (2, 1, f64::NAN), (3, 1, -0.5)],
            more: false,
            workloads: vec![],
        };
        let cov = Coverage {
            unavailable: vec![],
            syncing: vec![],
            copies: 1,
        };
        let page: ColumnarPage =
            serde_json::from_slice(&write_columnar("GPU-1", &part, None, &cov)).expect("JSON");
        assert_eq!(page.series.len(), 2);
        assert_eq!(page.series[0].metric, "A \"q\"");
        assert_eq!(page.series[0].timestamps, [1, 2, 3]);
        assert_eq!(page.series[0].values, [Some(1.5), None, Some(-0.5)]);
        assert_eq!(
            (
                page.series[1].metric.as_str(),
                page.series[1].timestamps.as_slice()
            ),
            ("B", &[1][..])
        );
        assert!(!page.partial && page.next_cursor.is_none());
    }

    proptest::proptest! {
        /// Any cursor of the documented form decodes to the point it names.
        #[test]
        fn documented_cursors_decode(
            ts in -999_999_999_999_999_999i64..=999_999_999_999_999_999,
            metric in "[!-~]{0,64}",
        ) {
            let text = format!("{ts}:{metric}");
            proptest::prop_assert!(regex::Regex::new(CURSOR_PATTERN).expect("pattern").is_match(&text));
            let c = decode_cursor(&text).expect("documented form");
            proptest::prop_assert_eq!((c.timestamp, c.metric), (ts, metric));
        }
    }

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = RangeCursor {
            timestamp: -5,
            metric: "A\nB".into(),
        };
        let back = decode_cursor(&encode_cursor(&c)).expect("ours");
        assert_eq!(back, c);
        let legacy = URL_SAFE_NO_PAD.encode("v1\n7\nDCGM_FI_DEV_GPU_TEMP");
        assert_eq!(
            decode_cursor(&legacy).expect("an earlier version's cursor"),
            RangeCursor {
                timestamp: 7,
                metric: "DCGM_FI_DEV_GPU_TEMP".into()
            }
        );
        for bad in [
            "",
            "!!!",
            "djE",
            "x:m",
            "99999999999999999999:m",
            &"A".repeat(5000),
            &URL_SAFE_NO_PAD.encode("v2\n1\nm"),
            &URL_SAFE_NO_PAD.encode("v1\nx\nm"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
        let doc: serde_json::Value =
            serde_json::from_str(&crate::openapi_json()).expect("document");
        let documented = doc["paths"]["/api/v1/gpus/{uuid}/telemetry"]["get"]["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "cursor"))
            .map(|p| p["schema"]["pattern"].clone());
        assert_eq!(documented, Some(serde_json::json!(CURSOR_PATTERN)));
        // Every string of the documented form is a cursor.
        let pattern = regex::Regex::new(CURSOR_PATTERN).expect("pattern");
        for good in ["-5:A", "0:", "123456789012345678:DCGM_FI_DEV_GPU_TEMP"] {
            assert!(
                pattern.is_match(good) && decode_cursor(good).is_ok(),
                "{good}"
            );
        }
    }
}
