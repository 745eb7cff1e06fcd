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
    ) -> impl Future<Output = Result<AppendReply, String>> + Send + 'static {
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
            if let Some(local) = local {
                let span = tracing::info_span!(
                    "broker.append",
                    partition,
                    trace_id = tracing::field::Empty
                );
                crate::trace::record_trace_id(&span);
                return tracing::Instrument::instrument(
                    async move {
                        let Some(broker) = local else {
                            return Err(format!("partition {partition} is not running here yet"));
                        };
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        broker
                            .cast(BrokerMsg::Append {
                                payload,
                                reply: RpcReplyPort::from(tx),
                            })
                            .map_err(|_| "partition actor stopped".to_string())?;
                        match tokio::time::timeout(timeout, rx).await {
                            Ok(Ok(reply)) => Ok(reply),
                            Ok(Err(_)) => Err("partition dropped the append".into()),
                            Err(_) => Err("append timed out".into()),
                        }
                    },
                    span,
                )
                .await;
            }
            let Some(endpoint) = remote else {
                return Err(format!(
                    "owner {owner} of partition {partition} is not reachable"
                ));
            };
            let request = Request::Append {
                partition,
                payload: payload.to_vec(),
            };
            match call_endpoint(&endpoint, &request, timeout).await {
                Some(Response::Append(AppendOutcome::Ack(offset))) => Ok(AppendReply::Ack(offset)),
                Some(Response::Append(AppendOutcome::Full)) => {
                    Ok(AppendReply::Refused(AppendRefusal::Full {
                        unconsumed: 0,
                        limit: 0,
                    }))
                }
                Some(Response::Append(AppendOutcome::DiskFull(reason))) => {
                    Ok(AppendReply::Refused(AppendRefusal::DiskFull {
                        reason: format!("{owner}: {reason}"),
                    }))
                }
                Some(Response::Append(AppendOutcome::TooLarge { bytes, limit })) => {
                    Ok(AppendReply::Refused(AppendRefusal::TooLarge {
                        bytes,
                        limit,
                    }))
                }
                Some(Response::Append(AppendOutcome::Failed(e))) => Ok(AppendReply::Failed(e)),
                Some(Response::Append(AppendOutcome::NotOwner)) => {
                    Err(format!("{owner} does not own partition {partition} (yet)"))
                }
                Some(Response::Busy) => Err(format!("{owner} is busy")),
                Some(other) => Err(format!("{owner} answered {other:?} to an append")),
                None => Err(format!("{owner} did not answer the append in time")),
            }
        }
    }
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
