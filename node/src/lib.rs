//! The node: wiring of store, actors and API, start-up checks and ordered shutdown.
//!
//! [`run`] takes an already bound listener and a shutdown future, so tests and benchmarks start
//! nodes on port 0 in-process or as real processes alike.

mod auth;
pub mod bench;
pub mod cli;
use auth::Secret;
pub mod config;
pub mod decommission;
pub mod gencsv;
pub mod harness;
mod http;
mod known_peers;
mod observability;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use ractor::rpc::CallResult;
use ractor::Actor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use telemetry_actors::broker::LogConfig;
use telemetry_actors::cluster::membership::{NodeInfo, Phase};
use telemetry_actors::cluster::tls::{ClusterTls, TlsFiles};
use telemetry_actors::cluster::transport::{
    Cluster, ClusterArgs, ClusterConfig, ClusterHandle, ClusterView,
};
use telemetry_actors::dcgm;
use telemetry_actors::registry::PartitionRegistry;
use telemetry_actors::router::Router;
use telemetry_actors::routing::{replicated_by, Replication};
use telemetry_actors::stats::PipelineStats;
use telemetry_actors::streamer::{CsvConfig, Input, ScrapeConfig, SourceConfig, TimestampMode};
use telemetry_actors::supervisor::{
    PipelineConfig, PipelineSupervisor, SupervisorArgs, SupervisorMsg, DRAIN_TIMEOUT,
};
use telemetry_service::repair::RepairConfig;
use telemetry_service::{FanoutStats, NodeContext, PeerHandler};
use telemetry_storage::disk::{DiskGuard, DISK_CHECK_INTERVAL};
use telemetry_storage::{Store, StoreOptions};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{RunArgs, Timestamps};

/// The embedded sample streamed when no `--csv` is given (made by `gen-csv`, see [`gencsv::sample_args`]).
pub const EMBEDDED_SAMPLE: &[u8] = include_bytes!("../sample/dcgm_sample.csv");

/// Log filter when `RUST_LOG` is unset: our info, the storage engine's warnings.
pub const DEFAULT_LOG_FILTER: &str = "info,fjall=warn,lsm_tree=warn";

/// Parses the command line's run options, starts a runtime and runs until SIGINT/SIGTERM.
pub fn serve(args: RunArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let obs = rt.block_on(async { observability::init(args.log_format, &args.node_name) })?;
    let res = rt.block_on(async move {
        let shutdown = shutdown_signal();
        let listener = TcpListener::bind(args.http_addr)
            .await
            .with_context(|| format!("binding the API to {}", args.http_addr))?;
        run(args, listener, shutdown).await
    });
    // Inside the runtime's lifetime: the gRPC exporter flushes through it.
    obs.shutdown();
    res
}

/// Completes at SIGINT or SIGTERM. The handlers are registered when this is called, not when
/// the future is first polled, so a signal that arrives while the node starts (or just after
/// it printed its address) still means a graceful stop rather than the default kill.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        if let (Some(mut term), Some(mut int)) = handlers {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Checks every CSV's header before anything starts, naming the file and the missing columns.
fn check_inputs(files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        let file =
            std::fs::File::open(f).with_context(|| format!("opening CSV {}", f.display()))?;
        if let Err(e) = dcgm::open_reader(file) {
            bail!("CSV {}: {e}", f.display());
        }
    }
    Ok(())
}

fn sample_file(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("embedded-sample.csv");
    std::fs::write(&path, EMBEDDED_SAMPLE)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The cluster address peers should dial.
fn advertised(args: &RunArgs) -> anyhow::Result<String> {
    match &args.advertise_addr {
        Some(a) => Ok(a.clone()),
        None if args.cluster_addr.ip().is_unspecified() && clustered(args) => bail!(
            "--cluster-addr {} listens on every interface: give --advertise-addr host:port \
             that peers can dial (in Kubernetes, the pod's stable DNS name)",
            args.cluster_addr
        ),
        None => Ok(args.cluster_addr.to_string()),
    }
}

/// Whether the node takes part in a cluster: a cookie makes it listen on its cluster address
/// and accept members, with or without seeds (the first node of a cluster has none).
fn clustered(args: &RunArgs) -> bool {
    args.cluster_cookie
        .as_deref()
        .is_some_and(|c| !c.is_empty())
}

/// The cluster cookie, or why the flags cannot form a cluster; `None` runs standalone.
/// The replication the flags ask for; a write quorum above the factor is refused.
fn replication(args: &RunArgs) -> anyhow::Result<Replication> {
    let factor = args.replication_factor as usize;
    let write_quorum = args.write_quorum.map_or(factor, |w| w as usize);
    if write_quorum > factor {
        bail!(
            "--write-quorum {write_quorum} is above --replication-factor {factor}: a write \
             cannot wait for more copies than the cluster keeps"
        );
    }
    Ok(Replication {
        factor,
        write_quorum,
    })
}

fn cookie(args: &RunArgs) -> anyhow::Result<Option<String>> {
    let tls = args.cluster_tls_cert.is_some()
        || args.cluster_tls_key.is_some()
        || args.cluster_tls_ca.is_some();
    match &args.cluster_cookie {
        Some(c) if !c.is_empty() => Ok(Some(c.clone())),
        _ if !args.seeds.is_empty() => bail!(
            "--seeds given without --cluster-cookie: nodes of a cluster authenticate each other \
             with a shared cookie (set it, or TELEMETRY_CLUSTER_COOKIE, on every node)"
        ),
        _ if tls => bail!(
            "cluster TLS given without --cluster-cookie: a cluster node needs the shared cookie \
             as well as its certificate (set it, or TELEMETRY_CLUSTER_COOKIE, on every node)"
        ),
        _ if args.replication_factor > 1 => bail!(
            "--replication-factor {} needs a cluster: copies live on distinct nodes, and a node \
             without --cluster-cookie is alone",
            args.replication_factor
        ),
        _ => Ok(None),
    }
}

/// The cluster TLS settings: all three files or none.
fn cluster_tls(args: &RunArgs) -> anyhow::Result<Option<ClusterTls>> {
    let files = match (
        &args.cluster_tls_cert,
        &args.cluster_tls_key,
        &args.cluster_tls_ca,
    ) {
        (None, None, None) => return Ok(None),
        (Some(cert), Some(key), Some(ca)) => TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        },
        _ => bail!(
            "cluster TLS needs all of --cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca"
        ),
    };
    Ok(Some(ClusterTls::load(&files).context("cluster TLS")?))
}

/// Longest wait at start-up for the seeds to answer before running with whoever answered.
pub const JOIN_WAIT: Duration = Duration::from_secs(3);
/// Longest wait for the cluster transport to stop at shutdown.
pub const CLUSTER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the cluster actor and waits (up to [`JOIN_WAIT`]) until a peer answers, so a node
/// does not claim every partition for a moment before learning its peers.
async fn join(
    args: &RunArgs,
    me: NodeInfo,
    cookie: String,
    ctx: Arc<NodeContext>,
    view_tx: watch::Sender<Arc<ClusterView>>,
    mut view: watch::Receiver<Arc<ClusterView>>,
) -> anyhow::Result<(ClusterHandle, tokio::task::JoinHandle<()>)> {
    // The seeds, then the members seen before a restart (the first node of a cluster has no
    // seeds but rejoins through them).
    let mut seeds: Vec<String> = args.seeds.clone();
    for known in known_peers::load(&args.data_dir) {
        if !seeds.contains(&known) {
            seeds.push(known);
        }
    }
    seeds.retain(|s| *s != me.cluster_addr);
    let config = ClusterConfig {
        me,
        listen_ip: args.cluster_addr.ip(),
        listen_port: args.cluster_addr.port(),
        cookie,
        seeds: seeds.clone(),
        liveness_timeout: args.liveness_timeout.into(),
        tls: cluster_tls(args)?,
    };
    let (actor, done) = Actor::spawn(
        None,
        Cluster,
        ClusterArgs {
            config,
            handler: PeerHandler::new(ctx),
            view: view_tx,
        },
    )
    .await
    .with_context(|| format!("starting the cluster transport on {}", args.cluster_addr))?;
    if !seeds.is_empty() {
        let joined = tokio::time::timeout(JOIN_WAIT, async {
            while view.borrow_and_update().live.len() < 2 {
                if view.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                ?seeds,
                "no seed answered yet; running with the members known so far"
            );
        }
    }
    known_peers::remember(args.data_dir.clone(), view.clone());
    Ok((
        ClusterHandle {
            actor,
            view: view.clone(),
        },
        done,
    ))
}

/// Runs a node on `listener` until `shutdown` completes, then drains and stops in order.
pub async fn run(
    args: RunArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let local = listener.local_addr()?;
    let me = NodeInfo {
        name: args.node_name.clone(),
        cluster_addr: advertised(&args)?,
        http_addr: local.to_string(),
        phase: Phase::Active,
        replication_factor: args.replication_factor,
        // Until its first repair pass is done, a replica may miss data it should hold.
        syncing: args.replication_factor > 1,
    };
    // Refuse bad TLS files before anything starts, even on a node that has no seeds yet.
    cluster_tls(&args)?;
    let cookie = cookie(&args)?;
    let replication = replication(&args)?;
    say_mode(&args, &me, cookie.is_some());
    let auth_config = auth_config(&args)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let files = source_files(&args)?;
    let store = open_store(&args).await?;
    let disk = watch_disk(&args);
    let clustered = cookie.is_some().then_some(replication);
    let (ctx, view_tx) = node_context(&args, me.clone(), store.clone(), disk, clustered);
    let (cluster, cluster_done) = match (ctx.view.clone(), cookie) {
        (Some(v), Some(cookie)) => {
            let (c, done) = join(&args, me, cookie, ctx.clone(), view_tx, v).await?;
            // Lets the API announce this node's phase (decommissioning).
            let _ = ctx.cluster.set(c.actor.clone());
            (Some(c), Some(done))
        }
        _ => (None, None),
    };
    // A node cut off from its cluster must not run on silently: its end fails the node.
    let cluster_done = async move {
        match cluster_done {
            Some(done) => {
                let _ = done.await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let (supervisor, mut supervisor_done) = start_pipeline(&args, &ctx, &files).await?;
    ctx.joined.store(true, Ordering::Release);
    let repair = (ctx.router.replication().factor > 1 && ctx.view.is_some()).then(|| {
        let cfg = RepairConfig {
            interval: args.repair_interval.into(),
            rate: args.repair_rate,
        };
        tokio::spawn(telemetry_service::repair::run(ctx.clone(), cfg))
    });
    let app = auth::layer(
        telemetry_api::router(telemetry_api::Api::with_query_max_samples(
            ctx,
            args.query_max_samples,
        )),
        auth_config,
    );
    let http = http::Http::serve(listener, app)?;
    tracing::info!(node = %args.node_name, http = %local, partitions = args.partitions, "node running");
    // The one line on stdout: tests and scripts that bind port 0 read the real address here.
    println!("listening on http://{local}");

    let failed = tokio::select! {
        _ = shutdown => None,
        _ = &mut supervisor_done => Some("the pipeline supervisor stopped: too many actor failures (see the log)"),
        _ = cluster_done => Some("the cluster transport stopped (see the log)"),
    };
    if let Some(reason) = failed {
        http.stop().await;
        let _ = store.persist();
        bail!(reason);
    }
    if let Some(r) = repair {
        r.abort();
    }
    drain(&supervisor).await;
    let _ = supervisor.stop_and_wait(None, Some(DRAIN_TIMEOUT)).await;
    let _ = supervisor_done.await;
    if let Some(c) = cluster {
        let _ = c
            .actor
            .stop_and_wait(None, Some(CLUSTER_STOP_TIMEOUT))
            .await;
    }
    http.stop().await;
    tokio::task::spawn_blocking(move || store.persist())
        .await?
        .context("persisting the store")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// The node as its service sees it, and the sender of its cluster view (this node alone until
/// the cluster actor publishes members).
fn node_context(
    args: &RunArgs,
    me: NodeInfo,
    store: Arc<Store>,
    disk: Arc<DiskGuard>,
    clustered: Option<Replication>,
) -> (Arc<NodeContext>, watch::Sender<Arc<ClusterView>>) {
    let registry = Arc::new(PartitionRegistry::default());
    let (view_tx, view_rx) = watch::channel(Arc::new(ClusterView {
        peers: Vec::new(),
        live: vec![me.name.clone()],
    }));
    let view = clustered.map(|_| view_rx);
    let router = match (&view, clustered) {
        (Some(v), Some(replication)) => {
            Router::clustered(me.name.clone(), registry.clone(), v.clone(), replication)
        }
        _ => Router::single(me.name.clone(), registry.clone()),
    };
    let ctx = Arc::new(NodeContext {
        info: me,
        partitions: args.partitions,
        store,
        broker_dir: args.data_dir.join("broker"),
        disk,
        registry,
        stats: Arc::new(PipelineStats::default()),
        router,
        view,
        joined: AtomicBool::new(clustered.is_none()),
        fanout: FanoutStats::default(),
        phase: std::sync::Mutex::new(Phase::Active),
        cluster: std::sync::OnceLock::new(),
        decommission: std::sync::Mutex::default(),
        syncing: AtomicBool::new(clustered.is_some_and(|r| r.factor > 1)),
        repair: std::sync::Mutex::default(),
        repaired_at: std::sync::Mutex::default(),
        gpu_partitions: Default::default(),
    });
    (ctx, view_tx)
}

/// Starts the supervisor with the partitions this node owns now and its streamers.
async fn start_pipeline(
    args: &RunArgs,
    ctx: &NodeContext,
    files: &[PathBuf],
) -> anyhow::Result<(ractor::ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>)> {
    let live = ctx.cluster_view().live.clone();
    let config = PipelineConfig {
        broker_dir: ctx.broker_dir.clone(),
        owned: replicated_by(
            &args.node_name,
            args.partitions,
            &live,
            ctx.router.replication().factor,
        ),
        log: LogConfig {
            max_unconsumed_bytes: args.partition_max_bytes,
            ..LogConfig::default()
        },
        streamers: streamer_configs(args, files),
    };
    let supervisor_args = SupervisorArgs {
        config,
        store: ctx.store.clone(),
        registry: ctx.registry.clone(),
        stats: ctx.stats.clone(),
        disk: ctx.disk.clone(),
        router: ctx.router.clone(),
        me: ctx.info.name.clone(),
        partitions: args.partitions,
        view: ctx.view.clone(),
    };
    Actor::spawn(None, PipelineSupervisor, supervisor_args)
        .await
        .context("starting the pipeline")
}

/// Asks the supervisor to drain: streamers finish what they read, collectors consume and commit.
async fn drain(supervisor: &ractor::ActorRef<SupervisorMsg>) {
    tracing::info!("shutting down: draining streamers and collectors");
    match supervisor
        .call(SupervisorMsg::Drain, Some(DRAIN_TIMEOUT * 3))
        .await
    {
        Ok(CallResult::Success(report)) => {
            if report.streamers_unfinished > 0 || report.collectors_failed > 0 {
                tracing::warn!(?report, "drain incomplete; unacknowledged data stays in the broker logs and is replayed on restart");
            }
        }
        _ => tracing::warn!("drain did not answer; broker logs will be replayed on restart"),
    }
}

/// Says in one log line whether the node takes part in a cluster.
fn say_mode(args: &RunArgs, me: &NodeInfo, clustered: bool) {
    if clustered {
        tracing::info!(
            cluster_addr = %args.cluster_addr,
            advertised = %me.cluster_addr,
            seeds = ?args.seeds,
            "clustered: listening for members on the cluster address"
        );
    } else {
        tracing::info!(
            "standalone: no --cluster-cookie, so this node owns every partition, does not listen \
             on --cluster-addr and accepts no members"
        );
    }
}

/// The API tokens and open paths.
fn auth_config(args: &RunArgs) -> anyhow::Result<auth::AuthConfig> {
    Ok(auth::AuthConfig {
        api: Secret::resolve(
            args.api_token.as_deref(),
            args.api_token_file.as_deref(),
            "api-token",
        )?,
        admin: Secret::resolve(
            args.admin_token.as_deref(),
            args.admin_token_file.as_deref(),
            "admin-token",
        )?,
        open_paths: args
            .open_paths
            .iter()
            .filter(|p| !p.is_empty())
            .cloned()
            .collect(),
    })
}

/// The CSV files to stream (the embedded sample when none is given), checked before anything
/// starts; none for a node that scrapes or does not stream.
fn source_files(args: &RunArgs) -> anyhow::Result<Vec<PathBuf>> {
    if !args.scrape.is_empty() && !args.csv.is_empty() {
        bail!("--scrape and --csv are two sources: give one of them");
    }
    for url in &args.scrape {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("--scrape {url:?}: expected an http:// or https:// URL of a /metrics endpoint");
        }
    }
    let files = if args.no_stream || !args.scrape.is_empty() {
        Vec::new()
    } else if args.csv.is_empty() {
        vec![sample_file(&args.data_dir)?]
    } else {
        args.csv.clone()
    };
    check_inputs(&files)?;
    Ok(files)
}

/// Opens the store, naming the way out when a store file is damaged.
async fn open_store(args: &RunArgs) -> anyhow::Result<Arc<Store>> {
    let store_dir = args.data_dir.join("store");
    let store_opts = StoreOptions {
        bucket_width: args.bucket_width.map(Into::into),
        checkpoint_interval: args.checkpoint_interval.into(),
        retention: args.retention.map(Into::into),
        ..StoreOptions::default()
    };
    let shown = store_dir.display().to_string();
    // Opened from an ingest thread, so fjall's flush and compaction workers inherit its lower
    // priority (see `telemetry_actors::priority`).
    let store = telemetry_actors::priority::spawn_ingest(move || Store::open(store_dir, store_opts))
        .await?
        .map_err(|e| {
            let damaged = e.is_corruption();
            anyhow::Error::new(e).context(if damaged {
                format!(
                    "opening the store in {shown}: a store file failed its checksum (damaged on disk). \
                     The broker logs beside it still hold what was not yet committed; restore \
                     the store from a backup, or move it aside to start this node empty (its \
                     share is then missing from answers)"
                )
            } else {
                format!("opening the store in {shown}")
            })
        })?;
    Ok(Arc::new(store))
}

/// The data volume's guard, measured now and every [`DISK_CHECK_INTERVAL`] from here on.
fn watch_disk(args: &RunArgs) -> Arc<DiskGuard> {
    let disk = Arc::new(DiskGuard::new(&args.data_dir, args.min_free_disk));
    disk.check();
    let watched = disk.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DISK_CHECK_INTERVAL);
        loop {
            tick.tick().await;
            let d = watched.clone();
            let _ = tokio::task::spawn_blocking(move || d.check()).await;
        }
    });
    disk
}

/// One source configuration per streamer actor (none when the node does not stream).
fn streamer_configs(args: &RunArgs, files: &[PathBuf]) -> Vec<SourceConfig> {
    if files.is_empty() && (args.no_stream || args.scrape.is_empty()) {
        return Vec::new();
    }
    let input = if args.scrape.is_empty() {
        Input::Csv(CsvConfig {
            files: files.to_vec(),
            timestamps: match args.timestamps {
                Timestamps::Now => TimestampMode::Now,
                Timestamps::Csv => TimestampMode::Csv,
            },
            rate: args.rate,
            passes: args.passes,
        })
    } else {
        Input::Scrape(ScrapeConfig {
            urls: args.scrape.clone(),
            interval: args.scrape_interval.into(),
        })
    };
    (0..args.streamers)
        .map(|i| SourceConfig {
            input: input.clone(),
            partitions: args.partitions,
            shard: (i, args.streamers),
        })
        .collect()
}
