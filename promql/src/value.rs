//! What the evaluator reads and returns: label sets, raw series, series valued on a step grid.

use std::collections::BTreeMap;

/// A label set, sorted by name (`__name__` is the metric name).
pub type Labels = BTreeMap<String, String>;

/// The label holding the metric name.
pub const METRIC_NAME: &str = "__name__";

/// One series as stored: its labels and its samples `(ms, value)` in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSeries {
    /// Labels, the metric name included.
    pub labels: Labels,
    /// Samples in time order, no two at the same time.
    pub points: Vec<(i64, f64)>,
    /// Times the series went stale, in order (Prometheus' staleness markers, as its scrape
    /// loop writes them when a series leaves a target): an instant selection finds nothing
    /// when a marker is newer than the newest sample it would pick.
    pub stale: Vec<i64>,
}

/// The evaluation times: `start`, `start + step`, … up to `end` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    /// First evaluation time.
    pub start: i64,
    /// Last evaluation time (inclusive when on the grid).
    pub end: i64,
    /// Distance between two evaluation times (at least 1 ms).
    pub step: i64,
}

impl Grid {
    /// One evaluation at `t` (an instant query).
    pub fn instant(t: i64) -> Self {
        Self {
            start: t,
            end: t,
            step: 1,
        }
    }

    /// Number of evaluation times.
    pub fn len(&self) -> usize {
        if self.end < self.start {
            0
        } else {
            ((self.end - self.start) / self.step.max(1)) as usize + 1
        }
    }

    /// True when there is no evaluation time.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The evaluation times.
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.len()).map(|i| self.start + i as i64 * self.step.max(1))
    }
}

/// A series valued at every time of a grid (`None`: no value there).
#[derive(Debug, Clone, PartialEq)]
pub struct StepSeries {
    /// Labels of the result.
    pub labels: Labels,
    /// One entry per grid time.
    pub values: Vec<Option<f64>>,
}

/// The value of an expression over a grid.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An instant vector at every grid time.
    Vector(Vec<StepSeries>),
    /// A number at every grid time.
    Scalar(Vec<f64>),
    /// A string literal.
    String(String),
    /// A range vector: only as a whole instant query (`metric[5m]`), the raw samples.
    Range(Vec<RawSeries>),
}

/// `labels` without the metric name.
pub fn drop_name(mut labels: Labels) -> Labels {
    labels.remove(METRIC_NAME);
    labels
}
