//! `telemetry-node bench`: the end-to-end load benchmark.
//!
//! Generates a `gen-csv` file, measures the storage ceiling (the same file parsed and written
//! straight into a store: no broker, no actors), then starts `--nodes` real node processes of
//! this binary on loopback, streams the file unthrottled through the first one, and waits until
//! every sample is queryable cluster-wide. Then it times REST reads of one GPU (5 min and 1 h,
//! every page) from every node, stops the nodes and prints samples/s, the fraction of the
//! ceiling, bytes per sample on disk and each node's peak RSS. Figures are reported, never
//! asserted: the machines are shared.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use telemetry_actors::backoff::Backoff;
use telemetry_actors::dcgm::{CsvRows, PartitionBatches, TimestampCache};
use telemetry_actors::routing::DEFAULT_PARTITIONS;
use telemetry_storage::{Store, StoreOptions};

use telemetry_api::TelemetryPage;

use crate::gencsv::{generate, GenCsvArgs};

mod reads;
mod repair;
use crate::harness::{eventually, free_port, one_pass, NodeProcess, POLL};

/// Longest wait for the cluster to store everything.
const INGEST_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait for the store-only nodes to form a cluster.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between looks at the stored count (short: ingest is timed by it).
const INGEST_POLL: Duration = Duration::from_millis(20);
/// Longest wait for a node to stop after SIGTERM (its final checkpoint included).
const STOP_DEADLINE: Duration = Duration::from_secs(120);
/// Longest a timed read retries while the cluster answers 503 (a member that did not answer a
/// scatter in time on a loaded machine); the retried attempts are not timed.
const READ_RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// Pauses between those retries.
const READ_RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// What `telemetry-node bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Scenario {
    /// Ingest of the whole file (CSV → queryable), then reads of the stored data.
    #[default]
    Ingest,
    /// Reads of one GPU's last 5 minutes of one metric while one node streams the file without
    /// pause (stamped with the current time), then the same reads with the node idle.
    ReadsDuringIngest,
    /// Ingest as above, then the last node is killed (-9), its data directory deleted and the
    /// node started again empty: the time until its repair has copied its partitions back.
    Repair,
    /// Ingest at high cardinality: by default a million series (100,000 GPUs × 10 metrics)
    /// for 20 scrapes, so the per-series costs (catalog, heads, one chunk per series per
    /// checkpoint) dominate; samples/s and peak RSS are the figures.
    Cardinality,
}

/// Hosts of the cardinality scenario unless `--hosts` says otherwise (× 8 GPUs = 100,000).
const CARDINALITY_HOSTS: u32 = 12_500;
/// Scrapes of the cardinality scenario unless `--scrapes` says otherwise.
const CARDINALITY_SCRAPES: u32 = 20;
/// Hosts of the other scenarios unless `--hosts` says otherwise.
const DEFAULT_HOSTS: u32 = 16;
/// Scrapes of the other scenarios unless `--scrapes` says otherwise (one hour at 1 s).
const DEFAULT_SCRAPES: u32 = 3600;

/// Options of `telemetry-node bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Ingest)]
    pub scenario: Scenario,
    /// Node processes (one streams, the others store and serve).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Copies of every sample (`--replication-factor` of every node; more than 1 needs as many
    /// nodes).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Hosts in the generated file (default 16; 12,500 for `cardinality`).
    #[arg(long)]
    pub hosts: Option<u32>,
    /// GPUs per host in the generated file.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_host: u32,
    /// Scrapes at 1 s (default 3,600 = one hour, so "1 h of one GPU" is 36 K samples; 20 for
    /// `cardinality`).
    #[arg(long)]
    pub scrapes: Option<u32>,
    /// Timed REST reads per window size and node.
    #[arg(long, default_value_t = 100)]
    pub queries: u32,
    /// Pause between the end of ingest and the timed reads, so the checkpoint and the table
    /// flushes the burst caused are not what the reads measure (`0s` to read at once).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// reads-during-ingest: how long the node streams before the timed reads start (so the
    /// window read holds minutes of data and the store has grown).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// Skip the storage ceiling run.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Working directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl BenchArgs {
    /// Hosts in the generated file.
    pub fn hosts(&self) -> u32 {
        self.hosts.unwrap_or(match self.scenario {
            Scenario::Cardinality => CARDINALITY_HOSTS,
            _ => DEFAULT_HOSTS,
        })
    }

    /// Scrapes in the generated file.
    pub fn scrapes(&self) -> u32 {
        self.scrapes.unwrap_or(match self.scenario {
            Scenario::Cardinality => CARDINALITY_SCRAPES,
            _ => DEFAULT_SCRAPES,
        })
    }
}

/// Parses the file and writes it straight into a fresh store; samples/s until all is queryable.
fn ceiling(csv: &Path, dir: &Path) -> anyhow::Result<(u64, f64)> {
    let store = Store::open(dir, StoreOptions::default())?;
    let file = std::fs::File::open(csv)?;
    let start = Instant::now();
    let mut rows = CsvRows::open(file).map_err(anyhow::Error::msg)?;
    let mut times = TimestampCache::default();
    let mut batches = PartitionBatches::new(DEFAULT_PARTITIONS);
    let mut samples = 0u64;
    while let Some(read) = rows.next() {
        let Ok((row, gpu, _)) = read else {
            continue;
        };
        let ts = times
            .parse(row.csv_timestamp)
            .map_err(|e| anyhow::anyhow!(e.detail))?;
        let (p, full) = batches.push(gpu, row.metric, ts, row.value);
        samples += 1;
        if !full {
            continue;
        }
        if let Some(b) = batches.take(p) {
            store.write(&b)?;
            store.maybe_checkpoint()?;
        }
    }
    for (_, b) in batches.take_all() {
        store.write(&b)?;
    }
    let secs = start.elapsed().as_secs_f64();
    store.checkpoint()?;
    Ok((samples, samples as f64 / secs))
}

async fn cluster(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{url}/api/v1/cluster"))
        .send()
        .await?
        .json()
        .await?)
}

/// One page, retried while the cluster answers 503; returns the time of the attempt that
/// succeeded and its body.
async fn read_page(req: reqwest::RequestBuilder) -> anyhow::Result<(Duration, Vec<u8>)> {
    let deadline = Instant::now() + READ_RETRY_DEADLINE;
    let mut backoff = READ_RETRY_BACKOFF;
    loop {
        let attempt = req.try_clone().context("request body is a stream")?;
        let t = Instant::now();
        let resp = attempt.send().await?;
        if resp.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            eprintln!("bench: a read answered 503 (a member did not answer); retrying");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        let body = resp.error_for_status()?.bytes().await?;
        let took = t.elapsed();
        return Ok((took, body.to_vec()));
    }
}

/// Reads `[from, to]` of one GPU (one metric, or all with `None`), every page; returns
/// (seconds, points). The time is the server's: from sending each request to the last byte of
/// its answer (the client's JSON parsing is not counted).
async fn read_window(
    client: &reqwest::Client,
    url: &str,
    uuid: &str,
    metric: Option<&str>,
    (from, to): (&str, &str),
) -> anyhow::Result<(f64, usize)> {
    let mut busy = Duration::ZERO;
    let mut cursor: Option<String> = None;
    let mut points = 0;
    loop {
        let mut req = client
            .get(format!("{url}/api/v1/gpus/{uuid}/telemetry"))
            .query(&[("start_time", from), ("end_time", to), ("limit", "10000")]);
        if let Some(m) = metric {
            req = req.query(&[("metric", m)]);
        }
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let (took, body) = read_page(req).await?;
        busy += took;
        let page: TelemetryPage = serde_json::from_slice(&body)?;
        points += page.items.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    Ok((busy.as_secs_f64(), points))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the subcommand.
pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("bench.csv");
    let gen = GenCsvArgs {
        hosts: args.hosts(),
        gpus_per_host: args.gpus_per_host,
        scrapes: args.scrapes(),
        output: Some(csv.clone()),
        ..crate::gencsv::sample_args()
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    let rows = generate(&gen, &mut out)?;
    out.flush()?;
    drop(out);
    let gpus = args.hosts() * gen.gpus_per_host;
    eprintln!(
        "bench: {rows} samples ({gpus} GPUs × 10 metrics × {} scrapes), {} node(s), machine: {} CPUs",
        args.scrapes(),
        args.nodes,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match args.scenario {
        Scenario::ReadsDuringIngest => {
            return runtime()?.block_on(reads::during_ingest(args, &dir, &csv, rows))
        }
        Scenario::Repair => return runtime()?.block_on(repair::wiped_node(args, &dir, &csv, rows)),
        Scenario::Ingest | Scenario::Cardinality => {}
    }
    let ceiling = if args.no_ceiling {
        None
    } else {
        let (n, rate) = ceiling(&csv, &dir.join("ceiling"))?;
        eprintln!("bench: storage ceiling (parse + Store::write, one thread): {rate:.0} samples/s over {n} samples");
        Some(rate)
    };
    runtime()?.block_on(pipeline(args, &dir, &csv, rows, ceiling, &gen.start))
}

/// The client's runtime: one worker, so the benchmark takes little of the machine it measures.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?)
}

async fn pipeline(
    args: &BenchArgs,
    dir: &Path,
    csv: &Path,
    rows: u64,
    ceiling: Option<f64>,
    start_time: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let (procs, t0) = start_cluster(&client, args, dir, csv).await?;
    let secs = wait_ingested(&client, &procs[0].url, rows, t0).await?;
    tokio::time::sleep(args.settle).await;
    let reads = time_reads(&client, &procs, args, start_time).await?;
    let rss: Vec<f64> = procs.iter().map(NodeProcess::peak_rss_mib).collect();
    let disk = stop_and_measure(procs)?;
    let rate = rows as f64 / secs;
    println!(
        "bench: {} node(s), replication factor {}, {rows} samples, CSV → queryable in {secs:.2} s: {rate:.0} samples/s",
        args.nodes.max(1),
        args.replication_factor
    );
    if let Some(c) = ceiling {
        println!(
            "  storage ceiling {c:.0} samples/s; pipeline at {:.0} % of it",
            100.0 * rate / c
        );
    }
    disk.print(rows);
    println!(
        "  peak RSS per node (MiB): {}",
        rss.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for l in reads {
        println!("{l}");
    }
    Ok(())
}

/// Starts the store-only members first (the first of them is the seed) and waits until they
/// form a cluster, then the streaming node; returns them (the streaming node first) and the
/// moment the streaming node listened (store open, cluster joined), from which ingest is timed.
async fn start_cluster(
    client: &reqwest::Client,
    args: &BenchArgs,
    dir: &Path,
    csv: &Path,
) -> anyhow::Result<(Vec<NodeProcess>, Instant)> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let nodes = args.nodes.max(1);
    let seed = format!("127.0.0.1:{}", free_port()?);
    let flags = |i: u32| -> anyhow::Result<Vec<String>> {
        let mut a = vec!["--node-name".to_string(), format!("bench-{i}")];
        if nodes > 1 {
            let addr = match i {
                1 => seed.clone(),
                _ => format!("127.0.0.1:{}", free_port()?),
            };
            let rf = args.replication_factor.to_string();
            let cluster = [
                "--cluster-addr",
                &addr,
                "--seeds",
                &seed,
                "--cluster-cookie",
                "bench",
                "--replication-factor",
                &rf,
            ];
            a.extend(cluster.map(String::from));
        }
        Ok(a)
    };
    let start = |i: u32, extra: Vec<String>| -> anyhow::Result<NodeProcess> {
        let mut a = flags(i)?;
        a.extend(extra);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        NodeProcess::start(&exe, &dir.join(format!("node-{i}")), &a, &[])
    };
    let mut procs = Vec::new();
    for i in 1..nodes {
        procs.push(start(i, vec!["--no-stream".into()])?);
    }
    if let Some(seed_node) = procs.first() {
        let want = (nodes - 1) as usize;
        eventually(
            "store nodes forming a cluster",
            FORM_DEADLINE,
            POLL,
            async || {
                let c = cluster(client, &seed_node.url)
                    .await
                    .map_err(|e| e.to_string())?;
                let live = c["live"].as_array().map_or(0, Vec::len);
                if live >= want {
                    Ok(())
                } else {
                    Err(format!("{live} live"))
                }
            },
        )
        .await?;
    }
    let csv = csv.to_str().context("the CSV path is not UTF-8")?;
    let streamer = start(0, one_pass(csv).map(String::from).to_vec())?;
    let t0 = Instant::now();
    procs.insert(0, streamer);
    Ok((procs, t0))
}

/// Waits until the cluster stores `rows` samples; seconds since `t0`.
async fn wait_ingested(
    client: &reqwest::Client,
    url: &str,
    rows: u64,
    t0: Instant,
) -> anyhow::Result<f64> {
    eventually(
        "everything stored",
        INGEST_DEADLINE,
        INGEST_POLL,
        async || {
            let c = cluster(client, url).await.map_err(|e| e.to_string())?;
            match c["samples_stored"].as_u64().unwrap_or(0) {
                n if n >= rows => Ok(()),
                n => Err(format!("{n} of {rows} stored")),
            }
        },
    )
    .await?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Times REST reads of one GPU, 5 min in the middle of the hour and the whole hour, from every
/// node; one line of percentiles per node and window.
async fn time_reads(
    client: &reqwest::Client,
    procs: &[NodeProcess],
    args: &BenchArgs,
    start_time: &str,
) -> anyhow::Result<Vec<String>> {
    let first = procs.first().context("no node")?;
    let gpus: Value = client
        .get(format!("{}/api/v1/gpus?limit=1", first.url))
        .send()
        .await?
        .json()
        .await?;
    let uuid = gpus["items"][0]["uuid"]
        .as_str()
        .context("no GPU listed")?
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(start_time)?;
    let at = |s: i64| {
        (t + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let half = i64::from(args.scrapes()) / 2;
    let windows = [("5min", at(half), at(half + 299)), ("1h", at(0), at(3599))];
    let mut lines = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        for (name, from, to) in &windows {
            read_window(client, &p.url, &uuid, None, (from, to)).await?; // warm-up
            let mut times = Vec::new();
            let mut points = 0;
            for _ in 0..args.queries {
                let (s, n) = read_window(client, &p.url, &uuid, None, (from, to)).await?;
                times.push(s * 1000.0);
                points = n;
            }
            times.sort_by(f64::total_cmp);
            lines.push(format!(
                "  node {i}: {name:>4} of one GPU ({points} points): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms",
                percentile(&times, 0.5),
                percentile(&times, 0.9),
                percentile(&times, 0.99)
            ));
        }
    }
    Ok(lines)
}

/// Disk use of the stopped nodes (allocated blocks, as `du -s --block-size=1`).
struct DiskFigures {
    store: u64,
    tables: u64,
    broker: u64,
    whole: u64,
}

impl DiskFigures {
    fn print(&self, rows: u64) {
        let per = |b: u64| b as f64 / rows as f64;
        // After a clean stop the last checkpoint may still sit in fjall's journal rather than
        // in tables, so the figure is the whole store directory.
        println!(
            "  store on disk after shutdown: {:.3} bytes/sample ({} bytes; {} in tables)",
            per(self.store),
            self.store,
            self.tables
        );
        println!(
            "  broker logs after shutdown: {:.3} bytes/sample ({} bytes)",
            per(self.broker),
            self.broker
        );
        println!(
            "  whole data directories after shutdown: {:.3} bytes/sample ({} bytes, as du -s --block-size=1)",
            per(self.whole),
            self.whole
        );
    }
}

/// Stops every node cleanly (final checkpoint), then measures their data directories.
fn stop_and_measure(procs: Vec<NodeProcess>) -> anyhow::Result<DiskFigures> {
    for p in &procs {
        p.signal("TERM")?;
    }
    let mut d = DiskFigures {
        store: 0,
        tables: 0,
        broker: 0,
        whole: 0,
    };
    for mut p in procs {
        p.stop(STOP_DEADLINE)?;
        let size = |sub: &str| telemetry_storage::disk::allocated_bytes(&p.data_dir.join(sub));
        d.store += size("store");
        d.tables += size("store/keyspaces");
        d.broker += size("broker");
        d.whole += size("");
    }
    Ok(d)
}
