//! Digests of what a store holds, so replicas can find what they miss without shipping samples.
//!
//! A sample's identity is (GPU, metric, timestamp); its hash mixes the metric name's xxh64 with
//! the timestamp. A [`Digest`] of a set of samples is their count and the wrapping sum of their
//! hashes: order-free, updated in O(1) per sample written or dropped, and equal for two sets
//! holding the same samples. The store keeps one per GPU (persisted with each checkpoint);
//! [`Store::span_digests`] cuts one GPU's into time spans by scanning it, for the spans where
//! two replicas' GPU digests differ.

use std::collections::BTreeMap;

use xxhash_rust::xxh64::xxh64;

use crate::read::{RangeCursor, RangeQuery};
use crate::store::Store;
use crate::{Result, Timestamp};

/// Count and hash-sum of a set of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct Digest {
    /// Distinct samples.
    pub count: u64,
    /// Wrapping sum of [`sample_hash`] over them.
    pub hash: u64,
}

impl Digest {
    /// Adds one sample.
    pub fn add(&mut self, hash: u64) {
        self.count += 1;
        self.hash = self.hash.wrapping_add(hash);
    }

    /// Removes one sample.
    pub fn remove(&mut self, hash: u64) {
        self.count = self.count.saturating_sub(1);
        self.hash = self.hash.wrapping_sub(hash);
    }

    /// The digest of this set without `part` (a subset of it).
    pub fn without(self, part: Digest) -> Digest {
        Digest {
            count: self.count.saturating_sub(part.count),
            hash: self.hash.wrapping_sub(part.hash),
        }
    }

    /// The 16-byte form persisted in the store's `meta` keyspace.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.count.to_be_bytes());
        b[8..].copy_from_slice(&self.hash.to_be_bytes());
        b
    }

    /// Reads [`Digest::to_bytes`]; `None` for another length.
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        let count = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let hash = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        (b.len() == 16).then_some(Self { count, hash })
    }
}

/// The hash of a metric name, computed once per name.
pub fn metric_hash(name: &str) -> u64 {
    xxh64(name.as_bytes(), 0)
}

/// The hash of one sample of a metric (by [`metric_hash`]) at a time (splitmix64's finalizer).
pub fn sample_hash(metric: u64, ts: Timestamp) -> u64 {
    let mut z = metric ^ (ts as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The digest of one span of a GPU's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct SpanDigest {
    /// Start of the span (a multiple of the span width, ms).
    pub start: Timestamp,
    /// Its samples' digest.
    pub digest: Digest,
}

/// Points read per page while digesting a GPU.
const DIGEST_PAGE: usize = 65_536;

/// What a store holds of one GPU, in brief.
#[derive(Debug, Clone, PartialEq, Eq, bincode::Encode, bincode::Decode)]
pub struct GpuDigest {
    /// GPU UUID.
    pub uuid: String,
    /// Digest of all its samples.
    pub digest: Digest,
    /// Its newest sample's time, if it has any.
    pub newest: Option<Timestamp>,
}

impl Store {
    /// Each GPU's digest and newest sample time (UUID order is the catalog's).
    pub fn gpu_digests(&self) -> Vec<GpuDigest> {
        let inner = self.lock();
        let cat = &inner.catalog;
        cat.gpus
            .iter()
            .zip(&cat.gpu_digests)
            .zip(&cat.gpu_series)
            .map(|((g, d), slots)| GpuDigest {
                uuid: g.uuid.clone(),
                digest: *d,
                newest: slots
                    .iter()
                    .filter_map(|s| cat.series.get(*s as usize)?.extent.map(|e| e.1))
                    .max(),
            })
            .collect()
    }

    /// One GPU's samples up to `until` (inclusive), cut into spans of `width` ms, with a digest
    /// per non-empty span, in time order; `None` if the GPU is unknown. Reads every one of those
    /// samples.
    pub fn span_digests(
        &self,
        uuid: &str,
        width: i64,
        until: Timestamp,
    ) -> Result<Option<Vec<SpanDigest>>> {
        let width = width.max(1);
        let mut spans: BTreeMap<Timestamp, Digest> = BTreeMap::new();
        let mut cursor: Option<RangeCursor> = None;
        loop {
            let q = RangeQuery {
                uuid,
                metrics: &[],
                start: Timestamp::MIN / 2,
                end: until.min(Timestamp::MAX / 2),
                limit: DIGEST_PAGE,
                cursor: cursor.take(),
            };
            let Some(page) = self.range(&q)? else {
                return Ok(None);
            };
            let hashes: Vec<u64> = page.metrics.iter().map(|m| metric_hash(m)).collect();
            for p in &page.points {
                let m = hashes
                    .get(usize::from(p.metric))
                    .copied()
                    .unwrap_or_default();
                let start = p.timestamp.div_euclid(width) * width;
                spans
                    .entry(start)
                    .or_default()
                    .add(sample_hash(m, p.timestamp));
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(Some(
            spans
                .into_iter()
                .map(|(start, digest)| SpanDigest { start, digest })
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_is_order_free_and_removal_undoes_addition() {
        let hs: Vec<u64> = (0..100).map(|t| sample_hash(metric_hash("T"), t)).collect();
        let (mut a, mut b) = (Digest::default(), Digest::default());
        hs.iter().for_each(|h| a.add(*h));
        hs.iter().rev().for_each(|h| b.add(*h));
        assert_eq!(a, b);
        a.remove(hs[7]);
        assert_ne!(a, b);
        assert_eq!(a.count, 99);
        a.add(hs[7]);
        assert_eq!(a, b);
        assert_eq!(Digest::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Digest::from_bytes(&[0; 8]), None);
    }

    #[test]
    fn sample_hashes_differ_by_metric_and_time() {
        let (t, p) = (
            metric_hash("DCGM_FI_DEV_GPU_TEMP"),
            metric_hash("DCGM_FI_DEV_POWER_USAGE"),
        );
        assert_ne!(sample_hash(t, 1000), sample_hash(p, 1000));
        assert_ne!(sample_hash(t, 1000), sample_hash(t, 1001));
        assert_eq!(sample_hash(t, -5), sample_hash(t, -5));
    }
}
