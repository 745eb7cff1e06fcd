//! Functions of a range vector (`rate(x[5m])`, `max_over_time(x[1h])`, …), each a function of
//! one series' samples in one window, as in Prometheus 2.42's `promql/functions.go`.

/// One window of one series at one evaluation time.
pub(crate) struct Window<'a> {
    /// The samples in `[start, end]`, in time order (at least one).
    pub points: &'a [(i64, f64)],
    /// The evaluation time (ms).
    pub t: i64,
    /// Window bounds (ms): `t - offset - range` and `t - offset`.
    pub start: i64,
    pub end: i64,
    /// The function's scalar argument at this time, if it has one.
    pub arg: f64,
}

/// A range function: a value, or none (the series has no result at that time).
pub(crate) type RangeFn = fn(&Window) -> Option<f64>;

/// The range function called `name`, with the index of its range-vector argument.
pub(crate) fn lookup(name: &str) -> Option<(RangeFn, usize)> {
    let f: RangeFn = match name {
        "rate" => |w| extrapolated(w, true, true),
        "increase" => |w| extrapolated(w, true, false),
        "delta" => |w| extrapolated(w, false, false),
        "irate" => |w| instant(w.points, true),
        "idelta" => |w| instant(w.points, false),
        "deriv" => |w| (w.points.len() >= 2).then(|| regression(w.points, w.points[0].0).0),
        "predict_linear" => |w| {
            (w.points.len() >= 2).then(|| {
                let (slope, intercept) = regression(w.points, w.t);
                slope * w.arg + intercept
            })
        },
        "changes" => |w| {
            Some(count_pairs(w.points, |a, b| {
                b != a && !(a.is_nan() && b.is_nan())
            }))
        },
        "resets" => |w| Some(count_pairs(w.points, |a, b| b < a)),
        "avg_over_time" => |w| Some(mean(w.points)),
        "sum_over_time" => |w| Some(kahan(w.points.iter().map(|p| p.1))),
        "count_over_time" => |w| Some(w.points.len() as f64),
        "last_over_time" => |w| w.points.last().map(|p| p.1),
        "present_over_time" => |_| Some(1.0),
        "max_over_time" => |w| Some(extreme(w.points, |v, m| v > m)),
        "min_over_time" => |w| Some(extreme(w.points, |v, m| v < m)),
        "stddev_over_time" => |w| Some(variance(w.points).sqrt()),
        "stdvar_over_time" => |w| Some(variance(w.points)),
        "quantile_over_time" => |w| {
            let mut v: Vec<f64> = w.points.iter().map(|p| p.1).collect();
            Some(crate::aggregate::quantile(w.arg, &mut v))
        },
        _ => return None,
    };
    let index = usize::from(name == "quantile_over_time");
    Some((f, index))
}

/// `rate`, `increase` and `delta`: the change over the window, extrapolated to its edges.
fn extrapolated(w: &Window, counter: bool, per_second: bool) -> Option<f64> {
    let p = w.points;
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = first.1;
        for q in &p[1..] {
            if q.1 < prev {
                result += prev;
            }
            prev = q.1;
        }
    }
    let mut to_start = (first.0 - w.start) as f64 / 1000.0;
    let to_end = (w.end - last.0) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (p.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    let mut factor = interval / sampled;
    if per_second {
        factor /= (w.end - w.start) as f64 / 1000.0;
    }
    Some(result * factor)
}

/// `irate` and `idelta`: from the last two samples.
fn instant(p: &[(i64, f64)], rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (prev, last) = (p[p.len() - 2], p[p.len() - 1]);
    let mut result = if rate && last.1 < prev.1 {
        last.1
    } else {
        last.1 - prev.1
    };
    let interval = last.0 - prev.0;
    if interval == 0 {
        return None;
    }
    if rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Neumaier's compensated sum step, as Prometheus' `kahanSumInc`.
pub(crate) fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn kahan(values: impl Iterator<Item = f64>) -> f64 {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    if sum.is_infinite() {
        sum
    } else {
        sum + c
    }
}

fn mean(points: &[(i64, f64)]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0, 0.0);
    for &(_, v) in points {
        count += 1.0;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(v / count - mean / count, mean, c);
    }
    if mean.is_infinite() {
        mean
    } else {
        mean + c
    }
}

fn extreme(points: &[(i64, f64)], better: fn(f64, f64) -> bool) -> f64 {
    let mut m = points[0].1;
    for &(_, v) in points {
        if better(v, m) || m.is_nan() {
            m = v;
        }
    }
    m
}

fn variance(points: &[(i64, f64)]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &(_, v) in points {
        count += 1.0;
        let delta = v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

fn count_pairs(points: &[(i64, f64)], hit: fn(f64, f64) -> bool) -> f64 {
    points.windows(2).filter(|w| hit(w[0].1, w[1].1)).count() as f64
}

/// Least-squares slope and the intercept at `at` (ms), as Prometheus' `linearRegression`.
fn regression(points: &[(i64, f64)], at: i64) -> (f64, f64) {
    let (mut n, mut sx, mut cx, mut sy, mut cy) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut sxy, mut cxy, mut sx2, mut cx2) = (0.0, 0.0, 0.0, 0.0);
    let first = points[0].1;
    let mut constant = true;
    for (i, &(t, v)) in points.iter().enumerate() {
        if constant && i > 0 && v != first {
            constant = false;
        }
        n += 1.0;
        let x = (t - at) as f64 / 1e3;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(v, sy, cy);
        (sxy, cxy) = kahan_inc(x * v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    if constant {
        if first.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, first);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov = sxy - sx * sy / n;
    let var = sx2 - sx * sx / n;
    let slope = cov / var;
    (slope, sy / n - slope * sx / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(points: &[(i64, f64)], t: i64, range: i64) -> Window<'_> {
        Window {
            points,
            t,
            start: t - range,
            end: t,
            arg: 0.0,
        }
    }

    #[test]
    fn rate_extrapolates_to_the_window_edges_and_handles_resets() {
        // Samples every 10 s from 0 to 60 s, +1 per sample: 6 over 60 s, window of 60 s.
        let p: Vec<(i64, f64)> = (0..=6).map(|i| (i * 10_000, i as f64)).collect();
        let rate = lookup("rate").expect("rate").0;
        let w = window(&p, 60_000, 60_000);
        assert!((rate(&w).expect("value") - 0.1).abs() < 1e-12);
        // Window (5 s, 65 s]: first sample at 10 s, last 60 s; 5 s to each edge < 1.1 × 10 s.
        let w = window(&p[1..], 65_000, 60_000);
        assert!((rate(&w).expect("value") - 5.0 * (60.0 / 50.0) / 60.0).abs() < 1e-12);
        // A reset from 6 to 1 counts 6 + 1.
        let reset = [(0, 5.0), (10_000, 6.0), (20_000, 1.0)];
        let inc = lookup("increase").expect("increase").0;
        let w = window(&reset, 20_000, 20_000);
        // Zero point: 5 / (6 - 5 + ...) — the start is capped by the extrapolated zero.
        let got = inc(&w).expect("value");
        assert!((got - 2.0).abs() < 1e-12, "{got}");
        assert_eq!(rate(&window(&p[..1], 0, 60_000)), None);
    }

    #[test]
    fn over_time_functions_match_prometheus_definitions() {
        let p = [(0, 1.0), (1, 3.0), (2, f64::NAN), (3, 2.0)];
        let f = |n: &str| lookup(n).expect(n).0(&window(&p, 3, 3));
        assert_eq!(f("count_over_time"), Some(4.0));
        assert_eq!(f("last_over_time"), Some(2.0));
        // A NaN after the first sample is passed over, as in Go.
        assert_eq!(f("max_over_time"), Some(3.0));
        assert_eq!(f("changes"), Some(3.0));
        assert_eq!(f("resets"), Some(0.0));
        let q = [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)];
        let w = |arg| Window {
            arg,
            ..window(&q, 3, 3)
        };
        let qf = lookup("quantile_over_time").expect("q").0;
        assert_eq!(qf(&w(0.5)), Some(2.5));
        let d = lookup("deriv").expect("d").0(&window(&q, 3, 3)).expect("slope");
        assert!((d - 1000.0).abs() < 1e-9, "{d}");
        assert_eq!(
            lookup("stdvar_over_time").expect("v").0(&window(&q, 3, 3)),
            Some(1.25)
        );
    }
}
