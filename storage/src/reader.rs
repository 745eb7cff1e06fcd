//! [`SeriesReader`]: one series' samples in a window, merged from its chunks on disk and its
//! frozen and active heads, decoded a bucket at a time; and opening the readers of a GPU's
//! series under one consistent view.

use std::sync::Arc;

use fjall::{Iter, Readable, Snapshot};

use crate::bucket::{decode_chunk_window, merge_newer};
use crate::codec::Sample;
use crate::keys::{bucket_of, chunk_key, parse_chunk_key, SeriesId};
use crate::store::Store;
use crate::{Result, StorageError, Timestamp};

/// One series' samples in a window, decoded a bucket at a time.
pub(crate) struct SeriesReader {
    id: SeriesId,
    pub(crate) metric: Arc<str>,
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
    pub(crate) buf: Vec<Sample>,
    pub(crate) pos: usize,
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
    pub(crate) fn fill(&mut self) -> Result<bool> {
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

    pub(crate) fn current(&self) -> Option<Sample> {
        self.buf.get(self.pos).copied()
    }

    pub(crate) fn advance(&mut self) -> Result<Option<Sample>> {
        self.pos += 1;
        if self.pos >= self.buf.len() && !self.fill()? {
            return Ok(None);
        }
        Ok(self.current())
    }
}

impl Store {
    /// True when the catalog knows the GPU.
    pub(crate) fn knows_gpu(&self, uuid: &str) -> bool {
        self.lock().catalog.find_gpu(uuid).is_some()
    }

    /// Readers of the GPU's series named in `metrics` (all when empty) with samples in
    /// `[from, end]`, sorted by metric name, and the snapshot their chunks are read from;
    /// `None` if the GPU is unknown.
    pub(crate) fn open_readers(
        &self,
        uuid: &str,
        metrics: &[String],
        from: Timestamp,
        end: Timestamp,
    ) -> Result<Option<(Vec<SeriesReader>, Snapshot)>> {
        let (mut readers, snapshot) = {
            let inner = self.lock();
            let cat = &inner.catalog;
            let Some(gpu) = cat.find_gpu(uuid) else {
                return Ok(None);
            };
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
                if s.extent.is_none_or(|(f, l)| l < from || f > end)
                    || !(metrics.is_empty() || metrics.iter().any(|m| **m == **name))
                {
                    continue;
                }
                let window = |h: &[Sample]| {
                    let lo = h.partition_point(|x| x.0 < from);
                    let hi = h.partition_point(|x| x.0 <= end);
                    h[lo..hi.max(lo)].to_vec()
                };
                let range = chunk_key(s.id, bucket_of(from, self.width), 0)
                    ..=chunk_key(s.id, bucket_of(end, self.width), u64::MAX);
                readers.push(SeriesReader {
                    id: s.id,
                    metric: name.clone(),
                    chunks: snapshot.range(&eng.ks.samples, range),
                    peeked: None,
                    head: window(inner.heads.frozen(slot)),
                    active: window(inner.heads.active(slot)),
                    head_pos: 0,
                    from,
                    end,
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
        Ok(Some((readers, snapshot)))
    }
}
