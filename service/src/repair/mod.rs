//! Repair: getting this node back to a full copy of every partition it holds a replica of.
//!
//! A pass compares, partition by partition, this node's digests with every live peer's
//! ([`plan`]: GPU digests first, span digests only where those differ) and copies what differs
//! from the peer that has it ([`copy`]), at most `rate` samples per second and one page at a
//! time, so memory stays bounded by a partition's digests and one page. Passes run at start,
//! when a member comes up, after this node was cut off from every peer and one is back
//! ([`trigger`]), and every `interval` as anti-entropy; a triggered pass is followed by a second
//! look [`FOLLOW_UP`] later (writes routed around this node while the others did not see it yet
//! may land after the first compared their partition); a failed pass is retried. From start
//! until that second look ends the node says it is `syncing` (its volume may have been lost or
//! damaged): its answers are merged but do not count as a complete copy (see
//! [`crate::coverage`]), and `/readyz` is 503 so a rolling update waits for it. A node back from
//! being cut off lost nothing (what was written meanwhile has its copies on the others), so it
//! repairs without calling itself incomplete.
//!
//! Only with a replication factor above 1: with one copy there is nothing to repair from.

mod copy;
pub mod plan;
pub mod trigger;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_actors::cluster::membership::Status;
use telemetry_actors::cluster::protocol::Response;
use telemetry_actors::routing::partition_of;
use telemetry_storage::{Digest, GpuDigest, StorageError};

pub use copy::{REPAIR_CALL_TIMEOUT, REPAIR_PAGE, REPAIR_SCAN_TIMEOUT};

use crate::node::NodeContext;
use plan::GpuStep;
use trigger::Pass;

/// Width of the spans whose digests are compared inside one GPU (ms).
pub const REPAIR_SPAN_MS: i64 = 3_600_000;
/// Default pause between anti-entropy passes.
pub const DEFAULT_REPAIR_INTERVAL: Duration = Duration::from_secs(600);
/// Default bound on samples copied per second by a repair.
pub const DEFAULT_REPAIR_RATE: u64 = 2_000_000;
/// Pause before a failed pass is tried again.
pub const REPAIR_RETRY: Duration = Duration::from_secs(2);
/// Pause before the second look that follows a triggered pass.
pub const FOLLOW_UP: Duration = Duration::from_secs(3);
/// How long the view must stay unchanged before a pass starts (members are still being
/// discovered right after a start), and the longest wait for that.
const SETTLE: Duration = Duration::from_secs(1);
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// How repairs run.
#[derive(Debug, Clone, Copy)]
pub struct RepairConfig {
    /// Pause between anti-entropy passes.
    pub interval: Duration,
    /// Samples copied per second, at most.
    pub rate: u64,
}

/// Why a repair pass did not finish (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A peer did not answer in time (it went down, or is busy).
    #[error("{peer} did not answer a repair request")]
    Unanswered {
        /// The peer.
        peer: String,
    },
    /// A peer answered something else (another version).
    #[error("{peer} answered {answer} to a repair request")]
    Unexpected {
        /// The peer.
        peer: String,
        /// The answer, for the log.
        answer: String,
    },
    /// This node's store failed.
    #[error("store: {0}")]
    Store(#[from] StorageError),
    /// A blocking task did not finish.
    #[error("a repair task failed: {0}")]
    Task(String),
}

impl RepairError {
    fn unexpected(peer: &str, answer: &Response) -> Self {
        let mut answer = format!("{answer:?}");
        answer.truncate(200);
        Self::Unexpected {
            peer: peer.to_string(),
            answer,
        }
    }
}

impl From<tokio::task::JoinError> for RepairError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

/// Runs passes for as long as the node runs (spawn it; abort it at shutdown).
pub async fn run(node: Arc<NodeContext>, cfg: RepairConfig) {
    let Some(mut view) = node.view.clone() else {
        return;
    };
    let rejoined = Arc::new(tokio::sync::Notify::new());
    let watcher = tokio::spawn(watch_rejoin(view.clone(), rejoined.clone()));
    let mut schedule = trigger::Schedule::new(Instant::now(), cfg.interval, FOLLOW_UP);
    let mut due = Some(Pass::Triggered);
    loop {
        if let Some(kind) = due {
            settle(&mut view).await;
            let live_before = node.cluster_view().live.clone();
            match pass(&node, cfg).await {
                // A member came up during the pass: it may hold what we miss, compare again.
                Ok(()) if grew(&live_before, &node.cluster_view().live) => continue,
                Ok(()) => {
                    if schedule.done(kind, Instant::now()) && node.is_syncing() {
                        node.repaired();
                    }
                    due = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "repair pass failed; retrying");
                    node.update_repair(|r| r.last_error = Some(e.to_string()));
                    tokio::time::sleep(REPAIR_RETRY).await;
                    continue;
                }
            }
        }
        let (at, kind) = schedule.next();
        tokio::select! {
            _ = rejoined.notified() => due = Some(Pass::Triggered),
            _ = tokio::time::sleep_until(at.into()) => due = Some(kind),
            changed = view.changed() => {
                if changed.is_err() {
                    watcher.abort();
                    return;
                }
            }
        }
    }
}

/// Follows the view: a pass is due when a member comes up, or this node is back from being cut
/// off from every peer.
async fn watch_rejoin(mut view: ViewRx, rejoined: Arc<tokio::sync::Notify>) {
    let mut rejoin = trigger::Rejoin::default();
    while view.changed().await.is_ok() {
        let (known, up) = {
            let v = view.borrow_and_update();
            let up = v.peers.iter().filter(|p| p.status == Status::Up).count();
            (v.peers.len(), up)
        };
        match rejoin.observe(known, up) {
            trigger::Cue::Nothing => {}
            trigger::Cue::Compare => rejoined.notify_one(),
            trigger::Cue::Resync => {
                // Nothing was lost: what was written meanwhile has its copies on the others.
                tracing::info!("back after being cut off from every peer: repairing");
                rejoined.notify_one();
            }
        }
    }
}

type ViewRx = tokio::sync::watch::Receiver<Arc<telemetry_actors::cluster::transport::ClusterView>>;

/// Waits until the view has not changed for [`SETTLE`] (at most [`SETTLE_MAX`]).
async fn settle(view: &mut ViewRx) {
    let deadline = Instant::now() + SETTLE_MAX;
    while Instant::now() < deadline {
        match tokio::time::timeout(SETTLE, view.changed()).await {
            Err(_) | Ok(Err(_)) => return,
            Ok(Ok(())) => {}
        }
    }
}

/// True when `after` holds a member `before` did not.
fn grew(before: &[String], after: &[String]) -> bool {
    after.iter().any(|m| !before.contains(m))
}

/// One pass over every partition this node holds a replica of.
async fn pass(node: &NodeContext, cfg: RepairConfig) -> Result<(), RepairError> {
    let partitions = node.owned();
    node.update_repair(|r| {
        r.partitions_total = partitions.len() as u32;
        r.partitions_done = 0;
    });
    let started = Instant::now();
    let mut pace = copy::Pace::new(cfg.rate);
    let mut copied = 0;
    for p in partitions {
        copied += repair_partition(node, p, &mut pace).await?;
        node.update_repair(|r| r.partitions_done += 1);
    }
    let store = node.store.clone();
    telemetry_actors::priority::spawn_ingest(move || store.checkpoint()).await??;
    node.update_repair(|r| {
        r.passes += 1;
        r.last_error = None;
    });
    tracing::info!(copied, took = ?started.elapsed(), "repair pass done");
    Ok(())
}

/// Compares one partition with every live peer and copies what differs; returns samples copied.
async fn repair_partition(
    node: &NodeContext,
    partition: u32,
    pace: &mut copy::Pace,
) -> Result<u64, RepairError> {
    let peers: Vec<String> = node
        .cluster_view()
        .peers
        .iter()
        .filter(|p| p.status == Status::Up && p.endpoint.is_some())
        .map(|p| p.info.name.clone())
        .collect();
    if peers.is_empty() {
        return Ok(0);
    }
    let (mine, my_newest) = split(
        node.store
            .gpu_digests()
            .into_iter()
            .filter(|g| g.digest.count > 0 && partition_of(&g.uuid, node.partitions) == partition),
    );
    let mut theirs = Vec::with_capacity(peers.len());
    let mut newest = BTreeMap::new();
    for peer in peers {
        let (digests, their_newest) = split(copy::gpu_digests(node, &peer, partition).await?);
        for (uuid, t) in their_newest {
            newest.insert((peer.clone(), uuid), t);
        }
        theirs.push((peer, digests));
    }
    let mut copied = 0;
    for (uuid, step) in plan::gpus_to_compare(&mine, &theirs) {
        let n = match step {
            GpuStep::CopyAll(from) => {
                let mut n = 0;
                for peer in from {
                    let all = (i64::MIN / 2, i64::MAX / 2);
                    n += copy::copy_window(node, &peer, &uuid, all, pace).await?;
                }
                n
            }
            GpuStep::Compare(with) => {
                let mut n = 0;
                for peer in with {
                    // Samples newer than the older of the two copies' newest may still be on
                    // their way to it (a collector a moment behind): a later pass compares them.
                    let theirs = newest.get(&(peer.clone(), uuid.clone())).copied();
                    let until = plan::settled_until(my_newest.get(&uuid).copied(), theirs);
                    n += compare_spans(node, &uuid, &peer, until, pace).await?;
                }
                n
            }
        };
        node.update_repair(|r| r.samples_copied += n);
        copied += n;
    }
    Ok(copied)
}

/// Digests by UUID, and newest sample times by UUID.
fn split(
    gpus: impl IntoIterator<Item = GpuDigest>,
) -> (BTreeMap<String, Digest>, BTreeMap<String, i64>) {
    let (mut digests, mut newest) = (BTreeMap::new(), BTreeMap::new());
    for g in gpus {
        if let Some(t) = g.newest {
            newest.insert(g.uuid.clone(), t);
        }
        digests.insert(g.uuid, g.digest);
    }
    (digests, newest)
}

/// Compares one GPU span by span with `peer`, counting samples up to `until`, and copies the
/// spans that differ.
async fn compare_spans(
    node: &NodeContext,
    uuid: &str,
    peer: &str,
    until: i64,
    pace: &mut copy::Pace,
) -> Result<u64, RepairError> {
    let store = node.store.clone();
    let u = uuid.to_string();
    let mine: BTreeMap<i64, Digest> =
        tokio::task::spawn_blocking(move || store.span_digests(&u, REPAIR_SPAN_MS, until))
            .await??
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.start, s.digest))
            .collect();
    let spans = copy::span_digests(node, peer, uuid, (REPAIR_SPAN_MS, until)).await?;
    let mut copied = 0;
    for (start, peer) in plan::spans_to_fetch(&mine, &[(peer.to_string(), spans)]) {
        let window = (start, (start + REPAIR_SPAN_MS - 1).min(until));
        copied += copy::copy_window(node, &peer, uuid, window, pace).await?;
    }
    Ok(copied)
}
