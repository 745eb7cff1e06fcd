//! The evaluator: an expression over a grid of times, from series fetched beforehand.
//!
//! Every node evaluates over the whole grid at once (as Prometheus' range evaluation does): an
//! instant vector is a set of series with a value or none at each grid time, a scalar is one
//! number per grid time. Samples come from a [`Source`] that serves what [`crate::selections`]
//! listed, so evaluation does no I/O.

use std::collections::HashMap;

use promql_parser::parser::{Expr, VectorSelector};

use crate::error::{EvalError, Result};
use crate::plan::{key, offset_ms, subquery_grid, LOOKBACK_MS};
use crate::value::{drop_name, Grid, Labels, RawSeries, StepSeries, Value};

/// Most values (series × grid times) one evaluation holds at a time; beyond it the query is
/// refused ([`EvalError::TooManyPoints`]) rather than run unbounded. 16 bytes each.
pub const MAX_POINTS: usize = 10_000_000;

/// Where the evaluator reads series.
pub trait Source {
    /// The series `sel` picks (offset and `@` ignored), samples covering what the plan asked.
    fn series(&self, sel: &VectorSelector) -> Result<&[RawSeries]>;
}

/// Series fetched for a plan, by selector key.
#[derive(Debug, Default)]
pub struct Fetched {
    by_key: HashMap<String, Vec<RawSeries>>,
}

impl Fetched {
    /// Adds the series read for `sel`, sorted by labels as Prometheus' index returns them.
    pub fn insert(&mut self, sel: &VectorSelector, mut series: Vec<RawSeries>) {
        // Label sets flattened once: comparing two maps pair by pair was most of the cost
        // for a fleet's GPU series split by workload, which share all but their last labels.
        series.sort_by_cached_key(|s| sort_key(&s.labels));
        self.by_key.insert(key(sel), series);
    }
}

/// `labels` as one string that orders as the map does (names and values end with a 0 byte,
/// which sorts before any other).
fn sort_key(labels: &Labels) -> Vec<u8> {
    let mut key = Vec::with_capacity(labels.iter().map(|(k, v)| k.len() + v.len() + 2).sum());
    for (k, v) in labels {
        key.extend_from_slice(k.as_bytes());
        key.push(0);
        key.extend_from_slice(v.as_bytes());
        key.push(0);
    }
    key
}

impl Source for Fetched {
    fn series(&self, sel: &VectorSelector) -> Result<&[RawSeries]> {
        self.by_key
            .get(&key(sel))
            .map(Vec::as_slice)
            .ok_or_else(|| EvalError::Source(format!("{sel} was not fetched")))
    }
}

/// Evaluates `expr` over `grid` reading `source`.
pub fn evaluate(expr: &Expr, grid: Grid, source: &dyn Source) -> Result<Value> {
    let mut ev = Evaluator { source, points: 0 };
    match strip(expr) {
        Expr::MatrixSelector(_) | Expr::Subquery(_) if grid.len() == 1 => {
            let (series, range, offset) = ev.range_input(expr, grid)?;
            let t = grid.start - offset;
            Ok(Value::Range(
                series
                    .into_iter()
                    .filter_map(|mut s| {
                        s.points.retain(|p| p.0 >= t - range && p.0 <= t);
                        (!s.points.is_empty()).then_some(s)
                    })
                    .collect(),
            ))
        }
        _ => ev.eval(expr, grid),
    }
}

/// `expr` without enclosing parentheses.
pub(crate) fn strip(mut expr: &Expr) -> &Expr {
    while let Expr::Paren(p) = expr {
        expr = &p.expr;
    }
    expr
}

pub(crate) struct Evaluator<'a> {
    source: &'a dyn Source,
    points: usize,
}

impl<'a> Evaluator<'a> {
    /// Where series are read.
    pub fn source(&self) -> &'a dyn Source {
        self.source
    }

    /// Counts `n` more values held; refuses past [`MAX_POINTS`].
    pub fn hold(&mut self, n: usize) -> Result<()> {
        self.points = self.points.saturating_add(n);
        if self.points > MAX_POINTS {
            return Err(EvalError::TooManyPoints(MAX_POINTS));
        }
        Ok(())
    }

    pub fn eval(&mut self, expr: &Expr, grid: Grid) -> Result<Value> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; grid.len()])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, grid),
            Expr::Unary(u) => match self.eval(&u.expr, grid)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(series) => {
                    let out = series
                        .into_iter()
                        .map(|s| StepSeries {
                            labels: drop_name(s.labels),
                            values: s.values.into_iter().map(|v| v.map(|x| -x)).collect(),
                        })
                        .collect();
                    Ok(Value::Vector(merge_same_labels(out)?))
                }
                _ => Err(EvalError::Execution(
                    "unary minus needs a scalar or an instant vector".into(),
                )),
            },
            Expr::VectorSelector(s) => self.vector_selector(s, grid).map(Value::Vector),
            Expr::MatrixSelector(_) | Expr::Subquery(_) => Err(EvalError::Execution(
                "a range vector can only be evaluated inside a function, or alone as an \
                 instant query"
                    .into(),
            )),
            Expr::Call(c) => crate::functions::call(self, c, grid),
            Expr::Aggregate(a) => crate::aggregate::eval(self, a, grid),
            Expr::Binary(b) => crate::binary::eval(self, b, grid),
            Expr::Extension(_) => Err(EvalError::Unsupported("extension expressions".into())),
        }
    }

    /// An instant vector: each series' newest sample within the lookback of each grid time.
    fn vector_selector(&mut self, sel: &VectorSelector, grid: Grid) -> Result<Vec<StepSeries>> {
        let mut out = Vec::new();
        self.each_selected(sel, grid, |ev, labels, values| {
            ev.hold(values.len())?;
            out.push(StepSeries {
                labels: labels.clone(),
                values,
            });
            Ok(())
        })?;
        Ok(out)
    }

    /// Hands each series `sel` picks, valued on the grid, to `f` in the source's order,
    /// skipping those with no value; nothing is held here (`f` counts what it keeps), so a
    /// caller that folds series as they come never holds them all.
    pub fn each_selected(
        &mut self,
        sel: &VectorSelector,
        grid: Grid,
        mut f: impl FnMut(&mut Self, &Labels, Vec<Option<f64>>) -> Result<()>,
    ) -> Result<()> {
        let offset = offset_ms(&sel.offset);
        for s in self.source().series(sel)? {
            let values = at_steps(&s.points, &s.stale, grid, offset);
            if values.iter().any(Option::is_some) {
                f(self, &s.labels, values)?;
            }
        }
        Ok(())
    }

    /// The sample times an instant vector selector picks at each grid time (for `timestamp`).
    pub fn selector_times(&mut self, sel: &VectorSelector, grid: Grid) -> Result<Vec<StepSeries>> {
        let offset = offset_ms(&sel.offset);
        let mut out = Vec::new();
        for s in self.source.series(sel)? {
            let times: Vec<(i64, f64)> = s.points.iter().map(|p| (p.0, p.0 as f64)).collect();
            let values = at_steps(&times, &s.stale, grid, offset);
            if values.iter().any(Option::is_some) {
                self.hold(values.len())?;
                out.push(StepSeries {
                    labels: drop_name(s.labels.clone()),
                    values: values.into_iter().map(|v| v.map(|t| t / 1000.0)).collect(),
                });
            }
        }
        Ok(out)
    }

    /// The series a range function reads (a matrix selector or a subquery), with its range
    /// and offset in ms.
    pub fn range_input(&mut self, expr: &Expr, grid: Grid) -> Result<(Vec<RawSeries>, i64, i64)> {
        match strip(expr) {
            Expr::MatrixSelector(m) => {
                let series = self.source.series(&m.vs)?.to_vec();
                Ok((series, m.range.as_millis() as i64, offset_ms(&m.vs.offset)))
            }
            Expr::Subquery(s) => {
                let range = s.range.as_millis() as i64;
                let offset = offset_ms(&s.offset);
                let inner =
                    subquery_grid(grid, range, offset, s.step.map(|d| d.as_millis() as i64));
                let series = match self.eval(&s.expr, inner)? {
                    Value::Vector(v) => v,
                    Value::Scalar(_) | Value::String(_) | Value::Range(_) => {
                        return Err(EvalError::Execution(
                            "a subquery needs an instant vector expression".into(),
                        ))
                    }
                };
                let times: Vec<i64> = inner.times().collect();
                let raw = series
                    .into_iter()
                    .map(|s| RawSeries {
                        stale: Vec::new(),
                        labels: s.labels,
                        points: times
                            .iter()
                            .zip(s.values)
                            .filter_map(|(t, v)| Some((*t, v?)))
                            .collect(),
                    })
                    .collect();
                Ok((raw, range, offset))
            }
            other => Err(EvalError::Execution(format!(
                "expected a range vector (a selector with [range] or a subquery), got {other}"
            ))),
        }
    }

    /// A scalar argument's value at each grid time.
    pub fn scalar(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<f64>> {
        match self.eval(expr, grid)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(EvalError::Execution(format!(
                "expected a scalar, got {expr}"
            ))),
        }
    }

    /// An instant-vector argument.
    pub fn vector(&mut self, expr: &Expr, grid: Grid) -> Result<Vec<StepSeries>> {
        match self.eval(expr, grid)? {
            Value::Vector(v) => Ok(v),
            _ => Err(EvalError::Execution(format!(
                "expected an instant vector, got {expr}"
            ))),
        }
    }
}

/// The value of a series at each grid time: its newest sample at or before `t - offset`, if
/// no older than the lookback (Prometheus 2.x counts a sample exactly one lookback old) and no
/// staleness marker came after it.
pub(crate) fn at_steps(
    points: &[(i64, f64)],
    stale: &[i64],
    grid: Grid,
    offset: i64,
) -> Vec<Option<f64>> {
    let (mut i, mut k) = (0, 0);
    grid.times()
        .map(|t| {
            let t = t - offset;
            while i < points.len() && points[i].0 <= t {
                i += 1;
            }
            while k < stale.len() && stale[k] <= t {
                k += 1;
            }
            let newest = i.checked_sub(1).map(|i| points[i])?;
            let marked = k > 0 && stale[k - 1] > newest.0;
            (newest.0 >= t - LOOKBACK_MS && !marked).then_some(newest.1)
        })
        .collect()
}

/// Series with equal labels merged into one: Prometheus allows it where they never both have
/// a value at one time, and refuses it where they do.
pub(crate) fn merge_same_labels(series: Vec<StepSeries>) -> Result<Vec<StepSeries>> {
    let mut by: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        match by.get(&s.labels) {
            Some(&i) => {
                let into = &mut out[i].values;
                for (a, b) in into.iter_mut().zip(s.values) {
                    match (a.is_some(), b) {
                        (true, Some(_)) => {
                            return Err(EvalError::Execution(
                                "vector cannot contain metrics with the same labelset".into(),
                            ))
                        }
                        (false, Some(v)) => *a = Some(v),
                        _ => {}
                    }
                }
            }
            None => {
                by.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flattened_label_sets_sort_as_the_maps_do() {
        let sets: Vec<Labels> = [
            vec![("a", "x")],
            vec![("a", "x"), ("b", "y")],
            vec![("a", "xy")],
            vec![("ab", "1")],
            vec![("a", "z")],
            vec![("B", "1")],
            vec![],
            vec![("a", "")],
        ]
        .into_iter()
        .map(|l| l.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
        .collect();
        for a in &sets {
            for b in &sets {
                assert_eq!(sort_key(a).cmp(&sort_key(b)), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn steps_take_the_newest_sample_within_the_lookback() {
        let pts = [(0, 1.0), (10_000, 2.0), (400_000, 3.0)];
        let grid = Grid {
            start: -1,
            end: 700_001,
            step: 1,
        };
        let all = at_steps(&pts, &[], grid, 0);
        let at = |t: i64| all[(t + 1) as usize];
        assert_eq!(at(-1), None);
        assert_eq!(at(0), Some(1.0));
        assert_eq!(at(5_000), Some(1.0));
        assert_eq!(at(310_000), Some(2.0));
        assert_eq!(at(310_001), None);
        assert_eq!(at(700_000), Some(3.0));
        assert_eq!(at(700_001), None);
        // An offset looks that much further back.
        let g = Grid::instant(410_000);
        assert_eq!(at_steps(&pts, &[], g, 400_000), [Some(2.0)]);
        // A staleness marker hides the older sample from its time on, until a newer one.
        let marked = at_steps(&pts, &[20_000], grid, 0);
        let at = |t: i64| marked[(t + 1) as usize];
        assert_eq!(
            (at(19_999), at(20_000), at(399_999)),
            (Some(2.0), None, None)
        );
        assert_eq!(at(400_000), Some(3.0));
    }
}
