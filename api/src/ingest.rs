//! `POST /api/v1/ingest`: a chunk of DCGM CSV (header included, at most the request body limit)
//! appended to the cluster, as `telemetry-node import` sends a file. Rows keep their own
//! timestamps; each partition's batch goes to its owner like a streamer's, and the answer comes
//! once every batch is durable, so a client that gets 200 can move on and one that gets an
//! error can send the same chunk again (stored samples are idempotent).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_actors::backoff::Backoff;
use telemetry_actors::dcgm::{CsvRows, PartitionBatches, TimestampCache, REQUIRED_COLUMNS};
use telemetry_service::write::{append_all, Patience, WriteError};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// Longest an ingest request keeps retrying appends before it answers 503.
pub const INGEST_DEADLINE: Duration = Duration::from_secs(20);
/// How an ingest request's batches are retried: 50 ms doubling to 1 s between rounds, 5 s per
/// attempt, up to [`INGEST_DEADLINE`]; a full disk is answered at once (waiting would not help
/// within a request, the client keeps the chunk).
const INGEST_PATIENCE: Patience = Patience {
    deadline: INGEST_DEADLINE,
    backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
    attempt_timeout: Duration::from_secs(5),
    wait_out_full_disk: false,
};
/// Rejected rows described in an answer (the rest are only counted).
const MAX_REJECT_DETAILS: usize = 5;

/// What an ingest request stored and skipped.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IngestSummary {
    /// Data rows in the chunk.
    pub rows: u64,
    /// Samples appended (durable).
    pub samples: u64,
    /// Rows skipped, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// The first few skipped rows: line number in the chunk and why.
    pub rejected_examples: Vec<String>,
}

/// A chunk of DCGM CSV as the document states it: a header line naming every required column
/// (any order, other columns allowed, no quotes), then rows; a row that does not parse is
/// skipped and counted, not refused. At most 64 KiB (`MAX_BODY_BYTES`; 413 beyond).
pub struct DcgmCsv;

/// The documented form of an ingest body: exactly what [`CsvRows::open`] accepts of a header
/// without quotes (a lookahead per required column, as a whole, trimmed field).
pub fn ingest_body_pattern() -> String {
    let mut p = String::from("^");
    for c in REQUIRED_COLUMNS {
        p.push_str(&format!(
            r#"(?=(?:[^"\r\n]*,)?[^\S\r\n]*{c}[^\S\r\n]*(?:,|\r?\n|$))"#
        ));
    }
    p.push_str(r#"[^"\r\n]*(?:\r?\n[\s\S]*)?$"#);
    p
}

impl utoipa::PartialSchema for DcgmCsv {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(ingest_body_pattern()))
            .into()
    }
}

impl ToSchema for DcgmCsv {}

/// Appends a chunk of DCGM CSV.
#[utoipa::path(post, path = "/api/v1/ingest", tag = "ingest",
    request_body(content = DcgmCsv, content_type = "text/csv", description = "DCGM CSV with its header line (the exporter's columns), then rows; at most 64 KiB"),
    responses(
        (status = 200, description = "Every valid row is durable", body = IngestSummary),
        (status = 400, description = "Not a DCGM CSV (header)", body = ErrorBody),
    ))]
pub async fn ingest(
    State(api): State<AppState>,
    body: Bytes,
) -> Result<Json<IngestSummary>, ApiError> {
    let partitions = api.node.partitions;
    let (batches, summary) =
        telemetry_actors::priority::spawn_ingest(move || parse(&body, partitions))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))??;
    match append_all(&api.node, batches, INGEST_PATIENCE).await {
        Ok(()) => Ok(Json(summary)),
        Err(WriteError::DiskFull { reason }) => Err(ApiError::not_ready(format!(
            "{reason}; nothing is lost, send the chunk again once space is freed"
        ))),
        Err(e @ WriteError::NotStored { .. }) => Err(ApiError::not_ready(format!(
            "{e} (partitions full or their owners unreachable); send the chunk again"
        ))),
        Err(e) => Err(ApiError::internal(e.to_string())),
    }
}

type Batches = Vec<(u32, Arc<Vec<u8>>)>;

fn parse(body: &[u8], partitions: u32) -> Result<(Batches, IngestSummary), ApiError> {
    let mut rows = CsvRows::open(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut times = TimestampCache::default();
    let mut batches = PartitionBatches::new(partitions);
    let mut out = Vec::new();
    let mut summary = IngestSummary {
        rows: 0,
        samples: 0,
        rejected: BTreeMap::new(),
        rejected_examples: Vec::new(),
    };
    while let Some(read) = rows.next() {
        summary.rows += 1;
        let parsed = read.and_then(|(row, gpu, line)| {
            let ts = times.parse(row.csv_timestamp).map_err(|e| e.at(line))?;
            Ok((row, gpu, ts))
        });
        match parsed {
            Ok((row, gpu, ts)) => {
                let (p, full) = batches.push(gpu, row.metric, ts, row.value);
                summary.samples += 1;
                if full {
                    out.extend(batches.take(p).map(|b| (p, Arc::new(b.encode()))));
                }
            }
            Err(r) => {
                *summary.rejected.entry(r.reason.to_string()).or_default() += 1;
                if summary.rejected_examples.len() < MAX_REJECT_DETAILS {
                    summary
                        .rejected_examples
                        .push(format!("line {}: {}", r.line, r.detail));
                }
            }
        }
    }
    let rest = batches.take_all().into_iter();
    out.extend(rest.map(|(p, b)| (p, Arc::new(b.encode()))));
    Ok((out, summary))
}
