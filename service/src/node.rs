//! The node as a query or a write sees it: its store, broker partitions, router and cluster view.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use telemetry_actors::cluster::membership::{NodeInfo, Phase};
use telemetry_actors::cluster::protocol::RepairProgress;
use telemetry_actors::cluster::transport::{ClusterMsg, ClusterView};
use telemetry_actors::registry::PartitionRegistry;
use telemetry_actors::router::Router;
use telemetry_actors::stats::PipelineStats;
use telemetry_storage::Store;
use tokio::sync::watch;

/// The node as the API sees it.
pub struct NodeContext {
    /// This node: name (unique in the cluster), cluster and API addresses.
    pub info: NodeInfo,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// The node's store.
    pub store: Arc<Store>,
    /// Directory of the broker's partition logs.
    pub broker_dir: std::path::PathBuf,
    /// Room on the data volume (disk full refuses appends, not reads).
    pub disk: Arc<telemetry_storage::disk::DiskGuard>,
    /// Running broker partitions.
    pub registry: Arc<PartitionRegistry>,
    /// Pipeline counters.
    pub stats: Arc<PipelineStats>,
    /// Partition owners.
    pub router: Router,
    /// The cluster view; `None` for a node alone.
    pub view: Option<watch::Receiver<Arc<ClusterView>>>,
    /// Set once the node has joined (at once for a node alone).
    pub joined: AtomicBool,
    /// Counts of partial answers (exported by `/metrics`).
    pub fanout: crate::fanout::FanoutStats,
    /// This node's phase (active, leaving, left), as its answers to peers say.
    pub phase: Mutex<Phase>,
    /// The cluster actor, once joined (to announce a phase change).
    pub cluster: OnceLock<ActorRef<ClusterMsg>>,
    /// Progress of this node's decommission, if one was asked for.
    pub decommission: Mutex<crate::decommission::Progress>,
    /// True until this node's first repair is done: its store may miss data it should hold.
    pub syncing: AtomicBool,
    /// Progress of this node's repairs.
    pub repair: Mutex<RepairProgress>,
    /// When the last repair that cleared `syncing` ended.
    pub repaired_at: Mutex<Option<Instant>>,
    /// Each GPU's partition by store id, so a status answer need not hash every UUID.
    pub gpu_partitions: Mutex<GpuPartitions>,
}

/// The partition of each GPU by its store id, valid for one store epoch.
#[derive(Debug, Default)]
pub struct GpuPartitions {
    /// The store epoch the ids belong to.
    pub epoch: u64,
    /// Partition by GPU id.
    pub by_id: Vec<u32>,
}

/// How long after its repair a node still says it is not ready: its peers learn that it no
/// longer repairs from its next pong (every `PING_INTERVAL`, 500 ms), and a rolling update that
/// took the next node down before they did would see answers turn partial.
pub const READY_AFTER_REPAIR: Duration = Duration::from_secs(1);

impl NodeContext {
    /// Node name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// This node as it describes itself now (its phase and repair state included).
    pub fn info_now(&self) -> NodeInfo {
        NodeInfo {
            phase: *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            syncing: self.is_syncing(),
            ..self.info.clone()
        }
    }

    /// Progress of this node's repairs.
    pub fn repair_progress(&self) -> RepairProgress {
        self.repair
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the repair's progress.
    pub fn update_repair(&self, f: impl FnOnce(&mut RepairProgress)) {
        f(&mut self.repair.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// A repair that started with this node syncing ended: its data is whole again.
    pub fn repaired(&self) {
        *self.repaired_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.syncing.store(false, Ordering::Release);
    }

    /// True while this node's store may miss data it should hold (its repair is not done).
    pub fn is_syncing(&self) -> bool {
        self.syncing.load(Ordering::Acquire)
    }

    /// Bytes the broker's partition logs take on disk.
    pub fn broker_bytes(&self) -> u64 {
        telemetry_storage::disk::allocated_bytes(&self.broker_dir)
    }

    /// The partitions this node holds a replica of now.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.partitions)
            .filter(|p| self.router.replicas(*p).contains(&self.info.name))
            .collect()
    }

    /// The current cluster view (this node alone when not clustered).
    pub fn cluster_view(&self) -> Arc<ClusterView> {
        match &self.view {
            Some(v) => v.borrow().clone(),
            None => Arc::new(ClusterView {
                peers: Vec::new(),
                live: vec![self.info.name.clone()],
            }),
        }
    }

    /// Ready once joined and every owned partition is running and taking appends.
    pub fn ready(&self) -> bool {
        self.joined.load(Ordering::Acquire)
            && self
                .owned()
                .iter()
                .all(|p| self.registry.for_append(*p).is_some())
    }

    /// Why the node is not ready, or `None` when it is: a damaged log of an owned partition, a
    /// full disk, owned partitions not all running yet, or a repair not done (a rolling update
    /// must wait for it, or the next node down would leave answers short). Reads go on meanwhile.
    pub fn not_ready(&self) -> Option<String> {
        let owned = self.owned();
        let damaged: Vec<u32> = self
            .registry
            .damaged()
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| owned.contains(p))
            .collect();
        if !damaged.is_empty() {
            return Some(format!(
                "partition logs damaged: {damaged:?} (see /api/v1/cluster); the node still answers queries"
            ));
        }
        if let Some(reason) = self.disk.reason() {
            return Some(format!(
                "{reason}; new data is refused until space is freed, the node still answers queries"
            ));
        }
        if !self.ready() {
            return Some("owned partitions are not all running yet".to_string());
        }
        if self.is_syncing() {
            let r = self.repair_progress();
            return Some(format!(
                "repairing: {} of {} partitions compared with the peers, {} samples copied; the \
                 node takes data and answers queries meanwhile",
                r.partitions_done, r.partitions_total, r.samples_copied
            ));
        }
        let at = *self.repaired_at.lock().unwrap_or_else(|e| e.into_inner());
        at.filter(|t| t.elapsed() < READY_AFTER_REPAIR)
            .map(|_| "repaired; waiting for the peers to hear it".to_string())
    }
}
