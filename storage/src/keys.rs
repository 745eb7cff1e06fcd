//! Binary key layout of the sample keyspace.
//!
//! `gpu id (u32) | metric id (u16) | bucket start (u64) | offset in bucket (u32)`, all big-endian,
//! timestamps with the sign bit flipped so negative times still sort first. Byte order equals
//! (GPU, metric, time) order, so a series is one contiguous range and a GPU is one prefix.

use crate::Timestamp;

/// Bytes of a sample key.
pub const SAMPLE_KEY_LEN: usize = 4 + 2 + 8 + 4;

/// Width of a time bucket in milliseconds; an offset inside a bucket must fit a `u32`.
pub const BUCKET_WIDTH_MS: i64 = 3_600_000;

fn flip(ts: i64) -> u64 {
    (ts as u64) ^ (1 << 63)
}

fn unflip(v: u64) -> i64 {
    (v ^ (1 << 63)) as i64
}

/// The key of one sample.
pub fn sample_key(gpu: u32, metric: u16, ts: Timestamp) -> [u8; SAMPLE_KEY_LEN] {
    let bucket = ts.div_euclid(BUCKET_WIDTH_MS) * BUCKET_WIDTH_MS;
    let offset = (ts - bucket) as u32;
    let mut k = [0u8; SAMPLE_KEY_LEN];
    k[0..4].copy_from_slice(&gpu.to_be_bytes());
    k[4..6].copy_from_slice(&metric.to_be_bytes());
    k[6..14].copy_from_slice(&flip(bucket).to_be_bytes());
    k[14..18].copy_from_slice(&offset.to_be_bytes());
    k
}

/// Decodes the timestamp of a sample key, `None` when the key has the wrong length.
pub fn sample_key_ts(key: &[u8]) -> Option<Timestamp> {
    let bucket = u64::from_be_bytes(key.get(6..14)?.try_into().ok()?);
    let offset = u32::from_be_bytes(key.get(14..18)?.try_into().ok()?);
    Some(unflip(bucket) + i64::from(offset))
}

/// The key of a series' entry in the series index.
pub fn series_key(gpu: u32, metric: u16) -> [u8; 6] {
    let mut k = [0u8; 6];
    k[0..4].copy_from_slice(&gpu.to_be_bytes());
    k[4..6].copy_from_slice(&metric.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn key_order_is_time_order(a in -1_i64 << 50..1 << 50, b in -1_i64 << 50..1 << 50) {
            let (ka, kb) = (sample_key(7, 3, a), sample_key(7, 3, b));
            prop_assert_eq!(ka.cmp(&kb), a.cmp(&b));
            prop_assert_eq!(sample_key_ts(&ka), Some(a));
        }
    }

    #[test]
    fn golden_layout() {
        let k = sample_key(1, 2, BUCKET_WIDTH_MS + 5);
        assert_eq!(
            k,
            [0, 0, 0, 1, 0, 2, 0x80, 0, 0, 0, 0, 0x36, 0xee, 0x80, 0, 0, 0, 5]
        );
    }
}
