//! Command line and environment: every flag `--foo-bar` is also `TELEMETRY_FOO_BAR`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::gencsv::GenCsvArgs;

/// A GPU telemetry node: streams DCGM CSV through its own broker into its own time-series store
/// and answers REST queries.
#[derive(Debug, Parser)]
#[command(
    name = "telemetry-node",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; without a subcommand the node runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of the node when it runs.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Run(Box<RunArgs>),
    /// Print the OpenAPI document of the REST API.
    Openapi,
    /// Write a realistic synthetic DCGM CSV.
    GenCsv(GenCsvArgs),
    /// List the cluster's GPUs with their newest utilisation, temperature and power.
    Gpus(crate::cli::GpusArgs),
    /// Print one GPU's samples over a window.
    Query(crate::cli::QueryArgs),
    /// Show the cluster's members, partitions and counts.
    Cluster(crate::cli::ClusterArgs),
    /// Stream a DCGM CSV file into a running cluster (rows keep their timestamps).
    Import(crate::cli::ImportArgs),
    /// End-to-end load benchmark: real nodes on loopback, a gen-csv file, throughput, the
    /// storage ceiling, bytes per sample, peak RSS and REST latency.
    Bench(crate::bench::BenchArgs),
    /// Decommission a node of a running cluster (before removing it) and wait until it is done.
    Decommission(crate::decommission::DecommissionArgs),
}

/// Which timestamp samples get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Timestamps {
    /// The time the streamer processed the row.
    Now,
    /// The CSV's own timestamp column (backfills, reproducible benchmarks).
    Csv,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, with the current span's fields (trace ids included).
    Json,
}

/// Options of a running node.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Log line format on stderr (`RUST_LOG` filters either).
    #[arg(long, env = "TELEMETRY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Name of this node, unique in the cluster (a StatefulSet pod name).
    #[arg(long, env = "TELEMETRY_NODE_NAME", default_value = "telemetry-0")]
    pub node_name: String,
    /// Directory of the store and the broker logs.
    #[arg(long, env = "TELEMETRY_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Address of the REST API.
    #[arg(long, env = "TELEMETRY_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Address of the cluster transport (used once the node joins a cluster).
    #[arg(long, env = "TELEMETRY_CLUSTER_ADDR", default_value = "0.0.0.0:4697")]
    pub cluster_addr: SocketAddr,
    /// host:port peers dial to reach this node's cluster transport (default: --cluster-addr,
    /// which must then name a concrete interface).
    #[arg(long, env = "TELEMETRY_ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// A peer silent for longer than this is marked down and its session dropped.
    #[arg(long, env = "TELEMETRY_LIVENESS_TIMEOUT", value_parser = parse_duration,
          default_value_t = telemetry_actors::cluster::transport::DEFAULT_LIVENESS_TIMEOUT.into())]
    pub liveness_timeout: humantime::Duration,
    /// Seed nodes `host:port,...` (the cluster transport); empty runs a single node that owns
    /// every partition. A seed that is this node itself is skipped.
    #[arg(long, env = "TELEMETRY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Shared secret of the cluster transport.
    #[arg(long, env = "TELEMETRY_CLUSTER_COOKIE", hide_env_values = true)]
    pub cluster_cookie: Option<String>,
    /// PEM certificate of this node for cluster TLS; it must name the host peers dial (the
    /// advertised address). With the key and CA set, nodes talk mutual TLS and dial the mesh
    /// themselves.
    #[arg(long, env = "TELEMETRY_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// PEM private key of --cluster-tls-cert.
    #[arg(long, env = "TELEMETRY_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// PEM certificate of the CA that signs every node's certificate; only it is trusted.
    #[arg(long, env = "TELEMETRY_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// DCGM CSV file to stream (repeatable); none streams the embedded sample.
    #[arg(long, env = "TELEMETRY_CSV", value_delimiter = ',')]
    pub csv: Vec<PathBuf>,
    /// dcgm-exporter `/metrics` URL to scrape instead of streaming CSV (repeatable).
    #[arg(long, env = "TELEMETRY_SCRAPE", value_delimiter = ',')]
    pub scrape: Vec<String>,
    /// Time between two scrapes of each --scrape URL.
    #[arg(long, env = "TELEMETRY_SCRAPE_INTERVAL", value_parser = parse_duration,
          default_value_t = telemetry_actors::streamer::scrape::DEFAULT_SCRAPE_INTERVAL.into())]
    pub scrape_interval: humantime::Duration,
    /// Timestamp given to samples.
    #[arg(long, env = "TELEMETRY_TIMESTAMPS", value_enum, default_value_t = Timestamps::Now)]
    pub timestamps: Timestamps,
    /// Streamer actors on this node; they share the CSV files by GPU (each takes the GPUs of
    /// its share of the partitions), so more streamers read in parallel without duplicating.
    #[arg(long, env = "TELEMETRY_STREAMERS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub streamers: u32,
    /// Samples per second per streamer; 0 = unthrottled.
    #[arg(long, env = "TELEMETRY_RATE", default_value_t = 1000)]
    pub rate: u64,
    /// Passes over the CSV files; 0 = loop forever.
    #[arg(long, env = "TELEMETRY_PASSES", default_value_t = 0)]
    pub passes: u64,
    /// Run no streamer: store and serve only.
    #[arg(long, env = "TELEMETRY_NO_STREAM")]
    pub no_stream: bool,
    /// Virtual partitions of the cluster (same on every node).
    #[arg(long, env = "TELEMETRY_PARTITIONS", default_value_t = telemetry_actors::routing::DEFAULT_PARTITIONS,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub partitions: u32,
    /// Copies of every sample the cluster keeps, on distinct nodes (same on every node; a
    /// member with another value is refused). More than 1 needs a cluster (--cluster-cookie).
    #[arg(long, env = "TELEMETRY_REPLICATION_FACTOR", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=telemetry_actors::routing::MAX_REPLICATION_FACTOR as i64))]
    pub replication_factor: u32,
    /// Copies a write needs before it is acknowledged when members are down (default: the
    /// replication factor, so a write never has fewer copies). Lower it only to keep ingesting
    /// with fewer live members than the replication factor, accepting fewer copies meanwhile.
    #[arg(long, env = "TELEMETRY_WRITE_QUORUM",
          value_parser = clap::value_parser!(u32).range(1..=telemetry_actors::routing::MAX_REPLICATION_FACTOR as i64))]
    pub write_quorum: Option<u32>,
    /// Pause between a replica's anti-entropy repair passes (it also repairs at start and after
    /// being cut off from every peer). Only with --replication-factor above 1.
    #[arg(long, env = "TELEMETRY_REPAIR_INTERVAL", value_parser = parse_duration,
          default_value_t = telemetry_service::repair::DEFAULT_REPAIR_INTERVAL.into())]
    pub repair_interval: humantime::Duration,
    /// Samples per second a repair copies from peers, at most.
    #[arg(long, env = "TELEMETRY_REPAIR_RATE", default_value_t = telemetry_service::repair::DEFAULT_REPAIR_RATE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub repair_rate: u64,
    /// Most samples one PromQL query may read (observations of workloads included); a query
    /// that would read more is refused with 422, as Prometheus' --query.max-samples does.
    #[arg(long, env = "TELEMETRY_QUERY_MAX_SAMPLES", default_value_t = telemetry_api::MAX_PROM_SAMPLES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub query_max_samples: usize,
    /// Bearer token required to read the API (everything but --open-paths and the API docs).
    #[arg(long, env = "TELEMETRY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File holding the API token (a mounted Kubernetes Secret); instead of --api-token.
    #[arg(long, env = "TELEMETRY_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Bearer token required to change the cluster (decommission); it also reads. Without it,
    /// the API token allows changes too.
    #[arg(long, env = "TELEMETRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the admin token; instead of --admin-token.
    #[arg(long, env = "TELEMETRY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// Exact paths served without a token when tokens are set (empty string: none).
    #[arg(long, env = "TELEMETRY_OPEN_PATHS", value_delimiter = ',',
          default_value = crate::auth::DEFAULT_OPEN_PATHS)]
    pub open_paths: Vec<String>,
    /// Refuse appends while a partition holds this many unconsumed bytes.
    #[arg(long, env = "TELEMETRY_PARTITION_MAX_BYTES",
          default_value_t = telemetry_actors::broker::DEFAULT_MAX_UNCONSUMED_BYTES)]
    pub partition_max_bytes: u64,
    /// Time bucket of the store (`1h`, `15m`): a series keeps one chunk per bucket. Fixed when
    /// the store is created; omitted, an existing store keeps its own (a new one gets 1h).
    #[arg(long, env = "TELEMETRY_BUCKET_WIDTH", value_parser = parse_duration)]
    pub bucket_width: Option<humantime::Duration>,
    /// Longest time between store checkpoints while data arrives (`5s`). Broker offsets are
    /// committed at checkpoints, so this bounds how much a restart replays.
    #[arg(long, env = "TELEMETRY_CHECKPOINT_INTERVAL", value_parser = parse_duration,
          default_value_t = telemetry_storage::DEFAULT_CHECKPOINT_INTERVAL.into())]
    pub checkpoint_interval: humantime::Duration,
    /// Free space kept in reserve on the data volume (`100MiB`, `2GiB`, `0`): below it the node
    /// refuses new data (retryably; producers keep their batches) and keeps answering reads, so
    /// that what it accepted can still be checkpointed; it takes data again once space is back.
    #[arg(long, env = "TELEMETRY_MIN_FREE_DISK", value_parser = parse_bytes,
          default_value_t = telemetry_storage::disk::DEFAULT_MIN_FREE_DISK)]
    pub min_free_disk: u64,
    /// Drop buckets that ended longer ago than this (`7d`, `30d`); omitted, data is kept forever.
    #[arg(long, env = "TELEMETRY_RETENTION", value_parser = parse_duration)]
    pub retention: Option<humantime::Duration>,
}

/// Parses `90s`, `15m`, `1h`, `7d` (humantime); zero is refused.
fn parse_duration(s: &str) -> Result<humantime::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be longer than zero"));
    }
    Ok(d.into())
}

/// Parses a byte count: `1048576`, `64KiB`, `512MiB`, `2GiB`, `1TiB` (also `KB`, `MB`, `GB`,
/// `TB` as powers of 1,000).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected a byte count such as 512MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_are_the_library_constants() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "telemetry-node",
            "--retention",
            "7d",
            "--bucket-width",
            "15m",
        ])
        .expect("defaults parse");
        let run = cli.run;
        let std = |d: humantime::Duration| -> std::time::Duration { d.into() };
        assert_eq!(
            std(run.liveness_timeout),
            telemetry_actors::cluster::transport::DEFAULT_LIVENESS_TIMEOUT
        );
        assert_eq!(
            std(run.scrape_interval),
            telemetry_actors::streamer::scrape::DEFAULT_SCRAPE_INTERVAL
        );
        assert_eq!(
            std(run.checkpoint_interval),
            telemetry_storage::DEFAULT_CHECKPOINT_INTERVAL
        );
        assert_eq!(
            std(run.repair_interval),
            telemetry_service::repair::DEFAULT_REPAIR_INTERVAL
        );
        assert_eq!(run.replication_factor, 1);
        assert_eq!(run.write_quorum, None);
        assert_eq!(
            run.partition_max_bytes,
            telemetry_actors::broker::DEFAULT_MAX_UNCONSUMED_BYTES
        );
        assert_eq!(
            run.retention.map(std),
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            run.bucket_width.map(std),
            Some(std::time::Duration::from_secs(900))
        );
        assert!(Cli::try_parse_from(["telemetry-node", "--liveness-timeout", "0s"]).is_err());
    }

    #[test]
    fn byte_counts() {
        for (text, want) in [
            ("0", Ok(0)),
            ("1048576", Ok(1 << 20)),
            ("512MiB", Ok(512 << 20)),
            ("2GiB", Ok(2 << 30)),
            ("10 MB", Ok(10_000_000)),
        ] {
            assert_eq!(parse_bytes(text), want, "{text}");
        }
        for bad in ["", "MiB", "-1", "5 parsecs", "99999999999TiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
