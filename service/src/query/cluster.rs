//! The cluster's members and their numbers: this node's own, and every live peer's.

use std::collections::HashMap;
use std::time::Duration;

use telemetry_actors::cluster::membership::Status;
use telemetry_actors::cluster::protocol::{PartitionPosition, Request, Response};
use telemetry_actors::routing::partition_of;
use telemetry_actors::supervisor::partition_status;

pub use telemetry_actors::cluster::protocol::MemberStatus;

use crate::fanout::gather;
use crate::node::{GpuPartitions, NodeContext};

/// How long a status read waits for one partition's numbers.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// One member in a cluster status.
#[derive(Debug, Clone)]
pub enum Member {
    /// It answered with its numbers.
    Answered(MemberStatus),
    /// It is down or did not answer in time.
    Missing {
        /// Node name.
        name: String,
        /// API address, when known.
        address: String,
        /// `down`, or the status this node sees when it did not answer.
        status: &'static str,
    },
}

/// The cluster as this node sees it.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    /// This node first, then peers in the order they answered.
    pub members: Vec<Member>,
    /// The owner of each partition, by partition number.
    pub owners: Vec<String>,
    /// Names of the live members (which own the partitions).
    pub live: Vec<String>,
    /// Who answered, who is repairing, and whether the members' figures cover every sample.
    pub coverage: crate::coverage::Coverage,
    /// The replicas of each partition, the owner first, by partition number.
    pub replicas: Vec<Vec<String>>,
    /// Copies the cluster keeps of each partition.
    pub replication_factor: usize,
}

impl ClusterStatus {
    /// The members that answered.
    pub fn answered(&self) -> impl Iterator<Item = &MemberStatus> {
        self.members.iter().filter_map(|m| match m {
            Member::Answered(s) => Some(s),
            Member::Missing { .. } => None,
        })
    }

    /// Samples stored by the members that answered, every copy counted.
    pub fn sample_copies(&self) -> u64 {
        self.answered().map(|s| s.samples_stored).sum()
    }

    /// Distinct samples in the cluster, as far as the members that answered hold them. With
    /// one copy a sample lives on one member (a partition's history may be spread over former
    /// owners), so the members' counts add up. With replicas, each partition counts once, as
    /// its fullest copy holds it: exact whenever some member holds every sample of each
    /// partition, which every replica does once repaired.
    pub fn samples_distinct(&self) -> u64 {
        if self.replication_factor <= 1 {
            return self.sample_copies();
        }
        let mut fullest: HashMap<u32, u64> = HashMap::new();
        for s in self.answered() {
            for &(p, n) in &s.partition_samples {
                let f = fullest.entry(p).or_default();
                *f = (*f).max(n);
            }
        }
        fullest.values().sum()
    }
}

/// This node's numbers, as peers receive them in answer to [`Request::Status`].
pub async fn local(node: &NodeContext) -> MemberStatus {
    let mut partitions = Vec::new();
    for (p, broker) in node.registry.running() {
        if let Some(s) = partition_status(&broker, STATUS_TIMEOUT).await {
            partitions.push(PartitionPosition {
                partition: p,
                next_offset: s.next_offset,
                committed_offset: s.committed_offset,
            });
        }
    }
    MemberStatus {
        name: node.info.name.clone(),
        address: node.info.http_addr.clone(),
        samples_stored: node.store.samples_stored(),
        storage_bytes: node.store.disk_space(),
        broker_bytes: node.broker_bytes(),
        disk_free_bytes: node.disk.free_bytes(),
        disk_full: node.disk.reason(),
        partitions,
        samples_acked: node.stats.samples_acked.get(),
        rows_read: node.stats.rows_read.get(),
        rows_rejected: node.stats.rows_rejected.get(),
        damaged_partitions: node.registry.damaged(),
        partition_samples: partition_samples(node),
        syncing: node.is_syncing(),
        repair: node.repair_progress(),
    }
}

/// This node's distinct samples per partition (partitions it holds none of left out). Each
/// GPU's partition is hashed once per store epoch, not once per call.
fn partition_samples(node: &NodeContext) -> Vec<(u32, u64)> {
    let (epoch, counts) = node.store.sample_counts_by_gpu_id();
    let mut cache = node
        .gpu_partitions
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if cache.epoch != epoch {
        *cache = GpuPartitions {
            epoch,
            by_id: Vec::new(),
        };
    }
    if cache.by_id.len() < counts.len() {
        let (now, uuids) = node.store.gpu_uuids_from(cache.by_id.len());
        if now != epoch {
            // A recovery in between: the ids of `counts` may not be these UUIDs' ids.
            drop(cache);
            return partition_samples_slow(node);
        }
        let partitions = node.partitions;
        cache
            .by_id
            .extend(uuids.iter().map(|u| partition_of(u, partitions)));
    }
    let mut by: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for (n, p) in counts.iter().zip(&cache.by_id) {
        if *n > 0 {
            *by.entry(*p).or_default() += n;
        }
    }
    by.into_iter().collect()
}

fn partition_samples_slow(node: &NodeContext) -> Vec<(u32, u64)> {
    let mut by: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
    for (uuid, n) in node.store.samples_by_gpu() {
        if n > 0 {
            *by.entry(partition_of(&uuid, node.partitions)).or_default() += n;
        }
    }
    by.into_iter().collect()
}

/// Every member's numbers: this node's, and each live peer's within the fan-out timeout.
pub async fn status(node: &NodeContext) -> ClusterStatus {
    let g = gather(node, local(node).await, Request::Status, |r| match r {
        Response::Status(s) => Some(s),
        _ => None,
    })
    .await;
    let view = node.cluster_view();
    let mut members: Vec<Member> = g.answers.into_iter().map(Member::Answered).collect();
    for name in g.coverage.unavailable.clone() {
        let peer = view.peers.iter().find(|p| p.info.name == name);
        members.push(Member::Missing {
            address: peer.map(|p| p.info.http_addr.clone()).unwrap_or_default(),
            status: peer.map_or("down", |p| p.status.as_str()),
            name,
        });
    }
    ClusterStatus {
        members,
        owners: (0..node.partitions).map(|p| node.router.owner(p)).collect(),
        replicas: (0..node.partitions)
            .map(|p| node.router.replicas(p))
            .collect(),
        replication_factor: node.router.replication().factor,
        live: view.live.clone(),
        coverage: g.coverage,
    }
}

/// What this node's `/metrics` gauges show about the present.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Per running partition: (partition, unconsumed log bytes, records not yet committed).
    pub partitions: Vec<(u32, u64, u64)>,
    /// Members up, this node included.
    pub members_up: usize,
    /// Members this node sees down.
    pub members_down: usize,
    /// Partitions this node owns.
    pub partitions_owned: usize,
}

/// This node's gauges, read now.
pub async fn gauges(node: &NodeContext) -> Gauges {
    let mut partitions = Vec::new();
    for (p, broker) in node.registry.running() {
        if let Some(s) = partition_status(&broker, STATUS_TIMEOUT).await {
            let lag = s.next_offset.saturating_sub(s.committed_offset);
            partitions.push((p, s.unconsumed_bytes, lag));
        }
    }
    let view = node.cluster_view();
    let up = 1 + view.peers.iter().filter(|p| p.status == Status::Up).count();
    Gauges {
        partitions,
        members_up: up,
        members_down: view.peers.len() + 1 - up,
        partitions_owned: node.owned().len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, stored: u64, partitions: &[(u32, u64)]) -> Member {
        Member::Answered(MemberStatus {
            name: name.into(),
            samples_stored: stored,
            partition_samples: partitions.to_vec(),
            ..MemberStatus::default()
        })
    }

    fn status(factor: usize, members: Vec<Member>) -> ClusterStatus {
        ClusterStatus {
            members,
            owners: Vec::new(),
            live: Vec::new(),
            coverage: crate::coverage::Coverage::full(factor),
            replicas: Vec::new(),
            replication_factor: factor,
        }
    }

    #[test]
    fn the_distinct_count_is_never_multiplied_by_the_copies() {
        // Two copies: partition 0 on a and b (b behind), partition 1 on b and c.
        let two = status(
            2,
            vec![
                member("a", 100, &[(0, 100)]),
                member("b", 130, &[(0, 90), (1, 40)]),
                member("c", 40, &[(1, 40)]),
                Member::Missing {
                    name: "d".into(),
                    address: String::new(),
                    status: "down",
                },
            ],
        );
        assert_eq!(two.samples_distinct(), 140, "each partition's fullest copy");
        assert_eq!(two.sample_copies(), 270);
        // One copy: a partition's history may be spread over former owners; counts add up.
        let one = status(
            1,
            vec![member("a", 60, &[(0, 60)]), member("b", 40, &[(0, 40)])],
        );
        assert_eq!(one.samples_distinct(), 100);
        assert_eq!(one.sample_copies(), 100);
    }
}
