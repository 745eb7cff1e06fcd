//! The pipeline supervisor: the root of a node's actor tree.
//!
//! ```text
//! PipelineSupervisor
//! ├── BrokerPartition ×(owned partitions)   durable log per partition
//! ├── Collector       ×(owned partitions)   partition → store
//! └── Streamer        ×(configured sources) CSV → partitions
//! ```
//!
//! ractor has no restart strategy, so this actor supplies one: a failed child is respawned after
//! an exponential backoff; more than [`MAX_RESTARTS`] failures of one child within
//! [`RESTART_WINDOW`] fail the supervisor, which stops the node rather than flapping forever.
//! Shutdown is ordered by [`SupervisorMsg::Drain`]: streamers stop reading and wait for their
//! acknowledgements, collectors consume what is durable and commit, then partitions stop.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use telemetry_storage::Store;

use crate::broker::{BrokerMsg, BrokerPartition, BrokerPartitionArgs, LogConfig};
use crate::collector::{Collector, CollectorArgs, CollectorMsg};
use crate::registry::PartitionRegistry;
use crate::stats::PipelineStats;
use crate::streamer::{SourceConfig, Streamer, StreamerArgs, StreamerMsg};

/// Failures of one child tolerated within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// Window over which child failures are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long a drain waits for streamers' outstanding acknowledgements.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the pipeline runs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Directory for broker partition logs.
    pub broker_dir: PathBuf,
    /// Partitions this node owns.
    pub owned: Vec<u32>,
    /// Limits of each partition log.
    pub log: LogConfig,
    /// One entry per streamer actor.
    pub streamers: Vec<SourceConfig>,
}

/// The pipeline supervisor actor.
pub struct PipelineSupervisor;

/// Start-up arguments of the [`PipelineSupervisor`].
pub struct SupervisorArgs {
    /// What to run.
    pub config: PipelineConfig,
    /// The node's store.
    pub store: Arc<Store>,
    /// Registry of running partitions, shared with the API.
    pub registry: Arc<PartitionRegistry>,
    /// Node-wide counters.
    pub stats: Arc<PipelineStats>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Child {
    Broker(u32),
    Collector(u32),
    Streamer(usize),
}

/// State of the supervisor.
pub struct State {
    args: SupervisorArgs,
    children: HashMap<ActorId, (Child, ActorCell)>,
    collectors: HashMap<u32, ActorRef<CollectorMsg>>,
    streamers: HashMap<usize, ActorRef<StreamerMsg>>,
    failures: HashMap<Child, VecDeque<Instant>>,
    stop_reading: Arc<AtomicBool>,
    draining: bool,
}

/// What a drain achieved.
#[derive(Debug, Clone, Default)]
pub struct DrainReport {
    /// Streamers that did not get every batch acknowledged in time.
    pub streamers_unfinished: usize,
    /// Collectors that could not consume and commit everything.
    pub collectors_failed: usize,
}

/// Messages of the [`PipelineSupervisor`].
pub enum SupervisorMsg {
    /// Internal: respawn a failed child.
    Restart(ChildKey),
    /// Ordered drain before shutdown.
    Drain(RpcReplyPort<DrainReport>),
    /// Answered once every streamer finished all passes (tests and benchmarks wait on it).
    WaitStreamed(RpcReplyPort<()>),
}

// Local only: never crosses nodes (the cluster endpoint carries bytes instead).
impl ractor::Message for SupervisorMsg {}

/// Opaque identity of a supervised child.
#[derive(Debug, Clone, Copy)]
pub struct ChildKey(Child);

impl State {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        let a = &self.args;
        let cell = match child {
            Child::Broker(p) => {
                let args = BrokerPartitionArgs {
                    partition: p,
                    dir: a.config.broker_dir.join(format!("p-{p:04}")),
                    config: a.config.log.clone(),
                    stats: a.stats.clone(),
                };
                let (r, _) =
                    Actor::spawn_linked(None, BrokerPartition, args, myself.get_cell()).await?;
                a.registry.insert(p, r.clone());
                r.get_cell()
            }
            Child::Collector(p) => {
                let args = CollectorArgs {
                    partition: p,
                    registry: a.registry.clone(),
                    store: a.store.clone(),
                    stats: a.stats.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, Collector, args, myself.get_cell()).await?;
                self.collectors.insert(p, r.clone());
                r.get_cell()
            }
            Child::Streamer(i) => {
                let source = a
                    .config
                    .streamers
                    .get(i)
                    .cloned()
                    .ok_or_else(|| format!("no streamer {i}"))?;
                let args = StreamerArgs {
                    source,
                    registry: a.registry.clone(),
                    stats: a.stats.clone(),
                    stop: self.stop_reading.clone(),
                };
                let (r, _) = Actor::spawn_linked(None, Streamer, args, myself.get_cell()).await?;
                self.streamers.insert(i, r.clone());
                r.get_cell()
            }
        };
        self.children.insert(cell.get_id(), (child, cell));
        Ok(())
    }

    fn forget(&mut self, child: Child) {
        match child {
            Child::Broker(p) => self.args.registry.remove(p),
            Child::Collector(p) => {
                self.collectors.remove(&p);
            }
            Child::Streamer(i) => {
                self.streamers.remove(&i);
            }
        }
    }

    /// Records a failure and returns the backoff before the restart, or an error past the limit.
    fn note_failure(&mut self, child: Child) -> Result<Duration, String> {
        let now = Instant::now();
        let hist = self.failures.entry(child).or_default();
        hist.retain(|t| now.duration_since(*t) < RESTART_WINDOW);
        hist.push_back(now);
        if hist.len() > MAX_RESTARTS {
            return Err(format!(
                "{child:?} failed {} times within {RESTART_WINDOW:?}; giving up",
                hist.len()
            ));
        }
        Ok(Duration::from_millis(100 << (hist.len() - 1)).min(Duration::from_secs(5)))
    }
}

impl Actor for PipelineSupervisor {
    type Msg = SupervisorMsg;
    type State = State;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let owned = args.config.owned.clone();
        let streamers = args.config.streamers.len();
        let mut state = State {
            args,
            children: HashMap::new(),
            collectors: HashMap::new(),
            streamers: HashMap::new(),
            failures: HashMap::new(),
            stop_reading: Arc::new(AtomicBool::new(false)),
            draining: false,
        };
        for p in &owned {
            state.spawn(&myself, Child::Broker(*p)).await?;
        }
        for p in &owned {
            state.spawn(&myself, Child::Collector(*p)).await?;
        }
        for i in 0..streamers {
            state.spawn(&myself, Child::Streamer(i)).await?;
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.draining = true;
        state.stop_reading.store(true, Ordering::Relaxed);
        // Consumers and producers first, so partitions see no traffic while they close; each
        // group concurrently, since a collector may first finish a parked poll.
        for brokers in [false, true] {
            let mut stops = tokio::task::JoinSet::new();
            for (child, cell) in state.children.values() {
                if matches!(child, Child::Broker(_)) == brokers {
                    let cell = cell.clone();
                    stops.spawn(async move {
                        cell.stop_and_wait(None, Some(Duration::from_secs(10)))
                            .await
                    });
                }
            }
            while stops.join_next().await.is_some() {}
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
            SupervisorMsg::Restart(ChildKey(child)) => {
                if !state.draining {
                    tracing::info!(?child, "restarting");
                    if let Err(e) = state.spawn(&myself, child).await {
                        tracing::error!(?child, error = %e, "restart failed");
                        let backoff = state.note_failure(child)?;
                        myself.send_after(backoff, move || SupervisorMsg::Restart(ChildKey(child)));
                    }
                }
            }
            SupervisorMsg::Drain(reply) => {
                state.stop_reading.store(true, Ordering::Relaxed);
                let mut report = DrainReport::default();
                for s in state.streamers.values() {
                    match s.call(StreamerMsg::WaitDone, Some(DRAIN_TIMEOUT)).await {
                        Ok(CallResult::Success(())) => {}
                        _ => report.streamers_unfinished += 1,
                    }
                }
                // Concurrently: each collector may first finish a parked poll.
                let mut drains = tokio::task::JoinSet::new();
                for c in state.collectors.values() {
                    let c = c.clone();
                    drains.spawn(
                        async move { c.call(CollectorMsg::Drain, Some(DRAIN_TIMEOUT)).await },
                    );
                }
                while let Some(res) = drains.join_next().await {
                    match res {
                        Ok(Ok(CallResult::Success(Ok(_)))) => {}
                        Ok(Ok(CallResult::Success(Err(e)))) => {
                            tracing::warn!(error = %e, "collector drain incomplete");
                            report.collectors_failed += 1;
                        }
                        _ => report.collectors_failed += 1,
                    }
                }
                state.draining = true;
                let _ = reply.send(report);
            }
            SupervisorMsg::WaitStreamed(reply) => {
                let streamers: Vec<_> = state.streamers.values().cloned().collect();
                tokio::spawn(async move {
                    for s in streamers {
                        let _ = s.call(StreamerMsg::WaitDone, None).await;
                    }
                    let _ = reply.send(());
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some((child, _)) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.forget(child);
        if state.draining {
            return Ok(());
        }
        let reason = failure.unwrap_or_else(|| "stopped unexpectedly".to_string());
        tracing::error!(?child, %reason, "child actor ended");
        let backoff = state.note_failure(child)?;
        myself.send_after(backoff, move || SupervisorMsg::Restart(ChildKey(child)));
        Ok(())
    }
}

/// Asks a broker partition for its numbers, `None` if it does not answer in time.
pub async fn partition_status(
    broker: &ActorRef<BrokerMsg>,
    timeout: Duration,
) -> Option<crate::broker::PartitionStatus> {
    match broker.call(BrokerMsg::Status, Some(timeout)).await {
        Ok(CallResult::Success(s)) => Some(s),
        _ => None,
    }
}
