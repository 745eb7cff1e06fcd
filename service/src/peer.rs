//! Answers requests from other nodes (the endpoint's [`RequestHandler`]): hello and ping, this
//! node's numbers, and appends to the partitions it owns.

use std::sync::Arc;

use telemetry_actors::cluster::endpoint::{RequestHandler, ResponseFuture};
use telemetry_actors::cluster::membership::Status;
use telemetry_actors::cluster::protocol::{Request, Response};
use telemetry_actors::cluster::transport::ClusterMsg;
use telemetry_actors::router::append_local;
use telemetry_actors::routing::partition_of;
use telemetry_actors::streamer::APPEND_TIMEOUT;
use telemetry_actors::trace::follow;
use tracing::field::Empty;
use tracing::{info_span, Instrument, Span};

use crate::fanout::request_kind;
use crate::node::NodeContext;
use crate::query::{cluster, gpus, latest, series, steps, telemetry};

/// Narrowest span a peer may ask digests of (so one answer stays small).
const MIN_SPAN_MS: i64 = 60_000;
/// Most span digests in one answer (a year of hourly spans, about 140 KB).
const MAX_SPANS: usize = 8_760;

/// The node's answers to its peers.
pub struct PeerHandler {
    node: Arc<NodeContext>,
}

impl PeerHandler {
    /// A handler answering for `node`.
    pub fn new(node: Arc<NodeContext>) -> Arc<Self> {
        Arc::new(Self { node })
    }
}

impl RequestHandler for PeerHandler {
    fn handle(&self, request: Request, trace: Option<String>) -> ResponseFuture {
        let node = self.node.clone();
        let span = match &request {
            Request::Append { partition, .. } => {
                info_span!("broker.append", partition, trace_id = Empty)
            }
            Request::Hello(_) | Request::Ping(_) | Request::Peers => Span::none(),
            other => info_span!("peer.query", kind = request_kind(other), trace_id = Empty),
        };
        follow(&span, trace.as_deref());
        Box::pin(async move { answer(&node, request).await }.instrument(span))
    }
}

/// This node's answer to one request.
async fn answer(node: &Arc<NodeContext>, request: Request) -> Response {
    match request {
        Request::Hello(info) => {
            // An explicit hello carries news (a peer that has left): take it in.
            if let Some(cluster) = node.cluster.get() {
                let _ = cluster.cast(ClusterMsg::Announce(info));
            }
            Response::Hello(node.info_now())
        }
        Request::Ping(_) => Response::Hello(node.info_now()),
        Request::Peers => Response::Peers(
            node.cluster_view()
                .peers
                .iter()
                .filter(|p| p.status == Status::Up)
                .map(|p| p.info.cluster_addr.clone())
                .collect(),
        ),
        Request::Status => Response::Status(cluster::local(node).await),
        Request::Gpus => Response::Gpus(gpus::local_list(&node.store)),
        Request::Gpu(uuid) => Response::Gpu(gpus::local_one(&node.store, &uuid)),
        Request::Metrics => Response::Metrics(node.store.metrics()),
        Request::GpuDigests {
            partition,
            partitions,
        } => Response::GpuDigests(
            node.store
                .gpu_digests()
                .into_iter()
                .filter(|g| g.digest.count > 0 && partition_of(&g.uuid, partitions) == partition)
                .collect(),
        ),
        Request::SpanDigests { uuid, width, until } => {
            if width < MIN_SPAN_MS {
                return Response::Refused(format!(
                    "span width {width} ms is below {MIN_SPAN_MS} ms"
                ));
            }
            let store = node.store.clone();
            let read = move || match store.span_digests(&uuid, width, until) {
                Ok(Some(s)) if s.len() > MAX_SPANS => Err(format!(
                    "{} spans of {width} ms are over {MAX_SPANS}; ask for wider spans",
                    s.len()
                )),
                Ok(s) => Ok(s),
                Err(e) => Err(e.to_string()),
            };
            blocking(read)
                .await
                .map_or_else(Response::Refused, Response::SpanDigests)
        }
        Request::Latest { uuids, metrics } => {
            let store = node.store.clone();
            let read = move || Ok::<_, String>(latest::local(&store, &uuids, &metrics));
            blocking(read)
                .await
                .map_or_else(Response::Refused, Response::Latest)
        }
        Request::Steps {
            uuid,
            metrics,
            start,
            end,
            step,
        } => {
            let store = node.store.clone();
            let window = steps::Window { start, end, step };
            blocking(move || steps::local(&store, &uuid, &metrics, window))
                .await
                .map_or_else(Response::Refused, Response::Steps)
        }
        Request::Attribution(q) => {
            let store = node.store.clone();
            blocking(move || crate::attribution::local(&store, &q).map_err(|e| e.to_string()))
                .await
                .map_or_else(Response::Refused, Response::Attribution)
        }
        Request::Series(q) => {
            let store = node.store.clone();
            blocking(move || series::local(&store, &q))
                .await
                .map_or_else(Response::Refused, Response::Series)
        }
        Request::Telemetry(q) => {
            let store = node.store.clone();
            blocking(move || telemetry::local(&store, &q))
                .await
                .map_or_else(Response::Refused, Response::Telemetry)
        }
        Request::Decommission { start } => {
            if start {
                if let Err(e) = crate::decommission::start_local(node) {
                    return Response::Refused(e.to_string());
                }
            }
            Response::Decommission(crate::decommission::local_progress(node))
        }
        Request::Append { partition, payload } => {
            Response::Append(append_local(&node.registry, partition, payload, APPEND_TIMEOUT).await)
        }
    }
}

/// Runs a store read off the async threads; its error (or the task's) as the refusal text.
async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    read: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}
