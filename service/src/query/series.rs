//! Whole series of several GPUs in a window: what the PromQL engine reads. Each member reads
//! each of its series once, in one blocking task for all the GPUs asked, up to a sample bound;
//! the members' copies of a series (a replica, or what an ownership move left behind) merge by
//! timestamp.
//!
//! A member's answer stays far below the cluster message bound because the caller never asks
//! for more than [`MAX_SERIES_ANSWER_SAMPLES`]; a read that stops at its bound says so
//! (`complete: false`) and the caller reads those GPUs page by page instead.

use std::collections::BTreeMap;

use telemetry_actors::cluster::protocol::{
    Request, Response, SeriesAnswer, SeriesPart, SeriesQuery,
};
use telemetry_storage::{StorageError, Store, Workload, WORKLOAD_METRIC};

use crate::answer::{Answer, QueryError};
use crate::fanout::gather;
use crate::node::NodeContext;

/// Most samples one member puts in an answer: 16 bytes each, so 4.8 MB of the 8 MiB message.
pub const MAX_SERIES_ANSWER_SAMPLES: u64 = 300_000;

/// The cluster's copies of the GPUs' series, merged; the answer is incomplete when a member's
/// read stopped at `max_samples`.
pub async fn read(
    node: &NodeContext,
    mut q: SeriesQuery,
) -> Result<Answer<SeriesAnswer>, QueryError> {
    let store = node.store.clone();
    q.max_samples = q.max_samples.min(MAX_SERIES_ANSWER_SAMPLES);
    let asked = q.clone();
    let local = tokio::task::spawn_blocking(move || local(&store, &asked)).await??;
    let g = gather(node, local, Request::Series(q), |r| match r {
        Response::Series(v) => Some(v),
        _ => None,
    })
    .await;
    Ok(Answer {
        value: merge(g.answers),
        coverage: g.coverage,
    })
}

/// This node's series of the GPUs, read until more than `q.max_samples`.
pub fn local(store: &Store, q: &SeriesQuery) -> Result<SeriesAnswer, StorageError> {
    let max = usize::try_from(q.max_samples).unwrap_or(usize::MAX);
    let mut out = SeriesAnswer {
        complete: true,
        ..SeriesAnswer::default()
    };
    let mut read = 0usize;
    for uuid in &q.uuids {
        let room = max.saturating_sub(read);
        let Some(w) = store.series_window(uuid, &q.metrics, (q.start, q.end), room)? else {
            continue;
        };
        read += w.samples;
        let observed = w.series.iter().filter(|(m, _)| **m == *WORKLOAD_METRIC);
        let workloads =
            store.workloads_named(observed.flat_map(|(_, pts)| pts.iter().map(|p| p.1)))?;
        out.parts.push(SeriesPart {
            uuid: uuid.clone(),
            series: w
                .series
                .into_iter()
                .map(|(m, pts)| (m.to_string(), pts))
                .collect(),
            workloads,
        });
        if read > max {
            out.complete = false;
            break;
        }
    }
    out.samples = read as u64;
    Ok(out)
}

/// The members' answers as one: a series held by several members is the union of their
/// samples, one per timestamp.
pub fn merge(mut answers: Vec<SeriesAnswer>) -> SeriesAnswer {
    if answers.len() == 1 {
        return answers.pop().unwrap_or_default();
    }
    let complete = answers.iter().all(|a| a.complete);
    let mut order: Vec<String> = Vec::new();
    let mut by_gpu: BTreeMap<String, BTreeMap<String, Vec<(i64, f64)>>> = BTreeMap::new();
    let mut workloads: BTreeMap<String, Vec<Workload>> = BTreeMap::new();
    for a in answers {
        for part in a.parts {
            workloads
                .entry(part.uuid.clone())
                .or_default()
                .extend(part.workloads);
            let gpu = by_gpu.entry(part.uuid.clone()).or_insert_with(|| {
                order.push(part.uuid.clone());
                BTreeMap::new()
            });
            for (metric, points) in part.series {
                match gpu.get_mut(&metric) {
                    None => {
                        gpu.insert(metric, points);
                    }
                    Some(held) => {
                        held.extend(points);
                        // Stable: of two copies of a timestamp, the first member's stays.
                        held.sort_by_key(|p| p.0);
                        held.dedup_by_key(|p| p.0);
                    }
                }
            }
        }
    }
    let mut samples = 0u64;
    let parts = order
        .into_iter()
        .filter_map(|uuid| {
            let series: Vec<(String, Vec<(i64, f64)>)> =
                by_gpu.remove(&uuid)?.into_iter().collect();
            samples += series.iter().map(|s| s.1.len() as u64).sum::<u64>();
            let mut workloads = workloads.remove(&uuid).unwrap_or_default();
            workloads.sort();
            workloads.dedup();
            Some(SeriesPart {
                uuid,
                series,
                workloads,
            })
        })
        .collect();
    SeriesAnswer {
        parts,
        samples,
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Given<'a> = (&'a str, &'a str, &'a [(i64, f64)]);

    fn answer(parts: &[Given<'_>], complete: bool) -> SeriesAnswer {
        SeriesAnswer {
            parts: parts
                .iter()
                .map(|(u, m, p)| SeriesPart {
                    uuid: u.to_string(),
                    series: vec![(m.to_string(), p.to_vec())],
                    workloads: vec![],
                })
                .collect(),
            samples: parts.iter().map(|p| p.2.len() as u64).sum(),
            complete,
        }
    }

    #[test]
    fn copies_of_a_series_merge_by_timestamp() {
        let a = answer(&[("GPU-a", "temp", &[(1, 1.0), (3, 3.0)])], true);
        let b = answer(
            &[
                ("GPU-a", "temp", &[(2, 2.0), (3, 3.0)]),
                ("GPU-b", "temp", &[(1, 9.0)]),
            ],
            true,
        );
        let m = merge(vec![a, b]);
        assert!(m.complete);
        assert_eq!(m.samples, 4);
        assert_eq!(m.parts[0].uuid, "GPU-a");
        assert_eq!(
            m.parts[0].series,
            vec![("temp".to_string(), vec![(1, 1.0), (2, 2.0), (3, 3.0)])]
        );
        assert_eq!(m.parts[1].series[0].1, vec![(1, 9.0)]);
    }

    #[test]
    fn one_incomplete_member_makes_the_answer_incomplete() {
        let a = answer(&[("GPU-a", "temp", &[(1, 1.0)])], true);
        let b = answer(&[], false);
        assert!(!merge(vec![a, b]).complete);
        assert!(merge(vec![]).parts.is_empty());
    }
}
