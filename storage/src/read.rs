//! Reads: a GPU's samples by time (heads merged with chunks, bucket by bucket), GPU and metric
//! listings from the catalog.

use std::sync::Arc;

use fjall::{Iter, Readable};

use crate::bucket::{decode_chunk_window, merge_newer};
use crate::codec::Sample;
use crate::keys::{bucket_of, chunk_key, parse_chunk_key, SeriesId};
use crate::model::{GpuDetail, GpuInfo, Point};
use crate::store::Store;
use crate::{Result, StorageError, Timestamp};

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

/// One series' samples in a window, decoded a bucket at a time.
struct SeriesReader {
    id: SeriesId,
    metric: Arc<str>,
    chunks: Iter,
    /// A chunk read from `chunks` that belongs to the next bucket.
    peeked: Option<(Timestamp, fjall::UserValue)>,
    /// Head samples inside the window, not yet on disk (frozen and active merged).
    head: Vec<Sample>,
    /// Active head samples inside the window, merged into `head` outside the store's lock.
    active: Vec<Sample>,
    head_pos: usize,
    from: Timestamp,
    end: Timestamp,
    width: i64,
    buf: Vec<Sample>,
    pos: usize,
    scratch: Vec<Sample>,
}

impl SeriesReader {
    fn next_chunk(&mut self) -> Result<Option<(Timestamp, fjall::UserValue)>> {
        if let Some(p) = self.peeked.take() {
            return Ok(Some(p));
        }
        let Some(kv) = self.chunks.next() else {
            return Ok(None);
        };
        let (k, v) = kv.into_inner()?;
        let (_, bucket, _) = parse_chunk_key(&k).ok_or_else(|| StorageError::Corrupt {
            what: "chunk",
            detail: "key length".into(),
        })?;
        Ok(Some((bucket, v)))
    }

    /// Loads the next bucket with samples in the window; false when there is none.
    fn fill(&mut self) -> Result<bool> {
        loop {
            self.buf.clear();
            self.pos = 0;
            let disk = self.next_chunk()?;
            let head_bucket = self
                .head
                .get(self.head_pos)
                .map(|s| bucket_of(s.0, self.width));
            let bucket = match (disk.as_ref().map(|d| d.0), head_bucket) {
                (None, None) => return Ok(false),
                (Some(d), Some(h)) => d.min(h),
                (Some(d), None) => d,
                (None, Some(h)) => h,
            };
            self.peeked = disk;
            while let Some((b, v)) = self.next_chunk()? {
                if b != bucket {
                    self.peeked = Some((b, v));
                    break;
                }
                let window = (self.from, self.end);
                if self.buf.is_empty() {
                    decode_chunk_window(&v, self.id, b, window, &mut self.buf)?;
                } else {
                    self.scratch.clear();
                    decode_chunk_window(&v, self.id, b, window, &mut self.scratch)?;
                    self.buf = merge_newer(std::mem::take(&mut self.buf), &self.scratch);
                }
            }
            let head = &self.head[self.head_pos..];
            let n = head.partition_point(|s| bucket_of(s.0, self.width) == bucket);
            if n > 0 {
                self.buf = merge_newer(std::mem::take(&mut self.buf), &head[..n]);
                self.head_pos += n;
            }
            let lo = self.buf.partition_point(|s| s.0 < self.from);
            let hi = self.buf.partition_point(|s| s.0 <= self.end);
            if lo < hi {
                self.buf.truncate(hi);
                self.pos = lo;
                return Ok(true);
            }
        }
    }

    fn current(&self) -> Option<Sample> {
        self.buf.get(self.pos).copied()
    }

    fn advance(&mut self) -> Result<Option<Sample>> {
        self.pos += 1;
        if self.pos >= self.buf.len() && !self.fill()? {
            return Ok(None);
        }
        Ok(self.current())
    }
}

/// The first `q.limit` points of the readers merged by (time, metric) after the cursor, and
/// whether more exist.
fn merge_page(readers: &mut [SeriesReader], q: &RangeQuery<'_>) -> Result<(Vec<Point>, bool)> {
    if let [only] = readers {
        return copy_page(only, q);
    }
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

/// [`merge_page`] of a single series (a PromQL selection reads one metric of each GPU): its
/// decoded buckets are copied a slice at a time instead of merged point by point.
fn copy_page(r: &mut SeriesReader, q: &RangeQuery<'_>) -> Result<(Vec<Point>, bool)> {
    let mut points = Vec::with_capacity(q.limit.min(16_384));
    let mut more = r.fill()?;
    while more {
        let mut from = r.pos;
        if let Some(c) = &q.cursor {
            // One metric: everything at the cursor's time was on the previous page.
            from +=
                r.buf[r.pos..].partition_point(|s| s.0 <= c.timestamp && *r.metric <= *c.metric);
        }
        let room = q.limit - points.len();
        let take = &r.buf[from.min(r.buf.len())..];
        points.extend(take.iter().take(room).map(|&(timestamp, value)| Point {
            timestamp,
            metric: 0,
            value,
        }));
        if take.len() > room {
            return Ok((points, true));
        }
        r.pos = r.buf.len();
        more = r.fill()?;
        if more && points.len() == q.limit {
            return Ok((points, true));
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
        let (mut readers, snapshot) = {
            let inner = self.lock();
            let cat = &inner.catalog;
            let Some(gpu) = cat.find_gpu(q.uuid) else {
                return Ok(None);
            };
            if from > q.end || q.limit == 0 {
                return Ok(Some(Page {
                    metrics: Vec::new(),
                    points: Vec::new(),
                    next: None,
                }));
            }
            // The snapshot is taken under the lock, so heads and chunks are one consistent view.
            let eng = self.engine()?;
            let snapshot = eng.db.snapshot();
            let mut readers = Vec::new();
            for &slot in cat.gpu_series.get(gpu as usize).into_iter().flatten() {
                let Some(s) = cat.series.get(slot as usize) else {
                    continue;
                };
                let Some(name) = cat.metric_names.get(usize::from(s.id.metric)) else {
                    continue;
                };
                if s.extent.is_none_or(|(f, l)| l < from || f > q.end)
                    || !(q.metrics.is_empty() || q.metrics.iter().any(|m| **m == **name))
                {
                    continue;
                }
                let window = |h: &[Sample]| {
                    let lo = h.partition_point(|x| x.0 < from);
                    let hi = h.partition_point(|x| x.0 <= q.end);
                    h[lo..hi.max(lo)].to_vec()
                };
                let range = chunk_key(s.id, bucket_of(from, self.width), 0)
                    ..=chunk_key(s.id, bucket_of(q.end, self.width), u64::MAX);
                readers.push(SeriesReader {
                    id: s.id,
                    metric: name.clone(),
                    chunks: snapshot.range(&eng.ks.samples, range),
                    peeked: None,
                    head: window(inner.heads.frozen(slot)),
                    active: window(inner.heads.active(slot)),
                    head_pos: 0,
                    from,
                    end: q.end,
                    width: self.width,
                    buf: Vec::new(),
                    pos: 0,
                    scratch: Vec::new(),
                });
            }
            (readers, snapshot)
        };
        for r in &mut readers {
            if !r.active.is_empty() {
                r.head = merge_newer(std::mem::take(&mut r.head), &r.active);
            }
        }
        readers.sort_by(|a, b| a.metric.cmp(&b.metric));
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

    /// One GPU with its metric names and the span of its samples.
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
            if let Some(name) = cat.metric_names.get(usize::from(s.id.metric)) {
                metrics.push(name.to_string());
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

    /// Metric names with at least one stored sample, sorted.
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
            .filter(|(_, s)| *s)
            .map(|(n, _)| n.to_string())
            .collect();
        v.sort();
        v
    }
}
