//! The broker partition actor: owns one [`PartitionLog`] and serves producers and consumers.
//!
//! Appends are written at once and acknowledged after a group fsync: while one fsync runs on a
//! blocking thread, further appends are written behind it and share the next fsync. A fetch that
//! finds nothing durable is parked (at most [`MAX_PARKED_FETCHES`]) and answered when data becomes
//! durable or its wait expires, so idle consumers do not spin.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::log::{AppendRefusal, LogConfig, PartitionLog};
use crate::stats::PipelineStats;
use telemetry_storage::disk::{is_out_of_space, DiskGuard};

use crate::error::ActorError;

/// Fetches parked per partition; one more is answered empty at once rather than queued.
pub const MAX_PARKED_FETCHES: usize = 8;

/// How often an idle partition checks whether its consumed segment is old enough to delete
/// (commits check it too).
pub const RECLAIM_TICK: Duration = Duration::from_secs(5);

/// The broker partition actor.
pub struct BrokerPartition;

/// Start-up arguments of a [`BrokerPartition`].
pub struct BrokerPartitionArgs {
    /// Partition number.
    pub partition: u32,
    /// Directory of this partition's log.
    pub dir: PathBuf,
    /// Log limits.
    pub config: LogConfig,
    /// Node-wide counters.
    pub stats: Arc<PipelineStats>,
    /// Room on the data volume: appends are refused while it is full.
    pub disk: Arc<DiskGuard>,
}

/// State of a running partition.
pub struct State {
    partition: u32,
    log: PartitionLog,
    /// Appends written but not yet durable, in offset order.
    unsynced: Vec<(u64, RpcReplyPort<AppendReply>)>,
    syncing: bool,
    parked: Vec<Parked>,
    next_fetch_id: u64,
    stats: Arc<PipelineStats>,
    disk: Arc<DiskGuard>,
}

struct Parked {
    id: u64,
    from: u64,
    max_bytes: u64,
    reply: RpcReplyPort<FetchReply>,
}

/// The answer to an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendReply {
    /// Durable at this offset.
    Ack(u64),
    /// Not accepted; see the refusal for whether to retry.
    Refused(AppendRefusal),
    /// The write or fsync failed; the partition restarts, the producer retries.
    Failed(String),
}

/// The answer to a fetch: durable records from the requested offset.
#[derive(Debug, Clone, Default)]
pub struct FetchReply {
    /// `(offset, payload)` in offset order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Offset of the first record the log still holds.
    pub first_offset: u64,
}

/// A partition's numbers for `/api/v1/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionStatus {
    /// Partition number.
    pub partition: u32,
    /// Offset the next append gets.
    pub next_offset: u64,
    /// Records below this are durable.
    pub durable_offset: u64,
    /// The collector's committed offset.
    pub committed_offset: u64,
    /// Bytes not yet consumed.
    pub unconsumed_bytes: u64,
}

/// Messages of a [`BrokerPartition`].
pub enum BrokerMsg {
    /// Append one record (an encoded sample batch).
    Append {
        /// The record.
        payload: Arc<Vec<u8>>,
        /// Answered once durable or refused.
        reply: RpcReplyPort<AppendReply>,
    },
    /// Read durable records from `from`, waiting up to `wait` for some to arrive.
    Fetch {
        /// First offset wanted.
        from: u64,
        /// Stop before this many payload bytes (at least one record is returned).
        max_bytes: u64,
        /// How long to park when nothing is durable yet.
        wait: Duration,
        /// The records.
        reply: RpcReplyPort<FetchReply>,
    },
    /// Durably record a consumer's position and trim what every consumer has passed.
    Commit {
        /// Consumer name.
        consumer: String,
        /// Everything below this offset is processed.
        offset: u64,
        /// Ok once durable.
        reply: RpcReplyPort<Result<(), String>>,
    },
    /// Report the partition's numbers.
    Status(RpcReplyPort<PartitionStatus>),
    /// Internal: an fsync finished.
    Synced {
        /// Offsets below this are durable if the fsync succeeded.
        upto: u64,
        /// The fsync's outcome.
        result: Result<(), String>,
    },
    /// Internal: a parked fetch's wait expired.
    FetchExpired(u64),
    /// Internal: time to delete consumed segments that aged ([`RECLAIM_TICK`]).
    Reclaim,
}

// Local only: never crosses nodes (the cluster endpoint carries bytes instead).
impl ractor::Message for BrokerMsg {}

/// The consumer name the node's collector commits under.
pub const COLLECTOR_CONSUMER: &str = "collector";

impl BrokerPartition {
    fn start_sync(
        myself: &ActorRef<BrokerMsg>,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        if state.syncing || state.unsynced.is_empty() {
            return Ok(());
        }
        let (file, path, upto) = state.log.sync_handle()?;
        state.syncing = true;
        let me = myself.clone();
        tokio::task::spawn_blocking(move || {
            let result = file
                .sync_data()
                .map_err(|e| format!("fsync {}: {e}", path.display()));
            let _ = me.cast(BrokerMsg::Synced { upto, result });
        });
        Ok(())
    }

    /// An append: refused while the disk is full, else written and acknowledged after the next
    /// group fsync.
    fn append(
        myself: &ActorRef<BrokerMsg>,
        state: &mut State,
        payload: &[u8],
        reply: RpcReplyPort<AppendReply>,
    ) -> Result<(), ActorProcessingErr> {
        if state.disk.is_full() {
            state.stats.append_refusals.inc();
            let reason = state.disk.reason().unwrap_or_else(|| "disk full".into());
            let _ = reply.send(AppendReply::Refused(AppendRefusal::DiskFull { reason }));
            return Ok(());
        }
        match state.log.append(payload) {
            Ok(Ok(offset)) => {
                state.unsynced.push((offset, reply));
                Self::start_sync(myself, state)?;
            }
            Ok(Err(refusal)) => {
                if let AppendRefusal::DiskFull { reason } = &refusal {
                    state.disk.out_of_space(
                        &format!("partition {}", state.partition),
                        &std::io::Error::other(reason.clone()),
                    );
                }
                state.stats.append_refusals.inc();
                let _ = reply.send(AppendReply::Refused(refusal));
            }
            Err(e) => {
                let _ = reply.send(AppendReply::Failed(e.to_string()));
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// A group fsync finished: acknowledge what it made durable, or fail everything unsynced.
    fn synced(
        myself: &ActorRef<BrokerMsg>,
        state: &mut State,
        upto: u64,
        result: Result<(), String>,
    ) -> Result<(), ActorProcessingErr> {
        state.syncing = false;
        if let Err(e) = result {
            // Durability of everything unsynced is unknown: fail them all and restart,
            // which re-opens and re-validates the log. Producers retry; writes are idempotent.
            for (_, reply) in state.unsynced.drain(..) {
                let _ = reply.send(AppendReply::Failed(e.clone()));
            }
            return Err(e.into());
        }
        state.log.mark_durable(upto);
        let split = state.unsynced.partition_point(|(o, _)| *o < upto);
        for (offset, reply) in state.unsynced.drain(..split) {
            state.stats.broker_appends.inc();
            let _ = reply.send(AppendReply::Ack(offset));
        }
        Self::start_sync(myself, state)?;
        Self::serve_parked(state)
    }

    /// A fetch: answered at once when records are durable past `from` (or it may not wait, or
    /// too many wait already), else parked until an fsync or `wait` passes.
    fn fetch(
        myself: &ActorRef<BrokerMsg>,
        state: &mut State,
        (from, max_bytes, wait): (u64, u64, Duration),
        reply: RpcReplyPort<FetchReply>,
    ) -> Result<(), ActorProcessingErr> {
        if from < state.log.durable_offset()
            || wait.is_zero()
            || state.parked.len() >= MAX_PARKED_FETCHES
        {
            let records = state.log.read(from, max_bytes)?;
            let _ = reply.send(FetchReply {
                records,
                first_offset: state.log.first_offset(),
            });
        } else {
            let id = state.next_fetch_id;
            state.next_fetch_id += 1;
            state.parked.push(Parked {
                id,
                from,
                max_bytes,
                reply,
            });
            myself.send_after(wait, move || BrokerMsg::FetchExpired(id));
        }
        Ok(())
    }

    /// A consumer's commit; out of space, the consumer keeps its position and commits again
    /// later (the old consumers file is intact: it is replaced by rename).
    fn commit(
        state: &mut State,
        consumer: &str,
        offset: u64,
        reply: RpcReplyPort<Result<(), String>>,
    ) -> Result<(), ActorProcessingErr> {
        let res = state.log.commit(consumer, offset);
        let _ = reply.send(res.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        match res {
            Err(ActorError::Io { path, source }) if is_out_of_space(&source) => {
                state
                    .disk
                    .out_of_space(&path.display().to_string(), &source);
                Ok(())
            }
            other => Ok(other?),
        }
    }

    fn serve_parked(state: &mut State) -> Result<(), ActorProcessingErr> {
        let durable = state.log.durable_offset();
        let mut i = 0;
        while i < state.parked.len() {
            if state.parked[i].from < durable {
                let p = state.parked.swap_remove(i);
                let records = state.log.read(p.from, p.max_bytes)?;
                let _ = p.reply.send(FetchReply {
                    records,
                    first_offset: state.log.first_offset(),
                });
            } else {
                i += 1;
            }
        }
        Ok(())
    }
}

impl Actor for BrokerPartition {
    type Msg = BrokerMsg;
    type State = State;
    type Arguments = BrokerPartitionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let dir = args.dir.clone();
        let config = args.config.clone();
        let log = tokio::task::spawn_blocking(move || PartitionLog::open(dir, config)).await??;
        tracing::debug!(
            partition = args.partition,
            next = log.next_offset(),
            "partition log open"
        );
        myself.send_interval(RECLAIM_TICK, || BrokerMsg::Reclaim);
        Ok(State {
            partition: args.partition,
            log,
            unsynced: Vec::new(),
            syncing: false,
            parked: Vec::new(),
            next_fetch_id: 0,
            stats: args.stats,
            disk: args.disk,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Written appends are made durable and acknowledged rather than left to a retry.
        if !state.unsynced.is_empty() {
            let (file, path, upto) = state.log.sync_handle()?;
            match file.sync_data() {
                Ok(()) => {
                    state.log.mark_durable(upto);
                    for (offset, reply) in state.unsynced.drain(..) {
                        state.stats.broker_appends.inc();
                        let _ = reply.send(AppendReply::Ack(offset));
                    }
                }
                Err(e) => {
                    for (_, reply) in state.unsynced.drain(..) {
                        let _ = reply.send(AppendReply::Failed(format!(
                            "fsync {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
        }
        // A drained partition leaves only empty segments behind.
        if let Err(e) = state.log.reclaim(std::time::Instant::now(), true) {
            tracing::warn!(partition = state.partition, error = %e, "consumed segments not deleted at stop");
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BrokerMsg::Append { payload, reply } => Self::append(&myself, state, &payload, reply)?,
            BrokerMsg::Synced { upto, result } => Self::synced(&myself, state, upto, result)?,
            BrokerMsg::Fetch {
                from,
                max_bytes,
                wait,
                reply,
            } => Self::fetch(&myself, state, (from, max_bytes, wait), reply)?,
            BrokerMsg::FetchExpired(id) => {
                if let Some(i) = state.parked.iter().position(|p| p.id == id) {
                    let p = state.parked.swap_remove(i);
                    let _ = p.reply.send(FetchReply {
                        records: Vec::new(),
                        first_offset: state.log.first_offset(),
                    });
                }
            }
            BrokerMsg::Commit {
                consumer,
                offset,
                reply,
            } => Self::commit(state, &consumer, offset, reply)?,
            BrokerMsg::Reclaim => {
                if let Err(e) = state.log.reclaim(std::time::Instant::now(), false) {
                    tracing::warn!(partition = state.partition, error = %e, "consumed segments not deleted; retried at the next tick");
                }
            }
            BrokerMsg::Status(reply) => {
                let _ = reply.send(PartitionStatus {
                    partition: state.partition,
                    next_offset: state.log.next_offset(),
                    durable_offset: state.log.durable_offset(),
                    committed_offset: state.log.committed(COLLECTOR_CONSUMER),
                    unconsumed_bytes: state.log.unconsumed_bytes(),
                });
            }
        }
        Ok(())
    }
}
