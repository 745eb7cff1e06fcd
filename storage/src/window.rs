//! Whole series in a window, for query engines: each series' samples in time order, read once,
//! with no pages, cursors or merge across metrics (the PromQL evaluator looks at one series at
//! a time). The caller bounds the read by a sample count.

use std::sync::Arc;

use crate::codec::Sample;
use crate::store::Store;
use crate::{Result, Timestamp};

/// A GPU's series read by [`Store::series_window`].
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesWindow {
    /// Per metric (sorted by name): its samples in the window, in time order.
    pub series: Vec<(Arc<str>, Vec<Sample>)>,
    /// Samples counted against the bound.
    pub samples: usize,
}

impl Store {
    /// The samples in `[start, end]` of the GPU's series named in `metrics` (all when empty);
    /// `None` if the GPU is unknown. Reading stops once more than `max_samples` are read: then
    /// `samples` is over the bound and the series are incomplete.
    pub fn series_window(
        &self,
        uuid: &str,
        metrics: &[String],
        (start, end): (Timestamp, Timestamp),
        max_samples: usize,
    ) -> Result<Option<SeriesWindow>> {
        if start > end {
            return Ok(self.knows_gpu(uuid).then(|| SeriesWindow {
                series: Vec::new(),
                samples: 0,
            }));
        }
        let Some((readers, snapshot)) = self.open_readers(uuid, metrics, start, end)? else {
            return Ok(None);
        };
        let mut out = SeriesWindow {
            series: Vec::with_capacity(readers.len()),
            samples: 0,
        };
        for mut r in readers {
            let mut points = Vec::new();
            while out.samples <= max_samples && r.fill()? {
                let fresh = &r.buf[r.pos..];
                out.samples += fresh.len();
                points.extend_from_slice(fresh);
                r.pos = r.buf.len();
            }
            out.series.push((r.metric.clone(), points));
            if out.samples > max_samples {
                break;
            }
        }
        drop(snapshot);
        Ok(Some(out))
    }
}
