//! The endpoint: the one actor per node that other nodes call. It joins the process group
//! [`ENDPOINT_GROUP`], which ractor_cluster mirrors across connected nodes, so every node finds
//! every other node's endpoint there.
//!
//! A request is bytes in, bytes out ([`super::protocol`]); the endpoint decodes it and hands it
//! to the node's [`RequestHandler`] on a task of its own, so a slow query never holds up pings.
//! At most [`MAX_INFLIGHT_REQUESTS`] run at once; past that the endpoint answers
//! [`Response::Busy`] at once (refused, not queued without bound).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use tokio::sync::Semaphore;

use super::protocol::{decode, encode, Request, Response};

/// Process group of the endpoints, mirrored across the cluster by ractor_cluster.
pub const ENDPOINT_GROUP: &str = "telemetry.endpoints";
/// Requests handled at once by one endpoint; more are answered `Busy`.
pub const MAX_INFLIGHT_REQUESTS: usize = 256;

/// A response being computed.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What the node does with a request from another node.
pub trait RequestHandler: Send + Sync + 'static {
    /// Answers one request; `trace` is the caller's W3C `traceparent`, to continue its trace.
    fn handle(&self, request: Request, trace: Option<String>) -> ResponseFuture;
}

/// The endpoint actor.
pub struct Endpoint;

/// State of the endpoint.
pub struct State {
    handler: Arc<dyn RequestHandler>,
    permits: Arc<Semaphore>,
}

/// Messages of the endpoint: one remote-callable request carrying protocol bytes.
#[derive(RactorClusterMessage)]
pub enum EndpointMsg {
    /// A request; the reply carries the encoded [`Response`].
    #[rpc]
    Request(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

impl Actor for Endpoint {
    type Msg = EndpointMsg;
    type State = State;
    type Arguments = Arc<dyn RequestHandler>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        handler: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(ENDPOINT_GROUP.to_string(), vec![myself.get_cell()]);
        Ok(State {
            handler,
            permits: Arc::new(Semaphore::new(MAX_INFLIGHT_REQUESTS)),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let EndpointMsg::Request(bytes, reply) = message;
        let (trace, request) = match decode::<Request>(&bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "refused a cluster request");
                let _ = reply.send(encode(None, &Response::Refused(e.to_string())));
                return Ok(());
            }
        };
        let Ok(permit) = state.permits.clone().try_acquire_owned() else {
            let _ = reply.send(encode(None, &Response::Busy));
            return Ok(());
        };
        let handler = state.handler.clone();
        tokio::spawn(async move {
            let response = handler.handle(request, trace).await;
            let _ = reply.send(encode(None, &response));
            drop(permit);
        });
        Ok(())
    }
}
