//! What the handlers need from the node.

use std::sync::Arc;

use telemetry_actors::registry::PartitionRegistry;
use telemetry_actors::stats::PipelineStats;
use telemetry_storage::Store;

/// The node as the API sees it.
pub struct NodeContext {
    /// Node name (unique in the cluster).
    pub name: String,
    /// Address the node's API is reachable at.
    pub address: String,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// Partitions this node owns.
    pub owned: Vec<u32>,
    /// The node's store.
    pub store: Arc<Store>,
    /// Running broker partitions.
    pub registry: Arc<PartitionRegistry>,
    /// Pipeline counters.
    pub stats: Arc<PipelineStats>,
}

impl NodeContext {
    /// Ready once every owned partition is running.
    pub fn ready(&self) -> bool {
        self.owned.iter().all(|p| self.registry.get(*p).is_some())
    }
}

/// Shared handler state.
pub type AppState = Arc<NodeContext>;
