//! Talking to one peer for a repair: its digests, and copying a window of one GPU from it into
//! this node's store, page by page, at a bounded rate.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use telemetry_actors::cluster::protocol::{GpuPart, Request, Response, TelemetryQuery};
use telemetry_actors::cluster::transport::call_endpoint;
use telemetry_storage::{BatchBuilder, Digest, GpuDigest};

use super::RepairError;
use crate::node::NodeContext;

/// How long one repair request to a peer may take.
pub const REPAIR_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a span-digest request may take (it reads a whole GPU's history there).
pub const REPAIR_SCAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts of one repair request (the peer's endpoint is looked up again for each: a session
/// replaced under a call leaves it unanswered).
const REPAIR_CALL_ATTEMPTS: usize = 2;
/// Samples per page copied from a peer (one page is one store write).
pub const REPAIR_PAGE: u32 = 10_000;

/// Asks one live peer, twice if need be; no answer is [`RepairError::Unanswered`].
pub(super) async fn ask(
    node: &NodeContext,
    peer: &str,
    request: Request,
) -> Result<Response, RepairError> {
    let timeout = match request {
        Request::SpanDigests { .. } => REPAIR_SCAN_TIMEOUT,
        _ => REPAIR_CALL_TIMEOUT,
    };
    for _ in 0..REPAIR_CALL_ATTEMPTS {
        let endpoint = node
            .cluster_view()
            .peers
            .iter()
            .find(|p| p.info.name == peer)
            .and_then(|p| p.endpoint.clone());
        let Some(endpoint) = endpoint else {
            break;
        };
        match call_endpoint(&endpoint, &request, timeout).await {
            Some(Response::Busy) | None => tokio::time::sleep(ASK_RETRY_PAUSE).await,
            Some(r) => return Ok(r),
        }
    }
    Err(RepairError::Unanswered {
        peer: peer.to_string(),
    })
}

/// Pause before a repair request is asked again.
const ASK_RETRY_PAUSE: Duration = Duration::from_millis(300);

/// A peer's digests of the GPUs of `partition`.
pub(super) async fn gpu_digests(
    node: &NodeContext,
    peer: &str,
    partition: u32,
) -> Result<Vec<GpuDigest>, RepairError> {
    let request = Request::GpuDigests {
        partition,
        partitions: node.partitions,
    };
    match ask(node, peer, request).await? {
        Response::GpuDigests(v) => Ok(v),
        other => Err(RepairError::unexpected(peer, &other)),
    }
}

/// A peer's span digests of one GPU up to `until` (empty when it holds nothing of it).
pub(super) async fn span_digests(
    node: &NodeContext,
    peer: &str,
    uuid: &str,
    (width, until): (i64, i64),
) -> Result<BTreeMap<i64, Digest>, RepairError> {
    let request = Request::SpanDigests {
        uuid: uuid.to_string(),
        width,
        until,
    };
    match ask(node, peer, request).await? {
        Response::SpanDigests(v) => Ok(v
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.start, s.digest))
            .collect()),
        other => Err(RepairError::unexpected(peer, &other)),
    }
}

/// Paces copies to `rate` samples per second.
pub(super) struct Pace {
    rate: u64,
    started: Instant,
    copied: u64,
}

impl Pace {
    pub(super) fn new(rate: u64) -> Self {
        Self {
            rate: rate.max(1),
            started: Instant::now(),
            copied: 0,
        }
    }

    async fn took(&mut self, n: u64) {
        self.copied += n;
        let due = Duration::from_secs_f64(self.copied as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Copies the GPU's samples in `[start, end]` from `peer` into this node's store; returns how
/// many it wrote (the store keeps each sample once, whatever it already held).
pub(super) async fn copy_window(
    node: &NodeContext,
    peer: &str,
    uuid: &str,
    (start, end): (i64, i64),
    pace: &mut Pace,
) -> Result<u64, RepairError> {
    let info = match ask(node, peer, Request::Gpu(uuid.to_string())).await? {
        Response::Gpu(Some(GpuPart { info, .. })) => info,
        Response::Gpu(None) => return Ok(0),
        other => return Err(RepairError::unexpected(peer, &other)),
    };
    let mut cursor = None;
    let mut copied = 0;
    loop {
        let request = Request::Telemetry(TelemetryQuery {
            uuid: uuid.to_string(),
            metrics: Vec::new(),
            start,
            end,
            limit: REPAIR_PAGE,
            cursor: cursor.take(),
        });
        let part = match ask(node, peer, request).await? {
            Response::Telemetry(Some(part)) => part,
            Response::Telemetry(None) => return Ok(copied),
            other => return Err(RepairError::unexpected(peer, &other)),
        };
        let mut batch = BatchBuilder::default();
        for w in &part.workloads {
            batch.add_workload(w);
        }
        for (t, m, v) in &part.points {
            if let Some(metric) = part.metrics.get(usize::from(*m)) {
                batch.push(&info, metric, *t, *v);
            }
        }
        let n = batch.len() as u64;
        if n > 0 {
            let store = node.store.clone();
            let batch = batch.take();
            tokio::task::spawn_blocking(move || store.write(&batch)).await??;
        }
        copied += n;
        pace.took(n).await;
        match (part.more, part.points.last()) {
            (true, Some((t, m, _))) => {
                let metric = part
                    .metrics
                    .get(usize::from(*m))
                    .cloned()
                    .unwrap_or_default();
                cursor = Some((*t, metric));
            }
            _ => return Ok(copied),
        }
    }
}
