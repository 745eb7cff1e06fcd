//! `GET /api/v1/cluster`, `GET /healthz`, `GET /readyz`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_service::query::cluster::{self as status, MemberStatus};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A cluster member.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// API address.
    pub address: String,
    /// `up` or `down` (counts are 0 for a member that did not answer).
    pub status: String,
    /// Distinct samples stored on the node (its copies of the partitions it holds).
    pub samples_stored: u64,
    /// True while the node repairs: it may miss data it should hold, so its answers do not by
    /// themselves make a cluster-wide answer complete.
    pub syncing: bool,
    /// The node's repair: passes done, the current pass, samples copied from peers.
    pub repair: Repair,
    /// Bytes the node's sample store takes on disk (allocated blocks of its directory: tables
    /// and journal).
    pub storage_bytes: u64,
    /// Bytes the node's broker partition logs take on disk (allocated blocks): what the
    /// collectors have not consumed yet, plus less than one segment per partition.
    pub broker_bytes: u64,
    /// Bytes free on the node's data volume at its last check.
    pub disk_free_bytes: u64,
    /// Why the node refuses new data for lack of disk space, while it does (reads go on).
    pub disk_full: Option<String>,
    /// Number of partitions the node holds a replica of (runs their broker and collector).
    pub partitions_owned: usize,
    /// Records appended to the node's partitions but not yet committed by its collectors.
    pub broker_lag_records: u64,
    /// Samples this node's streamers had acknowledged as durable by their partitions.
    pub samples_acked: u64,
    /// CSV rows this node's streamers read.
    pub rows_read: u64,
    /// CSV rows this node's streamers skipped because they did not parse.
    pub rows_rejected: u64,
    /// Partitions whose log this node found damaged at start-up: they take no appends and
    /// their collector does not run until the log is repaired and the node restarted.
    pub damaged_partitions: Vec<DamagedPartition>,
}

/// Where a node's repair is.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct Repair {
    /// Repair passes finished since the node started.
    pub passes: u64,
    /// Partitions the current (or last) pass compares.
    pub partitions_total: u32,
    /// Partitions of that pass done.
    pub partitions_done: u32,
    /// Samples copied from peers since start (a sample copied twice counts twice).
    pub samples_copied: u64,
    /// Why the last pass failed, if it did (it is retried).
    pub last_error: Option<String>,
}

/// A partition log found damaged.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DamagedPartition {
    /// Partition number.
    pub partition: u32,
    /// What is wrong: the partition directory, the first unreadable offset, the damage.
    pub detail: String,
}

/// One partition: owner and queue position.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Owning node (the first replica).
    pub owner: String,
    /// Every replica, the owner first (`--replication-factor` live members).
    pub replicas: Vec<String>,
    /// Distinct samples of the partition each member that answered stores (replicas, and
    /// members that held it before), by member name: a replica behind the others is repairing
    /// or was written around while it was away.
    pub samples_by_member: BTreeMap<String, u64>,
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// Members.
    pub members: Vec<Member>,
    /// Partition count.
    pub partitions: u32,
    /// Copies the cluster keeps of each partition (`--replication-factor`).
    pub replication_factor: usize,
    /// Distinct samples in the cluster: each partition counted once, from its fullest copy
    /// among the members that answered (with one copy: the members' counts summed). Exact
    /// once every replica is repaired; never inflated by the replication factor.
    pub samples_stored: u64,
    /// Samples stored by the members that answered, every copy counted (about
    /// `samples_stored` × `replication_factor`).
    pub sample_copies: u64,
    /// Names of the live members (this node's view), which hold the partitions.
    pub live: Vec<String>,
    /// True when the members that answered may not hold every sample: as many members as
    /// there are copies did not answer or are repairing.
    pub partial: bool,
    /// Members that did not answer.
    pub unavailable_nodes: Vec<String>,
    /// Members that answered while repairing.
    pub syncing_nodes: Vec<String>,
    /// Ownership and queue position per partition.
    pub ownership: Vec<PartitionInfo>,
}

/// A health answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
}

/// The cluster's members and partitions.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster",
    responses((status = 200, description = "Members, ownership, sample counts and broker lag", body = ClusterView)))]
pub async fn get_cluster(State(api): State<AppState>) -> Json<ClusterView> {
    let c = status::status(&api.node).await;
    let (samples_stored, sample_copies) = (c.samples_distinct(), c.sample_copies());
    let owned = |name: &str| {
        c.replicas
            .iter()
            .filter(|r| r.iter().any(|n| n == name))
            .count()
    };
    let mut members = Vec::new();
    let mut positions: HashMap<(String, u32), (u64, u64)> = HashMap::new();
    let mut held: HashMap<u32, BTreeMap<String, u64>> = HashMap::new();
    for m in c.members {
        match m {
            status::Member::Answered(s) => {
                for &(p, n) in &s.partition_samples {
                    held.entry(p).or_default().insert(s.name.clone(), n);
                }
                for p in &s.partitions {
                    positions.insert(
                        (s.name.clone(), p.partition),
                        (p.next_offset, p.committed_offset),
                    );
                }
                members.push(Member::up(owned(&s.name), s));
            }
            status::Member::Missing {
                name,
                address,
                status,
            } => {
                members.push(Member::missing(owned(&name), name, address, status));
            }
        }
    }
    // This node first, then peers by name.
    members[1..].sort_by(|a, b| a.name.cmp(&b.name));
    let ownership = c
        .owners
        .into_iter()
        .zip(c.replicas)
        .enumerate()
        .map(|(p, (owner, replicas))| {
            let pos = positions.get(&(owner.clone(), p as u32)).copied();
            let (next, committed) = pos.unwrap_or_default();
            PartitionInfo {
                partition: p as u32,
                running: pos.is_some(),
                next_offset: next,
                committed_offset: committed,
                lag_records: next.saturating_sub(committed),
                owner,
                replicas,
                samples_by_member: held.remove(&(p as u32)).unwrap_or_default(),
            }
        })
        .collect();
    Json(ClusterView {
        replication_factor: c.replication_factor,
        samples_stored,
        sample_copies,
        members,
        partitions: api.node.partitions,
        live: c.live,
        partial: !c.coverage.complete(),
        unavailable_nodes: c.coverage.unavailable,
        syncing_nodes: c.coverage.syncing,
        ownership,
    })
}

impl Member {
    fn up(partitions_owned: usize, s: MemberStatus) -> Self {
        Self {
            status: "up".into(),
            partitions_owned,
            broker_lag_records: s
                .partitions
                .iter()
                .map(|p| p.next_offset.saturating_sub(p.committed_offset))
                .sum(),
            name: s.name,
            address: s.address,
            samples_stored: s.samples_stored,
            syncing: s.syncing,
            repair: Repair {
                passes: s.repair.passes,
                partitions_total: s.repair.partitions_total,
                partitions_done: s.repair.partitions_done,
                samples_copied: s.repair.samples_copied,
                last_error: s.repair.last_error,
            },
            storage_bytes: s.storage_bytes,
            broker_bytes: s.broker_bytes,
            disk_free_bytes: s.disk_free_bytes,
            disk_full: s.disk_full,
            samples_acked: s.samples_acked,
            rows_read: s.rows_read,
            rows_rejected: s.rows_rejected,
            damaged_partitions: s
                .damaged_partitions
                .into_iter()
                .map(|(partition, detail)| DamagedPartition { partition, detail })
                .collect(),
        }
    }

    fn missing(partitions_owned: usize, name: String, address: String, status: &str) -> Self {
        Self {
            partitions_owned,
            name,
            address,
            status: status.into(),
            samples_stored: 0,
            syncing: false,
            repair: Repair::default(),
            storage_bytes: 0,
            broker_bytes: 0,
            disk_free_bytes: 0,
            disk_full: None,
            broker_lag_records: 0,
            samples_acked: 0,
            rows_read: 0,
            rows_rejected: 0,
            damaged_partitions: Vec::new(),
        }
    }
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
pub async fn readyz(State(api): State<AppState>) -> Result<Json<Health>, ApiError> {
    match api.node.not_ready() {
        Some(reason) => Err(ApiError::not_ready(reason)),
        None => Ok(Json(Health {
            status: "ready".into(),
        })),
    }
}
