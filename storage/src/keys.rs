//! Binary key layout of the chunk keyspace.
//!
//! `gpu id u32 | metric id u16 | bucket start i64 | generation u64`, big-endian, the bucket start
//! with its sign bit flipped so negative times still sort first. Byte order is therefore
//! (GPU, metric, bucket, generation) order: a GPU's history is one contiguous prefix, a series'
//! buckets are adjacent in time order, and the chunks of one bucket follow in the order they were
//! written (a later generation wins on equal timestamps).

use crate::Timestamp;

/// Bytes of a chunk key.
pub const CHUNK_KEY_LEN: usize = 4 + 2 + 8 + 8;
/// Bytes of a series key (and of the prefix of its chunk keys).
pub const SERIES_KEY_LEN: usize = 6;

/// A series: one metric of one GPU, by catalog ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesId {
    /// GPU id in the catalog.
    pub gpu: u32,
    /// Metric id in the catalog.
    pub metric: u16,
}

fn flip(ts: i64) -> u64 {
    (ts as u64) ^ (1 << 63)
}

fn unflip(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// Start of the bucket holding `ts`.
pub fn bucket_of(ts: Timestamp, width: i64) -> Timestamp {
    ts.div_euclid(width) * width
}

/// The key of a series in the series keyspace, and the prefix of its chunk keys.
pub fn series_key(s: SeriesId) -> [u8; SERIES_KEY_LEN] {
    let mut k = [0u8; SERIES_KEY_LEN];
    k[0..4].copy_from_slice(&s.gpu.to_be_bytes());
    k[4..6].copy_from_slice(&s.metric.to_be_bytes());
    k
}

/// Decodes a series key.
pub fn parse_series_key(k: &[u8]) -> Option<SeriesId> {
    let k: &[u8; SERIES_KEY_LEN] = k.try_into().ok()?;
    Some(SeriesId {
        gpu: u32::from_be_bytes([k[0], k[1], k[2], k[3]]),
        metric: u16::from_be_bytes([k[4], k[5]]),
    })
}

/// The key of one chunk.
pub fn chunk_key(s: SeriesId, bucket: Timestamp, generation: u64) -> [u8; CHUNK_KEY_LEN] {
    let mut k = [0u8; CHUNK_KEY_LEN];
    k[0..6].copy_from_slice(&series_key(s));
    k[6..14].copy_from_slice(&flip(bucket).to_be_bytes());
    k[14..22].copy_from_slice(&generation.to_be_bytes());
    k
}

/// The prefix shared by every chunk of one bucket of one series.
pub fn bucket_prefix(s: SeriesId, bucket: Timestamp) -> [u8; 14] {
    let mut k = [0u8; 14];
    k.copy_from_slice(&chunk_key(s, bucket, 0)[..14]);
    k
}

/// Decodes a chunk key into (series, bucket start, generation).
pub fn parse_chunk_key(k: &[u8]) -> Option<(SeriesId, Timestamp, u64)> {
    if k.len() != CHUNK_KEY_LEN {
        return None;
    }
    let series = parse_series_key(k.get(0..6)?)?;
    let bucket = unflip(u64::from_be_bytes(k.get(6..14)?.try_into().ok()?));
    let generation = u64::from_be_bytes(k.get(14..22)?.try_into().ok()?);
    Some((series, bucket, generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: SeriesId = SeriesId { gpu: 7, metric: 3 };

    proptest! {
        #[test]
        fn key_order_is_bucket_then_generation_order(
            a in -1_i64 << 50..1 << 50, b in -1_i64 << 50..1 << 50, ga: u64, gb: u64,
        ) {
            let (ka, kb) = (chunk_key(S, a, ga), chunk_key(S, b, gb));
            prop_assert_eq!(ka.cmp(&kb), (a, ga).cmp(&(b, gb)));
            prop_assert_eq!(parse_chunk_key(&ka), Some((S, a, ga)));
            prop_assert!(ka.starts_with(&bucket_prefix(S, a)));
        }
    }

    #[test]
    fn golden_layout() {
        let k = chunk_key(SeriesId { gpu: 1, metric: 2 }, 3_600_000, 5);
        assert_eq!(
            k,
            [0, 0, 0, 1, 0, 2, 0x80, 0, 0, 0, 0, 0x36, 0xee, 0x80, 0, 0, 0, 0, 0, 0, 0, 5]
        );
        assert_eq!(bucket_of(-1, 1000), -1000);
        assert_eq!(bucket_of(1999, 1000), 1000);
        assert!(parse_chunk_key(&k[..21]).is_none());
    }
}
