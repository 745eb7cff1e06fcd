//! The fleet table: a page of GPUs with the newest sample of each metric, newest wins across
//! members (a GPU's series can sit on two nodes after an ownership move).

use std::collections::BTreeMap;

use telemetry_actors::cluster::protocol::{LatestPart, Request, Response};
use telemetry_storage::{GpuInfo, Store};

use crate::answer::{Answer, QueryError};
use crate::fanout::gather;
use crate::node::NodeContext;
use crate::query::gpus;

/// Newest `(timestamp, value)` per metric name.
pub type Newest = BTreeMap<String, (i64, f64)>;

/// A page of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPage {
    /// GPUs known to the cluster (all pages).
    pub total: usize,
    /// The page's GPUs in UUID order, each with its newest values.
    pub gpus: Vec<(GpuInfo, Newest)>,
}

/// GPUs `offset..offset + limit` (by UUID) with their newest values of `metrics` (all if empty).
pub async fn fleet(
    node: &NodeContext,
    offset: usize,
    limit: usize,
    metrics: Vec<String>,
) -> Result<Answer<FleetPage>, QueryError> {
    let listed = gpus::list(node).await;
    let total = listed.value.len();
    let page: Vec<GpuInfo> = listed.value.into_iter().skip(offset).take(limit).collect();
    let uuids: Vec<String> = page.iter().map(|g| g.uuid.clone()).collect();
    let store = node.store.clone();
    let (u, m) = (uuids.clone(), metrics.clone());
    let local = tokio::task::spawn_blocking(move || local(&store, &u, &m)).await?;
    let l = gather(
        node,
        local,
        Request::Latest { uuids, metrics },
        |r| match r {
            Response::Latest(v) => Some(v),
            _ => None,
        },
    )
    .await;
    let mut newest = merge(l.answers);
    let coverage = listed.coverage.join(l.coverage);
    let gpus = page
        .into_iter()
        .map(|info| {
            let values = newest.remove(&info.uuid).unwrap_or_default();
            (info, values)
        })
        .collect();
    Ok(Answer {
        value: FleetPage { total, gpus },
        coverage,
    })
}

/// This node's newest samples of these GPUs.
pub fn local(store: &Store, uuids: &[String], metrics: &[String]) -> Vec<LatestPart> {
    uuids
        .iter()
        .filter_map(|u| {
            let latest = store.latest(u, metrics).ok()??;
            let values = latest
                .into_iter()
                .map(|l| (l.metric, l.timestamp, l.value))
                .collect();
            Some((u.clone(), values))
        })
        .collect()
}

/// The members' newest values per GPU: the newest sample of each metric wins.
pub fn merge(answers: Vec<Vec<LatestPart>>) -> BTreeMap<String, Newest> {
    let mut newest: BTreeMap<String, Newest> = BTreeMap::new();
    for (uuid, values) in answers.into_iter().flatten() {
        let per = newest.entry(uuid).or_default();
        for (metric, t, v) in values {
            let e = per.entry(metric).or_insert((t, v));
            if t > e.0 {
                *e = (t, v);
            }
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_sample_of_each_metric_wins_across_members() {
        let a = vec![(
            "GPU-1".to_string(),
            vec![("T".to_string(), 10, 1.0), ("U".to_string(), 30, 3.0)],
        )];
        let b = vec![
            ("GPU-1".to_string(), vec![("T".to_string(), 20, 2.0)]),
            ("GPU-2".to_string(), vec![("T".to_string(), 5, 0.5)]),
        ];
        let m = merge(vec![a, b]);
        assert_eq!(m["GPU-1"]["T"], (20, 2.0));
        assert_eq!(m["GPU-1"]["U"], (30, 3.0));
        assert_eq!(m["GPU-2"]["T"], (5, 0.5));
    }
}
