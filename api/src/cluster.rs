//! `GET /api/v1/cluster`, `GET /healthz`, `GET /readyz`.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use telemetry_actors::supervisor::partition_status;
use utoipa::ToSchema;

use crate::context::AppState;
use crate::error::{ApiError, ErrorBody};

/// How long `/api/v1/cluster` waits for one partition's numbers.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// A cluster member.
#[derive(Debug, Serialize, ToSchema)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// API address.
    pub address: String,
    /// `up` or `down`.
    pub status: String,
    /// Distinct samples stored on the node.
    pub samples_stored: u64,
    /// Bytes on disk of the node's sample store after its latest flush (journal excluded).
    pub storage_bytes: u64,
    /// Number of partitions the node owns.
    pub partitions_owned: usize,
    /// Records appended to the node's partitions but not yet committed by its collectors.
    pub broker_lag_records: u64,
    /// Samples this node's streamers had acknowledged as durable by their partitions.
    pub samples_acked: u64,
    /// CSV rows this node's streamers read.
    pub rows_read: u64,
    /// CSV rows this node's streamers skipped because they did not parse.
    pub rows_rejected: u64,
}

/// One partition: owner and queue position.
#[derive(Debug, Serialize, ToSchema)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Owning node.
    pub owner: String,
    /// Whether the partition is running on its owner.
    pub running: bool,
    /// Offset of the next append.
    pub next_offset: u64,
    /// Offset up to which the collector committed.
    pub committed_offset: u64,
    /// Records not yet committed.
    pub lag_records: u64,
}

/// The cluster as seen from this node.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// Members.
    pub members: Vec<Member>,
    /// Partition count.
    pub partitions: u32,
    /// Distinct samples stored, summed over members.
    pub samples_stored: u64,
    /// Ownership and queue position per partition.
    pub ownership: Vec<PartitionInfo>,
}

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// The cluster's members and partitions.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Members, ownership, sample counts and broker lag", body = ClusterView)))]
pub async fn get_cluster(State(node): State<AppState>) -> Json<ClusterView> {
    let mut ownership = Vec::with_capacity(node.owned.len());
    for &p in &node.owned {
        let status = match node.registry.get(p) {
            Some(b) => partition_status(&b, STATUS_TIMEOUT).await,
            None => None,
        };
        let s = status.clone().unwrap_or_default();
        ownership.push(PartitionInfo {
            partition: p,
            owner: node.name.clone(),
            running: status.is_some(),
            next_offset: s.next_offset,
            committed_offset: s.committed_offset,
            lag_records: s.next_offset.saturating_sub(s.committed_offset),
        });
    }
    let samples = node.store.samples_stored();
    let member = Member {
        name: node.name.clone(),
        address: node.address.clone(),
        status: "up".into(),
        samples_stored: samples,
        storage_bytes: node.store.disk_space(),
        partitions_owned: node.owned.len(),
        broker_lag_records: ownership.iter().map(|o| o.lag_records).sum(),
        samples_acked: node.stats.samples_acked.get(),
        rows_read: node.stats.rows_read.get(),
        rows_rejected: node.stats.rows_rejected.get(),
    };
    Json(ClusterView {
        members: vec![member],
        partitions: node.partitions,
        samples_stored: samples,
        ownership,
    })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the node runs every partition it owns and its store is open.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = ErrorBody),
    ))]
pub async fn readyz(State(node): State<AppState>) -> Result<Json<Health>, ApiError> {
    if node.ready() {
        Ok(Json(Health {
            status: "ready".into(),
        }))
    } else {
        Err(ApiError::not_ready(
            "owned partitions are not all running yet",
        ))
    }
}
