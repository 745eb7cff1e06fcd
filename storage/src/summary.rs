//! Summaries for dashboards: the newest sample of each series of a GPU, and a GPU's series
//! reduced to one (sum, count) per time step, so a day of one GPU is a few hundred numbers per
//! metric instead of 86,400.

use crate::read::{RangeCursor, RangeQuery};
use crate::store::Store;
use crate::workload::WORKLOAD_METRIC;
use crate::{Result, Timestamp};

/// Points read per page while summarising.
const SUMMARY_PAGE: usize = 10_000;

/// The newest sample of one metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// Metric name.
    pub metric: String,
    /// Its time.
    pub timestamp: Timestamp,
    /// Its value.
    pub value: f64,
}

/// One metric reduced to steps: `(step start, sum, count)`, steps in time order, empty ones left
/// out.
#[derive(Debug, Clone, PartialEq)]
pub struct Steps {
    /// Metric name.
    pub metric: String,
    /// `(step start, sum of values, number of values)`.
    pub steps: Vec<(Timestamp, f64, u32)>,
}

impl Store {
    /// The newest sample of each of a GPU's metrics (all when `metrics` is empty), sorted by
    /// metric; `None` if the GPU is unknown.
    pub fn latest(&self, uuid: &str, metrics: &[String]) -> Result<Option<Vec<Latest>>> {
        let lasts: Vec<(String, Timestamp)> = {
            let inner = self.lock();
            let cat = &inner.catalog;
            let Some(id) = cat.find_gpu(uuid) else {
                return Ok(None);
            };
            cat.gpu_series
                .get(id as usize)
                .into_iter()
                .flatten()
                .filter_map(|&slot| {
                    let s = cat.series.get(slot as usize)?;
                    let name = cat.metric_names.get(usize::from(s.id.metric))?;
                    let (_, last) = s.extent?;
                    (metrics.iter().any(|m| **m == **name)
                        || metrics.is_empty() && **name != *WORKLOAD_METRIC)
                        .then(|| (name.to_string(), last))
                })
                .collect()
        };
        let mut out = Vec::with_capacity(lasts.len());
        for (metric, last) in lasts {
            let one = [metric];
            let page = self.range(&RangeQuery {
                uuid,
                metrics: &one,
                start: last,
                end: last,
                limit: 1,
                cursor: None,
            })?;
            let [metric] = one;
            if let Some(p) = page.and_then(|p| p.points.into_iter().next()) {
                out.push(Latest {
                    metric,
                    timestamp: p.timestamp,
                    value: p.value,
                });
            }
        }
        if metrics.is_empty() {
            out.retain(|s| s.metric != WORKLOAD_METRIC);
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(Some(out))
    }

    /// A GPU's metrics in `[start, end]` reduced to steps of `step` ms (aligned to multiples of
    /// `step`); `None` if the GPU is unknown. The caller bounds `(end - start) / step`.
    pub fn steps(
        &self,
        uuid: &str,
        metrics: &[String],
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<Option<Vec<Steps>>> {
        let step = step.max(1);
        let mut out: Vec<Steps> = Vec::new();
        let mut cursor: Option<RangeCursor> = None;
        loop {
            let Some(page) = self.range(&RangeQuery {
                uuid,
                metrics,
                start,
                end,
                limit: SUMMARY_PAGE,
                cursor: cursor.take(),
            })?
            else {
                return Ok(None);
            };
            for p in &page.points {
                let Some(name) = page.metrics.get(usize::from(p.metric)) else {
                    continue;
                };
                let at = p.timestamp.div_euclid(step) * step;
                let series = match out.iter().position(|s| *s.metric == **name) {
                    Some(i) => &mut out[i],
                    None => {
                        out.push(Steps {
                            metric: name.to_string(),
                            steps: Vec::new(),
                        });
                        let last = out.len() - 1;
                        &mut out[last]
                    }
                };
                // Points come in time order, so a step is always the last one or a new one.
                match series.steps.last_mut() {
                    Some((t, sum, n)) if *t == at => {
                        *sum += p.value;
                        *n += 1;
                    }
                    _ => series.steps.push((at, p.value, 1)),
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        if metrics.is_empty() {
            out.retain(|s| s.metric != WORKLOAD_METRIC);
        }
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        Ok(Some(out))
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{BatchBuilder, GpuInfo};
    use crate::{Store, StoreOptions};

    fn gpu(uuid: &str) -> GpuInfo {
        GpuInfo {
            uuid: uuid.into(),
            hostname: "h".into(),
            ..GpuInfo::default()
        }
    }

    #[test]
    fn latest_and_steps_read_heads_and_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let g = gpu("GPU-1");
        let mut b = BatchBuilder::default();
        for t in 0..100i64 {
            b.push(&g, "TEMP", t * 1000, t as f64);
            if t < 50 {
                b.push(&g, "UTIL", t * 1000, 1.0);
            }
        }
        store.write(&b.take()).expect("write");
        store.checkpoint().expect("checkpoint");
        // A newer sample only in the head.
        b.push(&g, "TEMP", 100_000, 7.0);
        store.write(&b.take()).expect("write");

        let latest = store.latest("GPU-1", &[]).expect("read").expect("known");
        let got: Vec<(&str, i64, f64)> = latest
            .iter()
            .map(|l| (l.metric.as_str(), l.timestamp, l.value))
            .collect();
        assert_eq!(got, [("TEMP", 100_000, 7.0), ("UTIL", 49_000, 1.0)]);
        let only = store
            .latest("GPU-1", &["UTIL".into()])
            .expect("read")
            .expect("known");
        assert_eq!(only.len(), 1);
        assert!(store.latest("GPU-2", &[]).expect("read").is_none());

        let steps = store
            .steps("GPU-1", &["TEMP".into()], 0, 100_000, 30_000)
            .expect("read")
            .expect("known");
        assert_eq!(steps.len(), 1);
        // 0..29 s, 30..59 s, 60..89 s, 90..99 s and the head's 100 s.
        let sums: Vec<(i64, f64, u32)> = steps[0].steps.clone();
        assert_eq!(
            sums,
            [
                (0, (0..30).sum::<i64>() as f64, 30),
                (30_000, (30..60).sum::<i64>() as f64, 30),
                (60_000, (60..90).sum::<i64>() as f64, 30),
                (90_000, (90..100).sum::<i64>() as f64 + 7.0, 11),
            ]
        );
    }
}
