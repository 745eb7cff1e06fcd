//! The collector actor: consumes one broker partition into the store.
//!
//! It fetches durable records from its committed offset and writes them to the store, which keeps
//! recent samples in memory until its next checkpoint. The collector commits an offset only once
//! the store's durable generation covers every write below it, so the broker log is the store's
//! write-ahead log: a crash replays at most what the last checkpoint did not cover, and idempotent
//! writes make that replay harmless. It asks for a checkpoint when one is due
//! ([`Store::maybe_checkpoint`]), at most every [`COMMIT_INTERVAL`] and whenever the partition
//! runs dry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use telemetry_storage::disk::{is_out_of_space, DiskGuard};
use telemetry_storage::{SampleBatch, StorageError, Store};

use crate::broker::{BrokerMsg, FetchReply, COLLECTOR_CONSUMER};
use crate::registry::PartitionRegistry;
use crate::stats::PipelineStats;

/// Payload bytes fetched per round trip.
pub const FETCH_MAX_BYTES: u64 = 4 << 20;
/// How long a fetch waits at the broker for new data before returning empty.
pub const POLL_WAIT: Duration = Duration::from_millis(200);
/// How often a busy collector asks the store whether a checkpoint is due.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Pause before retrying when the partition is not reachable.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// Pause between attempts to recover the store after a failed checkpoint (a full disk).
pub const STORE_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Longest wait for the partition's broker to answer a status, commit or fetch (beyond the
/// fetch's own wait); an actor that does not answer in time is treated as unreachable.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The collector actor.
pub struct Collector;

/// Start-up arguments of a [`Collector`].
pub struct CollectorArgs {
    /// Partition consumed.
    pub partition: u32,
    /// Where the partition's broker actor is.
    pub registry: Arc<PartitionRegistry>,
    /// The node's store.
    pub store: Arc<Store>,
    /// Node-wide counters.
    pub stats: Arc<PipelineStats>,
    /// Room on the data volume: a checkpoint that ran out of space marks it full, and the store
    /// is not recovered before it has room again.
    pub disk: Arc<DiskGuard>,
}

/// State of a running collector.
pub struct State {
    partition: u32,
    registry: Arc<PartitionRegistry>,
    store: Arc<Store>,
    stats: Arc<PipelineStats>,
    disk: Arc<DiskGuard>,
    /// Next offset to fetch; everything below is written to the store.
    next: u64,
    /// Everything below is durable in the store and committed at the broker.
    committed: u64,
    /// (offset, generation): everything below the offset is durable once the store's durable
    /// generation reaches the generation. Short: it grows by one entry per store checkpoint.
    written: VecDeque<(u64, u64)>,
    last_commit: Instant,
    /// Set until the committed offset was read from the broker.
    positioned: bool,
    /// The store's epoch when this collector positioned: if it moves on, what was written and
    /// not yet durable is gone, so the collector replays from its commit.
    epoch: u64,
    /// Set while the store is poisoned by a failed checkpoint (logged once).
    store_down: bool,
}

/// Messages of a [`Collector`].
pub enum CollectorMsg {
    /// Fetch, write and maybe commit; re-sent by the collector to itself.
    Poll,
    /// Consume everything durable now, persist, commit, and answer with the committed offset.
    Drain(RpcReplyPort<Result<u64, DrainError>>),
}

/// Why a collector could not drain its partition; what it did not consume stays in the log
/// and is consumed after a restart.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    /// The partition's broker is not running.
    #[error("partition {0} not running")]
    NotRunning(u32),
    /// The broker stopped answering fetches.
    #[error("partition {0} unreachable")]
    Unreachable(u32),
    /// Writing to the store or committing the offset failed.
    #[error("partition {partition}: {detail}")]
    Failed {
        /// The partition.
        partition: u32,
        /// What failed.
        detail: String,
    },
}

// Local only: never crosses nodes (the cluster endpoint carries bytes instead).
impl ractor::Message for CollectorMsg {}

/// Writes fetched records into the store; returns the highest store generation they landed
/// in. A record that passed its CRC but is not a storable batch never will be: it is counted
/// and logged, not retried. The store's own failures stop the collector (its offset stays put).
fn store_records(
    store: &Store,
    stats: &PipelineStats,
    partition: u32,
    records: Vec<(u64, Vec<u8>)>,
) -> Result<u64, StorageError> {
    let mut generation = 0;
    for (offset, payload) in records {
        let written = SampleBatch::decode(&payload).and_then(|batch| {
            let span = tracing::info_span!(
                "collector.consume",
                partition,
                offset,
                samples = batch.len(),
                trace_id = tracing::field::Empty
            );
            crate::trace::follow(&span, batch.trace.as_deref());
            let _consume = span.enter();
            let _write = tracing::info_span!("store.write").entered();
            let started = Instant::now();
            let w = store.write(&batch)?;
            stats
                .store_write_seconds
                .observe(started.elapsed().as_secs_f64());
            Ok((w, batch.len()))
        });
        match written {
            Ok((w, n)) => {
                generation = generation.max(w.generation);
                stats.samples_written.inc_by(n as u64);
            }
            Err(
                e @ (StorageError::InvalidBatch(_) | StorageError::Corrupt { what: "batch", .. }),
            ) => {
                stats.records_rejected.inc();
                tracing::error!(partition, offset, error = %e, "invalid broker record not stored");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(generation)
}

impl State {
    fn broker(&self) -> Option<ActorRef<BrokerMsg>> {
        self.registry.get(self.partition)
    }

    async fn position(&mut self) -> Result<bool, ActorProcessingErr> {
        if self.positioned {
            return Ok(true);
        }
        let Some(broker) = self.broker() else {
            return Ok(false);
        };
        if let CallResult::Success(s) = broker
            .call(BrokerMsg::Status, Some(BROKER_CALL_TIMEOUT))
            .await?
        {
            self.next = s.committed_offset;
            self.committed = s.committed_offset;
            self.written.clear();
            self.epoch = self.store.epoch();
            self.positioned = true;
            tracing::debug!(
                partition = self.partition,
                from = self.next,
                "collector replaying from committed offset"
            );
        }
        Ok(self.positioned)
    }

    /// One fetch-and-write round; returns how many records were consumed.
    async fn consume_once(&mut self, wait: Duration) -> Result<Option<usize>, ActorProcessingErr> {
        let Some(broker) = self.broker() else {
            return Ok(None);
        };
        let from = self.next;
        let reply = broker
            .call(
                |reply| BrokerMsg::Fetch {
                    from,
                    max_bytes: FETCH_MAX_BYTES,
                    wait,
                    reply,
                },
                Some(wait + BROKER_CALL_TIMEOUT),
            )
            .await;
        let FetchReply {
            records,
            first_offset,
        } = match reply {
            Ok(CallResult::Success(r)) => r,
            _ => return Ok(None),
        };
        if first_offset > self.next {
            // Only possible if someone else's commit trimmed past ours; say so loudly.
            tracing::error!(
                partition = self.partition,
                expected = self.next,
                first_offset,
                "partition log trimmed past the collector's offset"
            );
        }
        let Some(last) = records.last().map(|r| r.0) else {
            return Ok(Some(0));
        };
        let n = records.len();
        let store = self.store.clone();
        let stats = self.stats.clone();
        let partition = self.partition;
        // At normal priority, unlike the checkpoint below: a write holds the store's lock, and a
        // lowered thread preempted while holding it would make queries wait behind ingest.
        let generation =
            tokio::task::spawn_blocking(move || store_records(&store, &stats, partition, records))
                .await??;
        self.next = last + 1;
        match self.written.back_mut() {
            Some(back) if back.1 == generation => back.0 = self.next,
            _ => self.written.push_back((self.next, generation)),
        }
        Ok(Some(n))
    }

    /// Commits what the store holds durably; `force` checkpoints the store first.
    async fn commit(&mut self, force: bool) -> Result<(), ActorProcessingErr> {
        self.last_commit = Instant::now();
        if self.next == self.committed {
            return Ok(());
        }
        let Some(broker) = self.broker() else {
            return Ok(());
        };
        let store = self.store.clone();
        let durable = crate::priority::spawn_ingest(move || {
            if force {
                store.checkpoint()
            } else {
                store.maybe_checkpoint()
            }
        })
        .await??;
        if self.store.epoch() != self.epoch {
            // The store recovered from a failed checkpoint since this collector positioned:
            // writes it counted on may be gone, so replay from the last commit.
            self.positioned = false;
            return Ok(());
        }
        let ready = self
            .written
            .iter()
            .take_while(|(_, generation)| *generation <= durable)
            .count();
        let Some(&(offset, _)) = ready.checked_sub(1).and_then(|i| self.written.get(i)) else {
            return Ok(());
        };
        let res = broker
            .call(
                |reply| BrokerMsg::Commit {
                    consumer: COLLECTOR_CONSUMER.to_string(),
                    offset,
                    reply,
                },
                Some(BROKER_CALL_TIMEOUT),
            )
            .await?;
        if let CallResult::Success(Ok(())) = res {
            self.committed = offset;
            self.written.drain(..ready);
        }
        Ok(())
    }
}

impl State {
    /// After a store error: if a failed checkpoint poisoned the store, try to recover it (which
    /// fails while the disk is still full) and answer true, so the collector waits and replays
    /// instead of failing; any other error is the caller's to raise.
    async fn store_unavailable(&mut self, e: &ActorProcessingErr) -> bool {
        let err = e.downcast_ref::<StorageError>();
        let recovering = matches!(err, Some(StorageError::Recovering | StorageError::Poisoned));
        if !recovering && !self.store.is_poisoned() {
            return false;
        }
        if let Some(io) = err
            .and_then(StorageError::io)
            .filter(|io| is_out_of_space(io))
        {
            self.disk.out_of_space("store checkpoint", io);
        }
        if !self.store_down {
            self.store_down = true;
            tracing::warn!(partition = self.partition, error = %e, "store unavailable after a failed checkpoint; nothing is committed, retrying");
        }
        if self.disk.is_full() {
            // Reopening now would only fail the next checkpoint again.
            return true;
        }
        let store = self.store.clone();
        match crate::priority::spawn_ingest(move || store.recover()).await {
            Ok(Ok(_)) => {
                self.store_down = false;
                self.positioned = false;
            }
            Ok(Err(e)) => {
                tracing::debug!(partition = self.partition, error = %e, "store not recovered yet")
            }
            Err(e) => {
                tracing::debug!(partition = self.partition, error = %e, "store recovery task failed")
            }
        }
        true
    }
}

impl Actor for Collector {
    type Msg = CollectorMsg;
    type State = State;
    type Arguments = CollectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.cast(CollectorMsg::Poll)?;
        Ok(State {
            partition: args.partition,
            registry: args.registry,
            store: args.store,
            stats: args.stats,
            disk: args.disk,
            next: 0,
            committed: 0,
            written: VecDeque::new(),
            last_commit: Instant::now(),
            positioned: false,
            epoch: 0,
            store_down: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CollectorMsg::Poll => {
                if !state.position().await? {
                    myself.send_after(RETRY_DELAY, || CollectorMsg::Poll);
                    return Ok(());
                }
                let round = async {
                    match state.consume_once(POLL_WAIT).await? {
                        None => Ok(false),
                        Some(n) => {
                            if n == 0 || state.last_commit.elapsed() >= COMMIT_INTERVAL {
                                state.commit(false).await?;
                            }
                            Ok(true)
                        }
                    }
                };
                match round.await {
                    Ok(true) => myself.cast(CollectorMsg::Poll)?,
                    Ok(false) => {
                        myself.send_after(RETRY_DELAY, || CollectorMsg::Poll);
                    }
                    Err(e) if state.store_unavailable(&e).await => {
                        myself.send_after(STORE_RETRY_DELAY, || CollectorMsg::Poll);
                    }
                    Err(e) => return Err(e),
                }
            }
            CollectorMsg::Drain(reply) => {
                let partition = state.partition;
                let failed = |e: ActorProcessingErr| DrainError::Failed {
                    partition,
                    detail: e.to_string(),
                };
                let res: Result<u64, DrainError> = async {
                    if !state.position().await.map_err(failed)? {
                        return Err(DrainError::NotRunning(partition));
                    }
                    loop {
                        match state.consume_once(Duration::ZERO).await.map_err(failed)? {
                            Some(0) => break,
                            Some(_) => {}
                            None => return Err(DrainError::Unreachable(partition)),
                        }
                    }
                    state.commit(true).await.map_err(failed)?;
                    Ok(state.committed)
                }
                .await;
                let _ = reply.send(res);
            }
        }
        Ok(())
    }
}
