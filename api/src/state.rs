//! What the handlers share: the node's query and write service, and the REST layer's metrics.

use std::sync::Arc;

use telemetry_service::NodeContext;

use crate::metrics::Metrics;

/// The REST layer's state.
pub struct Api {
    /// The node's service: every query and write goes through it.
    pub node: Arc<NodeContext>,
    /// The metric registry behind `/metrics`.
    pub metrics: Metrics,
}

impl Api {
    /// The REST layer over `node`, its metrics registered with the node's counters.
    pub fn new(node: Arc<NodeContext>) -> Arc<Self> {
        let metrics = Metrics::new(&node.stats, &node.fanout);
        Arc::new(Self { node, metrics })
    }
}

/// Shared handler state.
pub type AppState = Arc<Api>;
