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
//!
//! In a cluster the supervisor follows the membership view: partitions this node comes to own
//! are started; a partition it no longer owns stops accepting appends at once (producers re-route
//! to the new owner), its collector consumes everything the log already holds, and only then are
//! both actors stopped ([`SupervisorMsg::Released`]).
//!
//! Those decisions (what to start, hand over, resume or stop; restart, or give up) are a pure
//! state machine in `decisions.rs` ([`Ownership`], [`Restarts`]) with table tests; this actor
//! only carries out its [`Step`]s.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};
use telemetry_storage::Store;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::broker::{BrokerMsg, BrokerPartition, BrokerPartitionArgs, LogConfig};
use crate::cluster::transport::ClusterView;
use crate::collector::{Collector, CollectorArgs, CollectorMsg};
use crate::error::ActorError;
use crate::registry::PartitionRegistry;
use crate::router::Router;
use crate::routing::replicated_by;
use crate::stats::PipelineStats;
use crate::streamer::{SourceConfig, Streamer, StreamerArgs, StreamerMsg};

mod decisions;

pub use decisions::{AfterEnd, Ownership, Restarts, Step};

/// Failures of one child tolerated within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// Window over which child failures are counted.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// Delay before restarting a failed child: 100 ms, doubling with each failure in the window, at
/// most 5 s.
pub const RESTART_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// How long a drain waits for streamers' outstanding acknowledgements.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a partition handed over waits for its pending fsyncs before its last drain.
pub const HANDOVER_SETTLE: Duration = Duration::from_secs(5);
/// Longest wait for one child to stop at shutdown before the next group is stopped.
pub const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between looks at a handed-over partition's durable offset.
const HANDOVER_POLL: Duration = Duration::from_millis(20);
/// Longest wait for one such look.
const HANDOVER_POLL_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Room on the data volume, which the broker partitions check before each append.
    pub disk: Arc<telemetry_storage::disk::DiskGuard>,
    /// Routes the streamers' appends.
    pub router: Router,
    /// This node's name and the partition count, to compute ownership from the view.
    pub me: String,
    /// Partition count of the cluster.
    pub partitions: u32,
    /// The cluster view to follow; `None` for a node alone.
    pub view: Option<watch::Receiver<Arc<ClusterView>>>,
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
    restarts: Restarts<Child>,
    stop_reading: Arc<AtomicBool>,
    draining: bool,
    /// Partitions owned now and those being handed over.
    ownership: Ownership,
    /// Children stopped on purpose (not restarted).
    stopping: HashSet<Child>,
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
    /// The live members changed: recompute ownership.
    Members(Vec<String>),
    /// A handed-over partition has consumed its log: stop it (unless owned again meanwhile).
    Released(u32),
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
                    disk: a.disk.clone(),
                };
                let spawned =
                    Actor::spawn_linked(None, BrokerPartition, args, myself.get_cell()).await;
                let r = match spawned {
                    Ok((r, _)) => r,
                    Err(SpawnErr::StartupFailed(e)) => match e.downcast_ref::<ActorError>() {
                        Some(damage @ ActorError::CorruptLog { offset, .. }) => {
                            // Acknowledged records sit behind the damage: do not skip them, do
                            // not take new ones; serve everything else and say so loudly.
                            tracing::error!(partition = p, offset, error = %damage, "partition log damaged: the partition stays stopped until its log is repaired; the rest of the node runs");
                            a.stats.damaged_partitions.inc();
                            a.registry.mark_damaged(p, damage.to_string());
                            return Ok(());
                        }
                        _ => return Err(e),
                    },
                    Err(e) => return Err(e.into()),
                };
                a.registry.insert(p, r.clone());
                r.get_cell()
            }
            Child::Collector(p) if a.registry.is_damaged(p) => return Ok(()),
            Child::Collector(p) => {
                let args = CollectorArgs {
                    partition: p,
                    registry: a.registry.clone(),
                    store: a.store.clone(),
                    stats: a.stats.clone(),
                    disk: a.disk.clone(),
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
                    router: a.router.clone(),
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

    /// Starts the partitions this node now owns and hands over those it no longer owns.
    async fn follow(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        live: &[String],
    ) -> Result<(), ActorProcessingErr> {
        let n = self.args.router.replication().factor;
        let now = replicated_by(&self.args.me, self.args.partitions, live, n);
        let steps = self.ownership.follow(now.into_iter().collect());
        if !steps.is_empty() {
            tracing::info!(members = ?live, ?steps, "ownership changed");
        }
        for step in steps {
            self.apply(myself, step).await?;
        }
        Ok(())
    }

    /// Carries out one of the ownership state machine's steps.
    async fn apply(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        step: Step,
    ) -> Result<(), ActorProcessingErr> {
        match step {
            Step::Start(p) => {
                self.spawn(myself, Child::Broker(p)).await?;
                self.spawn(myself, Child::Collector(p)).await?;
            }
            Step::HandOver(p) => {
                self.args.registry.retire(p);
                let broker = self.args.registry.get(p);
                let collector = self.collectors.get(&p).cloned();
                let me = myself.clone();
                tokio::spawn(async move {
                    hand_over(p, broker, collector).await;
                    let _ = me.cast(SupervisorMsg::Released(p));
                });
            }
            Step::Resume(p) => {
                if let Some(b) = self.args.registry.get(p) {
                    self.args.registry.insert(p, b);
                }
            }
            Step::Stop(p) => {
                tracing::info!(partition = p, "partition handed over");
                self.stop_children(p);
            }
        }
        Ok(())
    }

    /// Schedules the restart of `child` or gives up, as [`Restarts`] decides.
    fn after_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        decision: AfterEnd,
        child: Child,
    ) -> Result<(), ActorProcessingErr> {
        match decision {
            AfterEnd::Forget => Ok(()),
            AfterEnd::Restart(backoff) => {
                myself.send_after(backoff, move || SupervisorMsg::Restart(ChildKey(child)));
                Ok(())
            }
            AfterEnd::GiveUp(why) => Err(why.into()),
        }
    }

    fn stop_children(&mut self, p: u32) {
        for (child, cell) in self.children.values() {
            if matches!(child, Child::Broker(q) | Child::Collector(q) if *q == p) {
                self.stopping.insert(*child);
                cell.stop(Some("ownership moved".into()));
            }
        }
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
        if let Some(mut view) = args.view.clone() {
            let me = myself.clone();
            tokio::spawn(async move {
                while view.changed().await.is_ok() {
                    let live = view.borrow_and_update().live.clone();
                    if me.cast(SupervisorMsg::Members(live)).is_err() {
                        break;
                    }
                }
            });
        }
        let mut state = State {
            args,
            children: HashMap::new(),
            collectors: HashMap::new(),
            streamers: HashMap::new(),
            restarts: Restarts::default(),
            stop_reading: Arc::new(AtomicBool::new(false)),
            draining: false,
            ownership: Ownership::default(),
            stopping: HashSet::new(),
        };
        // Every broker before any collector, so the steps' order is not followed here.
        let _ = state.ownership.follow(owned.iter().copied().collect());
        let held = held_partitions(&state.args.config.broker_dir);
        for p in &owned {
            state.spawn(&myself, Child::Broker(*p)).await?;
        }
        for p in &owned {
            state.spawn(&myself, Child::Collector(*p)).await?;
        }
        for step in state.ownership.drain_leftovers(held) {
            state.apply(&myself, step).await?;
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
                    stops.spawn(
                        async move { cell.stop_and_wait(None, Some(CHILD_STOP_TIMEOUT)).await },
                    );
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
                let partition = match child {
                    Child::Broker(p) | Child::Collector(p) => Some(p),
                    Child::Streamer(_) => None,
                };
                let wanted = partition.is_none_or(|p| state.ownership.wants(p));
                if !state.draining && wanted {
                    tracing::info!(?child, "restarting");
                    if let Err(e) = state.spawn(&myself, child).await {
                        tracing::error!(?child, error = %e, "restart failed");
                        let decision = state.restarts.failed(child, Instant::now());
                        state.after_failure(&myself, decision, child)?;
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
            SupervisorMsg::Members(live) => {
                if !state.draining {
                    state.follow(&myself, &live).await?;
                }
            }
            SupervisorMsg::Released(p) => {
                if let Some(step) = state.ownership.released(p) {
                    state.apply(&myself, step).await?;
                }
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
        let on_purpose = state.stopping.remove(&child) || state.draining;
        if !on_purpose {
            let reason = failure.unwrap_or_else(|| "stopped unexpectedly".to_string());
            tracing::error!(?child, %reason, "child actor ended");
        }
        let decision = state.restarts.ended(child, on_purpose, Instant::now());
        state.after_failure(&myself, decision, child)
    }
}

/// Partitions with a log directory under `broker_dir` (`p-NNNN`), from this run or an earlier.
fn held_partitions(broker_dir: &std::path::Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(broker_dir) else {
        return Vec::new();
    };
    let mut held: Vec<u32> = entries
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("p-")?
                .parse()
                .ok()
        })
        .collect();
    held.sort_unstable();
    held
}

/// Lets a partition that stopped accepting appends settle (every append fsynced), then has its
/// collector consume and commit everything the log holds.
async fn hand_over(
    p: u32,
    broker: Option<ActorRef<BrokerMsg>>,
    collector: Option<ActorRef<CollectorMsg>>,
) {
    if let Some(b) = &broker {
        let deadline = Instant::now() + HANDOVER_SETTLE;
        while Instant::now() < deadline {
            match partition_status(b, HANDOVER_POLL_TIMEOUT).await {
                Some(s) if s.durable_offset >= s.next_offset => break,
                Some(_) => tokio::time::sleep(HANDOVER_POLL).await,
                None => break,
            }
        }
    }
    if let Some(c) = collector {
        match c.call(CollectorMsg::Drain, Some(DRAIN_TIMEOUT)).await {
            Ok(CallResult::Success(Ok(offset))) => {
                tracing::debug!(partition = p, offset, "handed-over partition drained");
            }
            other => tracing::warn!(
                partition = p,
                ?other,
                "handed-over partition did not drain; its log keeps the rest"
            ),
        }
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
