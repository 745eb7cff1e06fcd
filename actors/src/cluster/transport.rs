//! The cluster actor: runs ractor_cluster's `NodeServer` and this node's [`Endpoint`], and does
//! what ractor_cluster 0.16 leaves to its user: it dials the seeds and every peer it learns,
//! redials them with backoff after any disconnect or restart, pings every peer's endpoint on a
//! timer, marks a peer down when it stays silent past the liveness timeout, and drops that
//! peer's session so a frozen node cannot linger in the process groups.
//!
//! The current view is published on a `watch` channel ([`ClusterHandle::view`]); whoever needs
//! members or owners (routing, supervisor, REST API) reads it from there.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{
    IncomingEncryptionMode, NodeEventSubscription, NodeServer, NodeServerMessage,
};
use tokio::sync::watch;

use super::accept::accept_tls;
use super::endpoint::{Endpoint, EndpointMsg, RequestHandler, ENDPOINT_GROUP};
use super::membership::{Event, Membership, NodeInfo, Status};
use super::protocol::{decode, encode, Request, Response};
use super::tls::{server_name, ClusterTls};

/// Default silence after which a peer is down.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a dial (TCP connect and TLS handshake) may take.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// How often peers are pinged and addresses redialled.
pub const PING_INTERVAL: Duration = Duration::from_millis(500);
/// Longest wait for ractor_cluster's node server to list its sessions.
const SESSIONS_TIMEOUT: Duration = Duration::from_secs(2);

/// How this node joins the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// This node: name, advertised cluster address, API address.
    pub me: NodeInfo,
    /// Interface the cluster transport listens on.
    pub listen_ip: IpAddr,
    /// Port the cluster transport listens on.
    pub listen_port: u16,
    /// Shared secret; nodes with another cookie are refused.
    pub cookie: String,
    /// Addresses to dial first.
    pub seeds: Vec<String>,
    /// Silence after which a peer is down.
    pub liveness_timeout: Duration,
    /// Mutual TLS between nodes; with it the node dials every member itself (ractor_cluster's
    /// transitive dial would be plaintext) and learns members from its peers' lists.
    pub tls: Option<ClusterTls>,
}

/// A member as the rest of the node sees it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// What it says about itself.
    pub info: NodeInfo,
    /// Up or down.
    pub status: Status,
    /// Its endpoint, while up.
    pub endpoint: Option<ActorRef<EndpointMsg>>,
}

/// The cluster as this node sees it now.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Peers (this node excluded), sorted by name.
    pub peers: Vec<MemberView>,
    /// Names of the live members, this node included, sorted.
    pub live: Vec<String>,
}

/// What the node keeps of the cluster actor.
#[derive(Clone)]
pub struct ClusterHandle {
    /// The cluster actor.
    pub actor: ActorRef<ClusterMsg>,
    /// The current view.
    pub view: watch::Receiver<Arc<ClusterView>>,
}

/// The cluster actor.
pub struct Cluster;

/// State of the cluster actor.
pub struct State {
    cfg: ClusterConfig,
    membership: Membership,
    started: Instant,
    node_server: ActorRef<NodeServerMessage>,
    /// The TLS listener's task, when TLS is on.
    acceptor: Option<tokio::task::JoinHandle<()>>,
    /// Peer endpoints by peer name.
    endpoints: HashMap<String, ActorRef<EndpointMsg>>,
    view: watch::Sender<Arc<ClusterView>>,
}

/// Messages of the cluster actor.
pub enum ClusterMsg {
    /// Ping, redial, expire; re-sent every [`PING_INTERVAL`].
    Tick,
    /// A peer's endpoint answered.
    Heard(NodeInfo, ActorRef<EndpointMsg>),
    /// A dial failed.
    DialFailed(String),
    /// A peer listed the cluster addresses it sees up.
    Learned(Vec<String>),
    /// ractor_cluster closed a session of this peer (by node name); it may have another.
    SessionClosed(String),
    /// No session to this peer remains.
    Gone(String),
    /// This node moves to a phase (decommissioning): it stops owning partitions when leaving.
    SetPhase(super::membership::Phase),
    /// A peer announced itself (a phase change it wants known before it goes away).
    Announce(NodeInfo),
}

// Local only: the cluster actor is never called from another node.
impl ractor::Message for ClusterMsg {}

/// Start-up arguments of the [`Cluster`] actor.
pub struct ClusterArgs {
    /// How to join.
    pub config: ClusterConfig,
    /// What to do with requests from other nodes.
    pub handler: Arc<dyn RequestHandler>,
    /// Where to publish the view.
    pub view: watch::Sender<Arc<ClusterView>>,
}

/// Turns ractor_cluster's session events into messages (and logs refused connections).
struct Events {
    cluster: ActorRef<ClusterMsg>,
    authenticated: Mutex<std::collections::HashSet<u64>>,
}

fn node_name(ses: &NodeServerSessionInformation) -> Option<String> {
    let full = &ses.peer_name.as_ref()?.name;
    Some(full.split('@').next().unwrap_or(full).to_string())
}

impl NodeEventSubscription for Events {
    fn node_session_opened(&self, _ses: NodeServerSessionInformation) {}

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        let was_authenticated = self
            .authenticated
            .lock()
            .map(|mut s| s.remove(&ses.node_id))
            .unwrap_or(true);
        if !was_authenticated {
            // Also the fate of the losing half of two simultaneous dials, hence no alarm here:
            // ractor_cluster itself logs `auth_failed` when the cookie is wrong.
            tracing::info!(peer = %ses.peer_addr, "cluster connection closed before it authenticated (a duplicate dial, or a wrong --cluster-cookie); not a member");
            return;
        }
        if let Some(name) = node_name(&ses) {
            let _ = self.cluster.cast(ClusterMsg::SessionClosed(name));
        }
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        if let Ok(mut s) = self.authenticated.lock() {
            s.insert(ses.node_id);
        }
    }
}

impl State {
    /// Dials every address the membership says is due.
    fn dial_due(&mut self, myself: &ActorRef<ClusterMsg>, now: u64) {
        for addr in self.membership.to_dial(now) {
            let (server, me) = (self.node_server.clone(), myself.clone());
            let tls = self.cfg.tls.clone();
            tokio::spawn(async move {
                if let Err(e) = dial(&server, &addr, tls).await {
                    tracing::debug!(%addr, error = %e, "dial failed");
                    let _ = me.cast(ClusterMsg::DialFailed(addr));
                }
            });
        }
    }

    /// Pings every remote endpoint and asks it for the peers it sees up. Without TLS,
    /// ractor_cluster's transitive mode usually connects the mesh by itself, but when two nodes
    /// dial each other at once both sessions can be closed as duplicates, and neither knows the
    /// other's address to redial: the peer lists make every member a dial target.
    fn ping_all(&self, myself: &ActorRef<ClusterMsg>) {
        let ping = Request::Ping(self.cfg.me.clone());
        let timeout = self.cfg.liveness_timeout;
        for cell in ractor::pg::get_members(&ENDPOINT_GROUP.to_string()) {
            if cell.get_id().is_local() {
                continue;
            }
            let endpoint: ActorRef<EndpointMsg> = cell.into();
            let (me, ping) = (myself.clone(), ping.clone());
            tokio::spawn(async move {
                if let Some(Response::Hello(info)) = call_endpoint(&endpoint, &ping, timeout).await
                {
                    let _ = me.cast(ClusterMsg::Heard(info, endpoint.clone()));
                }
                if let Some(Response::Peers(addrs)) =
                    call_endpoint(&endpoint, &Request::Peers, timeout).await
                {
                    let _ = me.cast(ClusterMsg::Learned(addrs));
                }
            });
        }
    }

    /// ractor_cluster closes one of two sessions when both sides dial at once, so a closed
    /// session means "gone" only when no other session to that peer remains.
    fn check_gone(&self, myself: &ActorRef<ClusterMsg>, name: String) {
        let (server, me) = (self.node_server.clone(), myself.clone());
        tokio::spawn(async move {
            if let Ok(CallResult::Success(sessions)) = server
                .call(NodeServerMessage::GetSessions, Some(SESSIONS_TIMEOUT))
                .await
            {
                if !sessions
                    .values()
                    .any(|s| node_name(s).as_deref() == Some(&name))
                {
                    let _ = me.cast(ClusterMsg::Gone(name));
                }
            }
        });
    }

    /// Logs the members that came up or went down, drops the sessions of those down and
    /// publishes the new view.
    fn follow(&mut self, change: &crate::cluster::membership::Change) {
        for name in &change.up {
            tracing::info!(peer = %name, "cluster member up");
        }
        for name in &change.down {
            tracing::warn!(peer = %name, "cluster member down");
            self.endpoints.remove(name);
        }
        self.drop_sessions(change.down.clone());
        self.publish();
    }

    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn publish(&self) {
        let peers = self
            .membership
            .peers()
            .map(|p| MemberView {
                info: p.info.clone(),
                status: p.status,
                endpoint: (p.status == Status::Up)
                    .then(|| self.endpoints.get(&p.info.name).cloned())
                    .flatten(),
            })
            .collect();
        self.view.send_replace(Arc::new(ClusterView {
            peers,
            live: self.membership.live(),
        }));
    }

    /// Drops the sessions of peers that went silent, so their actors leave the process groups.
    fn drop_sessions(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let server = self.node_server.clone();
        tokio::spawn(async move {
            let Ok(CallResult::Success(sessions)) = server
                .call(NodeServerMessage::GetSessions, Some(SESSIONS_TIMEOUT))
                .await
            else {
                return;
            };
            for ses in sessions.values() {
                if node_name(ses).is_some_and(|n| names.contains(&n)) {
                    tracing::warn!(peer = ?node_name(ses), "peer silent past the liveness timeout: dropping its session");
                    ses.actor.stop(Some("liveness timeout".into()));
                }
            }
        });
    }
}

/// Opens a session to `addr`: plaintext, or mutual TLS checked against the dialled host name.
async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<ClusterTls>,
) -> Result<(), String> {
    let connect = async {
        match tls {
            None => ractor_cluster::client_connect(server, addr)
                .await
                .map_err(|e| e.to_string()),
            Some(tls) => {
                let name = server_name(addr).map_err(|e| e.to_string())?;
                ractor_cluster::client_connect_enc(server, addr, tls.connector, name)
                .await
                .map_err(|e| {
                    if let ractor_cluster::ClientConnectErr::Encryption(e) = &e {
                        // A peer outside the cluster's CA (or with the wrong name) ends here.
                        tracing::warn!(%addr, error = %e, "cluster TLS handshake with a peer failed; not a member");
                    }
                    e.to_string()
                })
            }
        }
    };
    // A peer that accepts the connection but never answers must not hold a dial forever.
    tokio::time::timeout(DIAL_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {DIAL_TIMEOUT:?}")))
}

/// Calls a peer's endpoint with a request; `None` on timeout or an unreadable answer.
pub async fn call_endpoint(
    endpoint: &ActorRef<EndpointMsg>,
    request: &Request,
    timeout: Duration,
) -> Option<Response> {
    let trace = crate::trace::traceparent(&tracing::Span::current());
    let bytes = encode(trace.as_deref(), request);
    match endpoint
        .call(|reply| EndpointMsg::Request(bytes, reply), Some(timeout))
        .await
    {
        Ok(CallResult::Success(answer)) => match decode::<Response>(&answer) {
            Ok((_, r)) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable answer from a peer");
                None
            }
        },
        _ => None,
    }
}

impl Actor for Cluster {
    type Msg = ClusterMsg;
    type State = State;
    type Arguments = ClusterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let cfg = args.config;
        let host = cfg
            .me
            .cluster_addr
            .rsplit_once(':')
            .map_or(cfg.me.cluster_addr.clone(), |(h, _)| h.to_string());
        // With TLS our own listener takes the cluster port (see `accept`); ractor_cluster's,
        // which it always starts, is left on a loopback port and accepts TLS only.
        let (encryption, mode, listen_ip, listen_port) = match &cfg.tls {
            Some(tls) => (
                Some(IncomingEncryptionMode::Tls(tls.acceptor.clone())),
                NodeConnectionMode::Isolated,
                IpAddr::from([127, 0, 0, 1]),
                0,
            ),
            None => (
                None,
                NodeConnectionMode::Transitive,
                cfg.listen_ip,
                cfg.listen_port,
            ),
        };
        let tls_listener = match &cfg.tls {
            Some(_) => Some(
                tokio::net::TcpListener::bind((cfg.listen_ip, cfg.listen_port))
                    .await
                    .map_err(|e| {
                        format!("cluster address {}:{}: {e}", cfg.listen_ip, cfg.listen_port)
                    })?,
            ),
            None => None,
        };
        let server = NodeServer::new(
            listen_port,
            cfg.cookie.clone(),
            cfg.me.name.clone(),
            host,
            encryption,
            Some(mode),
        )
        .with_listen_addr(listen_ip);
        let (node_server, _) = Actor::spawn_linked(None, server, (), myself.get_cell()).await?;
        let acceptor = match (tls_listener, &cfg.tls) {
            (Some(listener), Some(tls)) => Some(tokio::spawn(accept_tls(
                listener,
                tls.acceptor.clone(),
                node_server.clone(),
            ))),
            _ => None,
        };
        node_server.cast(NodeServerMessage::SubscribeToEvents {
            id: "telemetry.membership".into(),
            subscription: Box::new(Events {
                cluster: myself.clone(),
                authenticated: Mutex::default(),
            }),
        })?;
        Actor::spawn_linked(None, Endpoint, args.handler, myself.get_cell()).await?;
        let membership = Membership::new(
            cfg.me.clone(),
            &cfg.seeds,
            cfg.liveness_timeout.as_millis() as u64,
        );
        myself.cast(ClusterMsg::Tick)?;
        let state = State {
            cfg,
            membership,
            started: Instant::now(),
            node_server,
            acceptor,
            endpoints: HashMap::new(),
            view: args.view,
        };
        state.publish();
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(task) = state.acceptor.take() {
            task.abort();
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let change = match message {
            ClusterMsg::Tick => {
                let now = state.now();
                state.dial_due(&myself, now);
                state.ping_all(&myself);
                myself.send_after(PING_INTERVAL, || ClusterMsg::Tick);
                state.membership.apply(Event::Tick { now })
            }
            ClusterMsg::Heard(info, endpoint) => {
                let at = state.now();
                let id = endpoint.get_id();
                let replaced = state
                    .endpoints
                    .insert(info.name.clone(), endpoint)
                    .is_some_and(|old| old.get_id() != id);
                let change = state.membership.apply(Event::Heard { from: info, at });
                if replaced && !change.members_changed() {
                    // A new session carries a new remote endpoint: callers must use it.
                    state.publish();
                }
                change
            }
            ClusterMsg::DialFailed(addr) => {
                let at = state.now();
                state.membership.apply(Event::DialFailed { addr, at })
            }
            ClusterMsg::Learned(addrs) => {
                let at = state.now();
                state.membership.apply(Event::Learned { addrs, at })
            }
            ClusterMsg::SessionClosed(name) => {
                state.check_gone(&myself, name);
                return Ok(());
            }
            ClusterMsg::SetPhase(phase) => {
                if state.membership.set_phase(phase) {
                    tracing::info!(phase = phase.as_str(), "this node's phase changed");
                    state.publish();
                }
                return Ok(());
            }
            ClusterMsg::Announce(info) => {
                let at = state.now();
                state.membership.apply(Event::Heard { from: info, at })
            }
            ClusterMsg::Gone(name) => {
                state.endpoints.remove(&name);
                state.membership.apply(Event::Disconnected { name })
            }
        };
        for (peer, theirs) in &change.refused {
            tracing::error!(
                %peer,
                theirs,
                ours = state.membership.me().replication_factor,
                "refusing a member with another --replication-factor: every member must use the same"
            );
        }
        if change.members_changed() {
            state.follow(&change);
        } else if !change.syncing.is_empty() {
            // A peer's repair state decides whether answers are complete.
            state.publish();
        }
        Ok(())
    }
}
