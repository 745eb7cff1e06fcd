//! The fleet's GPUs and one GPU: known to every node that stored a sample of it.

use std::collections::BTreeMap;

use telemetry_actors::cluster::protocol::{Request, Response};
use telemetry_storage::{GpuInfo, Store};

pub use telemetry_actors::cluster::protocol::GpuPart;

use crate::answer::{Answer, QueryError};
use crate::fanout::gather;
use crate::node::NodeContext;

/// Every GPU any member knows, one per UUID, sorted by UUID.
pub async fn list(node: &NodeContext) -> Answer<Vec<GpuInfo>> {
    let g = gather(node, local_list(&node.store), Request::Gpus, |r| match r {
        Response::Gpus(v) => Some(v),
        _ => None,
    })
    .await;
    Answer {
        value: merge_list(g.answers),
        coverage: g.coverage,
    }
}

/// One GPU as every member that knows it describes it, merged.
pub async fn one(node: &NodeContext, uuid: &str) -> Result<Answer<GpuPart>, QueryError> {
    let local = local_one(&node.store, uuid);
    let g = gather(node, local, Request::Gpu(uuid.to_string()), |r| match r {
        Response::Gpu(v) => Some(v),
        _ => None,
    })
    .await;
    match merge_one(g.answers) {
        Some(value) => Ok(Answer {
            value,
            coverage: g.coverage,
        }),
        None => Err(QueryError::UnknownGpu {
            uuid: uuid.to_string(),
            coverage: g.coverage,
        }),
    }
}

/// This node's GPUs.
pub fn local_list(store: &Store) -> Vec<GpuInfo> {
    store.gpus()
}

/// This node's view of one GPU.
pub fn local_one(store: &Store, uuid: &str) -> Option<GpuPart> {
    store.gpu(uuid).map(|d| GpuPart {
        info: d.info,
        metrics: d.metrics,
        first: d.first_timestamp,
        last: d.last_timestamp,
    })
}

/// GPUs of all answers, one per UUID, sorted by UUID.
pub fn merge_list(answers: Vec<Vec<GpuInfo>>) -> Vec<GpuInfo> {
    let mut by: BTreeMap<String, GpuInfo> = BTreeMap::new();
    for g in answers.into_iter().flatten() {
        by.entry(g.uuid.clone()).or_insert(g);
    }
    by.into_values().collect()
}

/// One GPU from every node that knows it: metrics united, the widest time span, and the
/// attributes of the node with the latest sample.
pub fn merge_one(answers: Vec<Option<GpuPart>>) -> Option<GpuPart> {
    let mut parts: Vec<GpuPart> = answers.into_iter().flatten().collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.last));
    let mut it = parts.into_iter();
    let mut out = it.next()?;
    for p in it {
        out.metrics.extend(p.metrics);
        out.first = match (out.first, p.first) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        out.last = out.last.max(p.last);
    }
    out.metrics.sort();
    out.metrics.dedup();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_parts_merge_spans_and_metrics() {
        let info = |host: &str| GpuInfo {
            uuid: "GPU-1".into(),
            hostname: host.into(),
            ..GpuInfo::default()
        };
        let merged = merge_one(vec![
            Some(GpuPart {
                info: info("old"),
                metrics: vec!["B".into()],
                first: Some(5),
                last: Some(10),
            }),
            None,
            Some(GpuPart {
                info: info("new"),
                metrics: vec!["A".into(), "B".into()],
                first: Some(7),
                last: Some(20),
            }),
        ])
        .expect("known");
        assert_eq!(merged.info.hostname, "new");
        assert_eq!(merged.metrics, ["A", "B"]);
        assert_eq!((merged.first, merged.last), (Some(5), Some(20)));
        assert!(merge_one(vec![None, None]).is_none());
    }
}
