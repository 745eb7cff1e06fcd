//! Appending partition batches at their owners until each is durable: all partitions at once,
//! refusals and unreachable owners retried with backoff (re-routed each time, so a batch follows
//! its partition when ownership moves) until the caller's patience runs out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_actors::backoff::Backoff;
use telemetry_actors::broker::{AppendRefusal, AppendReply};

use crate::node::NodeContext;

/// How long and how a write keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct Patience {
    /// Longest time from the first attempt to giving up.
    pub deadline: Duration,
    /// Pauses between rounds of attempts.
    pub backoff: Backoff,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// Keep retrying while an owner's disk is full (true), or give up at once so the caller can
    /// tell its client (false).
    pub wait_out_full_disk: bool,
}

/// Why a write was not stored; nothing of it is lost — the caller still holds the batches and
/// stored samples are idempotent, so sending them again is safe.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// An owner's data volume is full.
    #[error("{reason}")]
    DiskFull {
        /// The owner's reason.
        reason: String,
    },
    /// A batch is bigger than any record a partition accepts.
    #[error("a batch of {bytes} bytes is over the partition's record limit {limit}")]
    TooLarge {
        /// Size of the batch.
        bytes: u64,
        /// The bound.
        limit: u64,
    },
    /// Some batches were still refused or unanswered when the deadline came.
    #[error("{pending} batches were not stored within {waited:?} (last: {last})")]
    NotStored {
        /// Batches not stored.
        pending: usize,
        /// How long it tried.
        waited: Duration,
        /// The last reason one was not taken.
        last: String,
    },
    /// An append task did not finish (it panicked or was cancelled).
    #[error("an append task failed: {0}")]
    Task(String),
}

impl WriteError {
    /// True when sending the same data later may succeed (not for a batch that is too large,
    /// which needs smaller batches, nor for a failed task, which is a bug).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::TooLarge { .. } | Self::Task(_))
    }
}

/// Appends every `(partition, payload)` at its partition's owner and returns once all are durable.
pub async fn append_all(
    node: &NodeContext,
    batches: Vec<(u32, Arc<Vec<u8>>)>,
    patience: Patience,
) -> Result<(), WriteError> {
    let started = Instant::now();
    let mut pending = batches;
    let mut pause = patience.backoff;
    while !pending.is_empty() {
        let mut again = Vec::new();
        let mut last = String::new();
        // All partitions at once: each append waits for its partition's fsync.
        let mut calls = tokio::task::JoinSet::new();
        for (partition, payload) in pending {
            let call = node
                .router
                .append(partition, payload.clone(), patience.attempt_timeout);
            calls.spawn(async move { (partition, payload, call.await) });
        }
        while let Some(done) = calls.join_next().await {
            let (partition, payload, outcome) =
                done.map_err(|e| WriteError::Task(e.to_string()))?;
            match outcome {
                Ok(AppendReply::Ack(_)) => continue,
                Ok(AppendReply::Refused(AppendRefusal::DiskFull { reason }))
                    if !patience.wait_out_full_disk =>
                {
                    return Err(WriteError::DiskFull { reason });
                }
                Ok(AppendReply::Refused(AppendRefusal::TooLarge { bytes, limit })) => {
                    return Err(WriteError::TooLarge { bytes, limit });
                }
                Ok(AppendReply::Refused(r)) => last = format!("partition {partition}: {r:?}"),
                Ok(AppendReply::Failed(e)) => last = format!("partition {partition}: {e}"),
                Err(e) => last = e.to_string(),
            }
            again.push((partition, payload));
        }
        if again.is_empty() {
            break;
        }
        if started.elapsed() + pause.peek() > patience.deadline {
            return Err(WriteError::NotStored {
                pending: again.len(),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(pause.next_delay()).await;
        pending = again;
    }
    Ok(())
}
