//! One GPU's metrics averaged per step, for charts over long ranges: each member's sums and
//! counts per step add up (one copy) or the fullest copy of each step counts (replicas).

use std::collections::BTreeMap;

use telemetry_actors::cluster::protocol::{Request, Response, StepsPart};
use telemetry_storage::{StorageError, Store};

use crate::answer::{Answer, QueryError};
use crate::fanout::gather;
use crate::node::NodeContext;

/// Per metric name, per step start (ms): the sum and the count of the samples in the step.
pub type StepTable = BTreeMap<String, BTreeMap<i64, (f64, u32)>>;

/// A window `[start, end]` cut into steps of `step` ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Inclusive start (ms since the epoch).
    pub start: i64,
    /// Inclusive end (ms since the epoch).
    pub end: i64,
    /// Step (ms, > 0).
    pub step: i64,
}

/// The GPU's steps of `metrics` (all if empty) over `window`, from every member.
pub async fn run(
    node: &NodeContext,
    uuid: &str,
    metrics: Vec<String>,
    window: Window,
) -> Result<Answer<StepTable>, QueryError> {
    let store = node.store.clone();
    let (u, m) = (uuid.to_string(), metrics.clone());
    let local = tokio::task::spawn_blocking(move || local(&store, &u, &m, window)).await??;
    let request = Request::Steps {
        uuid: uuid.to_string(),
        metrics,
        start: window.start,
        end: window.end,
        step: window.step,
    };
    let g = gather(node, local, request, |r| match r {
        Response::Steps(v) => Some(v),
        _ => None,
    })
    .await;
    let parts: Vec<Vec<StepsPart>> = g.answers.into_iter().flatten().collect();
    if parts.is_empty() {
        return Err(QueryError::UnknownGpu {
            uuid: uuid.to_string(),
            coverage: g.coverage,
        });
    }
    let replicated = node.router.replication().factor > 1;
    Ok(Answer {
        value: merge(parts, replicated),
        coverage: g.coverage,
    })
}

/// This node's steps of one GPU (`None`: it does not know the GPU).
pub fn local(
    store: &Store,
    uuid: &str,
    metrics: &[String],
    w: Window,
) -> Result<Option<Vec<StepsPart>>, StorageError> {
    let steps = store.steps(uuid, metrics, w.start, w.end, w.step)?;
    Ok(steps.map(|v| v.into_iter().map(|s| (s.metric, s.steps)).collect()))
}

/// The members' steps as one. With one copy (`replicated` false) sums and counts add up: a
/// node holds each sample once (during an ownership move a sample on two nodes is counted
/// twice, a small bias of the mean at worst). With replicas every holder has the same samples,
/// so each step is taken from the member that counted most in it (its fullest copy): exact
/// whenever one member holds all of the step's samples, as every replica does once repaired.
pub fn merge(parts: Vec<Vec<StepsPart>>, replicated: bool) -> StepTable {
    let mut merged = StepTable::new();
    for (metric, steps) in parts.into_iter().flatten() {
        let m = merged.entry(metric).or_default();
        for (t, sum, n) in steps {
            let e = m.entry(t).or_insert((0.0, 0));
            if !replicated {
                e.0 += sum;
                e.1 += n;
            } else if n > e.1 {
                *e = (sum, n);
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_counts_add_up_per_step() {
        let a = vec![("T".to_string(), vec![(0, 10.0, 2), (60, 4.0, 1)])];
        let b = vec![("T".to_string(), vec![(0, 5.0, 1)])];
        let m = merge(vec![a.clone(), b.clone()], false);
        assert_eq!(m["T"][&0], (15.0, 3));
        assert_eq!(m["T"][&60], (4.0, 1));
        // Replicas: the fullest copy of each step, never the sum of copies.
        let m = merge(vec![a.clone(), a.clone(), b], true);
        assert_eq!(m["T"][&0], (10.0, 2));
        assert_eq!(m["T"][&60], (4.0, 1));
    }
}
