//! Aggregations (`sum by (…)`, `topk`, `quantile`, `count_values`, …) and the quantile helpers,
//! as Prometheus 2.42's `aggregation` in `promql/engine.go` and `promql/quantile.go`.

use std::collections::BTreeMap;

use promql_parser::parser::{AggregateExpr, Call, Expr, LabelModifier, VectorSelector};

use crate::error::{EvalError, Result};
use crate::eval::{strip, Evaluator};
use crate::value::{Grid, Labels, StepSeries, Value, METRIC_NAME};

/// The running state of one group at one time.
#[derive(Clone)]
struct Acc {
    value: f64,
    mean: f64,
    count: usize,
    members: Vec<(usize, f64)>,
}

pub(crate) fn eval(ev: &mut Evaluator, a: &AggregateExpr, grid: Grid) -> Result<Value> {
    let op = a.op.to_string().to_lowercase();
    let param = match (&a.param, op.as_str()) {
        (Some(p), "count_values") => match strip(p) {
            Expr::StringLiteral(s) => Param::Label(s.val.clone()),
            _ => {
                return Err(EvalError::Execution(
                    "count_values needs a label name".into(),
                ))
            }
        },
        (Some(p), "topk" | "bottomk" | "quantile") => Param::Number(ev.scalar(p, grid)?),
        (None, _) => Param::None,
        (Some(_), _) => return Err(EvalError::Execution(format!("{op} takes no parameter"))),
    };
    let grouping = Grouping::of(&a.modifier);
    if let Some(what) = Foldable::of(&op, &a.expr) {
        return fold(ev, what, &op, &grouping, param, grid);
    }
    let input = ev.vector(&a.expr, grid)?;
    let out = match (op.as_str(), param) {
        ("topk" | "bottomk", Param::Number(k)) => top(&input, &k, &grouping, op == "topk"),
        ("count_values", Param::Label(l)) => count_values(&input, &l, &grouping, grid.len())?,
        (op, param) => {
            let q = match param {
                Param::Number(q) => q,
                _ => vec![0.0; grid.len()],
            };
            grouped(op, &input, &grouping, &q, grid.len())?
        }
    };
    ev.hold(out.len() * grid.len())?;
    Ok(Value::Vector(out))
}

/// What an aggregation can fold series by series: a selector, or a range function over a
/// selector of one metric (`sum by (pod) (rate(x[5m]))`).
enum Foldable<'e> {
    Selector(&'e VectorSelector),
    Range(&'e Call),
}

impl<'e> Foldable<'e> {
    fn of(op: &str, expr: &'e Expr) -> Option<Self> {
        if !GROUPED.contains(&op) {
            return None;
        }
        match strip(expr) {
            Expr::VectorSelector(sel) => Some(Self::Selector(sel)),
            Expr::Call(c) if crate::functions::is_range_over_one_metric(c) => Some(Self::Range(c)),
            _ => None,
        }
    }
}

/// An aggregation whose input series are folded as they are valued on the grid: only the
/// groups are held. A fleet's GPU series split by workload are many and mostly empty on a long
/// grid (each pod holds a GPU for a few of its steps); held whole they were past
/// [`crate::MAX_POINTS`] long before their groups were.
fn fold(
    ev: &mut Evaluator,
    what: Foldable,
    op: &str,
    grouping: &Grouping,
    param: Param,
    grid: Grid,
) -> Result<Value> {
    let steps = grid.len();
    let mut groups = Groups::new(op, steps)?;
    let mut feed = |ev: &mut Evaluator, labels: &Labels, keeps_name: bool, values: Vec<_>| {
        let mut key = grouping.key(labels);
        if !keeps_name {
            key.remove(METRIC_NAME);
        }
        if groups.add(key, &values) {
            ev.hold(steps)?;
        }
        Ok(())
    };
    match what {
        Foldable::Selector(sel) => {
            ev.each_selected(sel, grid, |ev, labels, values| {
                feed(ev, labels, true, values)
            })?;
        }
        Foldable::Range(c) => crate::functions::each_range_series(ev, c, grid, &mut feed)?,
    }
    let q = match param {
        Param::Number(q) => q,
        Param::None | Param::Label(_) => vec![0.0; steps],
    };
    Ok(Value::Vector(groups.finish(&q)))
}

enum Param {
    None,
    Number(Vec<f64>),
    Label(String),
}

/// `by (…)`, `without (…)` or neither.
struct Grouping {
    labels: Vec<String>,
    without: bool,
}

impl Grouping {
    fn of(m: &Option<LabelModifier>) -> Self {
        match m {
            Some(LabelModifier::Include(l)) => Self {
                labels: l.labels.clone(),
                without: false,
            },
            Some(LabelModifier::Exclude(l)) => Self {
                labels: l.labels.clone(),
                without: true,
            },
            None => Self {
                labels: Vec::new(),
                without: false,
            },
        }
    }

    /// The labels of the group a series belongs to.
    fn key(&self, labels: &Labels) -> Labels {
        if self.without {
            labels
                .iter()
                .filter(|(k, _)| *k != METRIC_NAME && !self.labels.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        } else {
            // By the few names asked, not through every label the series has.
            self.labels
                .iter()
                .filter_map(|k| labels.get_key_value(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }
    }
}

/// The aggregations folded one series at a time ([`Groups`]).
const GROUPED: [&str; 9] = [
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "quantile",
];

fn grouped(
    op: &str,
    input: &[StepSeries],
    grouping: &Grouping,
    q: &[f64],
    steps: usize,
) -> Result<Vec<StepSeries>> {
    let mut groups = Groups::new(op, steps)?;
    for s in input {
        groups.add(grouping.key(&s.labels), &s.values);
    }
    Ok(groups.finish(q))
}

/// The running state of each group at each time, fed series by series: a group's values at
/// a time are folded in the order their series come, as Prometheus folds a step's vector.
struct Groups<'o> {
    op: &'o str,
    steps: usize,
    by: BTreeMap<Labels, Vec<Option<Acc>>>,
}

impl<'o> Groups<'o> {
    fn new(op: &'o str, steps: usize) -> Result<Self> {
        if !GROUPED.contains(&op) {
            return Err(EvalError::Unsupported(format!("the aggregation {op}")));
        }
        Ok(Self {
            op,
            steps,
            by: BTreeMap::new(),
        })
    }

    /// Folds one series' values into its group; true when the group is new.
    fn add(&mut self, key: Labels, values: &[Option<f64>]) -> bool {
        let (op, steps) = (self.op, self.steps);
        let mut new = false;
        let accs = self.by.entry(key).or_insert_with(|| {
            new = true;
            vec![None; steps]
        });
        for (acc, v) in accs.iter_mut().zip(values) {
            if let Some(v) = *v {
                *acc = Some(match acc.take() {
                    None => first(op, v),
                    Some(a) => add(op, a, v),
                });
            }
        }
        new
    }

    fn finish(self, q: &[f64]) -> Vec<StepSeries> {
        let op = self.op;
        self.by
            .into_iter()
            .map(|(labels, accs)| StepSeries {
                labels,
                values: accs
                    .into_iter()
                    .zip(q)
                    .map(|(a, &q)| a.map(|a| finish(op, a, q)))
                    .collect(),
            })
            .collect()
    }
}

fn first(op: &str, v: f64) -> Acc {
    Acc {
        value: match op {
            "stddev" | "stdvar" => 0.0,
            "group" => 1.0,
            _ => v,
        },
        mean: v,
        count: 1,
        members: if op == "quantile" {
            vec![(0, v)]
        } else {
            Vec::new()
        },
    }
}

fn add(op: &str, mut a: Acc, v: f64) -> Acc {
    match op {
        "sum" => a.value += v,
        "avg" => {
            a.count += 1;
            let n = a.count as f64;
            let same_inf = a.mean.is_infinite() && v.is_infinite() && (a.mean > 0.0) == (v > 0.0);
            let keep = a.mean.is_infinite() && !v.is_infinite() && !v.is_nan();
            if !same_inf && !keep {
                a.mean += v / n - a.mean / n;
            }
        }
        "max" if a.value < v || a.value.is_nan() => a.value = v,
        "min" if a.value > v || a.value.is_nan() => a.value = v,
        "count" => a.count += 1,
        "stddev" | "stdvar" => {
            a.count += 1;
            let delta = v - a.mean;
            a.mean += delta / a.count as f64;
            a.value += delta * (v - a.mean);
        }
        "quantile" => a.members.push((0, v)),
        _ => {}
    }
    a
}

fn finish(op: &str, a: Acc, q: f64) -> f64 {
    match op {
        "avg" => a.mean,
        "count" => a.count as f64,
        "stdvar" => a.value / a.count as f64,
        "stddev" => (a.value / a.count as f64).sqrt(),
        "quantile" => {
            let mut v: Vec<f64> = a.members.into_iter().map(|m| m.1).collect();
            quantile(q, &mut v)
        }
        _ => a.value,
    }
}

/// `topk`/`bottomk`: at each time, the `k` largest (smallest) values of each group, each in
/// its own series (labels kept whole).
fn top(input: &[StepSeries], k: &[f64], grouping: &Grouping, largest: bool) -> Vec<StepSeries> {
    let steps = k.len();
    let mut out: Vec<StepSeries> = input
        .iter()
        .map(|s| StepSeries {
            labels: s.labels.clone(),
            values: vec![None; steps],
        })
        .collect();
    let mut groups: BTreeMap<Labels, Vec<usize>> = BTreeMap::new();
    for (i, s) in input.iter().enumerate() {
        groups.entry(grouping.key(&s.labels)).or_default().push(i);
    }
    // Prometheus feeds a selector's series in label order; ties are kept as its heap keeps them.
    for members in groups.values_mut() {
        members.sort_by(|&a, &b| input[a].labels.cmp(&input[b].labels));
    }
    for (t, k) in k.iter().enumerate() {
        let k = *k as i64;
        if k < 1 {
            continue;
        }
        for members in groups.values() {
            let present = members
                .iter()
                .filter_map(|&m| Some((m, input[m].values[t]?)));
            for (m, v) in kept(present, k as usize, largest) {
                out[m].values[t] = Some(v);
            }
        }
    }
    out.retain(|s| s.values.iter().any(Option::is_some));
    out
}

/// The `k` members Prometheus 2.42's `topk`/`bottomk` keep, fed in order: its bounded heap
/// (Go's `container/heap` with NaN always "less"), so that among equal values the same
/// series survive.
fn kept(members: impl Iterator<Item = (usize, f64)>, k: usize, largest: bool) -> Vec<(usize, f64)> {
    // `less(a, b)`: a belongs nearer the top (the first to be evicted).
    let less = |a: f64, b: f64| a.is_nan() || if largest { a < b } else { a > b };
    let mut heap: Vec<(usize, f64)> = Vec::with_capacity(k);
    for (m, v) in members {
        let evicts = heap
            .first()
            .is_some_and(|top| top.1.is_nan() || if largest { top.1 < v } else { top.1 > v });
        if heap.len() < k {
            heap.push((m, v));
            sift_up(&mut heap, &less);
        } else if evicts {
            // Pop then push equals replacing the top and sifting it down, except that Go's
            // pop sifts the last element down first; follow it exactly.
            let n = heap.len() - 1;
            heap.swap(0, n);
            sift_down(&mut heap[..n], &less);
            heap[n] = (m, v);
            sift_up(&mut heap, &less);
        }
    }
    heap
}

/// Go's `heap.up(h, len(h) - 1)`.
fn sift_up(heap: &mut [(usize, f64)], less: &impl Fn(f64, f64) -> bool) {
    let mut j = heap.len().saturating_sub(1);
    while j > 0 {
        let i = (j - 1) / 2;
        if !less(heap[j].1, heap[i].1) {
            return;
        }
        heap.swap(i, j);
        j = i;
    }
}

/// Go's `heap.down(h, 0, len(h))`.
fn sift_down(heap: &mut [(usize, f64)], less: &impl Fn(f64, f64) -> bool) {
    let mut i = 0;
    loop {
        let j1 = 2 * i + 1;
        if j1 >= heap.len() {
            return;
        }
        let mut j = j1;
        if j1 + 1 < heap.len() && less(heap[j1 + 1].1, heap[j1].1) {
            j = j1 + 1;
        }
        if !less(heap[j].1, heap[i].1) {
            return;
        }
        heap.swap(i, j);
        i = j;
    }
}

/// `count_values("label", v)`: per group, how many series have each value.
fn count_values(
    input: &[StepSeries],
    label: &str,
    grouping: &Grouping,
    steps: usize,
) -> Result<Vec<StepSeries>> {
    if !crate::functions::valid_label_name(label) {
        return Err(EvalError::Execution(format!(
            "invalid label name {label:?}"
        )));
    }
    let mut counts: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for s in input {
        for (t, v) in s.values.iter().enumerate() {
            let Some(v) = v else { continue };
            let mut labels = s.labels.clone();
            labels.insert(label.to_string(), format_value(*v));
            let mut key = grouping.key(&labels);
            if !grouping.without {
                key.insert(label.to_string(), format_value(*v));
            }
            let slot = &mut counts.entry(key).or_insert_with(|| vec![None; steps])[t];
            *slot = Some(slot.unwrap_or(0.0) + 1.0);
        }
    }
    Ok(counts
        .into_iter()
        .map(|(labels, values)| StepSeries { labels, values })
        .collect())
}

/// A value as Go's `strconv.FormatFloat(v, 'f', -1, 64)` writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// The `q` quantile of `values` (sorted in place), interpolating between ranks.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `histogram_quantile(q, buckets)` over classic `le` buckets, per time.
pub(crate) fn histogram_quantile(q: &[f64], input: Vec<StepSeries>) -> Vec<StepSeries> {
    let steps = q.len();
    let mut groups: BTreeMap<Labels, Vec<(f64, usize)>> = BTreeMap::new();
    for (i, s) in input.iter().enumerate() {
        let Some(le) = s.labels.get("le").and_then(|l| parse_bound(l)) else {
            continue;
        };
        let mut key = s.labels.clone();
        key.remove("le");
        key.remove(METRIC_NAME);
        groups.entry(key).or_default().push((le, i));
    }
    groups
        .into_iter()
        .map(|(labels, buckets)| {
            let values = (0..steps)
                .map(|t| {
                    let b: Vec<(f64, f64)> = buckets
                        .iter()
                        .filter_map(|&(le, i)| Some((le, input[i].values[t]?)))
                        .collect();
                    (!b.is_empty()).then(|| bucket_quantile(q[t], b))
                })
                .collect();
            StepSeries { labels, values }
        })
        .filter(|s| s.values.iter().any(Option::is_some))
        .collect()
}

fn parse_bound(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Coalesce equal bounds, then make the counts monotonic.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, n) in b {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    let mut max = c[0].1;
    for x in c.iter_mut().skip(1) {
        if x.1 > max {
            max = x.1;
        } else if x.1 < max {
            x.1 = max;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let observations = c[c.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if i == c.len() - 1 {
        return c[c.len() - 2].0;
    }
    if i == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let (mut start, end, mut count) = (0.0, c[i].0, c[i].1);
    if i > 0 {
        start = c[i - 1].0;
        count -= c[i - 1].1;
        rank -= c[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topk_and_bottomk_keep_tied_series_as_prometheus_heap_does() {
        let ids = |v: Vec<(usize, f64)>| {
            let mut ids: Vec<usize> = v.into_iter().map(|m| m.0).collect();
            ids.sort_unstable();
            ids
        };
        let feed = |values: &[f64]| {
            values
                .iter()
                .copied()
                .enumerate()
                .collect::<Vec<_>>()
                .into_iter()
        };
        // Worked by hand through Go's container/heap: the 7 evicts the top, which after the
        // second push is the first 5, so the second 5 survives.
        assert_eq!(ids(kept(feed(&[5.0, 5.0, 5.0, 7.0]), 2, true)), vec![1, 3]);
        assert_eq!(ids(kept(feed(&[5.0, 5.0, 5.0, 3.0]), 2, false)), vec![1, 3]);
        assert_eq!(ids(kept(feed(&[1.0, 9.0, 4.0, 8.0]), 2, true)), vec![1, 3]);
        assert_eq!(ids(kept(feed(&[1.0, 9.0, 4.0, 8.0]), 1, false)), vec![0]);
        // NaN is evicted first, whatever it is compared with.
        assert_eq!(ids(kept(feed(&[f64::NAN, 2.0]), 1, true)), vec![1]);
        assert_eq!(ids(kept(feed(&[f64::NAN, 2.0]), 1, false)), vec![1]);
        assert_eq!(ids(kept(feed(&[3.0, 2.0]), 5, true)), vec![0, 1]);
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        assert_eq!(quantile(0.5, &mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(quantile(0.0, &mut [4.0, 1.0]), 1.0);
        assert_eq!(quantile(1.5, &mut [1.0]), f64::INFINITY);
        assert!(quantile(0.5, &mut []).is_nan());
    }

    #[test]
    fn bucket_quantiles_follow_the_classic_histogram_rules() {
        let b = vec![(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        // rank 20 falls in (0.1, 0.5]: 0.1 + 0.4 × (10 / 20).
        assert!((bucket_quantile(0.5, b.clone()) - 0.3).abs() < 1e-12);
        // Past the last finite bucket: its bound.
        assert_eq!(bucket_quantile(1.0, b.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 3.0)]).is_nan());
    }
}
