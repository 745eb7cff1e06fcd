//! The broker: one durable partition log per owned partition, each behind its own actor.

mod log;
mod partition;

pub use log::{
    decode_record, encode_record, find_record, record_len, AppendRefusal, LogConfig, PartitionLog,
    RecordError, RECORD_HEADER_BYTES,
};
pub use partition::{
    AppendReply, BrokerMsg, BrokerPartition, BrokerPartitionArgs, FetchReply, PartitionStatus,
    COLLECTOR_CONSUMER, MAX_PARKED_FETCHES,
};
