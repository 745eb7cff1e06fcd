//! Binary operators: arithmetic and comparisons between scalars and vectors, vector matching
//! (`on`/`ignoring`, `group_left`/`group_right`, `bool`) and the set operators, as Prometheus
//! 2.42's `VectorBinop`, `VectorscalarBinop` and `VectorAnd/Or/Unless`.

use std::collections::{BTreeMap, HashMap};

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use crate::error::{EvalError, Result};
use crate::eval::{merge_same_labels, Evaluator};
use crate::value::{drop_name, Grid, Labels, StepSeries, Value, METRIC_NAME};

pub(crate) fn eval(ev: &mut Evaluator, b: &BinaryExpr, grid: Grid) -> Result<Value> {
    let op = b.op.to_string().to_lowercase();
    let bool_mod = b.return_bool();
    let lhs = ev.eval(&b.lhs, grid)?;
    let rhs = ev.eval(&b.rhs, grid)?;
    match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => Ok(Value::Scalar(
            l.iter()
                .zip(&r)
                .map(|(a, b)| scalar_op(&op, *a, *b))
                .collect::<Result<_>>()?,
        )),
        (Value::Vector(v), Value::Scalar(s)) => vector_scalar(&op, v, &s, false, bool_mod),
        (Value::Scalar(s), Value::Vector(v)) => vector_scalar(&op, v, &s, true, bool_mod),
        (Value::Vector(l), Value::Vector(r)) => {
            let out = match op.as_str() {
                "and" | "or" | "unless" => set_op(&op, l, r, b, grid.len()),
                _ => vector_vector(&op, l, r, b, grid.len())?,
            };
            ev.hold(out.len() * grid.len())?;
            Ok(Value::Vector(out))
        }
        _ => Err(EvalError::Execution(format!(
            "operator {op} needs scalars or instant vectors"
        ))),
    }
}

fn is_comparison(op: &str) -> bool {
    matches!(op, "==" | "!=" | ">" | "<" | ">=" | "<=")
}

fn arithmetic(op: &str, l: f64, r: f64) -> Result<f64> {
    Ok(match op {
        "+" => l + r,
        "-" => l - r,
        "*" => l * r,
        "/" => l / r,
        "%" => l % r,
        "^" => l.powf(r),
        "atan2" => l.atan2(r),
        _ => return Err(EvalError::Unsupported(format!("the operator {op}"))),
    })
}

fn compare(op: &str, l: f64, r: f64) -> bool {
    match op {
        "==" => l == r,
        "!=" => l != r,
        ">" => l > r,
        "<" => l < r,
        ">=" => l >= r,
        _ => l <= r,
    }
}

fn scalar_op(op: &str, l: f64, r: f64) -> Result<f64> {
    if is_comparison(op) {
        Ok(if compare(op, l, r) { 1.0 } else { 0.0 })
    } else {
        arithmetic(op, l, r)
    }
}

/// (value, keep) of one element pair, the left value kept by a comparison.
fn element(op: &str, l: f64, r: f64) -> Result<(f64, bool)> {
    if is_comparison(op) {
        Ok((l, compare(op, l, r)))
    } else {
        Ok((arithmetic(op, l, r)?, true))
    }
}

fn vector_scalar(
    op: &str,
    v: Vec<StepSeries>,
    s: &[f64],
    scalar_left: bool,
    bool_mod: bool,
) -> Result<Value> {
    let drop = !is_comparison(op) || bool_mod;
    let mut out = Vec::with_capacity(v.len());
    for series in v {
        let mut values = Vec::with_capacity(series.values.len());
        for (x, sv) in series.values.iter().zip(s) {
            values.push(match x {
                None => None,
                Some(x) => {
                    let (l, r) = if scalar_left { (*sv, *x) } else { (*x, *sv) };
                    let (mut value, keep) = element(op, l, r)?;
                    if is_comparison(op) && scalar_left {
                        value = *x;
                    }
                    match (bool_mod, keep) {
                        (true, k) => Some(if k { 1.0 } else { 0.0 }),
                        (false, true) => Some(value),
                        (false, false) => None,
                    }
                }
            });
        }
        let labels = if drop {
            drop_name(series.labels)
        } else {
            series.labels
        };
        out.push(StepSeries { labels, values });
    }
    Ok(Value::Vector(merge_same_labels(out)?))
}

/// How two sides are matched: on these labels only, or on all but these (and the name).
struct Matching<'a> {
    on: bool,
    labels: &'a [String],
}

impl Matching<'_> {
    fn of(b: &BinaryExpr) -> Matching<'_> {
        match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(l)) => Matching {
                on: true,
                labels: &l.labels,
            },
            Some(LabelModifier::Exclude(l)) => Matching {
                on: false,
                labels: &l.labels,
            },
            None => Matching {
                on: false,
                labels: &[],
            },
        }
    }

    fn signature(&self, labels: &Labels) -> Labels {
        labels
            .iter()
            .filter(|(k, _)| {
                if self.on {
                    self.labels.contains(k)
                } else {
                    *k != METRIC_NAME && !self.labels.contains(k)
                }
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

fn set_op(
    op: &str,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    b: &BinaryExpr,
    steps: usize,
) -> Vec<StepSeries> {
    let m = Matching::of(b);
    let lsig: Vec<Labels> = l.iter().map(|s| m.signature(&s.labels)).collect();
    let rsig: Vec<Labels> = r.iter().map(|s| m.signature(&s.labels)).collect();
    let present = |side: &[StepSeries], sigs: &[Labels], t: usize| -> Vec<Labels> {
        side.iter()
            .zip(sigs)
            .filter(|(s, _)| s.values[t].is_some())
            .map(|(_, sig)| sig.clone())
            .collect()
    };
    let mut left = l;
    let mut right = r;
    for t in 0..steps {
        match op {
            "and" | "unless" => {
                let rs = present(&right, &rsig, t);
                for (s, sig) in left.iter_mut().zip(&lsig) {
                    let matched = rs.contains(sig);
                    if matched != (op == "and") {
                        s.values[t] = None;
                    }
                }
            }
            _ => {
                let ls = present(&left, &lsig, t);
                for (s, sig) in right.iter_mut().zip(&rsig) {
                    if ls.contains(sig) {
                        s.values[t] = None;
                    }
                }
            }
        }
    }
    let mut out = left;
    if op == "or" {
        out.extend(right);
    }
    out.retain(|s| s.values.iter().any(Option::is_some));
    out
}

fn vector_vector(
    op: &str,
    l: Vec<StepSeries>,
    r: Vec<StepSeries>,
    b: &BinaryExpr,
    steps: usize,
) -> Result<Vec<StepSeries>> {
    let m = Matching::of(b);
    let bool_mod = b.return_bool();
    let card = b
        .modifier
        .as_ref()
        .map_or(VectorMatchCardinality::OneToOne, |m| m.card.clone());
    let (include, swapped) = match &card {
        VectorMatchCardinality::ManyToOne(ls) => (ls.labels.clone(), false),
        VectorMatchCardinality::OneToMany(ls) => (ls.labels.clone(), true),
        _ => (Vec::new(), false),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    // The "many" side drives; the "one" side is looked up by signature.
    let (many, one) = if swapped { (r, l) } else { (l, r) };
    let many_sig: Vec<Labels> = many.iter().map(|s| m.signature(&s.labels)).collect();
    let one_sig: Vec<Labels> = one.iter().map(|s| m.signature(&s.labels)).collect();
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    let mut result_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    for t in 0..steps {
        let mut by_sig: HashMap<&Labels, usize> = HashMap::new();
        for (j, s) in one.iter().enumerate() {
            if s.values[t].is_some() && by_sig.insert(&one_sig[j], j).is_some() {
                let side = if swapped { "left" } else { "right" };
                return Err(EvalError::Execution(format!(
                    "found duplicate series for the match group {:?} on the {side} hand-side \
                     of the operation; many-to-many matching not allowed: matching labels must \
                     be unique on one side",
                    one_sig[j]
                )));
            }
        }
        let mut matched: HashMap<&Labels, Vec<Labels>> = HashMap::new();
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = s.values[t] else { continue };
            let Some(&j) = by_sig.get(&many_sig[i]) else {
                continue;
            };
            let Some(ov) = one[j].values[t] else { continue };
            let (lv, rv) = if swapped { (ov, mv) } else { (mv, ov) };
            let (mut value, keep) = element(op, lv, rv)?;
            if bool_mod {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let labels = result_labels
                .entry((i, j))
                .or_insert_with(|| {
                    let mut labels =
                        result_metric(op, &s.labels, &one[j].labels, &m, one_to_one, &include);
                    if bool_mod {
                        labels.remove(METRIC_NAME);
                    }
                    labels
                })
                .clone();
            let seen = matched.entry(&many_sig[i]).or_default();
            if one_to_one && !seen.is_empty() {
                return Err(EvalError::Execution(
                    "multiple matches for labels: many-to-one matching must be explicit \
                     (group_left/group_right)"
                        .into(),
                ));
            }
            if seen.contains(&labels) {
                return Err(EvalError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches"
                        .into(),
                ));
            }
            seen.push(labels.clone());
            let slot = &mut out.entry(labels).or_insert_with(|| vec![None; steps])[t];
            if slot.is_some() {
                return Err(EvalError::Execution(
                    "vector cannot contain metrics with the same labelset".into(),
                ));
            }
            *slot = Some(value);
        }
    }
    Ok(out
        .into_iter()
        .map(|(labels, values)| StepSeries { labels, values })
        .collect())
}

/// The labels of one result element: the many side's, less the name for arithmetic, cut to
/// the matching labels for one-to-one, plus `group_x` labels from the one side.
fn result_metric(
    op: &str,
    many: &Labels,
    one: &Labels,
    m: &Matching,
    one_to_one: bool,
    include: &[String],
) -> Labels {
    let mut l = many.clone();
    if !is_comparison(op) {
        l.remove(METRIC_NAME);
    }
    if one_to_one {
        if m.on {
            l.retain(|k, _| m.labels.contains(k));
        } else {
            l.retain(|k, _| !m.labels.contains(k));
        }
    }
    for name in include {
        match one.get(name).filter(|v| !v.is_empty()) {
            Some(v) => {
                l.insert(name.clone(), v.clone());
            }
            None => {
                l.remove(name);
            }
        }
    }
    l
}
