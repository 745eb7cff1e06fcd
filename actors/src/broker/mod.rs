//! The broker: one durable partition log per owned partition, each behind its own actor.

mod log;

pub use log::{AppendRefusal, LogConfig, PartitionLog, RECORD_HEADER_BYTES};
