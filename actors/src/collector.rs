//! The collector actor: consumes one broker partition into the store.
//!
//! It fetches durable records from its committed offset, writes them to the store, and commits
//! the offset only after `Store::persist` made those writes durable, so a crash replays at most
//! what was written since the last commit; idempotent writes make that replay harmless. Commits
//! are grouped (every [`COMMIT_INTERVAL`] or when the partition runs dry) to keep fsyncs rare.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use telemetry_storage::{SampleBatch, Store};

use crate::broker::{BrokerMsg, FetchReply, COLLECTOR_CONSUMER};
use crate::registry::PartitionRegistry;
use crate::stats::PipelineStats;

/// Payload bytes fetched per round trip.
pub const FETCH_MAX_BYTES: u64 = 4 << 20;
/// How long a fetch waits at the broker for new data before returning empty.
pub const POLL_WAIT: Duration = Duration::from_millis(200);
/// Longest time written samples wait for their offset commit.
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(250);
/// Pause before retrying when the partition is not reachable.
const RETRY_DELAY: Duration = Duration::from_millis(100);

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
}

/// State of a running collector.
pub struct State {
    partition: u32,
    registry: Arc<PartitionRegistry>,
    store: Arc<Store>,
    stats: Arc<PipelineStats>,
    /// Next offset to fetch; everything below is written to the store.
    next: u64,
    /// Everything below is durable in the store and committed at the broker.
    committed: u64,
    last_commit: Instant,
    /// Set until the committed offset was read from the broker.
    positioned: bool,
}

/// Messages of a [`Collector`].
pub enum CollectorMsg {
    /// Fetch, write and maybe commit; re-sent by the collector to itself.
    Poll,
    /// Consume everything durable now, persist, commit, and answer with the committed offset.
    Drain(RpcReplyPort<Result<u64, String>>),
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
            .call(BrokerMsg::Status, Some(Duration::from_secs(5)))
            .await?
        {
            self.next = s.committed_offset;
            self.committed = s.committed_offset;
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
                Some(wait + Duration::from_secs(10)),
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
        tokio::task::spawn_blocking(move || -> Result<(), telemetry_storage::StorageError> {
            for (offset, payload) in records {
                match SampleBatch::decode(&payload) {
                    Ok(batch) => {
                        store.write(&batch)?;
                        stats.samples_written.add(batch.len() as u64);
                    }
                    Err(e) => {
                        // A record that passed its CRC but is not a batch can never be stored.
                        stats.records_rejected.inc();
                        tracing::error!(partition, offset, error = %e, "undecodable broker record not stored");
                    }
                }
            }
            Ok(())
        })
        .await??;
        self.next = last + 1;
        Ok(Some(n))
    }

    async fn commit(&mut self) -> Result<(), ActorProcessingErr> {
        if self.next == self.committed {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let Some(broker) = self.broker() else {
            return Ok(());
        };
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.persist()).await??;
        let offset = self.next;
        let res = broker
            .call(
                |reply| BrokerMsg::Commit {
                    consumer: COLLECTOR_CONSUMER.to_string(),
                    offset,
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await?;
        if let CallResult::Success(Ok(())) = res {
            self.committed = offset;
            self.last_commit = Instant::now();
        }
        Ok(())
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
            next: 0,
            committed: 0,
            last_commit: Instant::now(),
            positioned: false,
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
                match state.consume_once(POLL_WAIT).await? {
                    None => {
                        myself.send_after(RETRY_DELAY, || CollectorMsg::Poll);
                        return Ok(());
                    }
                    Some(n) => {
                        if n == 0 || state.last_commit.elapsed() >= COMMIT_INTERVAL {
                            state.commit().await?;
                        }
                    }
                }
                myself.cast(CollectorMsg::Poll)?;
            }
            CollectorMsg::Drain(reply) => {
                let res: Result<u64, String> = async {
                    if !state.position().await.map_err(|e| e.to_string())? {
                        return Err(format!("partition {} not running", state.partition));
                    }
                    loop {
                        match state
                            .consume_once(Duration::ZERO)
                            .await
                            .map_err(|e| e.to_string())?
                        {
                            Some(0) => break,
                            Some(_) => {}
                            None => {
                                return Err(format!("partition {} unreachable", state.partition))
                            }
                        }
                    }
                    state.commit().await.map_err(|e| e.to_string())?;
                    Ok(state.committed)
                }
                .await;
                let _ = reply.send(res);
            }
        }
        Ok(())
    }
}
