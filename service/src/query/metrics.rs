//! Metric names known to the cluster.

use telemetry_actors::cluster::protocol::{Request, Response};

use crate::answer::Answer;
use crate::fanout::gather;
use crate::node::NodeContext;

/// Every metric name any member stores, sorted, once each.
pub async fn list(node: &NodeContext) -> Answer<Vec<String>> {
    let g = gather(node, node.store.metrics(), Request::Metrics, |r| match r {
        Response::Metrics(v) => Some(v),
        _ => None,
    })
    .await;
    let mut value: Vec<String> = g.answers.into_iter().flatten().collect();
    value.sort();
    value.dedup();
    Answer {
        value,
        coverage: g.coverage,
    }
}
