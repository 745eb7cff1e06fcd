//! Where an append goes: the partition's replicas among the live members (the first
//! `--replication-factor` in rendezvous order over the cluster view), each reached through the
//! local broker actor or its endpoint. An append is acknowledged only once every replica has it
//! durably; fewer live members than the write quorum is a retryable error (backpressure).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::sync::watch;

use crate::broker::{AppendRefusal, AppendReply, BrokerMsg};
use crate::cluster::protocol::{AppendOutcome, Request, Response};
use crate::cluster::transport::{call_endpoint, ClusterView};
use crate::registry::PartitionRegistry;
use crate::routing::{owner, replicas, Replication};

/// Why an append got no answer from its partition; every case means "retry, maybe elsewhere"
/// (the owner is looked up again at each attempt).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// This node owns the partition but its broker is not running yet (start-up, handover).
    #[error("partition {0} is not running here yet")]
    NotRunning(u32),
    /// The local partition actor stopped or dropped the append (it restarts).
    #[error("partition {0} actor stopped before answering")]
    Stopped(u32),
    /// The owner is not reachable through the cluster transport.
    #[error("owner {owner} of partition {partition} is not reachable")]
    Unreachable {
        /// The owner looked up.
        owner: String,
        /// The partition.
        partition: u32,
    },
    /// The node asked does not own the partition (yet): the views differ for a moment.
    #[error("{owner} does not own partition {partition} (yet)")]
    NotOwner {
        /// The node asked.
        owner: String,
        /// The partition.
        partition: u32,
    },
    /// The owner is over its limit of concurrent requests.
    #[error("{0} is busy")]
    Busy(String),
    /// No answer within the timeout.
    #[error("{owner} did not answer the append to partition {partition} in time")]
    TimedOut {
        /// The owner asked.
        owner: String,
        /// The partition.
        partition: u32,
    },
    /// An answer of the wrong kind (a peer of another version).
    #[error("{owner} answered {answer} to an append")]
    Unexpected {
        /// The owner asked.
        owner: String,
        /// The answer, for the log.
        answer: String,
    },
    /// Fewer live members than the write quorum: the write waits until enough are back.
    #[error("partition {partition} needs {needed} live replicas, {live} are live")]
    TooFewReplicas {
        /// The partition.
        partition: u32,
        /// Live members.
        live: usize,
        /// The write quorum.
        needed: usize,
    },
}

/// Routes appends to partition replicas.
#[derive(Clone)]
pub struct Router {
    me: String,
    registry: Arc<PartitionRegistry>,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
    replication: Replication,
}

/// One replica an append goes to: this node's broker (`None`: not running) or a peer's endpoint
/// (`None`: not reachable).
enum Target {
    Here(Option<ractor::ActorRef<BrokerMsg>>),
    There(Option<ractor::ActorRef<crate::cluster::endpoint::EndpointMsg>>),
}

impl Router {
    /// A router for a node alone: every partition is local.
    pub fn single(me: String, registry: Arc<PartitionRegistry>) -> Self {
        Self {
            me,
            registry,
            view: None,
            replication: Replication::SINGLE,
        }
    }

    /// A router that follows the cluster view.
    pub fn clustered(
        me: String,
        registry: Arc<PartitionRegistry>,
        view: watch::Receiver<Arc<ClusterView>>,
        replication: Replication,
    ) -> Self {
        Self {
            me,
            registry,
            view: Some(view),
            replication,
        }
    }

    /// How many copies the cluster keeps and a write needs.
    pub fn replication(&self) -> Replication {
        self.replication
    }

    /// The current replicas of a partition, the owner first.
    pub fn replicas(&self, partition: u32) -> Vec<String> {
        match &self.view {
            None => vec![self.me.clone()],
            Some(v) => {
                let view = v.borrow();
                replicas(partition, &view.live, self.replication.factor)
                    .into_iter()
                    .map(str::to_string)
                    .collect()
            }
        }
    }

    /// The current owner of a partition.
    pub fn owner(&self, partition: u32) -> String {
        match &self.view {
            None => self.me.clone(),
            Some(v) => {
                let view = v.borrow();
                owner(partition, &view.live).map_or_else(|| self.me.clone(), str::to_string)
            }
        }
    }

    /// Appends `payload` to `partition` at every replica; acknowledged once all have it
    /// durably. An error or a refusal means "retry, maybe elsewhere": a retry appends to every
    /// replica again (stored samples are idempotent, so a replica that had it keeps one copy).
    pub fn append(
        &self,
        partition: u32,
        payload: Arc<Vec<u8>>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AppendReply, RouteError>> + Send + 'static {
        let targets = self.targets(partition);
        async move {
            // Each replica's append runs in the caller's span, so its trace crosses to the peer.
            let span = tracing::Span::current();
            let calls: Vec<_> = targets?
                .into_iter()
                .map(|(name, target)| {
                    let payload = payload.clone();
                    let append = async move {
                        match target {
                            Target::Here(b) => {
                                append_here(b, partition, payload, timeout, name).await
                            }
                            Target::There(e) => {
                                append_at(e, partition, payload, timeout, name).await
                            }
                        }
                    };
                    tokio::spawn(tracing::Instrument::instrument(append, span.clone()))
                })
                .collect();
            let mut replies = Vec::with_capacity(calls.len());
            for call in calls {
                replies.push(call.await.unwrap_or(Err(RouteError::Stopped(partition))));
            }
            combine(replies)
        }
    }

    /// Where each replica of `partition` is reached, or why the write must wait.
    fn targets(&self, partition: u32) -> Result<Vec<(String, Target)>, RouteError> {
        let names = self.replicas(partition);
        if names.len() < self.replication.write_quorum.max(1) {
            return Err(RouteError::TooFewReplicas {
                partition,
                live: names.len(),
                needed: self.replication.write_quorum,
            });
        }
        Ok(names
            .into_iter()
            .map(|name| {
                let target = if name == self.me {
                    Target::Here(self.registry.for_append(partition))
                } else {
                    Target::There(self.view.as_ref().and_then(|v| {
                        v.borrow()
                            .peers
                            .iter()
                            .find(|p| p.info.name == name)
                            .and_then(|p| p.endpoint.clone())
                    }))
                };
                (name, target)
            })
            .collect())
    }
}

/// The replicas' replies as one: acknowledged only when every replica acknowledged (the
/// owner's offset); otherwise the first error, else the refusal that matters most (a batch too
/// large for any replica, then a full disk, then a full partition), else a failure.
fn combine(replies: Vec<Result<AppendReply, RouteError>>) -> Result<AppendReply, RouteError> {
    let mut first_ack = None;
    let mut worst: Option<AppendReply> = None;
    for reply in replies {
        match reply? {
            AppendReply::Ack(offset) => {
                first_ack.get_or_insert(offset);
            }
            other => {
                if worst
                    .as_ref()
                    .is_none_or(|w| severity(&other) > severity(w))
                {
                    worst = Some(other);
                }
            }
        }
    }
    Ok(worst.unwrap_or(AppendReply::Ack(first_ack.unwrap_or(0))))
}

fn severity(reply: &AppendReply) -> u8 {
    match reply {
        AppendReply::Refused(AppendRefusal::TooLarge { .. }) => 4,
        AppendReply::Refused(AppendRefusal::DiskFull { .. }) => 3,
        AppendReply::Refused(AppendRefusal::Full { .. }) => 2,
        AppendReply::Failed(_) => 1,
        AppendReply::Ack(_) => 0,
    }
}

/// An append to a partition this node owns, through its broker actor (`None`: not running yet).
async fn append_here(
    broker: Option<ractor::ActorRef<BrokerMsg>>,
    partition: u32,
    payload: Arc<Vec<u8>>,
    timeout: Duration,
    owner: String,
) -> Result<AppendReply, RouteError> {
    let span = tracing::info_span!("broker.append", partition, trace_id = tracing::field::Empty);
    crate::trace::record_trace_id(&span);
    let append = async move {
        let Some(broker) = broker else {
            return Err(RouteError::NotRunning(partition));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        broker
            .cast(BrokerMsg::Append {
                payload,
                reply: RpcReplyPort::from(tx),
            })
            .map_err(|_| RouteError::Stopped(partition))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(RouteError::Stopped(partition)),
            Err(_) => Err(RouteError::TimedOut { owner, partition }),
        }
    };
    tracing::Instrument::instrument(append, span).await
}

/// An append to a partition another node owns, through its endpoint; the answer comes after
/// the owner's fsync.
async fn append_at(
    endpoint: Option<ractor::ActorRef<crate::cluster::endpoint::EndpointMsg>>,
    partition: u32,
    payload: Arc<Vec<u8>>,
    timeout: Duration,
    owner: String,
) -> Result<AppendReply, RouteError> {
    let Some(endpoint) = endpoint else {
        return Err(RouteError::Unreachable { owner, partition });
    };
    let request = Request::Append {
        partition,
        payload: payload.to_vec(),
    };
    match call_endpoint(&endpoint, &request, timeout).await {
        Some(Response::Append(outcome)) => reply_of(outcome, owner, partition),
        Some(Response::Busy) => Err(RouteError::Busy(owner)),
        Some(other) => Err(RouteError::Unexpected {
            owner,
            answer: format!("{other:?}"),
        }),
        None => Err(RouteError::TimedOut { owner, partition }),
    }
}

/// A remote owner's outcome as the local broker would have answered.
fn reply_of(
    outcome: AppendOutcome,
    owner: String,
    partition: u32,
) -> Result<AppendReply, RouteError> {
    Ok(match outcome {
        AppendOutcome::Ack(offset) => AppendReply::Ack(offset),
        AppendOutcome::Full => AppendReply::Refused(AppendRefusal::Full {
            unconsumed: 0,
            limit: 0,
        }),
        AppendOutcome::DiskFull(reason) => AppendReply::Refused(AppendRefusal::DiskFull {
            reason: format!("{owner}: {reason}"),
        }),
        AppendOutcome::TooLarge { bytes, limit } => {
            AppendReply::Refused(AppendRefusal::TooLarge { bytes, limit })
        }
        AppendOutcome::Failed(e) => AppendReply::Failed(e),
        AppendOutcome::NotOwner => return Err(RouteError::NotOwner { owner, partition }),
    })
}

/// Appends a record sent by another node to a local partition (the endpoint's half of routing).
pub async fn append_local(
    registry: &PartitionRegistry,
    partition: u32,
    payload: Vec<u8>,
    timeout: Duration,
) -> AppendOutcome {
    let Some(broker) = registry.for_append(partition) else {
        return AppendOutcome::NotOwner;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if broker
        .cast(BrokerMsg::Append {
            payload: Arc::new(payload),
            reply: RpcReplyPort::from(tx),
        })
        .is_err()
    {
        return AppendOutcome::NotOwner;
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(AppendReply::Ack(o))) => AppendOutcome::Ack(o),
        Ok(Ok(AppendReply::Refused(AppendRefusal::Full { .. }))) => AppendOutcome::Full,
        Ok(Ok(AppendReply::Refused(AppendRefusal::DiskFull { reason }))) => {
            AppendOutcome::DiskFull(reason)
        }
        Ok(Ok(AppendReply::Refused(AppendRefusal::TooLarge { bytes, limit }))) => {
            AppendOutcome::TooLarge { bytes, limit }
        }
        Ok(Ok(AppendReply::Failed(e))) => AppendOutcome::Failed(e),
        Ok(Err(_)) => AppendOutcome::Failed("partition dropped the append".into()),
        Err(_) => AppendOutcome::Failed("append timed out at the owner".into()),
    }
}
