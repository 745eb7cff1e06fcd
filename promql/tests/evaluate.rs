//! Whole queries over a small fixed data set, answers worked out by hand from Prometheus' rules.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code may panic

use telemetry_promql::{
    evaluate, selections, EvalError, Fetched, Grid, Labels, RawSeries, StepSeries, Value,
};

/// Two hosts, two GPUs on `a` and one on `b`; temperature and power every 10 s for 10 min.
fn data() -> Vec<RawSeries> {
    let gpus = [("a", "0", 40.0), ("a", "1", 50.0), ("b", "0", 60.0)];
    let mut out = Vec::new();
    for (metric, scale) in [("temp", 1.0), ("power", 10.0)] {
        for (host, gpu, base) in gpus {
            let labels: Labels = [("__name__", metric), ("host", host), ("gpu", gpu)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let points = (0..=60).map(|i| (i * 10_000, base * scale)).collect();
            out.push(RawSeries {
                labels,
                points,
                stale: Vec::new(),
            });
        }
    }
    // A counter: +1 per second, reset to 0 at 300 s.
    let labels: Labels = [("__name__", "energy"), ("host", "a"), ("gpu", "0")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let points = (0..=60)
        .map(|i| {
            (
                i * 10_000,
                if i < 30 { i * 10 } else { (i - 30) * 10 } as f64,
            )
        })
        .collect();
    out.push(RawSeries {
        labels,
        points,
        stale: Vec::new(),
    });
    out
}

/// Evaluates `q` at `t` (ms) as an instant query; (labels as `k=v,…`, value) sorted.
fn instant(q: &str, t: i64) -> Result<Vec<(String, f64)>, EvalError> {
    let expr = promql_parser::parser::parse(q).expect("parses");
    let grid = Grid::instant(t);
    let mut fetched = Fetched::default();
    let all = data();
    for s in selections(&expr, grid)? {
        let picked = all
            .iter()
            .filter(|r| {
                let name = s.selector.name.as_deref();
                name.is_none_or(|n| r.labels.get("__name__").is_some_and(|v| v == n))
                    && s.selector
                        .matchers
                        .matchers
                        .iter()
                        .all(|m| m.is_match(r.labels.get(&m.name).map_or("", String::as_str)))
            })
            .cloned()
            .collect();
        fetched.insert(&s.selector, picked);
    }
    let mut out: Vec<(String, f64)> = match evaluate(&expr, grid, &fetched)? {
        Value::Vector(v) => v
            .into_iter()
            .filter_map(|s| {
                let l: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                Some((l.join(","), s.values[0]?))
            })
            .collect(),
        Value::Scalar(v) => vec![(String::new(), v[0])],
        other => panic!("unexpected {other:?}"),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn pairs(p: &[(&str, f64)]) -> Vec<(String, f64)> {
    p.iter().map(|(l, v)| (l.to_string(), *v)).collect()
}

#[test]
fn aggregations_group_and_drop_the_name() {
    let t = 300_000;
    assert_eq!(
        instant("avg by (host) (temp)", t).expect("ok"),
        pairs(&[("host=a", 45.0), ("host=b", 60.0)])
    );
    assert_eq!(
        instant("sum without (gpu) (power)", t).expect("ok"),
        pairs(&[("host=a", 900.0), ("host=b", 600.0)])
    );
    assert_eq!(
        instant("topk(1, temp)", t).expect("ok"),
        pairs(&[("__name__=temp,gpu=0,host=b", 60.0)])
    );
    assert_eq!(
        instant("count_values(\"t\", temp)", t).expect("ok"),
        pairs(&[("t=40", 1.0), ("t=50", 1.0), ("t=60", 1.0)])
    );
}

#[test]
fn vector_matching_follows_on_ignoring_and_group_modifiers() {
    let t = 300_000;
    // One-to-one on all labels but the name.
    assert_eq!(
        instant("power / temp", t).expect("ok"),
        pairs(&[
            ("gpu=0,host=a", 10.0),
            ("gpu=0,host=b", 10.0),
            ("gpu=1,host=a", 10.0)
        ])
    );
    // Many-to-one: each GPU against its host's average, the many side's labels kept.
    assert_eq!(
        instant("temp - on (host) group_left avg by (host) (temp)", t).expect("ok"),
        pairs(&[
            ("gpu=0,host=a", -5.0),
            ("gpu=0,host=b", 0.0),
            ("gpu=1,host=a", 5.0)
        ])
    );
    // Without group_left the same match is refused, as Prometheus does.
    assert!(matches!(
        instant("temp - on (host) avg by (host) (temp)", t),
        Err(EvalError::Execution(_))
    ));
    // A comparison filters and keeps the name; `bool` answers 0/1 without it.
    assert_eq!(
        instant("temp > 45", t).expect("ok"),
        pairs(&[
            ("__name__=temp,gpu=0,host=b", 60.0),
            ("__name__=temp,gpu=1,host=a", 50.0)
        ])
    );
    assert_eq!(instant("temp > bool 45", t).expect("ok").len(), 3);
    // Set operators match on all labels but the name.
    assert_eq!(
        instant("temp unless on (host) temp{host=\"a\"}", t).expect("ok"),
        pairs(&[("__name__=temp,gpu=0,host=b", 60.0)])
    );
}

#[test]
fn counters_rates_and_subqueries() {
    // +1/s over 60 s, samples every 10 s at the window's edges.
    let r = instant("rate(energy[1m])", 200_000).expect("ok");
    assert_eq!(r.len(), 1);
    assert!((r[0].1 - 1.0).abs() < 1e-12, "{r:?}");
    // Across the reset at 300 s (290 → 0) the increase counts 270→290 and 0→30.
    let r = instant("increase(energy[1m])", 330_000).expect("ok");
    assert!((r[0].1 - 50.0).abs() < 1e-9, "{r:?}");
    assert_eq!(
        instant("resets(energy[5m])", 400_000).expect("ok")[0].1,
        1.0
    );
    // The highest counter value over the last 5 minutes sampled on the minute (0, 60, …,
    // 240, then 0 after the reset at 300 s): 290 at 290 s is not one of them.
    assert_eq!(
        instant("max_over_time(energy[5m:1m])", 300_000).expect("ok")[0].1,
        240.0
    );
}

#[test]
fn date_functions_and_absent_over_time() {
    // 1970-01-04T01:02:03Z was a Sunday, day 4 of January (31 days).
    let t = ((3 * 24 + 1) * 3600 + 2 * 60 + 3) * 1000;
    for (q, want) in [
        ("hour()", 1.0),
        ("minute()", 2.0),
        ("day_of_week()", 0.0),
        ("day_of_month()", 4.0),
        ("day_of_year()", 4.0),
        ("days_in_month()", 31.0),
        ("month()", 1.0),
        ("year()", 1970.0),
    ] {
        assert_eq!(instant(q, t).expect(q), pairs(&[("", want)]), "{q}");
    }
    assert_eq!(
        instant("absent_over_time(temp{host=\"z\"}[1m])", 300_000).expect("ok"),
        pairs(&[("host=z", 1.0)])
    );
    assert!(instant("absent_over_time(temp[1m])", 300_000)
        .expect("ok")
        .is_empty());
}

#[test]
fn unsupported_constructs_are_named() {
    for (q, what) in [
        ("holt_winters(temp[5m], 0.5, 0.5)", "holt_winters"),
        ("temp @ 100", "@"),
    ] {
        match instant(q, 300_000) {
            Err(e @ EvalError::Unsupported(_)) => {
                assert!(e.is_bad_query());
                assert!(e.to_string().contains(what), "{e}");
            }
            other => panic!("{q}: {other:?}"),
        }
    }
}

/// Evaluates `q` over `grid` reading `all` (selectors filtered by name only).
fn range(q: &str, grid: Grid, all: &[RawSeries]) -> Result<Vec<StepSeries>, EvalError> {
    let expr = promql_parser::parser::parse(q).expect("parses");
    let mut fetched = Fetched::default();
    for s in selections(&expr, grid)? {
        let name = s.selector.name.clone();
        let picked = all
            .iter()
            .filter(|r| name.as_deref() == r.labels.get("__name__").map(String::as_str))
            .cloned()
            .collect();
        fetched.insert(&s.selector, picked);
    }
    match evaluate(&expr, grid, &fetched)? {
        Value::Vector(v) => Ok(v),
        other => panic!("unexpected {other:?}"),
    }
}

/// `n` series of `x`, each one sample at its own time (a pod's short stay on a GPU), in one
/// of `groups` groups, with values that make sums order-sensitive in floating point.
fn sparse(n: i64, groups: i64, spacing: i64) -> Vec<RawSeries> {
    (0..n)
        .map(|i| RawSeries {
            labels: [
                ("__name__".to_string(), "x".to_string()),
                ("g".to_string(), (i % groups).to_string()),
                ("id".to_string(), i.to_string()),
            ]
            .into(),
            points: vec![(i * spacing, 0.1 + (i % 7) as f64 * 1e15 + i as f64 / 3.0)],
            stale: Vec::new(),
        })
        .collect()
}

#[test]
fn aggregations_over_a_selector_fold_series_as_they_come_and_answer_the_same() {
    let mut all = sparse(500, 3, 10_000);
    // Some series with several samples, so that range functions have windows to work on.
    for (i, s) in all.iter_mut().enumerate().step_by(7) {
        let i = i as i64;
        s.points = (0..40)
            .map(|k| (k * 15_000 + i, (k * i) as f64 / 7.0))
            .collect();
    }
    let grid = Grid {
        start: 0,
        end: 5_000_000,
        step: 15_000,
    };
    let ops = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "quantile(0.3,",
    ];
    let inputs = [
        "x",
        "rate(x[1m])",
        "sum_over_time(x[5m])",
        "last_over_time(x[5m])",
        "quantile_over_time(0.5, x[2m])",
    ];
    for op in ops {
        let open = match op.strip_suffix(',') {
            Some(_) => op.to_string(),
            None => format!("{op}("),
        };
        for input in inputs {
            for by in ["g", "__name__", "id"] {
                // `sort(…)` is the same series through the general path, which holds them all.
                let folded = range(&format!("{open}{input}) by ({by})"), grid, &all).unwrap();
                let held = range(&format!("{open}sort({input})) by ({by})"), grid, &all).unwrap();
                assert!(!folded.is_empty(), "{op} {input} by {by}");
                assert_eq!(folded, held, "{op} {input} by {by}");
            }
        }
    }
}

#[test]
fn an_aggregation_holds_its_groups_not_its_mostly_empty_series() {
    // 20,000 series × 600 steps is past MAX_POINTS held whole; each has one value.
    let all = sparse(20_000, 8, 1_000);
    let grid = Grid {
        start: 0,
        end: 599 * 30_000,
        step: 30_000,
    };
    assert!(20_000 * grid.len() > telemetry_promql::MAX_POINTS);
    assert!(matches!(
        range("x", grid, &all),
        Err(EvalError::TooManyPoints(_))
    ));
    let counts = range("count by (g) (x)", grid, &all).unwrap();
    assert_eq!(counts.len(), 8);
    // Every sample is seen at each step within its lookback (5 min = 10 steps of 30 s, plus
    // the step it lands on), so the counts over all groups at a step add up to the series
    // alive then.
    let at = |t: usize| -> f64 { counts.iter().filter_map(|s| s.values[t]).sum() };
    // At 300 s: samples from 0 to 300 s, one per second.
    assert_eq!(at(10), 301.0);
    assert_eq!(at(599), 301.0);
}
