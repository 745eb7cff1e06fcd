//! What an expression reads: for each selector, the series it picks and the time window the
//! evaluation over a grid needs from them. The caller fetches these (scatter-gather), then
//! evaluates without I/O.

use std::collections::BTreeMap;

use promql_parser::parser::{Expr, Offset, VectorSelector};

use crate::error::{EvalError, Result};
use crate::value::Grid;

/// How far back a step looks for a series' newest sample (Prometheus' default).
pub const LOOKBACK_MS: i64 = 5 * 60_000;
/// The step of a subquery that names none (Prometheus' default evaluation interval).
pub const DEFAULT_SUBQUERY_STEP_MS: i64 = 60_000;

/// One read the evaluation needs: the series `selector` picks, samples in `[start, end]` ms.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// The selector, its offset and `@` cleared.
    pub selector: VectorSelector,
    /// First sample time needed.
    pub start: i64,
    /// Last sample time needed.
    pub end: i64,
}

/// The key two uses of one selector share (name and matchers; offset and `@` aside).
pub fn key(sel: &VectorSelector) -> String {
    VectorSelector {
        offset: None,
        at: None,
        ..sel.clone()
    }
    .to_string()
}

/// An offset in ms (negative offsets look ahead).
pub fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        None => 0,
    }
}

/// The grid a subquery `[range:step] offset` evaluates its expression on, inside `outer`:
/// aligned to multiples of the step, as Prometheus does.
pub fn subquery_grid(outer: Grid, range: i64, offset: i64, step: Option<i64>) -> Grid {
    let step = step.filter(|s| *s > 0).unwrap_or(DEFAULT_SUBQUERY_STEP_MS);
    let low = outer.start - offset - range;
    let mut start = step * (low / step);
    if start < low {
        start += step;
    }
    Grid {
        start,
        end: outer.end - offset,
        step,
    }
}

/// Every selection `expr` needs over `grid`, one per selector key (windows merged).
pub fn selections(expr: &Expr, grid: Grid) -> Result<Vec<Selection>> {
    let mut out: BTreeMap<String, Selection> = BTreeMap::new();
    walk(expr, grid, &mut out)?;
    Ok(out.into_values().collect())
}

fn need(out: &mut BTreeMap<String, Selection>, sel: &VectorSelector, start: i64, end: i64) {
    let e = out.entry(key(sel)).or_insert_with(|| Selection {
        selector: VectorSelector {
            offset: None,
            at: None,
            ..sel.clone()
        },
        start,
        end,
    });
    e.start = e.start.min(start);
    e.end = e.end.max(end);
}

fn no_at(sel: &VectorSelector) -> Result<()> {
    if sel.at.is_some() {
        return Err(EvalError::Unsupported("the @ modifier".into()));
    }
    if !sel.matchers.or_matchers.is_empty() {
        return Err(EvalError::Unsupported("`or` between label matchers".into()));
    }
    Ok(())
}

fn walk(expr: &Expr, grid: Grid, out: &mut BTreeMap<String, Selection>) -> Result<()> {
    match expr {
        Expr::VectorSelector(s) => {
            no_at(s)?;
            let o = offset_ms(&s.offset);
            need(out, s, grid.start - o - LOOKBACK_MS, grid.end - o);
        }
        Expr::MatrixSelector(m) => {
            no_at(&m.vs)?;
            let o = offset_ms(&m.vs.offset);
            let r = m.range.as_millis() as i64;
            need(out, &m.vs, grid.start - o - r, grid.end - o);
        }
        Expr::Subquery(s) => {
            if s.at.is_some() {
                return Err(EvalError::Unsupported("the @ modifier".into()));
            }
            let inner = subquery_grid(
                grid,
                s.range.as_millis() as i64,
                offset_ms(&s.offset),
                s.step.map(|d| d.as_millis() as i64),
            );
            walk(&s.expr, inner, out)?;
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk(p, grid, out)?;
            }
            walk(&a.expr, grid, out)?;
        }
        Expr::Unary(u) => walk(&u.expr, grid, out)?,
        Expr::Binary(b) => {
            walk(&b.lhs, grid, out)?;
            walk(&b.rhs, grid, out)?;
        }
        Expr::Paren(p) => walk(&p.expr, grid, out)?,
        Expr::Call(c) => {
            for a in &c.args.args {
                walk(a, grid, out)?;
            }
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => {}
        Expr::Extension(_) => return Err(EvalError::Unsupported("extension expressions".into())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(q: &str, grid: Grid) -> Vec<(String, i64, i64)> {
        let e = promql_parser::parser::parse(q).expect("parses");
        selections(&e, grid)
            .expect("plans")
            .into_iter()
            .map(|s| (key(&s.selector), s.start, s.end))
            .collect()
    }

    #[test]
    fn windows_cover_lookback_ranges_offsets_and_subqueries() {
        let g = Grid {
            start: 1_000_000,
            end: 2_000_000,
            step: 15_000,
        };
        assert_eq!(plan("up", g), [("up".into(), 700_000, 2_000_000)]);
        assert_eq!(
            plan("rate(up[1m] offset 1m) + up", g),
            [("up".into(), 700_000, 2_000_000)]
        );
        assert_eq!(
            plan("rate(x[1m] offset 1m)", g),
            [("x".into(), 880_000, 1_940_000)]
        );
        // [10m:1m]: inner grid from the first minute at or after start - 10m.
        assert_eq!(
            plan("max_over_time(x[10m:1m])", g),
            [("x".into(), 120_000, 2_000_000)]
        );
        assert!(selections(&promql_parser::parser::parse("x @ 100").expect("parses"), g).is_err());
    }

    #[test]
    fn subquery_grids_align_to_their_step() {
        let outer = Grid {
            start: 1_000_500,
            end: 2_000_000,
            step: 15_000,
        };
        let g = subquery_grid(outer, 600_000, 0, Some(60_000));
        assert_eq!((g.start, g.end, g.step), (420_000, 2_000_000, 60_000));
        let g = subquery_grid(outer, 600_000, 60_000, None);
        assert_eq!((g.start, g.end), (360_000, 1_940_000));
    }
}
