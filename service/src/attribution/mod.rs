//! Who used which GPU: workload spans of the cluster's GPUs in a window, and the per-workload
//! totals (GPU count, GPU time, mean utilisation, energy) computed from them.
//!
//! Each member turns the observations it stores into spans ([`spans`], a pure function) for
//! the GPUs asked, with the GPU's utilisation and power, so only spans cross the network. A GPU
//! held by several members (replicas) is counted once: the copy with the most observations is
//! taken whole. GPUs are asked for in groups of [`GROUP_GPUS`], [`GROUP_CONCURRENCY`] at once.

mod spans;
mod totals;

use std::collections::BTreeMap;
use std::sync::Arc;

use telemetry_actors::cluster::protocol::{
    AttributionAnswer, AttributionQuery, GpuSpans, Request, Response,
};
use telemetry_storage::{Store, Workload, WORKLOAD_METRIC};

pub use spans::{interval, spans, Samples, MAX_GAP};
pub use totals::{totals, Totals, WorkloadKey};

use crate::answer::{Answer, QueryError};
use crate::coverage::Coverage;
use crate::fanout::gather;
use crate::node::NodeContext;

/// The utilisation metric spans average.
pub const UTIL_METRIC: &str = "DCGM_FI_DEV_GPU_UTIL";
/// The power metric (W) spans integrate into energy.
pub const POWER_METRIC: &str = "DCGM_FI_DEV_POWER_USAGE";
/// Most spans one member puts in an answer (about 120 bytes each, well under the 8 MiB
/// message); past it the answer is incomplete and the query is refused as too wide.
pub const MAX_ANSWER_SPANS: usize = 40_000;
/// Most samples one member reads for one GPU (observations, utilisation and power in the
/// window: 64 MB at most, let go before the next GPU).
pub const MAX_GPU_SAMPLES: usize = 4_000_000;
/// GPUs asked for in one request.
pub const GROUP_GPUS: usize = 64;
/// Requests in flight for one attribution query.
pub const GROUP_CONCURRENCY: usize = 4;

/// This node's spans of the GPUs asked (those it stores observations of).
pub fn local(store: &Store, q: &AttributionQuery) -> Result<AttributionAnswer, QueryError> {
    let metrics = [WORKLOAD_METRIC, UTIL_METRIC, POWER_METRIC].map(String::from);
    let mut out = AttributionAnswer {
        gpus: Vec::new(),
        complete: true,
    };
    let mut held = 0;
    for uuid in &q.uuids {
        let Some(w) = store.series_window(uuid, &metrics, (q.start, q.end), MAX_GPU_SAMPLES)?
        else {
            continue;
        };
        let get = |m: &str| {
            w.series
                .iter()
                .find(|(n, _)| **n == *m)
                .map_or(&[][..], |(_, p)| p.as_slice())
        };
        let observed = get(WORKLOAD_METRIC);
        if observed.is_empty() {
            continue;
        }
        let names: BTreeMap<u64, Workload> = store
            .workloads_named(observed.iter().map(|o| o.1))?
            .into_iter()
            .map(|w| (w.id(), w))
            .collect();
        let samples = Samples {
            observed,
            util: get(UTIL_METRIC),
            power: get(POWER_METRIC),
        };
        let mut found = spans(samples, |id| names.get(&id));
        if let Some((ns, pod)) = &q.pod {
            found.retain(|s| s.workload.namespace == *ns && s.workload.pod == *pod);
        }
        held += found.len();
        out.gpus.push(GpuSpans {
            uuid: uuid.clone(),
            observations: observed.len() as u64,
            spans: found,
        });
        if held > MAX_ANSWER_SPANS || w.samples > MAX_GPU_SAMPLES {
            out.complete = false;
            break;
        }
    }
    Ok(out)
}

/// The members' answers as one: of several copies of a GPU, the one with the most
/// observations (the first of equals).
pub fn merge(answers: Vec<AttributionAnswer>) -> AttributionAnswer {
    let complete = answers.iter().all(|a| a.complete);
    let mut order: Vec<String> = Vec::new();
    let mut best: BTreeMap<String, GpuSpans> = BTreeMap::new();
    for g in answers.into_iter().flat_map(|a| a.gpus) {
        match best.get(&g.uuid) {
            None => {
                order.push(g.uuid.clone());
                best.insert(g.uuid.clone(), g);
            }
            Some(held) if g.observations > held.observations => {
                best.insert(g.uuid.clone(), g);
            }
            Some(_) => {}
        }
    }
    AttributionAnswer {
        gpus: order.into_iter().filter_map(|u| best.remove(&u)).collect(),
        complete,
    }
}

/// The spans of the GPUs in `[start, end]` (all the cluster's GPUs when `uuids` is `None`),
/// only those of `pod` when given.
pub async fn read(
    node: &Arc<NodeContext>,
    uuids: Option<Vec<String>>,
    (start, end): (i64, i64),
    pod: Option<(String, String)>,
) -> Result<Answer<Vec<GpuSpans>>, QueryError> {
    let (uuids, mut coverage) = match uuids {
        Some(u) => (u, Coverage::full(node.router.replication().write_quorum)),
        None => {
            let listed = crate::query::gpus::list(node).await;
            let uuids = listed.value.into_iter().map(|g| g.uuid).collect();
            (uuids, listed.coverage)
        }
    };
    let mut groups = uuids.chunks(GROUP_GPUS).map(<[String]>::to_vec);
    let mut calls = tokio::task::JoinSet::new();
    let mut gpus = Vec::new();
    loop {
        while calls.len() < GROUP_CONCURRENCY {
            let Some(group) = groups.next() else { break };
            let q = AttributionQuery {
                uuids: group,
                start,
                end,
                pod: pod.clone(),
            };
            let node = node.clone();
            calls.spawn(async move { group_read(&node, q).await });
        }
        let Some(done) = calls.join_next().await else {
            break;
        };
        let a = done??;
        coverage = coverage.join(a.coverage);
        gpus.extend(a.value);
    }
    Ok(Answer {
        value: gpus,
        coverage,
    })
}

async fn group_read(
    node: &NodeContext,
    q: AttributionQuery,
) -> Result<Answer<Vec<GpuSpans>>, QueryError> {
    let store = node.store.clone();
    let asked = q.clone();
    let local = tokio::task::spawn_blocking(move || local(&store, &asked)).await??;
    let g = gather(node, local, Request::Attribution(q), |r| match r {
        Response::Attribution(v) => Some(v),
        _ => None,
    })
    .await;
    let merged = merge(g.answers);
    if !merged.complete {
        return Err(QueryError::TooLarge(format!(
            "the window holds more than {MAX_ANSWER_SPANS} workload spans for {GROUP_GPUS} GPUs; \
             narrow it"
        )));
    }
    Ok(Answer {
        value: merged.gpus,
        coverage: g.coverage,
    })
}
