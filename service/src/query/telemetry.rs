//! A page of one GPU's samples: every member's page of the same window, merged by time.

use telemetry_actors::cluster::protocol::{Request, Response};
use telemetry_storage::{RangeCursor, RangeQuery, Store, Workload, WORKLOAD_METRIC};

pub use telemetry_actors::cluster::protocol::{TelemetryPart, TelemetryQuery};

use crate::answer::{Answer, QueryError};
use crate::fanout::gather;
use crate::node::NodeContext;

/// The first `query.limit` points of the GPU's window after the cursor, from every member.
pub async fn page(
    node: &NodeContext,
    query: TelemetryQuery,
) -> Result<Answer<TelemetryPart>, QueryError> {
    let store = node.store.clone();
    let q = query.clone();
    let local = tokio::task::spawn_blocking(move || local(&store, &q)).await??;
    let (uuid, limit) = (query.uuid.clone(), query.limit as usize);
    let g = gather(node, local, Request::Telemetry(query), |r| match r {
        Response::Telemetry(v) => Some(v),
        _ => None,
    })
    .await;
    let parts: Vec<TelemetryPart> = g.answers.into_iter().flatten().collect();
    if parts.is_empty() {
        return Err(QueryError::UnknownGpu {
            uuid,
            coverage: g.coverage,
        });
    }
    Ok(Answer {
        value: merge(parts, limit),
        coverage: g.coverage,
    })
}

/// This node's page of a GPU's samples (`None`: it does not know the GPU).
pub fn local(
    store: &Store,
    q: &TelemetryQuery,
) -> Result<Option<TelemetryPart>, telemetry_storage::StorageError> {
    let page = store.range(&RangeQuery {
        uuid: &q.uuid,
        metrics: &q.metrics,
        start: q.start,
        end: q.end,
        limit: q.limit as usize,
        cursor: q
            .cursor
            .clone()
            .map(|(timestamp, metric)| RangeCursor { timestamp, metric }),
    })?;
    let Some(p) = page else { return Ok(None) };
    let observations = p.metrics.iter().position(|m| **m == *WORKLOAD_METRIC);
    let workloads = match observations {
        Some(i) => store.workloads_named(
            p.points
                .iter()
                .filter(|pt| usize::from(pt.metric) == i)
                .map(|pt| pt.value),
        )?,
        None => Vec::new(),
    };
    Ok(Some(TelemetryPart {
        metrics: p.metrics.iter().map(|m| m.to_string()).collect(),
        points: p
            .points
            .iter()
            .map(|pt| (pt.timestamp, pt.metric, pt.value))
            .collect(),
        more: p.next.is_some(),
        workloads,
    }))
}

/// The part without [`WORKLOAD_METRIC`]: what a reader who named no metric sees.
pub fn without_observations(mut part: TelemetryPart) -> TelemetryPart {
    let Some(hidden) = part.metrics.iter().position(|m| m == WORKLOAD_METRIC) else {
        return part;
    };
    let hidden = hidden as u16;
    part.metrics.remove(usize::from(hidden));
    part.points.retain(|p| p.1 != hidden);
    for p in &mut part.points {
        if p.1 > hidden {
            p.1 -= 1;
        }
    }
    part.workloads.clear();
    part
}

/// Points of all pages merged by (timestamp, metric), a sample held by two nodes once: the
/// first `limit`, as (timestamp, index into the merged metric names, value), and whether more
/// exist anywhere. One answering node's page is taken as it is (already ordered); several are
/// merged with their metric names mapped to one sorted table, so no point carries a string.
pub fn merge(mut parts: Vec<TelemetryPart>, limit: usize) -> TelemetryPart {
    let mut more = parts.iter().any(|p| p.more);
    parts.retain(|p| !p.points.is_empty());
    if parts.len() <= 1 {
        let mut part = parts.pop().unwrap_or(TelemetryPart {
            metrics: Vec::new(),
            points: Vec::new(),
            more,
            workloads: Vec::new(),
        });
        if part.points.len() > limit {
            part.points.truncate(limit);
            more = true;
        }
        part.more = more;
        return part;
    }
    let mut metrics: Vec<String> = parts
        .iter()
        .flat_map(|p| p.metrics.iter().cloned())
        .collect();
    let mut workloads: Vec<Workload> = parts
        .iter_mut()
        .flat_map(|p| std::mem::take(&mut p.workloads))
        .collect();
    workloads.sort();
    workloads.dedup();
    metrics.sort();
    metrics.dedup();
    let mut all: Vec<(i64, u16, f64)> = Vec::new();
    for p in &parts {
        let map: Vec<Option<u16>> = p
            .metrics
            .iter()
            .map(|m| metrics.binary_search(m).ok().map(|i| i as u16))
            .collect();
        all.extend(p.points.iter().filter_map(|(t, m, v)| {
            map.get(usize::from(*m))
                .copied()
                .flatten()
                .map(|i| (*t, i, *v))
        }));
    }
    // Indices follow the sorted names, so ordering by index is ordering by name.
    all.sort_by_key(|p| (p.0, p.1));
    all.dedup_by(|b, a| a.0 == b.0 && a.1 == b.1);
    if all.len() > limit {
        all.truncate(limit);
        more = true;
    }
    TelemetryPart {
        metrics,
        points: all,
        more,
        workloads,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(points: &[(i64, &str, f64)], more: bool) -> TelemetryPart {
        let mut metrics: Vec<String> = points.iter().map(|p| p.1.to_string()).collect();
        metrics.sort();
        metrics.dedup();
        TelemetryPart {
            points: points
                .iter()
                .map(|(t, m, v)| {
                    let i = metrics.iter().position(|x| x == m).unwrap_or(0) as u16;
                    (*t, i, *v)
                })
                .collect(),
            metrics,
            more,
            workloads: vec![],
        }
    }

    #[test]
    fn hidden_observations_leave_a_page_and_its_indexes_stay_right() {
        let p = part(
            &[
                (1, "A", 1.0),
                (1, WORKLOAD_METRIC, 7.0),
                (1, "z", 2.0),
                (2, "A", 3.0),
            ],
            false,
        );
        let q = without_observations(p);
        assert_eq!(q.metrics, vec!["A".to_string(), "z".to_string()]);
        assert_eq!(q.points, vec![(1, 0, 1.0), (1, 1, 2.0), (2, 0, 3.0)]);
    }

    #[test]
    fn telemetry_pages_merge_by_time_once_and_know_when_there_is_more() {
        let a = part(&[(1, "T", 1.0), (3, "T", 3.0), (3, "U", 30.0)], false);
        // Node b holds one sample that node a holds too (written before an ownership move).
        let b = part(&[(2, "T", 2.0), (3, "T", 3.0), (4, "T", 4.0)], false);
        let names = |m: &TelemetryPart| -> Vec<(i64, String)> {
            m.points
                .iter()
                .map(|p| (p.0, m.metrics[usize::from(p.1)].clone()))
                .collect()
        };
        let merged = merge(vec![a.clone(), b.clone()], 10);
        let want: Vec<(i64, String)> = [(1, "T"), (2, "T"), (3, "T"), (3, "U"), (4, "T")]
            .iter()
            .map(|(t, m)| (*t, m.to_string()))
            .collect();
        assert_eq!(names(&merged), want);
        assert!(!merged.more);
        // Metric tables that differ between nodes map to one.
        let c = part(&[(5, "A", 0.5), (3, "U", 30.0)], false);
        let merged = merge(vec![b.clone(), c], 10);
        assert_eq!(merged.metrics, ["A", "T", "U"]);
        assert_eq!(
            names(&merged)[2..],
            [
                (3, "U".to_string()),
                (4, "T".to_string()),
                (5, "A".to_string())
            ]
        );
        let merged = merge(vec![a.clone(), b], 3);
        assert_eq!(merged.points.len(), 3);
        assert!(merged.more, "a page cut at the limit says so");
        let one = merge(vec![part(&[(1, "T", 1.0)], true)], 10);
        assert!(one.more, "a node with more says so");
        let cut = merge(vec![a, part(&[], false)], 2);
        assert_eq!(names(&cut), [(1, "T".to_string()), (3, "T".to_string())]);
        assert!(cut.more);
    }
}
