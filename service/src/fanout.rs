//! Fan-out: a query asks every live peer at once (each within [`SCATTER_TIMEOUT`]) next to this
//! node's own answer. A member that is down or does not answer in time is named in
//! `unavailable`, one that answered while repairing in `syncing`; the [`Coverage`] rule says
//! whether the copies that answered still hold every sample. An answer that may miss samples
//! is never presented as complete.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use telemetry_actors::cluster::membership::Status;
use telemetry_actors::cluster::protocol::{Request, Response};
use telemetry_actors::cluster::transport::call_endpoint;

use tracing::{info_span, Instrument};

use crate::coverage::Coverage;
use crate::node::NodeContext;

/// How long a query waits for one peer.
pub const SCATTER_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause before the one retry of a peer call that failed at once.
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// Answers from this node and the peers that answered, and who is missing.
pub(crate) struct Gathered<T> {
    /// One answer per node that answered (this node's first).
    pub answers: Vec<T>,
    /// Who did not answer or answered while repairing, and the copies per sample.
    pub coverage: Coverage,
}

/// Asks every live peer `request` concurrently; `pick` keeps the answers of the expected kind.
pub(crate) async fn gather<T: Send + 'static>(
    node: &NodeContext,
    local: T,
    request: Request,
    pick: fn(Response) -> Option<T>,
) -> Gathered<T> {
    let view = node.cluster_view();
    let mut calls = tokio::task::JoinSet::new();
    let mut unavailable = Vec::new();
    for peer in &view.peers {
        match (&peer.endpoint, peer.status) {
            (Some(endpoint), Status::Up) => {
                let (endpoint, request, name) =
                    (endpoint.clone(), request.clone(), peer.info.name.clone());
                let view = node.view.clone();
                let span = info_span!("scatter.call", peer = %name);
                calls.spawn(
                    async move {
                        let started = std::time::Instant::now();
                        let mut answer = call_endpoint(&endpoint, &request, SCATTER_TIMEOUT).await;
                        // A call that failed fast hit a session ractor_cluster just replaced (two
                        // nodes dialled each other): retry once on the endpoint the view has now.
                        if answer.is_none() && started.elapsed() < SCATTER_TIMEOUT / 2 {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            let fresh = view.and_then(|v| {
                                v.borrow()
                                    .peers
                                    .iter()
                                    .find(|p| p.info.name == name)
                                    .and_then(|p| p.endpoint.clone())
                            });
                            if let Some(e) = fresh {
                                let left = SCATTER_TIMEOUT.saturating_sub(started.elapsed());
                                answer = call_endpoint(&e, &request, left).await;
                            }
                        }
                        (name, answer.and_then(pick))
                    }
                    .instrument(span),
                );
            }
            _ => unavailable.push(peer.info.name.clone()),
        }
    }
    let mut answers = vec![local];
    let mut syncing: Vec<String> = node
        .is_syncing()
        .then(|| node.name().to_string())
        .into_iter()
        .collect();
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((name, Some(a))) => {
                answers.push(a);
                if view
                    .peers
                    .iter()
                    .any(|p| p.info.name == name && p.info.syncing)
                {
                    syncing.push(name);
                }
            }
            Ok((name, None)) => unavailable.push(name),
            Err(_) => {}
        }
    }
    unavailable.sort();
    syncing.sort();
    let coverage = Coverage {
        unavailable,
        syncing,
        copies: node.router.replication().write_quorum,
    };
    if !coverage.complete() {
        node.fanout.partial(request_kind(&request));
    }
    Gathered { answers, coverage }
}

/// A short name of a request's kind, for metrics and spans.
pub fn request_kind(r: &Request) -> &'static str {
    match r {
        Request::Gpus => "gpus",
        Request::Gpu(_) => "gpu",
        Request::Metrics => "metrics",
        Request::GpuDigests { .. } | Request::SpanDigests { .. } => "repair",
        Request::Telemetry(_) => "telemetry",
        Request::Series(_) => "series",
        Request::Attribution(_) => "attribution",
        Request::Latest { .. } => "latest",
        Request::Steps { .. } => "steps",
        Request::Status => "cluster",
        Request::Hello(_)
        | Request::Ping(_)
        | Request::Peers
        | Request::Append { .. }
        | Request::Decommission { .. } => "other",
    }
}

/// The query kind a partial-answer count is labelled with.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    /// Query kind ([`request_kind`]).
    route: String,
}

/// Counts of answers that missed a member, by query kind (exported by `/metrics`).
#[derive(Debug, Default)]
pub struct FanoutStats {
    partial_answers: Family<RouteLabel, Counter>,
}

impl FanoutStats {
    /// Adds the counters to `registry`, each kind at 0 so dashboards show 0, not "no data".
    pub fn register(&self, registry: &mut Registry) {
        for route in ["gpus", "gpu", "metrics", "telemetry", "cluster"] {
            self.partial_answers
                .get_or_create(&RouteLabel {
                    route: route.into(),
                })
                .inc_by(0);
        }
        registry.register(
            "telemetry_scatter_partial_answers",
            "Answers that missed at least one member, by route",
            self.partial_answers.clone(),
        );
    }

    fn partial(&self, route: &str) {
        self.partial_answers
            .get_or_create(&RouteLabel {
                route: route.to_string(),
            })
            .inc();
    }
}
