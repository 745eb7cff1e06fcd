//! The cluster protocol: requests and responses between nodes, inside ractor_cluster messages.
//!
//! Every message is `version u16 BE | bincode 2 body`, carried as a `Vec<u8>` by the endpoint
//! actor, so nodes of another protocol version are refused with a clear error instead of being
//! misread, and the body never depends on ractor's own serialization.

use bincode::{Decode, Encode};
use telemetry_storage::{GpuDigest, GpuInfo, SpanDigest, Workload};

use super::membership::NodeInfo;

/// Version of this protocol; a message with another version is refused.
pub const PROTOCOL_VERSION: u16 = 6;
/// Largest message accepted, far below ractor_cluster's 16 MiB frame cap.
pub const MAX_MESSAGE_BYTES: usize = 8 << 20;

/// What a node asks another.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Request {
    /// Who are you? Answered with [`Response::Hello`].
    Hello(NodeInfo),
    /// Liveness probe, carrying the sender; answered with [`Response::Hello`].
    Ping(NodeInfo),
    /// This node's numbers for `/api/v1/cluster`; answered with [`Response::Status`].
    Status,
    /// Every GPU this node stores; answered with [`Response::Gpus`].
    Gpus,
    /// One GPU as this node stores it; answered with [`Response::Gpu`].
    Gpu(String),
    /// Metric names this node stores; answered with [`Response::Metrics`].
    Metrics,
    /// A page of one GPU's samples from this node; answered with [`Response::Telemetry`].
    Telemetry(TelemetryQuery),
    /// Start (`start: true`) or report this node's decommission.
    Decommission {
        /// Start it if it is not running or done.
        start: bool,
    },
    /// The newest sample of each metric (all when empty) of these GPUs, as this node stores
    /// them; answered with [`Response::Latest`].
    Latest {
        /// GPU UUIDs.
        uuids: Vec<String>,
        /// Metric names; empty for all.
        metrics: Vec<String>,
    },
    /// One GPU's metrics reduced to steps; answered with [`Response::Steps`].
    Steps {
        /// GPU UUID.
        uuid: String,
        /// Metric names; empty for all.
        metrics: Vec<String>,
        /// Inclusive start (ms).
        start: i64,
        /// Inclusive end (ms).
        end: i64,
        /// Step (ms).
        step: i64,
    },
    /// Cluster addresses of the peers this node sees up (the self-dialled mesh learns members
    /// this way); answered with [`Response::Peers`].
    Peers,
    /// The digest of every GPU of a partition this node stores samples of; answered with
    /// [`Response::GpuDigests`] (repair compares them).
    GpuDigests {
        /// Partition.
        partition: u32,
        /// Partition count, so both sides agree which GPUs are in it.
        partitions: u32,
    },
    /// One GPU's samples up to `until`, cut into spans of `width` ms, a digest per span;
    /// answered with [`Response::SpanDigests`].
    SpanDigests {
        /// GPU UUID.
        uuid: String,
        /// Span width (ms).
        width: i64,
        /// Last timestamp counted (ms, inclusive): newer samples may still be on their way.
        until: i64,
    },
    /// Append an encoded sample batch to a partition this node owns.
    Append {
        /// Partition.
        partition: u32,
        /// The encoded batch.
        payload: Vec<u8>,
    },
    /// Whole series of several GPUs in a window (what a query engine reads); answered with
    /// [`Response::Series`].
    Series(SeriesQuery),
    /// Who the GPUs worked for in a window, as spans; answered with [`Response::Attribution`].
    Attribution(AttributionQuery),
}

/// The workload spans of several GPUs in a window.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct AttributionQuery {
    /// GPU UUIDs.
    pub uuids: Vec<String>,
    /// Inclusive start (ms).
    pub start: i64,
    /// Inclusive end (ms).
    pub end: i64,
    /// Only spans of this (namespace, pod).
    pub pod: Option<(String, String)>,
}

/// A run of one GPU's samples carrying one workload (see `telemetry_service::attribution`).
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct Span {
    /// The workload.
    pub workload: Workload,
    /// First observation (ms).
    pub start: i64,
    /// Last observation (ms).
    pub end: i64,
    /// GPU time it held (ms): the span plus one sampling interval.
    pub held_ms: i64,
    /// Sum of the GPU's utilisation samples in it (%).
    pub util_sum: f64,
    /// Number of those samples.
    pub util_samples: u64,
    /// Energy the GPU drew in it (J), from its power samples.
    pub energy_j: f64,
}

/// One GPU's spans in an [`AttributionAnswer`].
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct GpuSpans {
    /// GPU UUID.
    pub uuid: String,
    /// Observations read: of two copies of a GPU, the one with more is the fuller.
    pub observations: u64,
    /// Spans in time order.
    pub spans: Vec<Span>,
}

/// A node's (or the merged) answer to an [`AttributionQuery`].
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct AttributionAnswer {
    /// The GPUs the node stores observations of, in the query's order.
    pub gpus: Vec<GpuSpans>,
    /// False when the node stopped at its span bound: the window is too wide for one answer.
    pub complete: bool,
}

/// Whole series of several GPUs in a window, read until more than `max_samples`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SeriesQuery {
    /// GPU UUIDs.
    pub uuids: Vec<String>,
    /// Metric names; empty for all.
    pub metrics: Vec<String>,
    /// Inclusive start (ms).
    pub start: i64,
    /// Inclusive end (ms).
    pub end: i64,
    /// The read stops once it holds more samples than this (the answer says it is incomplete).
    pub max_samples: u64,
}

/// One GPU's series in a [`SeriesAnswer`].
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct SeriesPart {
    /// GPU UUID.
    pub uuid: String,
    /// Per metric: its (timestamp, value) samples in time order.
    pub series: Vec<(String, Vec<(i64, f64)>)>,
    /// The workloads its observations ([`telemetry_storage::WORKLOAD_METRIC`] samples) name.
    pub workloads: Vec<Workload>,
}

/// A node's (or the merged) answer to a [`SeriesQuery`].
#[derive(Debug, Clone, Default, PartialEq, Encode, Decode)]
pub struct SeriesAnswer {
    /// The GPUs the node stores something of, in the query's order.
    pub parts: Vec<SeriesPart>,
    /// Samples read.
    pub samples: u64,
    /// False when the read stopped at `max_samples`: the parts are not the whole series.
    pub complete: bool,
}

/// The outcome of a remote append.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum AppendOutcome {
    /// Durable at this offset.
    Ack(u64),
    /// Over the partition's bound; retry later.
    Full,
    /// The owner's data volume is full; retry once it has room (the reason says why).
    DiskFull(String),
    /// Bigger than any record the partition accepts.
    TooLarge {
        /// Size of the record.
        bytes: u64,
        /// The bound.
        limit: u64,
    },
    /// The partition is not running here (ownership moved or is moving); re-route.
    NotOwner,
    /// The write failed; retry.
    Failed(String),
}

/// A telemetry page request, as the REST API received it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct TelemetryQuery {
    /// GPU UUID.
    pub uuid: String,
    /// Metric names; empty for all.
    pub metrics: Vec<String>,
    /// Inclusive start (ms).
    pub start: i64,
    /// Inclusive end (ms).
    pub end: i64,
    /// Page size.
    pub limit: u32,
    /// Resume strictly after this (timestamp, metric).
    pub cursor: Option<(i64, String)>,
}

/// One node's page of a GPU's samples.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub struct TelemetryPart {
    /// Metric names the points refer to.
    pub metrics: Vec<String>,
    /// (timestamp, metric index, value), ordered by (timestamp, metric name).
    pub points: Vec<(i64, u16, f64)>,
    /// True when the node holds more points after the last one.
    pub more: bool,
    /// The workloads its observations ([`telemetry_storage::WORKLOAD_METRIC`] points) name.
    pub workloads: Vec<Workload>,
}

/// One node's view of a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct GpuPart {
    /// Attributes.
    pub info: GpuInfo,
    /// Metric names stored for it.
    pub metrics: Vec<String>,
    /// Earliest sample (ms).
    pub first: Option<i64>,
    /// Latest sample (ms).
    pub last: Option<i64>,
}

/// Where a node's decommission stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct DecommissionProgress {
    /// `idle`, `handing_over`, `copying`, `done` or `failed`.
    pub state: String,
    /// Partitions still running on the node (handed over when 0).
    pub partitions_running: u32,
    /// Distinct samples the node held when copying began.
    pub samples_total: u64,
    /// Samples copied to their owners so far.
    pub samples_copied: u64,
    /// Time since the decommission began (ms).
    pub elapsed_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// One partition running on a member, with its queue position.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct PartitionPosition {
    /// Partition number.
    pub partition: u32,
    /// Offset of the next append.
    pub next_offset: u64,
    /// Offset up to which the collector committed.
    pub committed_offset: u64,
}

/// A member's numbers, as `/api/v1/cluster` shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct MemberStatus {
    /// Node name.
    pub name: String,
    /// API address.
    pub address: String,
    /// Distinct samples stored.
    pub samples_stored: u64,
    /// Disk space of the store's directory (allocated blocks).
    pub storage_bytes: u64,
    /// Disk space of the broker's partition logs (allocated blocks).
    pub broker_bytes: u64,
    /// Bytes free on its data volume.
    pub disk_free_bytes: u64,
    /// Why it refuses new data for lack of space, while it does.
    pub disk_full: Option<String>,
    /// Partitions it runs, with their queue positions.
    pub partitions: Vec<PartitionPosition>,
    /// Samples its streamers had acknowledged.
    pub samples_acked: u64,
    /// CSV rows its streamers read.
    pub rows_read: u64,
    /// CSV rows its streamers rejected.
    pub rows_rejected: u64,
    /// Partitions whose log was found damaged at start-up, with what is wrong.
    pub damaged_partitions: Vec<(u32, String)>,
    /// Distinct samples it stores per partition (of its GPUs), for partitions it has any of.
    pub partition_samples: Vec<(u32, u64)>,
    /// True while it repairs (its store may miss data it should hold).
    pub syncing: bool,
    /// Its repair's progress.
    pub repair: RepairProgress,
}

/// Where a node's repair is: what it compared and copied from its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Encode, Decode)]
pub struct RepairProgress {
    /// Repair passes finished since start.
    pub passes: u64,
    /// Partitions of the current (or last) pass, and how many are done.
    pub partitions_total: u32,
    /// Partitions of the current pass done.
    pub partitions_done: u32,
    /// Samples copied from peers since start (before deduplication by the store).
    pub samples_copied: u64,
    /// The last failure, if the last pass failed.
    pub last_error: Option<String>,
}

/// One GPU's newest samples on one node: (uuid, [(metric, timestamp, value)]).
pub type LatestPart = (String, Vec<(String, i64, f64)>);
/// One metric reduced to steps on one node: (metric, [(step start, sum, count)]).
pub type StepsPart = (String, Vec<(i64, f64, u32)>);

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Encode, Decode)]
pub enum Response {
    /// The answering node.
    Hello(NodeInfo),
    /// The answering node's numbers.
    Status(MemberStatus),
    /// The answering node's GPUs.
    Gpus(Vec<GpuInfo>),
    /// The answering node's view of a GPU; `None` if it stores nothing of it.
    Gpu(Option<GpuPart>),
    /// The answering node's metric names.
    Metrics(Vec<String>),
    /// The answering node's page; `None` if it stores nothing of the GPU.
    Telemetry(Option<TelemetryPart>),
    /// The answering node's decommission.
    Decommission(DecommissionProgress),
    /// The outcome of an append.
    Append(AppendOutcome),
    /// Cluster addresses of the peers the answering node sees up.
    Peers(Vec<String>),
    /// Per GPU it stores: (uuid, [(metric, timestamp, value)]).
    Latest(Vec<LatestPart>),
    /// Per metric: (metric, [(step start, sum, count)]); `None` if it stores nothing of the GPU.
    Steps(Option<Vec<StepsPart>>),
    /// Per GPU of the partition: its digest and newest sample here.
    GpuDigests(Vec<GpuDigest>),
    /// The GPU's span digests here, in time order; `None` if it stores nothing of it.
    SpanDigests(Option<Vec<SpanDigest>>),
    /// The answering node's series.
    Series(SeriesAnswer),
    /// Answer to [`Request::Attribution`].
    Attribution(AttributionAnswer),
    /// Too many requests in flight at the answering node; retry later.
    Busy,
    /// The request could not be read (wrong version, damaged).
    Refused(String),
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Sent by a node that speaks another protocol version.
    #[error("protocol version {0}, this node speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// Not a message of this protocol.
    #[error("malformed cluster message: {0}")]
    Malformed(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encodes a request or a response with the version prefix and the sender's W3C `traceparent`.
pub fn encode<T: Encode>(trace: Option<&str>, msg: &T) -> Vec<u8> {
    let mut out = PROTOCOL_VERSION.to_be_bytes().to_vec();
    // Encoding into a Vec only fails for types that refuse to encode; ours never do.
    let _ = bincode::encode_into_std_write((trace, msg), &mut out, bincode::config::standard());
    out
}

/// Decodes a message and its `traceparent`, refusing other versions, trailing bytes and
/// oversized lengths.
pub fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<(Option<String>, T), ProtocolError> {
    let (version, body) = match bytes {
        [a, b, body @ ..] => (u16::from_be_bytes([*a, *b]), body),
        _ => return Err(ProtocolError::Malformed("shorter than its version".into())),
    };
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::Version(version));
    }
    let (msg, used) = bincode::decode_from_slice(body, config())
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(ProtocolError::Malformed(format!(
            "{} trailing bytes",
            body.len() - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node() -> NodeInfo {
        NodeInfo {
            name: "telemetry-1".into(),
            cluster_addr: "127.0.0.1:4697".into(),
            http_addr: "127.0.0.1:8080".into(),
            phase: Default::default(),
            replication_factor: 2,
            syncing: true,
        }
    }

    #[test]
    fn messages_round_trip() {
        for req in [
            Request::Hello(node()),
            Request::Ping(node()),
            Request::Status,
            Request::Append {
                partition: 7,
                payload: vec![1, 2, 3],
            },
        ] {
            assert_eq!(
                decode::<Request>(&encode(Some("00-x"), &req)),
                Ok((Some("00-x".to_string()), req))
            );
        }
        for resp in [
            Response::Hello(node()),
            Response::Append(AppendOutcome::Ack(9)),
            Response::Append(AppendOutcome::NotOwner),
            Response::Busy,
        ] {
            assert_eq!(decode::<Response>(&encode(None, &resp)), Ok((None, resp)));
        }
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let mut msg = encode(None, &Request::Ping(node()));
        msg[1] = 1;
        assert_eq!(decode::<Request>(&msg), Err(ProtocolError::Version(1)));
        assert!(matches!(
            decode::<Request>(&[]),
            Err(ProtocolError::Malformed(_))
        ));
        let mut trailing = encode(None, &Request::Ping(node()));
        trailing.push(0);
        assert!(matches!(
            decode::<Request>(&trailing),
            Err(ProtocolError::Malformed(_))
        ));
        // A length prefix claiming gigabytes is refused, not allocated.
        let mut huge = PROTOCOL_VERSION.to_be_bytes().to_vec();
        huge.extend([0, 2, 0, 0xfc, 0xff, 0xff, 0xff, 0x7f]);
        assert!(decode::<Request>(&huge).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
