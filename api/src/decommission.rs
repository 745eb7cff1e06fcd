//! Decommissioning a node before a scale-down: `POST /api/v1/cluster/nodes/{name}/decommission`
//! (on any node; forwarded to the named one) and `GET` of the same path for progress.
//!
//! The node announces it is leaving, so every member stops routing to it and ownership moves
//! away; its supervisor hands its partitions over (each collector drains its log into the local
//! store first); then it copies every sample it stores to the partition's current owner through
//! the normal append path (durable in the owner's log, idempotent in its store, so repeating a
//! decommission is safe); finally it says it has left, and once it is stopped the others forget it.

use std::time::{Duration, Instant};
use telemetry_actors::backoff::Backoff;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use telemetry_actors::cluster::membership::Phase;
use telemetry_actors::cluster::protocol::{AppendOutcome, DecommissionProgress, Request, Response};
use telemetry_actors::cluster::transport::{call_endpoint, ClusterMsg};
use telemetry_actors::routing::partition_of;
use telemetry_actors::streamer::APPEND_TIMEOUT;
use telemetry_storage::{BatchBuilder, RangeCursor, RangeQuery};
use utoipa::ToSchema;

use crate::context::{AppState, NodeContext};
use crate::error::{ApiError, ErrorBody};
use crate::scatter::SCATTER_TIMEOUT;

/// Longest wait for the node's partitions to be handed over.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(120);
/// Samples per copied batch (the streamer's batch size).
pub const COPY_BATCH: usize = 4096;
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

/// A node's decommission as the REST API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecommissionStatus {
    /// Node being decommissioned.
    pub node: String,
    /// `idle`, `handing_over`, `copying`, `done` or `failed`.
    pub state: String,
    /// Partitions still running on the node.
    pub partitions_running: u32,
    /// Distinct samples it held when copying began.
    pub samples_total: u64,
    /// Samples copied to their owners so far.
    pub samples_copied: u64,
    /// Milliseconds since it began.
    pub elapsed_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

fn status(node: &str, p: DecommissionProgress) -> DecommissionStatus {
    DecommissionStatus {
        node: node.to_string(),
        state: p.state,
        partitions_running: p.partitions_running,
        samples_total: p.samples_total,
        samples_copied: p.samples_copied,
        elapsed_ms: p.elapsed_ms,
        error: p.error,
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
pub fn start_local(node: &AppState) -> Result<DecommissionProgress, String> {
    if node.view.is_none() {
        return Err("a node alone has no other member to move its data to".into());
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

async fn run(node: &AppState) -> Result<(), String> {
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
        tokio::time::sleep(Duration::from_millis(100)).await;
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
            let page = tokio::task::spawn_blocking(move || {
                store.range(&RangeQuery {
                    uuid: &uuid,
                    metrics: &[],
                    start: i64::MIN / 2,
                    end: i64::MAX / 2,
                    limit: COPY_BATCH,
                    cursor: c,
                })
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            let Some(page) = page else { break };
            if page.points.is_empty() {
                break;
            }
            let mut b = BatchBuilder::default();
            for p in &page.points {
                let metric = page.metrics.get(usize::from(p.metric)).map_or("", |m| m);
                b.push(&gpu, metric, p.timestamp, p.value);
            }
            let n = b.len() as u64;
            copy(node, partition, b.take().encode()).await?;
            update(node, |w| w.samples_copied += n);
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    set_phase(node, Phase::Left);
    // Tell every peer now: the operator may remove this node as soon as it says "done", before
    // the next ping would have carried the news, and a peer that missed it would wait for it.
    let me = node.info_now();
    for peer in &node.cluster_view().peers {
        if let Some(endpoint) = &peer.endpoint {
            let _ = call_endpoint(endpoint, &Request::Hello(me.clone()), SCATTER_TIMEOUT).await;
        }
    }
    update(node, |w| w.state = "done".into());
    tracing::info!("decommission: done; the node can be removed");
    Ok(())
}

/// Pause between attempts to copy a batch: 100 ms doubling to 2 s.
const COPY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// Appends one batch at the partition's current owner, retrying (and re-routing) until acked.
async fn copy(node: &NodeContext, partition: u32, payload: Vec<u8>) -> Result<(), String> {
    let started = Instant::now();
    let mut pause = COPY_BACKOFF;
    loop {
        let owner = node.router.owner(partition);
        let endpoint = node
            .cluster_view()
            .peers
            .iter()
            .find(|p| p.info.name == owner)
            .and_then(|p| p.endpoint.clone());
        let request = Request::Append {
            partition,
            payload: payload.clone(),
        };
        let outcome = match endpoint {
            Some(e) => call_endpoint(&e, &request, APPEND_TIMEOUT).await,
            None => None,
        };
        if let Some(Response::Append(AppendOutcome::Ack(_))) = outcome {
            return Ok(());
        }
        if started.elapsed() > COPY_RETRY_LIMIT {
            return Err(format!(
                "partition {partition}: owner {owner} did not take a batch ({outcome:?})"
            ));
        }
        tokio::time::sleep(pause.next_delay()).await;
    }
}

async fn remote(
    node: &NodeContext,
    name: &str,
    start: bool,
) -> Result<DecommissionProgress, ApiError> {
    let view = node.cluster_view();
    let peer = view
        .peers
        .iter()
        .find(|p| p.info.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no member named {name:?}")))?;
    let endpoint = peer
        .endpoint
        .clone()
        .ok_or_else(|| ApiError::not_ready(format!("member {name:?} is not reachable")))?;
    match call_endpoint(&endpoint, &Request::Decommission { start }, SCATTER_TIMEOUT).await {
        Some(Response::Decommission(p)) => Ok(p),
        Some(Response::Refused(e)) => Err(ApiError::conflict(e)),
        _ => Err(ApiError::not_ready(format!(
            "member {name:?} did not answer"
        ))),
    }
}

/// Starts decommissioning a node (202) before it is removed; repeating it is safe.
#[utoipa::path(post, path = "/api/v1/cluster/nodes/{name}/decommission", tag = "cluster",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 202, description = "Decommission running (or done)", body = DecommissionStatus),
        (status = 409, description = "Not possible now (a node alone)", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 503, description = "The member did not answer", body = ErrorBody),
    ))]
pub async fn start_decommission(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<DecommissionStatus>), ApiError> {
    let progress = if name == node.info.name {
        start_local(&node).map_err(ApiError::conflict)?
    } else {
        remote(&node, &name, true).await?
    };
    Ok((StatusCode::ACCEPTED, Json(status(&name, progress))))
}

/// A node's decommission progress.
#[utoipa::path(get, path = "/api/v1/cluster/nodes/{name}/decommission", tag = "cluster",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 200, description = "Progress", body = DecommissionStatus),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 503, description = "The member did not answer", body = ErrorBody),
    ))]
pub async fn get_decommission(
    State(node): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DecommissionStatus>, ApiError> {
    let progress = if name == node.info.name {
        local_progress(&node)
    } else {
        remote(&node, &name, false).await?
    };
    Ok(Json(status(&name, progress)))
}
