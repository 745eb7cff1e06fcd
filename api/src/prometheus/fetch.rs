//! Reading the series a PromQL plan needs from the cluster: the GPUs and metrics a selector
//! picks (labels as dcgm-exporter names them), and their samples in the plan's window, through
//! the service's scatter-gather reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::VectorSelector;
use telemetry_actors::cluster::protocol::SeriesQuery;
use telemetry_actors::dcgm::labels as dcgm_labels;
use telemetry_promql::{Fetched, Selection};
use telemetry_service::query::telemetry::{self, TelemetryQuery};
use telemetry_service::query::{gpus, metrics, series};
use telemetry_service::{Coverage, NodeContext, QueryError};
use telemetry_storage::{GpuInfo, Workload, WORKLOAD_METRIC};

use super::{attribute, Labels};

/// Most samples one query may read by default (`--query-max-samples`); beyond the bound the
/// query is refused rather than run unbounded.
pub const MAX_PROM_SAMPLES: usize = 5_000_000;

/// Groups of GPUs read at once for one selection (each read is a scatter-gather over the
/// members, and one blocking task at each).
pub const FETCH_CONCURRENCY: usize = 4;

/// GPUs per whole-series read: a dashboard's 30 minutes of one metric at 1 s is 1,800 samples a
/// GPU, so a group's answer is well under the member's bound and several groups use the cores.
pub const SERIES_GROUP_GPUS: usize = 32;

/// Reads every selection of a plan; the series keyed as the evaluator looks them up.
pub async fn fetch(
    node: &Arc<NodeContext>,
    selections: &[Selection],
    max_samples: usize,
) -> Result<(Fetched, Coverage), String> {
    let mut fetched = Fetched::default();
    let listing = Listing::of(node).await;
    let mut coverage = listing.coverage.clone();
    let budget = Arc::new(AtomicUsize::new(max_samples));
    for s in selections {
        let window = (s.start, s.end);
        let mut picked = listing.select(&s.selector)?;
        let deferred: Vec<Matcher> = s
            .selector
            .matchers
            .matchers
            .iter()
            .filter(|m| attribute::is_workload_matcher(m))
            .cloned()
            .collect();
        // Each GPU's observations label its samples: read with them, or before them when
        // they pick the GPUs.
        let (mut read, metrics) = if attribute::idle_passes(&deferred) {
            (Read::default(), vec![WORKLOAD_METRIC.to_string()])
        } else {
            let read = observed_first(node, &mut picked, &deferred, window, &budget).await?;
            (read, Vec::new())
        };
        let groups = per_metrics(by_metrics(&picked, &metrics));
        read.join(read_all(node, groups, window, &budget).await?);
        if let Some(c) = read.coverage.take() {
            coverage = coverage.join(c);
        }
        let mut series = Vec::new();
        for (labels, uuid, metric) in picked {
            let Some(points) = read.data.remove(&(uuid.clone(), metric)) else {
                continue;
            };
            let observed = read
                .data
                .get(&(uuid, WORKLOAD_METRIC.to_string()))
                .map_or(&[][..], Vec::as_slice);
            series.extend(attribute::split(
                labels,
                points,
                observed,
                &read.names,
                &deferred,
            ));
        }
        fetched.insert(&s.selector, series);
    }
    Ok((fetched, coverage))
}

/// When only samples of some workload can match (`namespace="ml"`, `pod!=""`): reads the
/// picked GPUs' observations and keeps the GPUs that carried a matching workload in the
/// window, so a pod's query reads its GPUs rather than the fleet.
async fn observed_first(
    node: &Arc<NodeContext>,
    picked: &mut Vec<(Labels, String, String)>,
    matchers: &[Matcher],
    window: (i64, i64),
    budget: &Arc<AtomicUsize>,
) -> Result<Read, String> {
    let uuids: BTreeSet<String> = picked.iter().map(|p| p.1.clone()).collect();
    let group = (
        vec![WORKLOAD_METRIC.to_string()],
        uuids.into_iter().collect(),
    );
    let read = read_all(node, per_metrics([group]), window, budget).await?;
    picked.retain(|p| {
        let observed = read.data.get(&(p.1.clone(), WORKLOAD_METRIC.to_string()));
        attribute::any_passes(
            observed.map_or(&[][..], Vec::as_slice),
            &read.names,
            matchers,
        )
    });
    Ok(read)
}

/// The picked GPUs by the metrics each reads (`with` and its picked ones): GPUs asking for
/// the same metrics share requests.
fn by_metrics(
    picked: &[(Labels, String, String)],
    with: &[String],
) -> BTreeMap<Vec<String>, Vec<String>> {
    let mut by_gpu: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (_, uuid, metric) in picked {
        by_gpu
            .entry(uuid)
            .or_insert_with(|| with.to_vec())
            .push(metric.clone());
    }
    let mut out: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for (uuid, metrics) in by_gpu {
        out.entry(metrics).or_default().push(uuid.to_string());
    }
    out
}

/// Groups of at most [`SERIES_GROUP_GPUS`] GPUs, each with the metrics its GPUs ask for.
fn per_metrics(
    by_metrics: impl IntoIterator<Item = (Vec<String>, Vec<String>)>,
) -> Vec<(Vec<String>, Vec<String>)> {
    let mut groups = Vec::new();
    for (metrics, uuids) in by_metrics {
        for chunk in uuids.chunks(SERIES_GROUP_GPUS) {
            groups.push((metrics.clone(), chunk.to_vec()));
        }
    }
    groups
}

/// Samples by (GPU, metric), the workloads their observations name, and who answered.
#[derive(Default)]
struct Read {
    data: FxHashMap<(String, String), Vec<(i64, f64)>>,
    names: attribute::Names,
    coverage: Option<Coverage>,
}

impl Read {
    fn join(&mut self, other: Read) {
        self.data.extend(other.data);
        self.names.extend(other.names);
        self.coverage = match (self.coverage.take(), other.coverage) {
            (Some(a), Some(b)) => Some(a.join(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Reads groups of (metrics, GPUs), [`FETCH_CONCURRENCY`] at a time.
async fn read_all(
    node: &Arc<NodeContext>,
    groups: Vec<(Vec<String>, Vec<String>)>,
    window: (i64, i64),
    budget: &Arc<AtomicUsize>,
) -> Result<Read, String> {
    let mut groups = groups.into_iter();
    let mut out = Read::default();
    let mut reads = tokio::task::JoinSet::new();
    loop {
        while reads.len() < FETCH_CONCURRENCY {
            let Some((metrics, uuids)) = groups.next() else {
                break;
            };
            let (node, budget) = (node.clone(), budget.clone());
            reads.spawn(async move { group(&node, uuids, metrics, window, &budget).await });
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        let (data, workloads, c) = done.map_err(|e| e.to_string())??;
        out.join(Read {
            data: data.into_iter().collect(),
            names: attribute::names(workloads),
            coverage: Some(c),
        });
    }
    Ok(out)
}

type GroupRead = (
    Vec<((String, String), Vec<(i64, f64)>)>,
    Vec<Workload>,
    Coverage,
);

/// One group's series: one whole-series read over the members, or, when a member's answer
/// would not fit a message, each GPU page by page.
async fn group(
    node: &NodeContext,
    uuids: Vec<String>,
    metrics: Vec<String>,
    (start, end): (i64, i64),
    budget: &AtomicUsize,
) -> Result<GroupRead, String> {
    let q = SeriesQuery {
        uuids: uuids.clone(),
        metrics: metrics.clone(),
        start,
        end,
        max_samples: budget.load(Ordering::Acquire) as u64,
    };
    let a = series::read(node, q).await.map_err(|e| e.to_string())?;
    if a.value.complete {
        take(budget, a.value.samples as usize)?;
        let mut workloads = Vec::new();
        let mut read = Vec::new();
        for p in a.value.parts {
            workloads.extend(p.workloads);
            let uuid = p.uuid;
            read.extend(
                p.series
                    .into_iter()
                    .map(|(m, pts)| ((uuid.clone(), m), pts)),
            );
        }
        return Ok((read, workloads, a.coverage));
    }
    if a.value.samples as usize > budget.load(Ordering::Acquire) {
        return Err(over_budget());
    }
    let mut out = Vec::new();
    let mut workloads = Vec::new();
    let mut coverage = a.coverage;
    for uuid in uuids {
        let (read, named, c) = samples(node, &uuid, &metrics, (start, end), budget).await?;
        coverage = coverage.join(c);
        workloads.extend(named);
        out.extend(read.into_iter().map(|(m, pts)| ((uuid.clone(), m), pts)));
    }
    Ok((out, workloads, coverage))
}

fn take(budget: &AtomicUsize, n: usize) -> Result<(), String> {
    budget
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(n))
        .map(|_| ())
        .map_err(|_| over_budget())
}

fn over_budget() -> String {
    "the query reads more samples than this node's --query-max-samples allows; narrow it".into()
}

/// A GPU's labels as dcgm-exporter names them (without `__name__`).
fn labels_of(gpu: &GpuInfo) -> Labels {
    dcgm_labels::labels_of(gpu)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn matches(m: &Matcher, labels: &Labels) -> bool {
    m.is_match(labels.get(&m.name).map_or("", String::as_str))
}

/// The cluster's GPUs and metric names, listed once per query and shared by its selectors.
pub struct Listing {
    gpus: Vec<GpuInfo>,
    metrics: Vec<String>,
    /// Who answered the two listings.
    pub coverage: Coverage,
}

impl Listing {
    /// Lists the cluster's GPUs and metrics (two scatter-gathers).
    pub async fn of(node: &NodeContext) -> Self {
        let g = gpus::list(node).await;
        let m = metrics::list(node).await;
        Self {
            gpus: g.value,
            metrics: m.value,
            coverage: g.coverage.join(m.coverage),
        }
    }

    /// Every (labels, gpu uuid, metric) a selector picks.
    pub fn select(&self, sel: &VectorSelector) -> Result<Vec<(Labels, String, String)>, String> {
        if !sel.matchers.or_matchers.is_empty() || sel.offset.is_some() || sel.at.is_some() {
            return Err("`or` matchers, offset and @ are not supported".into());
        }
        let mut matchers = sel.matchers.matchers.clone();
        if let Some(name) = &sel.name {
            matchers.push(Matcher::new(MatchOp::Equal, "__name__", name));
        }
        // Names first: a selector names one metric or a few, so most GPU label sets are never
        // built.
        let (by_name, by_label): (Vec<&Matcher>, Vec<&Matcher>) =
            matchers.iter().partition(|m| m.name == "__name__");
        // Workload labels belong to samples, not GPUs: the read applies them.
        let by_label: Vec<&Matcher> = by_label
            .into_iter()
            .filter(|m| !attribute::is_workload_matcher(m))
            .collect();
        let names: Vec<&String> = self
            .metrics
            .iter()
            .filter(|n| by_name.iter().all(|m| m.is_match(n)) && *n != WORKLOAD_METRIC)
            .collect();
        let mut out = Vec::new();
        if names.is_empty() {
            return Ok(out);
        }
        for gpu in &self.gpus {
            let base = labels_of(gpu);
            if !by_label.iter().all(|m| matches(m, &base)) {
                continue;
            }
            for &metric in &names {
                let mut labels = base.clone();
                labels.insert("__name__".into(), metric.clone());
                out.push((labels, gpu.uuid.clone(), metric.clone()));
            }
        }
        Ok(out)
    }
}

/// All samples of one GPU's metrics in `[start, end]`, from every node, in time order per
/// metric, with the workloads its observations name.
async fn samples(
    node: &NodeContext,
    uuid: &str,
    metrics: &[String],
    (start, end): (i64, i64),
    budget: &AtomicUsize,
) -> Result<(BTreeMap<String, Vec<(i64, f64)>>, Vec<Workload>, Coverage), String> {
    let mut out: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut workloads = Vec::new();
    let mut cursor: Option<(i64, String)> = None;
    let mut coverage = Coverage::full(node.router.replication().write_quorum);
    loop {
        let q = TelemetryQuery {
            uuid: uuid.to_string(),
            metrics: metrics.to_vec(),
            start,
            end,
            limit: 10_000,
            cursor: cursor.take(),
        };
        let page = match telemetry::page(node, q).await {
            Ok(a) => {
                coverage = coverage.join(a.coverage);
                a.value
            }
            // Listed by a member that has not answered this read: nothing to add.
            Err(QueryError::UnknownGpu { coverage: c, .. }) => {
                coverage = coverage.join(c);
                break;
            }
            Err(e) => return Err(e.to_string()),
        };
        take(budget, page.points.len())?;
        workloads.extend(page.workloads.iter().cloned());
        // Points go to their metric by index: a name lookup per point was a third of the read.
        let mut columns: Vec<Vec<(i64, f64)>> = page
            .metrics
            .iter()
            .map(|name| out.remove(name).unwrap_or_default())
            .collect();
        for &(t, m, v) in &page.points {
            if let Some(column) = columns.get_mut(usize::from(m)) {
                column.push((t, v));
            }
        }
        for (name, column) in page.metrics.iter().zip(columns) {
            if !column.is_empty() {
                out.insert(name.clone(), column);
            }
        }
        match (page.more, page.points.last()) {
            (true, Some(last)) => {
                let name = page
                    .metrics
                    .get(usize::from(last.1))
                    .cloned()
                    .unwrap_or_default();
                cursor = Some((last.0, name));
            }
            _ => break,
        }
    }
    Ok((out, workloads, coverage))
}
