//! The node as a query or a write sees it: its store, broker partitions, router and cluster view.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use ractor::ActorRef;
use telemetry_actors::cluster::membership::{NodeInfo, Phase};
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
}

impl NodeContext {
    /// Node name.
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// This node as it describes itself now (its phase included).
    pub fn info_now(&self) -> NodeInfo {
        NodeInfo {
            phase: *self.phase.lock().unwrap_or_else(|e| e.into_inner()),
            ..self.info.clone()
        }
    }

    /// Bytes the broker's partition logs take on disk.
    pub fn broker_bytes(&self) -> u64 {
        telemetry_storage::disk::allocated_bytes(&self.broker_dir)
    }

    /// The partitions this node owns now.
    pub fn owned(&self) -> Vec<u32> {
        (0..self.partitions)
            .filter(|p| self.router.owner(*p) == self.info.name)
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

    /// Why the node is not ready to take data, or `None` when it is: a damaged log of an owned
    /// partition, a full disk, or owned partitions not all running yet. Reads go on meanwhile.
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
        (!self.ready()).then(|| "owned partitions are not all running yet".to_string())
    }
}
