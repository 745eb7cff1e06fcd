//! A PromQL evaluator with Prometheus 2.42's semantics, over series fetched beforehand.
//!
//! A query runs in two steps: [`selections`] lists what an expression reads over a grid of
//! evaluation times (each selector and the time window it needs, lookback, ranges, offsets
//! and subqueries included), the caller fetches those series however it likes (the node does
//! it by scatter-gather over the cluster), and [`evaluate`] computes the result without I/O.
//! Evaluation is pure, so it is tested with tables here and against a real Prometheus on the
//! same data by `scripts/promql-conformance.py`.
//!
//! Supported: selectors with `offset`; subqueries; arithmetic, comparison (with `bool`) and set
//! operators between scalars and vectors, with `on`/`ignoring` and `group_left`/`group_right`;
//! the aggregations `sum avg min max count group stddev stdvar topk bottomk quantile
//! count_values`; `rate irate increase delta idelta deriv predict_linear changes resets`, the
//! `*_over_time` family; `abs ceil floor round exp sqrt ln log2 log10 sgn clamp clamp_min
//! clamp_max`, trigonometry; `label_replace label_join histogram_quantile time vector scalar
//! timestamp absent absent_over_time sort sort_desc pi`, the date functions (`hour`, `day_of_week`,
//! …). Anything else is refused with [`EvalError::Unsupported`] naming it (the `@` modifier,
//! `holt_winters`, native histograms).
//!
//! # Layout
//!
//! - [`value`](crate::value): labels, raw series, step series, grids, values.
//! - `plan`: what an expression reads ([`selections`]).
//! - `eval`: the evaluator and its [`Source`] of series.
//! - `functions`, `range_fn`: function calls; `aggregate`: aggregations; `binary`: operators.
#![deny(missing_docs)]

mod aggregate;
mod binary;
mod error;
mod eval;
mod functions;
mod plan;
mod range_fn;
pub mod value;

pub use aggregate::format_value;
pub use error::{EvalError, Result};
pub use eval::{evaluate, Fetched, Source, MAX_POINTS};
pub use plan::{key, selections, Selection, DEFAULT_SUBQUERY_STEP_MS, LOOKBACK_MS};
pub use value::{Grid, Labels, RawSeries, StepSeries, Value};
