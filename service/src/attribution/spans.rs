//! From one GPU's observations (and its utilisation and power samples) to workload spans: a
//! pure function, so its rules are stated once and tested by table.
//!
//! - A **span** is a run of consecutive observations naming one workload, none more than
//!   [`MAX_GAP`] after the previous. A different workload, or a longer silence (the GPU idle or
//!   unobserved), ends it.
//! - The GPU's **interval** is the median gap between consecutive observations (gaps over
//!   [`MAX_GAP`] left out); a span **holds** the GPU from its first observation to its last,
//!   plus one interval (so n scrapes every s seconds hold n·s seconds).
//! - **Utilisation** of a span: the mean of the GPU's utilisation samples taken at the span's
//!   own observations' times (each sample is attributed exactly, never interpolated).
//! - **Energy** of a span: each power sample at one of its observations, in watts, times the
//!   time to the GPU's next power sample (at most [`MAX_GAP`]; the last one, one interval).

use telemetry_actors::cluster::protocol::Span;
use telemetry_storage::{id_of_value, Workload};

/// Longest silence inside a span: Prometheus' lookback, beyond which it too stops showing a
/// series' last sample.
pub const MAX_GAP: i64 = 5 * 60 * 1000;

/// A GPU's samples in a window, each in time order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Samples<'a> {
    /// Observations: (time, workload id as the sample's value).
    pub observed: &'a [(i64, f64)],
    /// Utilisation (%).
    pub util: &'a [(i64, f64)],
    /// Power (W).
    pub power: &'a [(i64, f64)],
}

/// The GPU's spans, in time order; `name` resolves an id (ids it cannot resolve are skipped).
pub fn spans<'n>(s: Samples<'_>, name: impl Fn(u64) -> Option<&'n Workload>) -> Vec<Span> {
    let interval = interval(s.observed);
    let mut out: Vec<(u64, Span)> = Vec::new();
    let mut last: Option<(i64, u64)> = None;
    for &(t, v) in s.observed {
        let Some((id, w)) = id_of_value(v).and_then(|id| Some((id, name(id)?))) else {
            continue;
        };
        let extends = last.is_some_and(|(lt, lid)| lid == id && t - lt <= MAX_GAP);
        match out.last_mut() {
            Some((_, span)) if extends => span.end = t,
            _ => out.push((id, new_span(w, t))),
        }
        last = Some((t, id));
    }
    let mut spans: Vec<Span> = out
        .into_iter()
        .map(|(_, mut span)| {
            span.held_ms = span.end - span.start + interval;
            span
        })
        .collect();
    attribute_util(&mut spans, s);
    attribute_energy(&mut spans, s, interval);
    spans
}

fn new_span(w: &Workload, t: i64) -> Span {
    Span {
        workload: w.clone(),
        start: t,
        end: t,
        held_ms: 0,
        util_sum: 0.0,
        util_samples: 0,
        energy_j: 0.0,
    }
}

/// The median gap between consecutive observations, gaps over [`MAX_GAP`] left out (0 when
/// there is none).
pub fn interval(observed: &[(i64, f64)]) -> i64 {
    let mut gaps: Vec<i64> = observed
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .filter(|g| (1..=MAX_GAP).contains(g))
        .collect();
    if gaps.is_empty() {
        return 0;
    }
    let mid = gaps.len() / 2;
    *gaps.select_nth_unstable(mid).1
}

/// The index of the span whose observations include time `t`, if any: `t` must be a time an
/// observation of that span was taken.
fn span_at(spans: &[Span], observed: &[(i64, f64)], t: i64) -> Option<usize> {
    observed.binary_search_by_key(&t, |o| o.0).ok()?;
    let i = spans.partition_point(|s| s.end < t);
    spans.get(i).filter(|s| s.start <= t).map(|_| i)
}

fn attribute_util(spans: &mut [Span], s: Samples<'_>) {
    for &(t, v) in s.util {
        if let Some(i) = span_at(spans, s.observed, t) {
            spans[i].util_sum += v;
            spans[i].util_samples += 1;
        }
    }
}

fn attribute_energy(spans: &mut [Span], s: Samples<'_>, interval: i64) {
    for (k, &(t, watts)) in s.power.iter().enumerate() {
        let Some(i) = span_at(spans, s.observed, t) else {
            continue;
        };
        let held = match s.power.get(k + 1) {
            Some(next) => (next.0 - t).min(MAX_GAP),
            None => interval,
        };
        spans[i].energy_j += watts * held as f64 / 1000.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn w(pod: &str) -> Workload {
        Workload {
            namespace: "ml".into(),
            pod: pod.into(),
            ..Workload::default()
        }
    }

    /// (time in s, pod or "" for no observation) → observations every listed time.
    fn observe(rows: &[(i64, &str)]) -> Vec<(i64, f64)> {
        rows.iter()
            .filter(|(_, p)| !p.is_empty())
            .map(|&(t, p)| (t * 1000, w(p).id() as f64))
            .collect()
    }

    fn run(observed: &[(i64, f64)], util: &[(i64, f64)], power: &[(i64, f64)]) -> Vec<Span> {
        let names: HashMap<u64, Workload> = ["a", "b"].iter().map(|p| (w(p).id(), w(p))).collect();
        let s = Samples {
            observed,
            util,
            power,
        };
        spans(s, |id| names.get(&id))
    }

    #[test]
    fn spans_break_at_a_new_workload_and_at_a_silence_longer_than_the_lookback() {
        // (rows, want: (pod, start s, end s, held s))
        type Want = &'static [(&'static str, i64, i64, i64)];
        let table: [(&[(i64, &str)], Want); 5] = [
            (&[(0, "a"), (15, "a"), (30, "a")], &[("a", 0, 30, 45)]),
            (
                &[(0, "a"), (15, "a"), (30, "b"), (45, "b")],
                &[("a", 0, 15, 30), ("b", 30, 45, 30)],
            ),
            // Idle (no observation) for 10 minutes, then the same pod again: two spans.
            (
                &[(0, "a"), (15, "a"), (615, "a"), (630, "a")],
                &[("a", 0, 15, 30), ("a", 615, 630, 30)],
            ),
            // a, b, a: three spans, the second a a span of its own.
            (
                &[(0, "a"), (15, "b"), (30, "a")],
                &[("a", 0, 0, 15), ("b", 15, 15, 15), ("a", 30, 30, 15)],
            ),
            // One observation: no interval is known, the span holds nothing.
            (&[(100, "a")], &[("a", 100, 100, 0)]),
        ];
        for (rows, want) in table {
            let got: Vec<(String, i64, i64, i64)> = run(&observe(rows), &[], &[])
                .into_iter()
                .map(|s| {
                    (
                        s.workload.pod,
                        s.start / 1000,
                        s.end / 1000,
                        s.held_ms / 1000,
                    )
                })
                .collect();
            let want: Vec<(String, i64, i64, i64)> = want
                .iter()
                .map(|&(p, a, b, h)| (p.to_string(), a, b, h))
                .collect();
            assert_eq!(got, want, "{rows:?}");
        }
    }

    #[test]
    fn utilisation_and_energy_go_to_the_span_observed_at_each_sample() {
        let observed = observe(&[(0, "a"), (10, "a"), (20, "b"), (30, "b")]);
        // Idle sample at 40 s: attributed to nobody.
        let util: Vec<(i64, f64)> = [(0, 10.0), (10, 30.0), (20, 90.0), (30, 70.0), (40, 5.0)]
            .iter()
            .map(|&(t, v)| (t * 1000, v))
            .collect();
        let power: Vec<(i64, f64)> = [
            (0, 100.0),
            (10, 100.0),
            (20, 300.0),
            (30, 300.0),
            (40, 50.0),
        ]
        .iter()
        .map(|&(t, v)| (t * 1000, v))
        .collect();
        let got = run(&observed, &util, &power);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].util_sum, got[0].util_samples), (40.0, 2));
        assert_eq!((got[1].util_sum, got[1].util_samples), (160.0, 2));
        // 100 W for 10 s twice; 300 W for 10 s twice (the last until the idle sample).
        assert_eq!(got[0].energy_j, 2000.0);
        assert_eq!(got[1].energy_j, 6000.0);
        assert_eq!((got[0].held_ms, got[1].held_ms), (20_000, 20_000));
    }

    #[test]
    fn the_interval_is_the_median_gap_without_silences() {
        let at = |ts: &[i64]| -> Vec<(i64, f64)> { ts.iter().map(|&t| (t, 1.0)).collect() };
        assert_eq!(interval(&at(&[])), 0);
        assert_eq!(interval(&at(&[5])), 0);
        assert_eq!(interval(&at(&[0, 10, 20, 35, 1_000_000])), 10);
        assert_eq!(interval(&at(&[0, MAX_GAP + 1])), 0);
    }
}
