//! Reads: a GPU's samples by time (heads merged with chunks, bucket by bucket), GPU and metric
//! listings from the catalog.

use std::sync::Arc;

use crate::model::{GpuDetail, GpuInfo, Point};
use crate::reader::SeriesReader;
use crate::store::Store;
use crate::workload::WORKLOAD_METRIC;
use crate::{Result, Timestamp};

/// Position after the last point of a page: the next page starts strictly after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeCursor {
    /// Timestamp of the last point returned.
    pub timestamp: Timestamp,
    /// Metric of the last point returned (points are ordered by time, then metric name).
    pub metric: String,
}

/// A range read: one GPU, some metrics, an inclusive time window, a page size and a cursor.
#[derive(Debug, Clone)]
pub struct RangeQuery<'a> {
    /// GPU UUID.
    pub uuid: &'a str,
    /// Metric names to read; empty means all metrics of the GPU.
    pub metrics: &'a [String],
    /// Inclusive start.
    pub start: Timestamp,
    /// Inclusive end.
    pub end: Timestamp,
    /// Maximum points returned.
    pub limit: usize,
    /// Resume after this point.
    pub cursor: Option<RangeCursor>,
}

/// One page of a range read.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// Names of the metrics the points refer to, sorted.
    pub metrics: Vec<Arc<str>>,
    /// Points ordered by (timestamp, metric).
    pub points: Vec<Point>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<RangeCursor>,
}

/// The first `q.limit` points of the readers merged by (time, metric) after the cursor, and
/// whether more exist.
fn merge_page(readers: &mut [SeriesReader], q: &RangeQuery<'_>) -> Result<(Vec<Point>, bool)> {
    let mut active = Vec::with_capacity(readers.len());
    for r in readers.iter_mut() {
        active.push(if r.fill()? { r.current() } else { None });
    }
    let mut points = Vec::with_capacity(q.limit.min(16_384));
    while let Some(ts) = active.iter().flatten().map(|s| s.0).min() {
        // Every series at this timestamp, in metric order.
        for (rank, (r, cur)) in readers.iter_mut().zip(active.iter_mut()).enumerate() {
            let Some((t, v)) = *cur else { continue };
            if t != ts {
                continue;
            }
            *cur = r.advance()?;
            if let Some(c) = &q.cursor {
                if t == c.timestamp && *r.metric <= *c.metric {
                    continue;
                }
            }
            if points.len() == q.limit {
                return Ok((points, true));
            }
            points.push(Point {
                timestamp: t,
                metric: rank as u16,
                value: v,
            });
        }
    }
    Ok((points, false))
}

impl Store {
    /// Reads one page of a GPU's samples ordered by (time, metric); `None` if the GPU is unknown.
    pub fn range(&self, q: &RangeQuery<'_>) -> Result<Option<Page>> {
        let from = match &q.cursor {
            Some(c) => q.start.max(c.timestamp),
            None => q.start,
        };
        if from > q.end || q.limit == 0 {
            return Ok(self.knows_gpu(q.uuid).then(|| Page {
                metrics: Vec::new(),
                points: Vec::new(),
                next: None,
            }));
        }
        let Some((mut readers, snapshot)) = self.open_readers(q.uuid, q.metrics, from, q.end)?
        else {
            return Ok(None);
        };
        let metrics: Vec<Arc<str>> = readers.iter().map(|r| r.metric.clone()).collect();
        let (points, more) = merge_page(&mut readers, q)?;
        drop(snapshot);
        let next = match (more, points.last()) {
            (true, Some(p)) => Some(RangeCursor {
                timestamp: p.timestamp,
                metric: metrics
                    .get(usize::from(p.metric))
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Some(Page {
            metrics,
            points,
            next,
        }))
    }

    /// All GPUs, sorted by UUID (read from the catalog, never from the samples).
    pub fn gpus(&self) -> Vec<GpuInfo> {
        let mut v = self.lock().catalog.gpus.clone();
        v.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        v
    }

    /// One GPU with its metric names ([`WORKLOAD_METRIC`] left out) and the span of its
    /// samples.
    pub fn gpu(&self, uuid: &str) -> Option<GpuDetail> {
        let inner = self.lock();
        let cat = &inner.catalog;
        let id = cat.find_gpu(uuid)?;
        let mut metrics = Vec::new();
        let (mut first, mut last) = (None::<Timestamp>, None::<Timestamp>);
        for &slot in cat.gpu_series.get(id as usize).into_iter().flatten() {
            let Some(s) = cat.series.get(slot as usize) else {
                continue;
            };
            let Some((f, l)) = s.extent else { continue };
            match cat.metric_names.get(usize::from(s.id.metric)) {
                Some(name) if **name == *WORKLOAD_METRIC => continue,
                Some(name) => metrics.push(name.to_string()),
                None => {}
            }
            first = Some(first.map_or(f, |x| x.min(f)));
            last = Some(last.map_or(l, |x| x.max(l)));
        }
        metrics.sort();
        Some(GpuDetail {
            info: cat.gpus.get(id as usize)?.clone(),
            metrics,
            first_timestamp: first,
            last_timestamp: last,
        })
    }

    /// Metric names with at least one stored sample, sorted ([`WORKLOAD_METRIC`] left out).
    pub fn metrics(&self) -> Vec<String> {
        let inner = self.lock();
        let cat = &inner.catalog;
        let mut seen = vec![false; cat.metric_names.len()];
        for s in cat.series.iter().filter(|s| s.extent.is_some()) {
            if let Some(x) = seen.get_mut(usize::from(s.id.metric)) {
                *x = true;
            }
        }
        let mut v: Vec<String> = cat
            .metric_names
            .iter()
            .zip(seen)
            .filter(|(n, s)| *s && ***n != *WORKLOAD_METRIC)
            .map(|(n, _)| n.to_string())
            .collect();
        v.sort();
        v
    }
}
