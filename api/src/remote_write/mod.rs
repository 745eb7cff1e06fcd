//! `POST /api/v1/write`: the Prometheus remote write 1.0 receiver (a snappy-compressed protobuf
//! `WriteRequest`), so Prometheus, Grafana Alloy, vmagent or an OpenTelemetry collector that
//! scrapes dcgm-exporter can send here.
//!
//! Each series becomes samples of one GPU and metric ([`map`]): a `DCGM_FI_*` name, and a GPU
//! identity (`UUID`, or `Hostname`/`hostname` with `gpu` or `device`). The attributes we model
//! (`gpu`, `device`, `modelName`, `Hostname`, `container`, `pod`, `namespace`, the target's
//! `instance` and `job`, the exporter's `DCGM_FI_DRIVER_VERSION` and `pci_bus_id`) become the
//! GPU's; any other label (`err_code` of XID series, relabelling leftovers) is dropped and
//! counted.
//! A series that is not a DCGM field or names no GPU is refused and counted by reason (in the
//! answer and in `telemetry_remote_write_refused_series_total`), never silently.
//!
//! The samples take the same path as every other write (partition batches, routing to the
//! owners, replication, durability), and the answer follows the spec: 200 once every accepted
//! sample is durable; 400 (never retried by senders) for a body that is not a valid request;
//! 503 with `Retry-After` when the cluster cannot take it now (the sender retries).

mod map;
mod proto;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use prost::Message;
use serde::Serialize;
use telemetry_actors::backoff::Backoff;
use telemetry_actors::dcgm::PartitionBatches;
use telemetry_service::write::{append_all, Patience, WriteError};

use crate::error::ApiError;
use crate::state::AppState;
use map::map_series;

/// Largest compressed body accepted (Prometheus sends a few hundred KB at most by default).
pub const MAX_WRITE_BYTES: usize = 16 << 20;
/// Largest body once decompressed; a body claiming more is refused before it is decompressed.
pub const MAX_WRITE_DECODED_BYTES: usize = 64 << 20;
/// Longest a write keeps retrying appends before it answers 503 (the sender then retries).
pub const WRITE_DEADLINE: Duration = Duration::from_secs(20);
const WRITE_PATIENCE: Patience = Patience {
    deadline: WRITE_DEADLINE,
    backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
    attempt_timeout: Duration::from_secs(5),
    wait_out_full_disk: false,
};

/// What one write stored, refused and dropped.
#[derive(Debug, Default, Serialize, serde::Deserialize)]
pub struct WriteSummary {
    /// Series in the request.
    pub series: u64,
    /// Samples appended (durable).
    pub samples: u64,
    /// Series refused, by reason (`not_dcgm`, `no_gpu`, …).
    pub refused_series: BTreeMap<String, u64>,
    /// Labels not kept, by name, counted once per series.
    pub dropped_labels: BTreeMap<String, u64>,
    /// Staleness markers skipped (Prometheus' signal that a series ended, not a value).
    pub stale_markers: u64,
}

/// Prometheus' staleness marker: a NaN with this exact bit pattern.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

fn is_stale_marker(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

/// Receives a remote write request.
pub async fn write(State(api): State<AppState>, body: Bytes) -> Response {
    let partitions = api.node.partitions;
    let parsed = telemetry_actors::priority::spawn_ingest(move || parse(&body, partitions)).await;
    let (batches, summary) = match parsed {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return e.into_response(),
        Err(e) => return ApiError::internal(e.to_string()).into_response(),
    };
    let stats = &api.node.stats;
    for (reason, n) in &summary.refused_series {
        stats.refuse_remote_series(reason, *n);
    }
    let dropped: u64 = summary.dropped_labels.values().sum();
    stats.remote_write_dropped_labels.inc_by(dropped);
    match append_all(&api.node, batches, WRITE_PATIENCE).await {
        Ok(()) => {
            stats.remote_write_samples.inc_by(summary.samples);
            Json(summary).into_response()
        }
        Err(e) => {
            let msg = match e {
                WriteError::DiskFull { reason } => format!("{reason}; retry later"),
                other => format!("{other}; retry later"),
            };
            let mut resp = ApiError::not_ready(msg).into_response();
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            resp
        }
    }
}

type Batches = Vec<(u32, Arc<Vec<u8>>)>;

/// Decompresses, decodes and maps a request into partition batches.
fn parse(body: &[u8], partitions: u32) -> Result<(Batches, WriteSummary), ApiError> {
    let len = snap::raw::decompress_len(body)
        .map_err(|e| ApiError::bad_request(format!("not snappy-compressed: {e}")))?;
    if len > MAX_WRITE_DECODED_BYTES {
        return Err(ApiError::too_large(format!(
            "the request decompresses to {len} bytes, over {MAX_WRITE_DECODED_BYTES}"
        )));
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| ApiError::bad_request(format!("not snappy-compressed: {e}")))?;
    let req = proto::WriteRequest::decode(raw.as_slice())
        .map_err(|e| ApiError::bad_request(format!("not a remote write request: {e}")))?;
    let mut batches = PartitionBatches::new(partitions);
    let mut out = Vec::new();
    let mut summary = WriteSummary::default();
    for ts in &req.timeseries {
        summary.series += 1;
        match map_series(
            ts.labels
                .iter()
                .map(|l| (l.name.as_str(), l.value.as_str())),
        ) {
            Ok(mapped) => {
                for name in mapped.dropped {
                    *summary.dropped_labels.entry(name.to_string()).or_default() += 1;
                }
                for s in &ts.samples {
                    if is_stale_marker(s.value) {
                        summary.stale_markers += 1;
                        continue;
                    }
                    let (p, full) = batches.push(&mapped.gpu, &mapped.metric, s.timestamp, s.value);
                    summary.samples += 1;
                    if full {
                        out.extend(batches.take(p).map(|b| (p, Arc::new(b.encode()))));
                    }
                }
            }
            Err(r) => {
                *summary
                    .refused_series
                    .entry(r.reason().to_string())
                    .or_default() += 1
            }
        }
    }
    out.extend(
        batches
            .take_all()
            .into_iter()
            .map(|(p, b)| (p, Arc::new(b.encode()))),
    );
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry_storage::SampleBatch;

    fn body(series: Vec<proto::TimeSeries>) -> Vec<u8> {
        let raw = proto::WriteRequest { timeseries: series }.encode_to_vec();
        snap::raw::Encoder::new()
            .compress_vec(&raw)
            .expect("compresses")
    }

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> proto::TimeSeries {
        proto::TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| proto::Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| proto::Sample { value, timestamp })
                .collect(),
        }
    }

    #[test]
    fn a_request_becomes_partition_batches_and_a_summary() {
        let gpu = [
            ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
            ("UUID", "GPU-1"),
            ("gpu", "0"),
            ("instance", "h:9400"),
            ("job", "dcgm"),
            ("DCGM_FI_DRIVER_VERSION", "535"),
            ("err_code", "0"),
        ];
        let stale = f64::from_bits(STALE_NAN);
        let req = body(vec![
            series(&gpu, &[(1_000, 40.0), (2_000, 41.0), (3_000, stale)]),
            series(
                &[("__name__", "up"), ("instance", "h:9400")],
                &[(1_000, 1.0)],
            ),
        ]);
        let (batches, summary) = parse(&req, 4).expect("parses");
        assert_eq!(
            (summary.series, summary.samples, summary.stale_markers),
            (2, 2, 1)
        );
        assert_eq!(summary.refused_series.get("not_dcgm"), Some(&1));
        assert_eq!(summary.dropped_labels.get("err_code"), Some(&1));
        assert_eq!(batches.len(), 1);
        let b = SampleBatch::decode(&batches[0].1).expect("decodes");
        let g = &b.gpus[0];
        assert_eq!(
            (
                g.instance.as_deref(),
                g.job.as_deref(),
                g.driver_version.as_deref()
            ),
            (Some("h:9400"), Some("dcgm"), Some("535"))
        );
        assert!(parse(b"not snappy", 4).is_err());
        let not_proto = snap::raw::Encoder::new()
            .compress_vec(&[0xFF; 10])
            .expect("compresses");
        assert!(parse(&not_proto, 4).is_err());
    }
}
