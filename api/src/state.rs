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
    /// Most samples one PromQL query may read (`--query-max-samples`); beyond it the query is
    /// refused (422) rather than run unbounded.
    pub query_max_samples: usize,
}

impl Api {
    /// The REST layer over `node`, its metrics registered with the node's counters, with the
    /// default bounds.
    pub fn new(node: Arc<NodeContext>) -> Arc<Self> {
        Self::with_query_max_samples(node, crate::prometheus::MAX_PROM_SAMPLES)
    }

    /// As [`Api::new`], a PromQL query reading at most `query_max_samples` samples.
    pub fn with_query_max_samples(node: Arc<NodeContext>, query_max_samples: usize) -> Arc<Self> {
        let metrics = Metrics::new(&node.stats, &node.fanout);
        Arc::new(Self {
            node,
            metrics,
            query_max_samples,
        })
    }
}

/// Shared handler state.
pub type AppState = Arc<Api>;
