//! The node's embedded time-series engine on the fjall LSM store.
//!
//! A series is one metric of one GPU. Samples first land in the series' in-memory **head**
//! (strictly time-ordered, last write wins). A **checkpoint** ([`Store::checkpoint`], due every
//! few seconds or when writes pause) freezes the heads under the store's lock in constant time,
//! then, while reads and writes go on, turns them into compressed **chunks** keyed
//! `(gpu, metric, bucket start, generation)` and commits them, with the catalog and the sample
//! count, in one atomic fjall batch followed by an fsync. The newest bucket of a series holds
//! tiered parts; older buckets hold one sealed chunk each ([`flush`](self) has the rules).
//!
//! Crash safety comes from the broker: a collector commits its broker offset only once
//! [`Store::durable_generation`] covers what it wrote, so the broker log is the write-ahead log of
//! the heads, and a restart replays it. Writes are idempotent, so the replay is harmless.
//!
//! Chunks are Gorilla-style: delta-of-delta timestamps, values as scaled-integer deltas when they
//! are fixed-decimal (most DCGM fields) or XOR otherwise, whichever is shorter ([`codec`]).
#![deny(missing_docs)]

mod bits;
mod bucket;
mod catalog;
mod checkpoint;
pub mod codec;
mod dictionary;
mod digest;
pub mod disk;
mod error;
mod flush;
mod heads;
mod keys;
mod model;
mod read;
mod reader;
mod store;
mod summary;
mod window;
mod workload;
mod write;

pub use dictionary::NAME_CACHE_WORKLOADS;
pub use digest::{metric_hash, sample_hash, Digest, GpuDigest, SpanDigest};
pub use error::{Result, StorageError};
pub use flush::TIER_FANOUT;
pub use model::{
    BatchBuilder, BatchSample, GpuDetail, GpuInfo, Point, SampleBatch, Timestamp,
    MAX_BATCH_DECODE_BYTES, MAX_NAME_BYTES,
};
pub use read::{Page, RangeCursor, RangeQuery};
pub use store::{
    Store, StoreOptions, WriteStats, DEFAULT_BUCKET_WIDTH, DEFAULT_CHECKPOINT_INTERVAL,
    DEFAULT_MAX_HEAD_SAMPLES, IDLE_CHECKPOINT, MAX_CHECKPOINT_DELAY, MIN_CHUNK_SAMPLES,
};
pub use summary::{Latest, Steps};
pub use window::SeriesWindow;
pub use workload::{id_of_value, Workload, WORKLOAD_LABELS, WORKLOAD_METRIC};
pub use write::WRITE_SLICE_SAMPLES;
