//! Decommissioning a node before a scale-down, asked on any node and forwarded to the named one.
//!
//! The node announces it is leaving, so every member stops routing to it and ownership moves
//! away; its supervisor hands its partitions over (each collector drains its log into the local
//! store first); then it copies every sample it stores to the partition's current owner through
//! the normal append path (durable in the owner's log, idempotent in its store, so repeating a
//! decommission is safe); finally it says it has left, and once it is stopped the others forget it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_actors::backoff::Backoff;
use telemetry_actors::cluster::membership::Phase;
use telemetry_actors::cluster::protocol::{Request, Response};
use telemetry_actors::cluster::transport::{call_endpoint, ClusterMsg};
use telemetry_actors::routing::partition_of;
use telemetry_actors::streamer::APPEND_TIMEOUT;
use telemetry_storage::{BatchBuilder, RangeCursor, RangeQuery, WORKLOAD_METRIC};

pub use telemetry_actors::cluster::protocol::DecommissionProgress;

use crate::fanout::SCATTER_TIMEOUT;
use crate::node::NodeContext;
use crate::write::{append_all, Patience};

/// Longest wait for the node's partitions to be handed over.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(120);
/// Pause between looks at the partitions still running while handing over.
const HANDOVER_POLL: Duration = Duration::from_millis(100);
/// Longest the news that the node has left is retried for a peer that does not answer.
pub const ANNOUNCE_DEADLINE: Duration = Duration::from_secs(30);
/// Samples per copied batch (the streamer's batch size).
pub const COPY_BATCH: usize = telemetry_actors::dcgm::BATCH_MAX_SAMPLES;
/// Longest time one batch may keep failing to reach its owner before the decommission fails.
pub const COPY_RETRY_LIMIT: Duration = Duration::from_secs(300);

/// Progress of a decommission, as kept by the node being decommissioned.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    started: Option<Instant>,
    wire: DecommissionProgress,
}

impl Progress {
    fn snapshot(&self) -> DecommissionProgress {
        let mut w = self.wire.clone();
        if w.state.is_empty() {
            w.state = "idle".into();
        }
        w.elapsed_ms = self
            .started
            .map_or(w.elapsed_ms, |s| s.elapsed().as_millis() as u64);
        w
    }
}

fn update(node: &NodeContext, f: impl FnOnce(&mut DecommissionProgress)) {
    let mut p = node.decommission.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut p.wire);
}

fn set_phase(node: &NodeContext, phase: Phase) {
    *node.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    if let Some(c) = node.cluster.get() {
        let _ = c.cast(ClusterMsg::SetPhase(phase));
    }
}

/// Starts this node's decommission unless it runs or is done; returns the progress.
pub fn start_local(node: &Arc<NodeContext>) -> Result<DecommissionProgress, DecommissionError> {
    if node.view.is_none() {
        return Err(DecommissionError::Alone);
    }
    let mut p = node.decommission.lock().unwrap_or_else(|e| e.into_inner());
    if matches!(p.wire.state.as_str(), "handing_over" | "copying" | "done") {
        return Ok(p.snapshot());
    }
    *p = Progress {
        started: Some(Instant::now()),
        wire: DecommissionProgress {
            state: "handing_over".into(),
            ..Default::default()
        },
    };
    let snapshot = p.snapshot();
    drop(p);
    let node = node.clone();
    tokio::spawn(async move {
        if let Err(e) = run(&node).await {
            tracing::error!(error = %e, "decommission failed");
            update(&node, |w| {
                w.state = "failed".into();
                w.error = Some(e);
            });
            set_phase(&node, Phase::Active);
        }
    });
    Ok(snapshot)
}

/// This node's decommission progress.
pub fn local_progress(node: &NodeContext) -> DecommissionProgress {
    node.decommission
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .snapshot()
}

async fn run(node: &NodeContext) -> Result<(), String> {
    tracing::info!("decommission: leaving the partition owners");
    set_phase(node, Phase::Leaving);
    let deadline = Instant::now() + HANDOVER_WAIT;
    loop {
        let running = node.registry.running().len() as u32;
        update(node, |w| w.partitions_running = running);
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{running} partitions still running after {HANDOVER_WAIT:?}"
            ));
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
    let total = node.store.samples_stored();
    update(node, |w| {
        w.state = "copying".into();
        w.samples_total = total;
    });
    tracing::info!(
        samples = total,
        "decommission: copying stored samples to their owners"
    );
    for gpu in node.store.gpus() {
        let partition = partition_of(&gpu.uuid, node.partitions);
        let mut cursor: Option<RangeCursor> = None;
        loop {
            let store = node.store.clone();
            let (uuid, c) = (gpu.uuid.clone(), cursor.clone());
            let read = tokio::task::spawn_blocking(move || {
                let Some(page) = store.range(&RangeQuery {
                    uuid: &uuid,
                    metrics: &[],
                    start: i64::MIN / 2,
                    end: i64::MAX / 2,
                    limit: COPY_BATCH,
                    cursor: c,
                })?
                else {
                    return Ok(None);
                };
                // Observations travel with the workloads they name.
                let observed = page.metrics.iter().position(|m| **m == *WORKLOAD_METRIC);
                let values = page
                    .points
                    .iter()
                    .filter(|p| Some(usize::from(p.metric)) == observed)
                    .map(|p| p.value);
                let workloads = store.workloads_named(values)?;
                Ok::<_, telemetry_storage::StorageError>(Some((page, workloads)))
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let Some((page, workloads)) = read else { break };
            if page.points.is_empty() {
                break;
            }
            let mut b = BatchBuilder::default();
            for w in &workloads {
                b.add_workload(w);
            }
            for p in &page.points {
                let metric = page.metrics.get(usize::from(p.metric)).map_or("", |m| m);
                b.push(&gpu, metric, p.timestamp, p.value);
            }
            let n = b.len() as u64;
            let batch = vec![(partition, Arc::new(b.take().encode()))];
            append_all(node, batch, COPY_PATIENCE)
                .await
                .map_err(|e| format!("partition {partition}: {e}"))?;
            update(node, |w| w.samples_copied += n);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    set_phase(node, Phase::Left);
    announce_left(node).await;
    update(node, |w| w.state = "done".into());
    tracing::info!("decommission: done; the node can be removed");
    Ok(())
}

/// Tells every live peer that this node has left, retrying each until it answers (or
/// [`ANNOUNCE_DEADLINE`] passes): the operator may remove the node as soon as it says "done",
/// before the next ping would have carried the news, and a peer that never heard it would keep
/// listing the removed node as a member that is down.
async fn announce_left(node: &NodeContext) {
    let me = node.info_now();
    let deadline = Instant::now() + ANNOUNCE_DEADLINE;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut pending: Vec<String> = node
        .cluster_view()
        .peers
        .iter()
        .filter(|p| p.endpoint.is_some())
        .map(|p| p.info.name.clone())
        .collect();
    loop {
        let view = node.cluster_view();
        let mut missed = Vec::new();
        for name in pending {
            // A peer that went down meanwhile has nothing to hear now.
            let Some(endpoint) = view
                .peers
                .iter()
                .find(|p| p.info.name == name)
                .and_then(|p| p.endpoint.as_ref())
            else {
                continue;
            };
            if call_endpoint(endpoint, &Request::Hello(me.clone()), SCATTER_TIMEOUT)
                .await
                .is_none()
            {
                missed.push(name);
            }
        }
        if missed.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            tracing::warn!(peers = ?missed, "decommission: these peers did not hear that this node left; they list it as a member that is down until they restart");
            return;
        }
        pending = missed;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// How a copied batch is retried: 100 ms doubling to 2 s, for up to 5 min, waiting out an
/// owner's full disk (the decommission fails only if a batch never gets through).
const COPY_PATIENCE: Patience = Patience {
    deadline: COPY_RETRY_LIMIT,
    backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
    attempt_timeout: APPEND_TIMEOUT,
    wait_out_full_disk: true,
};

/// Why a decommission cannot be asked for or read.
#[derive(Debug, thiserror::Error)]
pub enum DecommissionError {
    /// A node alone has nowhere to move its data.
    #[error("a node alone has no other member to move its data to")]
    Alone,
    /// No member has that name.
    #[error("no member named {0:?}")]
    NoSuchMember(String),
    /// The member is known but cannot be reached, or did not answer in time.
    #[error("member {0:?} did not answer")]
    NoAnswer(String),
    /// The member refused (it is alone, or says why).
    #[error("{0}")]
    Refused(String),
}

/// Starts (`start`) or reads the decommission of the member `name`, this node or a peer.
pub async fn ask(
    node: &Arc<NodeContext>,
    name: &str,
    start: bool,
) -> Result<DecommissionProgress, DecommissionError> {
    if name == node.info.name {
        return if start {
            start_local(node)
        } else {
            Ok(local_progress(node))
        };
    }
    let view = node.cluster_view();
    let peer = view
        .peers
        .iter()
        .find(|p| p.info.name == name)
        .ok_or_else(|| DecommissionError::NoSuchMember(name.to_string()))?;
    let endpoint = peer
        .endpoint
        .clone()
        .ok_or_else(|| DecommissionError::NoAnswer(name.to_string()))?;
    match call_endpoint(&endpoint, &Request::Decommission { start }, SCATTER_TIMEOUT).await {
        Some(Response::Decommission(p)) => Ok(p),
        Some(Response::Refused(e)) => Err(DecommissionError::Refused(e)),
        _ => Err(DecommissionError::NoAnswer(name.to_string())),
    }
}
