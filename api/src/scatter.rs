//! Scatter-gather: every read asks this node's store and every live peer (each within
//! [`SCATTER_TIMEOUT`]), then merges. A member that is down or does not answer in time is named
//! in `unavailable_nodes` and the answer says `partial: true`; it is never presented as complete.

use std::collections::BTreeMap;
use std::time::Duration;

use telemetry_actors::cluster::membership::Status;
use telemetry_actors::cluster::protocol::{
    GpuPart, Request, Response, TelemetryPart, TelemetryQuery,
};
use telemetry_actors::cluster::transport::call_endpoint;
use telemetry_storage::{GpuInfo, RangeCursor, RangeQuery, Store};

use tracing::{info_span, Instrument};

use crate::context::NodeContext;

/// How long a query waits for one peer.
pub const SCATTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the one retry of a peer call that failed at once.
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// Answers from this node and the peers that answered, and the names of those that did not.
pub struct Gathered<T> {
    /// One answer per node that answered (this node's first).
    pub answers: Vec<T>,
    /// Members that are down or did not answer in time, sorted.
    pub unavailable: Vec<String>,
}

/// Asks every live peer `request` concurrently; `pick` keeps the answers of the expected kind.
pub async fn gather<T: Send + 'static>(
    node: &NodeContext,
    local: T,
    request: Request,
    pick: fn(Response) -> Option<T>,
) -> Gathered<T> {
    let view = node.cluster_view();
    let mut calls = tokio::task::JoinSet::new();
    let mut unavailable = Vec::new();
    for peer in &view.peers {
        match (&peer.endpoint, peer.status) {
            (Some(endpoint), Status::Up) => {
                let (endpoint, request, name) =
                    (endpoint.clone(), request.clone(), peer.info.name.clone());
                let view = node.view.clone();
                let span = info_span!("scatter.call", peer = %name);
                calls.spawn(
                    async move {
                        let started = std::time::Instant::now();
                        let mut answer = call_endpoint(&endpoint, &request, SCATTER_TIMEOUT).await;
                        // A call that failed fast hit a session ractor_cluster just replaced (two
                        // nodes dialled each other): retry once on the endpoint the view has now.
                        if answer.is_none() && started.elapsed() < SCATTER_TIMEOUT / 2 {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            let fresh = view.and_then(|v| {
                                v.borrow()
                                    .peers
                                    .iter()
                                    .find(|p| p.info.name == name)
                                    .and_then(|p| p.endpoint.clone())
                            });
                            if let Some(e) = fresh {
                                let left = SCATTER_TIMEOUT.saturating_sub(started.elapsed());
                                answer = call_endpoint(&e, &request, left).await;
                            }
                        }
                        (name, answer.and_then(pick))
                    }
                    .instrument(span),
                );
            }
            _ => unavailable.push(peer.info.name.clone()),
        }
    }
    let mut answers = vec![local];
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((_, Some(a))) => answers.push(a),
            Ok((name, None)) => unavailable.push(name),
            Err(_) => {}
        }
    }
    unavailable.sort();
    if !unavailable.is_empty() {
        node.metrics.partial(request_kind(&request));
    }
    Gathered {
        answers,
        unavailable,
    }
}

/// A short name of a request's kind, for metrics and spans.
pub fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Gpus => "gpus",
        Request::Gpu(_) => "gpu",
        Request::Metrics => "metrics",
        Request::Telemetry(_) => "telemetry",
        Request::Latest { .. } => "latest",
        Request::Steps { .. } => "steps",
        Request::Status => "cluster",
        Request::Hello(_)
        | Request::Ping(_)
        | Request::Peers
        | Request::Append { .. }
        | Request::Decommission { .. } => "other",
    }
}

/// This node's GPUs.
pub fn local_gpus(store: &Store) -> Vec<GpuInfo> {
    store.gpus()
}

/// This node's view of one GPU.
pub fn local_gpu(store: &Store, uuid: &str) -> Option<GpuPart> {
    store.gpu(uuid).map(|d| GpuPart {
        info: d.info,
        metrics: d.metrics,
        first: d.first_timestamp,
        last: d.last_timestamp,
    })
}

/// This node's page of a GPU's samples.
pub fn local_telemetry(store: &Store, q: &TelemetryQuery) -> Result<Option<TelemetryPart>, String> {
    let page = store
        .range(&RangeQuery {
            uuid: &q.uuid,
            metrics: &q.metrics,
            start: q.start,
            end: q.end,
            limit: q.limit as usize,
            cursor: q
                .cursor
                .clone()
                .map(|(timestamp, metric)| RangeCursor { timestamp, metric }),
        })
        .map_err(|e| e.to_string())?;
    Ok(page.map(|p| TelemetryPart {
        metrics: p.metrics.iter().map(|m| m.to_string()).collect(),
        points: p
            .points
            .iter()
            .map(|pt| (pt.timestamp, pt.metric, pt.value))
            .collect(),
        more: p.next.is_some(),
    }))
}

/// GPUs of all answers, one per UUID, sorted by UUID.
pub fn merge_gpus(answers: Vec<Vec<GpuInfo>>) -> Vec<GpuInfo> {
    let mut by: BTreeMap<String, GpuInfo> = BTreeMap::new();
    for g in answers.into_iter().flatten() {
        by.entry(g.uuid.clone()).or_insert(g);
    }
    by.into_values().collect()
}

/// One GPU from every node that knows it: metrics united, the widest time span, and the
/// attributes of the node with the latest sample.
pub fn merge_gpu(answers: Vec<Option<GpuPart>>) -> Option<GpuPart> {
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

/// Points of all pages merged by (timestamp, metric), a sample held by two nodes once: the
/// first `limit`, as (timestamp, index into the merged metric names, value), and whether more
/// exist anywhere. One answering node's page is taken as it is (already ordered); several are
/// merged with their metric names mapped to one sorted table, so no point carries a string.
pub fn merge_telemetry(mut parts: Vec<TelemetryPart>, limit: usize) -> TelemetryPart {
    let mut more = parts.iter().any(|p| p.more);
    parts.retain(|p| !p.points.is_empty());
    if parts.len() <= 1 {
        let mut part = parts.pop().unwrap_or(TelemetryPart {
            metrics: Vec::new(),
            points: Vec::new(),
            more,
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
        }
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
        let merged = merge_telemetry(vec![a.clone(), b.clone()], 10);
        let want: Vec<(i64, String)> = [(1, "T"), (2, "T"), (3, "T"), (3, "U"), (4, "T")]
            .iter()
            .map(|(t, m)| (*t, m.to_string()))
            .collect();
        assert_eq!(names(&merged), want);
        assert!(!merged.more);
        // Metric tables that differ between nodes map to one.
        let c = part(&[(5, "A", 0.5), (3, "U", 30.0)], false);
        let merged = merge_telemetry(vec![b.clone(), c], 10);
        assert_eq!(merged.metrics, ["A", "T", "U"]);
        assert_eq!(
            names(&merged)[2..],
            [
                (3, "U".to_string()),
                (4, "T".to_string()),
                (5, "A".to_string())
            ]
        );
        let merged = merge_telemetry(vec![a.clone(), b], 3);
        assert_eq!(merged.points.len(), 3);
        assert!(merged.more, "a page cut at the limit says so");
        let one = merge_telemetry(vec![part(&[(1, "T", 1.0)], true)], 10);
        assert!(one.more, "a node with more says so");
        let cut = merge_telemetry(vec![a, part(&[], false)], 2);
        assert_eq!(names(&cut), [(1, "T".to_string()), (3, "T".to_string())]);
        assert!(cut.more);
    }

    #[test]
    fn gpu_parts_merge_spans_and_metrics() {
        let info = |host: &str| GpuInfo {
            uuid: "GPU-1".into(),
            hostname: host.into(),
            gpu_index: 0,
            device: "nvidia0".into(),
            model: "H100".into(),
            container: None,
            pod: None,
            namespace: None,
        };
        let merged = merge_gpu(vec![
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
        assert!(merge_gpu(vec![None, None]).is_none());
    }
}
