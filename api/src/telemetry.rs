//! `GET /api/v1/gpus/{uuid}/telemetry`: a GPU's samples by time, paginated with a cursor.
//!
//! The cursor encodes the (timestamp, metric) of the last point returned, not a position, so it
//! stays valid while data arrives and across nodes.

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;
use telemetry_actors::cluster::protocol::{Request, Response, TelemetryPart, TelemetryQuery};
use telemetry_storage::RangeCursor;
use utoipa::ToSchema;

use crate::context::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::gpus::unknown_gpu;
use crate::params::{format_time, format_time_into, Params, TIME_LEN};
use crate::scatter::{gather, local_telemetry, merge_telemetry};

/// Default page size of telemetry reads.
pub const DEFAULT_TELEMETRY_LIMIT: usize = 1000;
/// Largest page of telemetry reads.
pub const MAX_TELEMETRY_LIMIT: usize = 10_000;
/// Longest accepted cursor string.
const MAX_CURSOR_LEN: usize = 1024;

/// One sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryPoint {
    /// Sample time (RFC 3339, milliseconds, UTC).
    pub timestamp: String,
    /// Metric name.
    pub metric: String,
    /// Value.
    pub value: f64,
}

/// A page's points, serialised straight from (timestamp, metric index, value) as
/// [`TelemetryPoint`] objects: no string per point is built, the time is formatted on the stack.
#[derive(Debug)]
pub struct Points(TelemetryPart);

impl Serialize for Points {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        struct Point<'a>(i64, &'a str, f64);
        impl Serialize for Point<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut buf = [0u8; TIME_LEN];
                let mut m = s.serialize_map(Some(3))?;
                match format_time_into(self.0, &mut buf) {
                    Some(t) => m.serialize_entry("timestamp", t)?,
                    None => m.serialize_entry("timestamp", &format_time(self.0))?,
                }
                m.serialize_entry("metric", self.1)?;
                m.serialize_entry("value", &self.2)?;
                m.end()
            }
        }
        let part = &self.0;
        let mut seq = s.serialize_seq(Some(part.points.len()))?;
        for (t, m, v) in &part.points {
            let name = part.metrics.get(usize::from(*m)).map_or("", String::as_str);
            seq.serialize_element(&Point(*t, name, *v))?;
        }
        seq.end()
    }
}

/// A page of a GPU's samples ordered by (timestamp, metric).
#[derive(Debug, Serialize, ToSchema)]
pub struct TelemetryPage {
    /// GPU UUID.
    pub gpu: String,
    /// Samples of this page.
    #[schema(value_type = Vec<TelemetryPoint>)]
    pub items: Points,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
    /// True when some node did not answer: the page may be incomplete.
    pub partial: bool,
    /// Nodes that did not answer.
    pub unavailable_nodes: Vec<String>,
}

/// Encodes a cursor for clients (opaque).
pub fn encode_cursor(c: &RangeCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("v1\n{}\n{}", c.timestamp, c.metric))
}

/// Decodes a client's cursor, or says why it is not one of ours.
pub fn decode_cursor(s: &str) -> Result<RangeCursor, ApiError> {
    let bad = || ApiError::bad_request("cursor is not a cursor returned by this API");
    if s.len() > MAX_CURSOR_LEN {
        return Err(bad());
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
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 10000, description = "Page size, 1 to 10000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page (empty or absent: the first page)"),
    ),
    responses(
        (status = 200, description = "A page of samples", body = TelemetryPage),
        (status = 400, description = "Bad parameter", body = ErrorBody),
        (status = 404, description = "Unknown GPU", body = ErrorBody),
    ))]
pub async fn get_telemetry(
    State(node): State<AppState>,
    Path(uuid): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Json<TelemetryPage>, ApiError> {
    let p = Params::parse(q.as_deref());
    let start = p.time("start_time")?.unwrap_or(i64::MIN / 2);
    let end = p.time("end_time")?.unwrap_or(i64::MAX / 2);
    if start > end {
        return Err(ApiError::bad_request("start_time is after end_time"));
    }
    let limit = p.bounded("limit", DEFAULT_TELEMETRY_LIMIT, 1, MAX_TELEMETRY_LIMIT)?;
    // An empty cursor is the first page (a client that templates `cursor=` before it has one).
    let cursor = p
        .get("cursor")
        .filter(|c| !c.is_empty())
        .map(decode_cursor)
        .transpose()?;
    let metrics = p.all("metric");
    let query = TelemetryQuery {
        uuid: uuid.clone(),
        metrics,
        start,
        end,
        limit: limit as u32,
        cursor: cursor.map(|c| (c.timestamp, c.metric)),
    };
    let store = node.store.clone();
    let q = query.clone();
    let local = tokio::task::spawn_blocking(move || local_telemetry(&store, &q))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(ApiError::internal)?;
    let g = gather(&node, local, Request::Telemetry(query), |r| match r {
        Response::Telemetry(v) => Some(v),
        _ => None,
    })
    .await;
    let parts: Vec<TelemetryPart> = g.answers.into_iter().flatten().collect();
    if parts.is_empty() {
        return Err(unknown_gpu(&uuid, &g.unavailable));
    }
    let page = merge_telemetry(parts, limit);
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
    Ok(Json(TelemetryPage {
        gpu: uuid,
        items: Points(page),
        next_cursor,
        partial: !g.unavailable.is_empty(),
        unavailable_nodes: g.unavailable,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_garbage_is_refused() {
        let c = RangeCursor {
            timestamp: -5,
            metric: "A\nB".into(),
        };
        let back = decode_cursor(&encode_cursor(&c)).expect("ours");
        assert_eq!(back, c);
        for bad in [
            "",
            "!!!",
            "djE",
            &"A".repeat(5000),
            &URL_SAFE_NO_PAD.encode("v2\n1\nm"),
            &URL_SAFE_NO_PAD.encode("v1\nx\nm"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }
}
