//! Function calls: range functions over windows ([`crate::range_fn`]), functions of instant
//! vectors and scalars, and the label functions.

use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

use crate::error::{EvalError, Result};
use crate::eval::{merge_same_labels, strip, Evaluator};
use crate::plan::offset_ms;
use crate::range_fn::{lookup, Window};
use crate::value::{drop_name, Grid, Labels, StepSeries, Value, METRIC_NAME};

pub(crate) fn call(ev: &mut Evaluator, c: &Call, grid: Grid) -> Result<Value> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    if let Some((f, at)) = lookup(name) {
        return range_call(ev, name, f, at, &args, grid);
    }
    let arg = |i: usize| {
        args.get(i)
            .copied()
            .ok_or_else(|| EvalError::Execution(format!("{name}() needs argument {}", i + 1)))
    };
    let v = match name {
        "time" => Value::Scalar(grid.times().map(|t| t as f64 / 1000.0).collect()),
        "pi" => Value::Scalar(vec![std::f64::consts::PI; grid.len()]),
        "vector" => Value::Vector(vec![StepSeries {
            labels: Labels::new(),
            values: ev.scalar(arg(0)?, grid)?.into_iter().map(Some).collect(),
        }]),
        "scalar" => Value::Scalar(scalar_of(&ev.vector(arg(0)?, grid)?, grid.len())),
        "timestamp" => match strip(arg(0)?) {
            Expr::VectorSelector(s) => Value::Vector(ev.selector_times(s, grid)?),
            _ => {
                return Err(EvalError::Unsupported(
                    "timestamp() of anything but a selector".into(),
                ))
            }
        },
        "round" => {
            let to = match args.get(1) {
                Some(a) => ev.scalar(a, grid)?,
                None => vec![1.0; grid.len()],
            };
            let v = ev.vector(arg(0)?, grid)?;
            per_step(v, |i, x| {
                let inverse = 1.0 / to[i];
                Some((x * inverse + 0.5).floor() / inverse)
            })?
        }
        "clamp" => {
            let (lo, hi) = (ev.scalar(arg(1)?, grid)?, ev.scalar(arg(2)?, grid)?);
            let v = ev.vector(arg(0)?, grid)?;
            per_step(v, |i, x| (hi[i] >= lo[i]).then(|| lo[i].max(hi[i].min(x))))?
        }
        "clamp_min" => {
            let lo = ev.scalar(arg(1)?, grid)?;
            per_step(ev.vector(arg(0)?, grid)?, |i, x| Some(lo[i].max(x)))?
        }
        "clamp_max" => {
            let hi = ev.scalar(arg(1)?, grid)?;
            per_step(ev.vector(arg(0)?, grid)?, |i, x| Some(hi[i].min(x)))?
        }
        "label_replace" => label_replace(ev, &args, grid)?,
        "label_join" => label_join(ev, &args, grid)?,
        "histogram_quantile" => {
            let q = ev.scalar(arg(0)?, grid)?;
            let v = ev.vector(arg(1)?, grid)?;
            Value::Vector(crate::aggregate::histogram_quantile(&q, v))
        }
        "sort" | "sort_desc" => Value::Vector(ev.vector(arg(0)?, grid)?),
        "absent" => {
            let v = ev.vector(arg(0)?, grid)?;
            Value::Vector(absent(&v, arg(0)?, grid))
        }
        "absent_over_time" => {
            let (series, range, offset) = ev.range_input(arg(0)?, grid)?;
            let present: Vec<StepSeries> = series
                .iter()
                .map(|s| StepSeries {
                    labels: Labels::new(),
                    values: grid
                        .times()
                        .map(|t| {
                            let (lo, hi) = (t - offset - range, t - offset);
                            s.points
                                .iter()
                                .any(|p| p.0 >= lo && p.0 <= hi)
                                .then_some(1.0)
                        })
                        .collect(),
                })
                .collect();
            Value::Vector(absent(&present, arg(0)?, grid))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let f = date_part(name);
            match args.first() {
                None => Value::Vector(vec![StepSeries {
                    labels: Labels::new(),
                    values: grid.times().map(|t| Some(f(t as f64 / 1000.0))).collect(),
                }]),
                Some(a) => per_step(ev.vector(a, grid)?, |_, x| Some(f(x)))?,
            }
        }
        _ => match simple(name) {
            Some(f) => per_step(ev.vector(arg(0)?, grid)?, |_, x| Some(f(x)))?,
            None => return Err(EvalError::Unsupported(format!("the function {name}()"))),
        },
    };
    Ok(v)
}

/// A function applied to every value, the metric name dropped.
fn per_step(series: Vec<StepSeries>, f: impl Fn(usize, f64) -> Option<f64>) -> Result<Value> {
    let out = series
        .into_iter()
        .map(|s| StepSeries {
            labels: drop_name(s.labels),
            values: s
                .values
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.and_then(|x| f(i, x)))
                .collect(),
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}

fn simple(name: &str) -> Option<fn(f64) -> f64> {
    Some(match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sin" => f64::sin,
        "cos" => f64::cos,
        "tan" => f64::tan,
        "asin" => f64::asin,
        "acos" => f64::acos,
        "atan" => f64::atan,
        "sinh" => f64::sinh,
        "cosh" => f64::cosh,
        "tanh" => f64::tanh,
        "asinh" => f64::asinh,
        "acosh" => f64::acosh,
        "atanh" => f64::atanh,
        "deg" => |x| x * 180.0 / std::f64::consts::PI,
        "rad" => |x| x * std::f64::consts::PI / 180.0,
        "sgn" => |x| {
            if x < 0.0 {
                -1.0
            } else if x > 0.0 {
                1.0
            } else {
                x
            }
        },
        _ => return None,
    })
}

/// A date function of a Unix time in seconds (UTC), as Prometheus' `dateWrapper` computes it.
fn date_part(name: &str) -> fn(f64) -> f64 {
    use chrono::{Datelike, Timelike};
    fn at(secs: f64) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp(secs as i64, 0)
    }
    match name {
        "day_of_month" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.day())),
        "day_of_week" => {
            |s| at(s).map_or(f64::NAN, |d| f64::from(d.weekday().num_days_from_sunday()))
        }
        "day_of_year" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.ordinal())),
        "days_in_month" => |s| {
            at(s).map_or(f64::NAN, |d| {
                let (y, m) = (d.year(), d.month());
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                chrono::NaiveDate::from_ymd_opt(next.0, next.1, 1)
                    .and_then(|n| n.pred_opt())
                    .map_or(f64::NAN, |last| f64::from(last.day()))
            })
        },
        "hour" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.hour())),
        "minute" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.minute())),
        "month" => |s| at(s).map_or(f64::NAN, |d| f64::from(d.month())),
        _ => |s| at(s).map_or(f64::NAN, |d| f64::from(d.year())),
    }
}

/// `scalar(v)`: the one value at each time, NaN where there is not exactly one.
fn scalar_of(series: &[StepSeries], steps: usize) -> Vec<f64> {
    (0..steps)
        .map(|i| {
            let mut present = series.iter().filter_map(|s| s.values[i]);
            match (present.next(), present.next()) {
                (Some(v), None) => v,
                _ => f64::NAN,
            }
        })
        .collect()
}

fn range_call(
    ev: &mut Evaluator,
    name: &str,
    f: crate::range_fn::RangeFn,
    at: usize,
    args: &[&Expr],
    grid: Grid,
) -> Result<Value> {
    let input = args
        .get(at)
        .ok_or_else(|| EvalError::Execution(format!("{name}() needs a range vector")))?;
    let extra = scalar_argument(ev, args, at, grid)?;
    let (series, range, offset) = ev.range_input(input, grid)?;
    let times: Vec<i64> = grid.times().collect();
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let values = range_values(&s.points, f, &times, (range, offset), &extra);
        if values.iter().any(Option::is_some) {
            ev.hold(values.len())?;
            let labels = if keeps_name(name) {
                s.labels
            } else {
                drop_name(s.labels)
            };
            out.push(StepSeries { labels, values });
        }
    }
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// Whether `c` is a range function straight over a selector of one metric (`rate(x[5m])`),
/// whose result series can be handed on one at a time ([`each_range_series`]): with one
/// metric, dropping its name leaves no two series with the same labels.
pub(crate) fn is_range_over_one_metric(c: &Call) -> bool {
    lookup(c.func.name).is_some_and(|(_, at)| {
        c.args
            .args
            .get(at)
            .is_some_and(|a| matches!(strip(a), Expr::MatrixSelector(m) if m.vs.name.is_some()))
    })
}

/// Hands each series of a range function over a selector (see [`is_range_over_one_metric`])
/// to `f` with its values on the grid and whether it keeps the metric name, skipping those
/// with no value; nothing is held here.
pub(crate) fn each_range_series(
    ev: &mut Evaluator,
    c: &Call,
    grid: Grid,
    f: &mut impl FnMut(&mut Evaluator, &Labels, bool, Vec<Option<f64>>) -> Result<()>,
) -> Result<()> {
    let name = c.func.name;
    let args: Vec<&Expr> = c.args.args.iter().map(|a| a.as_ref()).collect();
    let Some((func, at)) = lookup(name) else {
        return Err(EvalError::Execution(format!(
            "{name} is not a range function"
        )));
    };
    let Some(Expr::MatrixSelector(m)) = args.get(at).map(|a| strip(a)) else {
        return Err(EvalError::Execution(format!(
            "{name}() needs a range vector"
        )));
    };
    let extra = scalar_argument(ev, &args, at, grid)?;
    let window = (m.range.as_millis() as i64, offset_ms(&m.vs.offset));
    let times: Vec<i64> = grid.times().collect();
    for s in ev.source().series(&m.vs)? {
        let values = range_values(&s.points, func, &times, window, &extra);
        if values.iter().any(Option::is_some) {
            f(ev, &s.labels, keeps_name(name), values)?;
        }
    }
    Ok(())
}

/// A range function's scalar argument (the one that is not its range vector at `at`) at each
/// grid time; zeros when it has none.
fn scalar_argument(ev: &mut Evaluator, args: &[&Expr], at: usize, grid: Grid) -> Result<Vec<f64>> {
    match args.iter().enumerate().find(|(i, _)| *i != at) {
        Some((_, e)) => ev.scalar(e, grid),
        None => Ok(vec![0.0; grid.len()]),
    }
}

/// Whether a range function's result keeps the metric name (only `last_over_time` does).
pub(crate) fn keeps_name(name: &str) -> bool {
    name == "last_over_time"
}

/// A range function of one series' samples at each time of `times`, over windows of
/// `range` ms ending `offset` ms before each; `extra` is its scalar argument at each time.
pub(crate) fn range_values(
    points: &[(i64, f64)],
    f: crate::range_fn::RangeFn,
    times: &[i64],
    (range, offset): (i64, i64),
    extra: &[f64],
) -> Vec<Option<f64>> {
    let (mut lo, mut hi) = (0usize, 0usize);
    times
        .iter()
        .zip(extra)
        .map(|(&t, &arg)| {
            let (start, end) = (t - offset - range, t - offset);
            while lo < points.len() && points[lo].0 < start {
                lo += 1;
            }
            hi = hi.max(lo);
            while hi < points.len() && points[hi].0 <= end {
                hi += 1;
            }
            let window = &points[lo..hi];
            if window.is_empty() {
                return None;
            }
            f(&Window {
                points: window,
                t,
                start,
                end,
                arg,
            })
        })
        .collect()
}

/// `absent(v)`: 1 where `v` has no value, labelled by the selector's equality matchers.
fn absent(v: &[StepSeries], arg: &Expr, grid: Grid) -> Vec<StepSeries> {
    let values: Vec<Option<f64>> = (0..grid.len())
        .map(|i| (!v.iter().any(|s| s.values[i].is_some())).then_some(1.0))
        .collect();
    if values.iter().all(Option::is_none) {
        return Vec::new();
    }
    let mut labels = Labels::new();
    let selector = match strip(arg) {
        Expr::VectorSelector(s) => Some(s),
        Expr::MatrixSelector(m) => Some(&m.vs),
        _ => None,
    };
    if let Some(s) = selector {
        let mut seen = std::collections::HashSet::new();
        for m in &s.matchers.matchers {
            if m.name == METRIC_NAME {
                continue;
            }
            if matches!(m.op, MatchOp::Equal) && seen.insert(m.name.clone()) {
                labels.insert(m.name.clone(), m.value.clone());
            } else {
                labels.remove(&m.name);
            }
        }
    }
    vec![StepSeries { labels, values }]
}

fn string_arg(args: &[&Expr], i: usize, f: &str) -> Result<String> {
    match args.get(i).map(|a| strip(a)) {
        Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
        _ => Err(EvalError::Execution(format!(
            "{f}() needs a string as argument {}",
            i + 1
        ))),
    }
}

pub(crate) fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `label_replace(v, dst, replacement, src, regex)`.
fn label_replace(ev: &mut Evaluator, args: &[&Expr], grid: Grid) -> Result<Value> {
    let f = "label_replace";
    let (dst, repl, src, re) = (
        string_arg(args, 1, f)?,
        string_arg(args, 2, f)?,
        string_arg(args, 3, f)?,
        string_arg(args, 4, f)?,
    );
    let re = regex::Regex::new(&format!("^(?s:{re})$")).map_err(|e| {
        EvalError::Execution(format!(
            "invalid regular expression in label_replace(): {e}"
        ))
    })?;
    if !valid_label_name(&dst) {
        return Err(EvalError::Execution(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    let v = ev.vector(args[0], grid)?;
    let out = v
        .into_iter()
        .map(|mut s| {
            let src_value = s.labels.get(&src).cloned().unwrap_or_default();
            if let Some(caps) = re.captures(&src_value) {
                let mut res = String::new();
                // Go's `$1x` is group "1x", as in the regex crate: the replacement carries over.
                caps.expand(&repl, &mut res);
                s.labels.remove(&dst);
                if !res.is_empty() {
                    s.labels.insert(dst.clone(), res);
                }
            }
            s
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// `label_join(v, dst, separator, src…)`.
fn label_join(ev: &mut Evaluator, args: &[&Expr], grid: Grid) -> Result<Value> {
    let f = "label_join";
    let dst = string_arg(args, 1, f)?;
    let sep = string_arg(args, 2, f)?;
    let srcs: Vec<String> = (3..args.len())
        .map(|i| string_arg(args, i, f))
        .collect::<Result<_>>()?;
    for l in srcs.iter().chain(std::iter::once(&dst)) {
        if !valid_label_name(l) {
            return Err(EvalError::Execution(format!(
                "invalid label name in label_join(): {l}"
            )));
        }
    }
    let v = ev.vector(args[0], grid)?;
    let out = v
        .into_iter()
        .map(|mut s| {
            let joined = srcs
                .iter()
                .map(|l| s.labels.get(l).map_or("", String::as_str))
                .collect::<Vec<_>>()
                .join(&sep);
            if joined.is_empty() {
                s.labels.remove(&dst);
            } else {
                s.labels.insert(dst.clone(), joined);
            }
            s
        })
        .collect();
    Ok(Value::Vector(merge_same_labels(out)?))
}
