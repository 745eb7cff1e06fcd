//! One bucket of one series on disk: its chunks, read and merged (a later generation wins).

use fjall::{Keyspace, Readable};

use crate::codec::{decode_window, Sample};
use crate::keys::{bucket_prefix, SeriesId};
use crate::{Result, StorageError};

/// Merges two time-ordered runs; on equal timestamps the sample of `newer` wins.
pub fn merge_newer(older: Vec<Sample>, newer: &[Sample]) -> Vec<Sample> {
    if older.is_empty() {
        return newer.to_vec();
    }
    if newer.is_empty() {
        return older;
    }
    if older.last().map(|s| s.0) < newer.first().map(|s| s.0) {
        let mut out = older;
        out.extend_from_slice(newer);
        return out;
    }
    let mut out = Vec::with_capacity(older.len() + newer.len());
    let (mut i, mut j) = (0, 0);
    while i < older.len() && j < newer.len() {
        let (a, b) = (older[i], newer[j]);
        match a.0.cmp(&b.0) {
            std::cmp::Ordering::Less => {
                out.push(a);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(b);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&older[i..]);
    out.extend_from_slice(&newer[j..]);
    out
}

/// Decodes one chunk value, naming the series and bucket when it is damaged.
pub fn decode_chunk(
    value: &[u8],
    series: SeriesId,
    bucket: i64,
    out: &mut Vec<Sample>,
) -> Result<()> {
    decode_chunk_window(value, series, bucket, (i64::MIN, i64::MAX), out)
}

/// Decodes the part of a chunk inside `window` (inclusive), naming the series and bucket when
/// it is damaged.
pub fn decode_chunk_window(
    value: &[u8],
    series: SeriesId,
    bucket: i64,
    (from, end): (i64, i64),
    out: &mut Vec<Sample>,
) -> Result<()> {
    decode_window(value, from, end, out)
        .map(|_| ())
        .map_err(|e| StorageError::Corrupt {
            what: "chunk",
            detail: format!(
                "gpu {} metric {} bucket {bucket}: {e}",
                series.gpu, series.metric
            ),
        })
}

/// A bucket's samples merged from all its chunks, and the keys of those chunks.
pub fn read_bucket(
    from: &impl Readable,
    samples: &Keyspace,
    series: SeriesId,
    bucket: i64,
) -> Result<(Vec<Sample>, Vec<fjall::UserKey>)> {
    let mut merged = Vec::new();
    let mut keys = Vec::new();
    let mut scratch = Vec::new();
    for kv in from.prefix(samples, bucket_prefix(series, bucket)) {
        let (k, v) = kv.into_inner()?;
        if merged.is_empty() {
            decode_chunk(&v, series, bucket, &mut merged)?;
        } else {
            scratch.clear();
            decode_chunk(&v, series, bucket, &mut scratch)?;
            merged = merge_newer(merged, &scratch);
        }
        keys.push(k);
    }
    Ok((merged, keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_wins_on_equal_timestamps() {
        let older = vec![(1, 1.0), (3, 3.0), (5, 5.0)];
        let newer = [(2, 20.0), (3, 30.0), (6, 60.0)];
        assert_eq!(
            merge_newer(older, &newer),
            [(1, 1.0), (2, 20.0), (3, 30.0), (5, 5.0), (6, 60.0)]
        );
        assert_eq!(
            merge_newer(vec![(1, 1.0)], &[(2, 2.0)]),
            [(1, 1.0), (2, 2.0)]
        );
        assert_eq!(merge_newer(vec![], &[(2, 2.0)]), [(2, 2.0)]);
    }
}
