//! `POST /api/v1/ingest`: DCGM CSV (header included) of any length, streamed: the body is parsed
//! as it arrives on an ingest thread, each partition's batch goes to its owner as soon as it is
//! full (like a streamer's, [`APPENDS_IN_FLIGHT`] at a time), and the answer comes once every
//! batch is durable, so a client that gets 200 can move on and one that gets an error can send
//! the same data again (stored samples are idempotent). Memory is bounded by the queues between
//! the three stages ([`BODY_CHUNKS_QUEUED`], [`BATCHES_QUEUED`]), not by the body's length.

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
/// Body chunks (as the connection delivers them, typically ≤ 16 KiB) queued for the parser; the
/// connection is read no further while it is full.
pub const BODY_CHUNKS_QUEUED: usize = 64;
/// Encoded partition batches queued for appending; the parser waits while it is full.
pub const BATCHES_QUEUED: usize = 32;
/// Batches of one request being appended at once (each waits for its owner's fsync).
pub const APPENDS_IN_FLIGHT: usize = 32;

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
/// skipped and counted, not refused. Any length up to `MAX_INGEST_BYTES` (413 beyond), streamed.
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
    request_body(content = DcgmCsv, content_type = "text/csv", description = "DCGM CSV with its header line (the exporter's columns), then rows; streamed, any length up to MAX_INGEST_BYTES"),
    responses(
        (status = 200, description = "Every valid row is durable", body = IngestSummary),
        (status = 400, description = "Not a DCGM CSV (header)", body = ErrorBody),
    ))]
pub async fn ingest(
    State(api): State<AppState>,
    body: axum::body::Body,
) -> Result<Json<IngestSummary>, ApiError> {
    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Bytes>(BODY_CHUNKS_QUEUED);
    let (batch_tx, batch_rx) = tokio::sync::mpsc::channel::<Batch>(BATCHES_QUEUED);
    let partitions = api.node.partitions;
    let parser = telemetry_actors::priority::spawn_ingest(move || {
        parse(ChunkReader::new(chunk_rx), partitions, &batch_tx)
    });
    let (fed, appended) = tokio::join!(feed(body, chunk_tx), append(&api, batch_rx));
    let summary = parser
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    fed?;
    appended?;
    Ok(Json(summary))
}

type Batch = (u32, Arc<Vec<u8>>);

/// Hands the body to the parser chunk by chunk; a body that fails (too long, cut off) is the
/// answer, whatever the parser made of its first part.
async fn feed(
    body: axum::body::Body,
    to: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<(), ApiError> {
    use http_body_util::BodyExt;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            match e
                .into_inner()
                .downcast::<http_body_util::LengthLimitError>()
            {
                Ok(_) => ApiError::too_large(format!(
                    "ingest bodies are limited to {} bytes",
                    crate::limits::MAX_INGEST_BYTES
                )),
                Err(e) => ApiError::bad_request(format!("reading the body: {e}")),
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if to.send(data).await.is_err() {
                break; // the parser stopped (a bad header): its error is the answer
            }
        }
    }
    Ok(())
}

/// Appends batches as the parser fills them, a bounded number at once, each until durable.
async fn append(
    api: &AppState,
    mut from: tokio::sync::mpsc::Receiver<Batch>,
) -> Result<(), ApiError> {
    let mut inflight = tokio::task::JoinSet::new();
    let mut first_error = None;
    while let Some(batch) = from.recv().await {
        if inflight.len() >= APPENDS_IN_FLIGHT {
            if let Some(done) = inflight.join_next().await {
                note(&mut first_error, done);
            }
        }
        let node = api.node.clone();
        inflight.spawn(async move { append_all(&node, vec![batch], INGEST_PATIENCE).await });
    }
    while let Some(done) = inflight.join_next().await {
        note(&mut first_error, done);
    }
    match first_error {
        None => Ok(()),
        Some(WriteError::DiskFull { reason }) => Err(ApiError::not_ready(format!(
            "{reason}; nothing is lost, send the data again once space is freed"
        ))),
        Some(e @ WriteError::NotStored { .. }) => Err(ApiError::not_ready(format!(
            "{e} (partitions full or their owners unreachable); send the data again"
        ))),
        Some(e) => Err(ApiError::internal(e.to_string())),
    }
}

fn note(
    first: &mut Option<WriteError>,
    done: Result<Result<(), WriteError>, tokio::task::JoinError>,
) {
    let e = match done {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e,
        Err(e) => WriteError::Task(e.to_string()),
    };
    first.get_or_insert(e);
}

/// The body as `Read` for the CSV parser, on the ingest thread: blocks for the next chunk.
struct ChunkReader {
    from: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    fn new(from: tokio::sync::mpsc::Receiver<Bytes>) -> Self {
        Self {
            from,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.from.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Parses rows into partition batches, handing each full batch to the appender.
fn parse(
    input: ChunkReader,
    partitions: u32,
    to: &tokio::sync::mpsc::Sender<Batch>,
) -> Result<IngestSummary, ApiError> {
    let mut rows = CsvRows::open(input).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut times = TimestampCache::default();
    let mut batches = PartitionBatches::new(partitions);
    let mut summary = IngestSummary {
        rows: 0,
        samples: 0,
        rejected: BTreeMap::new(),
        rejected_examples: Vec::new(),
    };
    let send = |p: u32, b: telemetry_storage::SampleBatch| {
        // The appender only stops receiving when the request is abandoned.
        to.blocking_send((p, Arc::new(b.encode()))).is_ok()
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
                    if let Some(b) = batches.take(p) {
                        if !send(p, b) {
                            break;
                        }
                    }
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
    for (p, b) in batches.take_all() {
        if !send(p, b) {
            break;
        }
    }
    Ok(summary)
}
