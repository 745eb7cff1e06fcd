//! Where an append goes: the partition's owner among the live members (rendezvous hashing over
//! the cluster view), reached through the local broker actor or the owner's endpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ractor::RpcReplyPort;
use tokio::sync::watch;

use crate::broker::{AppendRefusal, AppendReply, BrokerMsg};
use crate::cluster::protocol::{AppendOutcome, Request, Response};
use crate::cluster::transport::{call_endpoint, ClusterView};
use crate::registry::PartitionRegistry;
use crate::routing::owner;

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
}

/// Routes appends to partition owners.
#[derive(Clone)]
pub struct Router {
    me: String,
    registry: Arc<PartitionRegistry>,
    view: Option<watch::Receiver<Arc<ClusterView>>>,
}

impl Router {
    /// A router for a node alone: every partition is local.
    pub fn single(me: String, registry: Arc<PartitionRegistry>) -> Self {
        Self {
            me,
            registry,
            view: None,
        }
    }

    /// A router that follows the cluster view.
    pub fn clustered(
        me: String,
        registry: Arc<PartitionRegistry>,
        view: watch::Receiver<Arc<ClusterView>>,
    ) -> Self {
        Self {
            me,
            registry,
            view: Some(view),
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

    /// Appends `payload` to `partition` at its owner; an error means "retry, maybe elsewhere".
    pub fn append(
        &self,
        partition: u32,
        payload: Arc<Vec<u8>>,
        timeout: Duration,
    ) -> impl Future<Output = Result<AppendReply, RouteError>> + Send + 'static {
        let owner = self.owner(partition);
        let local = (owner == self.me).then(|| self.registry.for_append(partition));
        let remote = match (&local, &self.view) {
            (None, Some(v)) => v
                .borrow()
                .peers
                .iter()
                .find(|p| p.info.name == owner)
                .and_then(|p| p.endpoint.clone()),
            _ => None,
        };
        async move {
            match local {
                Some(broker) => append_here(broker, partition, payload, timeout, owner).await,
                None => append_at(remote, partition, payload, timeout, owner).await,
            }
        }
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
