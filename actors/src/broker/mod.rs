//! The broker: one durable partition log per owned partition, each behind its own actor.
//!
//! # Layout
//! - `record`: the bytes of one record (encode, decode, find), pure.
//! - `segment`: a segment file and its record positions.
//! - `recovery`: validating a segment at open (torn tail vs. acknowledged damage).
//! - `consumers`: the committed-offsets file.
//! - `log`: [`PartitionLog`], appends, reads, commits, trim and reclaim.
//! - `partition`: the [`BrokerPartition`] actor (group commit, parked fetches, refusals).

mod consumers;
mod log;
mod partition;
mod record;
mod recovery;
mod segment;

pub use log::{
    AppendRefusal, LogConfig, PartitionLog, DEFAULT_MAX_UNCONSUMED_BYTES, DEFAULT_RECLAIM_AGE,
    DEFAULT_RECLAIM_BYTES, DEFAULT_SEGMENT_BYTES,
};
pub use partition::{
    AppendReply, BrokerMsg, BrokerPartition, BrokerPartitionArgs, FetchReply, PartitionStatus,
    COLLECTOR_CONSUMER, MAX_PARKED_FETCHES,
};
pub use record::{
    decode_record, encode_record, find_record, record_len, RecordError, RECORD_HEADER_BYTES,
};
