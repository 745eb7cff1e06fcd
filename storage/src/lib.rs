//! The node's time-series store on the fjall LSM engine.
//!
//! One sample is (GPU, metric, timestamp, value); GPU attributes are stored once per GPU. Keys are
//! `(gpu id, metric id, bucket start, offset in bucket)` big-endian, so a GPU's history is one
//! contiguous range and a series' buckets are adjacent. Writes are idempotent: the same
//! (GPU, metric, timestamp) is one key, and the last write wins.
//!
//! The interface is deliberately narrow ([`Store::write`], [`Store::range`], [`Store::gpus`],
//! [`Store::gpu`]) so the engine underneath can change without touching its callers.
#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod error;
mod keys;
mod model;
mod store;

pub use error::{Result, StorageError};
pub use model::{
    BatchBuilder, BatchSample, GpuDetail, GpuInfo, Point, SampleBatch, Timestamp,
    MAX_BATCH_DECODE_BYTES,
};
pub use store::{Page, RangeCursor, RangeQuery, Store, StoreOptions, WriteStats, BUCKET_WIDTH_MS};
