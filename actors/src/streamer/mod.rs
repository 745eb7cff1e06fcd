//! The streamer actor: sends the reading thread's batches to their partitions, never dropping one.
//!
//! Each partition has a window of at most [`WINDOW_PER_PARTITION`] unacknowledged batches. A batch
//! for a full window waits (and the streamer pulls nothing else meanwhile), so a slow partition
//! slows the file rather than growing memory. A refused, failed, timed-out or unroutable append is
//! retried with capped exponential backoff, looking the owner up again each time.

//!
//! Its reading thread runs one [`source`]: CSV [`files`] or live [`scrape`]s, both feeding the
//! DCGM input module ([`crate::dcgm`]).

pub mod files;
pub mod scrape;
pub mod source;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

pub use crate::dcgm::BATCH_MAX_SAMPLES;
pub use files::{CsvConfig, TimestampMode};
pub use scrape::ScrapeConfig;
pub use source::{Input, Outgoing, SourceConfig, BATCH_LINGER, SOURCE_QUEUE_BATCHES};

use crate::backoff::Backoff;
use crate::broker::{AppendRefusal, AppendReply};
use crate::router::{RouteError, Router};
use crate::stats::PipelineStats;

/// Unacknowledged batches per partition.
pub const WINDOW_PER_PARTITION: usize = 4;
/// An append not answered within this time is retried.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between retries of one batch.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);
/// Delay before retrying a batch: 10 ms after the first failure, doubling, at most
/// [`MAX_RETRY_BACKOFF`].
pub const RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(10), MAX_RETRY_BACKOFF);

/// The streamer actor.
pub struct Streamer;

/// Start-up arguments of a [`Streamer`].
pub struct StreamerArgs {
    /// What to stream.
    pub source: SourceConfig,
    /// Where partitions run (locally or on their owners).
    pub router: Router,
    /// Node-wide counters.
    pub stats: Arc<PipelineStats>,
    /// Set to stop reading; batches already read are still delivered.
    pub stop: Arc<AtomicBool>,
}

/// State of a running streamer.
pub struct State {
    rx: mpsc::Receiver<Outgoing>,
    router: Router,
    stats: Arc<PipelineStats>,
    inflight: HashMap<u64, (Outgoing, u32)>,
    per_partition: HashMap<u32, usize>,
    blocked: Option<Outgoing>,
    next_id: u64,
    source_done: bool,
    finished: bool,
    waiters: Vec<RpcReplyPort<()>>,
}

/// Messages of a [`Streamer`].
pub enum StreamerMsg {
    /// Take the next batch from the reading thread.
    Pull,
    /// An append finished (or failed) for in-flight batch `id`.
    AppendDone {
        /// In-flight batch id.
        id: u64,
        /// The broker's answer, or why there was none.
        result: Result<AppendReply, RouteError>,
    },
    /// Send in-flight batch `id` again.
    Retry(u64),
    /// Answered once every pass is streamed (or reading stopped) and every batch acknowledged.
    WaitDone(RpcReplyPort<()>),
}

// Local only: never crosses nodes (the cluster endpoint carries bytes instead).
impl ractor::Message for StreamerMsg {}

impl State {
    fn send(&mut self, myself: &ActorRef<StreamerMsg>, id: u64) {
        let Some((out, _)) = self.inflight.get(&id) else {
            return;
        };
        // The owner is looked up at every attempt, so a retry follows an ownership change.
        let span = tracing::info_span!(
            "streamer.append",
            partition = out.partition,
            samples = out.samples,
            trace_id = tracing::field::Empty
        );
        crate::trace::follow(&span, out.trace.as_deref());
        let append = span.in_scope(|| {
            self.router
                .append(out.partition, out.payload.clone(), APPEND_TIMEOUT)
        });
        let append = tracing::Instrument::instrument(
            async move {
                let result = append.await;
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "append not acknowledged; it will be retried");
                }
                result
            },
            span,
        );
        let (me, stats) = (myself.clone(), self.stats.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = append.await;
            if matches!(result, Ok(AppendReply::Ack(_))) {
                stats
                    .append_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            let _ = me.cast(StreamerMsg::AppendDone { id, result });
        });
    }

    /// Starts `out` if its window has room; otherwise parks it and returns false.
    fn dispatch(&mut self, myself: &ActorRef<StreamerMsg>, out: Outgoing) -> bool {
        let used = self.per_partition.entry(out.partition).or_default();
        if *used >= WINDOW_PER_PARTITION {
            self.blocked = Some(out);
            return false;
        }
        *used += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.inflight.insert(id, (out, 0));
        self.send(myself, id);
        true
    }

    fn check_finished(&mut self) {
        if !self.finished && self.source_done && self.inflight.is_empty() && self.blocked.is_none()
        {
            self.finished = true;
            self.stats.streamers_finished.inc();
        }
        if self.finished {
            for w in self.waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

/// `None` when the append was acknowledged; else the least pause before retrying it.
fn retry_floor(result: &Result<AppendReply, RouteError>) -> Option<Duration> {
    match result {
        Ok(AppendReply::Ack(_)) => None,
        Ok(AppendReply::Refused(AppendRefusal::TooLarge { bytes, limit })) => {
            // The source caps batches far below the limit; reaching it is a bug that
            // retrying cannot fix, so say so loudly and keep the batch in flight.
            tracing::error!(bytes, limit, "batch larger than the partition accepts");
            Some(MAX_RETRY_BACKOFF)
        }
        Ok(AppendReply::Refused(AppendRefusal::Full { .. })) => Some(Duration::ZERO),
        Ok(AppendReply::Refused(AppendRefusal::DiskFull { reason })) => {
            tracing::debug!(%reason, "owner's disk is full; keeping the batch and retrying");
            Some(Duration::ZERO)
        }
        Ok(AppendReply::Failed(e)) => {
            tracing::debug!(error = %e, "append failed; retrying");
            Some(Duration::ZERO)
        }
        Err(e) => {
            tracing::debug!(error = %e, "append not routed; retrying");
            Some(Duration::ZERO)
        }
    }
}

impl State {
    /// Batch `id` is durable: free its window slot and take the batch that waited for it.
    fn acked(&mut self, myself: &ActorRef<StreamerMsg>, id: u64) -> Result<(), ActorProcessingErr> {
        if let Some((out, _)) = self.inflight.remove(&id) {
            self.stats.samples_acked.inc_by(out.samples);
            if let Some(n) = self.per_partition.get_mut(&out.partition) {
                *n = n.saturating_sub(1);
            }
            if let Some(b) = self.blocked.take() {
                if self.dispatch(myself, b) {
                    myself.cast(StreamerMsg::Pull)?;
                }
            }
        }
        self.check_finished();
        Ok(())
    }

    /// Batch `id` was not taken: send it again after a backoff of at least `floor`.
    fn retry_later(&mut self, myself: &ActorRef<StreamerMsg>, id: u64, floor: Duration) {
        if let Some((_, attempts)) = self.inflight.get_mut(&id) {
            *attempts += 1;
            self.stats.append_retries.inc();
            let backoff = RETRY_BACKOFF
                .delay_for(attempts.saturating_sub(1))
                .max(floor)
                .min(MAX_RETRY_BACKOFF);
            myself.send_after(backoff, move || StreamerMsg::Retry(id));
        }
    }
}

impl Actor for Streamer {
    type Msg = StreamerMsg;
    type State = State;
    type Arguments = StreamerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (tx, rx) = mpsc::channel(SOURCE_QUEUE_BATCHES);
        let stop = args.stop;
        let (cfg, stats) = (args.source, args.stats.clone());
        std::thread::Builder::new()
            .name("streamer-source".into())
            .spawn(move || {
                // Parsing is ingest work: it runs below queries (see `crate::priority`).
                crate::priority::lower_current_thread();
                source::run(cfg, tx, stop, stats)
            })?;
        myself.cast(StreamerMsg::Pull)?;
        Ok(State {
            rx,
            router: args.router,
            stats: args.stats,
            inflight: HashMap::new(),
            per_partition: HashMap::new(),
            blocked: None,
            next_id: 0,
            source_done: false,
            finished: false,
            waiters: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            StreamerMsg::Pull => {
                if state.blocked.is_some() || state.source_done {
                    return Ok(());
                }
                match state.rx.recv().await {
                    Some(out) => {
                        if state.dispatch(&myself, out) {
                            myself.cast(StreamerMsg::Pull)?;
                        }
                    }
                    None => {
                        state.source_done = true;
                        state.check_finished();
                    }
                }
            }
            StreamerMsg::AppendDone { id, result } => match retry_floor(&result) {
                None => state.acked(&myself, id)?,
                Some(floor) => state.retry_later(&myself, id, floor),
            },
            StreamerMsg::Retry(id) => state.send(&myself, id),
            StreamerMsg::WaitDone(reply) => {
                state.waiters.push(reply);
                state.check_finished();
            }
        }
        Ok(())
    }
}
