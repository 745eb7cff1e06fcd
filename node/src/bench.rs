//! `telemetry-node bench`: the end-to-end load benchmark.
//!
//! Generates a `gen-csv` file, measures the storage ceiling (the same file parsed and written
//! straight into a store: no broker, no actors), then starts `--nodes` real node processes of
//! this binary on loopback, streams the file unthrottled through the first one, and waits until
//! every sample is queryable cluster-wide. Then it times REST reads of one GPU (5 min and 1 h,
//! every page) from every node, stops the nodes and prints samples/s, the fraction of the
//! ceiling, bytes per sample on disk and each node's peak RSS. Figures are reported, never
//! asserted: the machines are shared.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;
use telemetry_actors::backoff::Backoff;
use telemetry_actors::dcgm::{CsvRows, PartitionBatches, TimestampCache};
use telemetry_actors::routing::DEFAULT_PARTITIONS;
use telemetry_storage::{Store, StoreOptions};

use crate::gencsv::{generate, GenCsvArgs};

/// Longest wait for the cluster to store everything.
const INGEST_DEADLINE: Duration = Duration::from_secs(600);
/// Longest wait for the store-only nodes to form a cluster.
const FORM_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between looks at the cluster while waiting (short: ingest is timed by it).
const POLL: Duration = Duration::from_millis(20);
/// Longest a timed read retries while the cluster answers 503 (a member that did not answer a
/// scatter in time on a loaded machine); the retried attempts are not timed.
const READ_RETRY_DEADLINE: Duration = Duration::from_secs(60);
/// Pauses between those retries.
const READ_RETRY_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// Options of `telemetry-node bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Node processes (one streams, the others store and serve).
    #[arg(long, default_value_t = 1)]
    pub nodes: u32,
    /// Hosts in the generated file.
    #[arg(long, default_value_t = 16)]
    pub hosts: u32,
    /// GPUs per host in the generated file.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_host: u32,
    /// Scrapes at 1 s (3,600 = one hour, so "1 h of one GPU" is 36 K samples).
    #[arg(long, default_value_t = 3600)]
    pub scrapes: u32,
    /// Timed REST reads per window size and node.
    #[arg(long, default_value_t = 100)]
    pub queries: u32,
    /// Pause between the end of ingest and the timed reads, so the checkpoint and the table
    /// flushes the burst caused are not what the reads measure (`0s` to read at once).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Skip the storage ceiling run.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Working directory (default: a fresh temporary one, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// A node process of the benchmark.
struct Proc {
    child: Child,
    url: String,
    data: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(data: &Path, args: &[String]) -> anyhow::Result<Proc> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let log = std::fs::File::create(data.with_extension("log"))?;
    let mut child = Command::new(exe)
        .arg("--data-dir")
        .arg(data)
        .args(["--http-addr", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting a node")?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        let _ = child.kill();
        bail!(
            "node did not start; see {}",
            data.with_extension("log").display()
        );
    };
    Ok(Proc {
        url: url.to_string(),
        child,
        data: data.to_path_buf(),
    })
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kib| kib / 1024.0)
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

/// Reads `[from, to]` of one GPU, every page; returns (seconds, points). The time is the
/// server's: from sending each request to the last byte of its answer (the client's JSON
/// parsing is not counted).
async fn read_window(
    client: &reqwest::Client,
    url: &str,
    uuid: &str,
    from: &str,
    to: &str,
) -> anyhow::Result<(f64, usize)> {
    let mut busy = Duration::ZERO;
    let mut cursor: Option<String> = None;
    let mut points = 0;
    loop {
        let mut req = client
            .get(format!("{url}/api/v1/gpus/{uuid}/telemetry"))
            .query(&[("start_time", from), ("end_time", to), ("limit", "10000")]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c.as_str())]);
        }
        let (took, body) = read_page(req).await?;
        busy += took;
        let page: Value = serde_json::from_slice(&body)?;
        points += page["items"].as_array().map_or(0, Vec::len);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
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
        hosts: args.hosts,
        gpus_per_host: args.gpus_per_host,
        scrapes: args.scrapes,
        output: Some(csv.clone()),
        ..crate::gencsv::sample_args()
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
    let rows = generate(&gen, &mut out)?;
    out.flush()?;
    drop(out);
    let gpus = args.hosts * gen.gpus_per_host;
    eprintln!(
        "bench: {rows} samples ({gpus} GPUs × 10 metrics × {} scrapes), {} node(s), machine: {} CPUs",
        args.scrapes,
        args.nodes,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let ceiling = if args.no_ceiling {
        None
    } else {
        let (n, rate) = ceiling(&csv, &dir.join("ceiling"))?;
        eprintln!("bench: storage ceiling (parse + Store::write, one thread): {rate:.0} samples/s over {n} samples");
        Some(rate)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(pipeline(args, &dir, &csv, rows, ceiling, &gen.start))
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
    let nodes = args.nodes.max(1);
    let seed = format!("127.0.0.1:{}", free_port()?);
    let cluster_args = |i: u32| -> anyhow::Result<Vec<String>> {
        if nodes == 1 {
            return Ok(vec!["--node-name".into(), "bench-0".into()]);
        }
        let addr = if i == 1 {
            seed.clone()
        } else {
            format!("127.0.0.1:{}", free_port()?)
        };
        Ok(vec![
            "--node-name".into(),
            format!("bench-{i}"),
            "--cluster-addr".into(),
            addr,
            "--seeds".into(),
            seed.clone(),
            "--cluster-cookie".into(),
            "bench".into(),
        ])
    };
    // Store-only members first (the first of them is the seed), then the streaming node.
    let mut procs = Vec::new();
    for i in 1..nodes {
        let mut a = cluster_args(i)?;
        a.push("--no-stream".into());
        procs.push(spawn(&dir.join(format!("node-{i}")), &a)?);
    }
    if nodes > 1 {
        let deadline = Instant::now() + FORM_DEADLINE;
        while cluster(&client, &procs[0].url).await?["live"]
            .as_array()
            .map_or(0, Vec::len)
            < (nodes - 1) as usize
        {
            if Instant::now() > deadline {
                bail!("store nodes did not form a cluster");
            }
            tokio::time::sleep(POLL).await;
        }
    }
    let mut a = cluster_args(0)?;
    a.extend(
        [
            "--csv",
            csv.to_str().context("path is not UTF-8")?,
            "--rate",
            "0",
            "--passes",
            "1",
            "--timestamps",
            "csv",
        ]
        .map(String::from),
    );
    let streamer = spawn(&dir.join("node-0"), &a)?;
    // Timed from the streaming node's "listening" line (store open, cluster joined).
    let t0 = Instant::now();
    let url = streamer.url.clone();
    procs.insert(0, streamer);
    loop {
        let c = cluster(&client, &url).await?;
        if c["samples_stored"].as_u64().unwrap_or(0) >= rows {
            break;
        }
        if t0.elapsed() > INGEST_DEADLINE {
            bail!("not everything stored after {INGEST_DEADLINE:?}: {c}");
        }
        tokio::time::sleep(POLL).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let rate = rows as f64 / secs;

    tokio::time::sleep(args.settle).await;
    // Reads: one GPU, 5 min in the middle of the hour and the whole hour, from every node.
    let gpus: Value = client
        .get(format!("{url}/api/v1/gpus?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    let uuid = gpus["items"][0]["uuid"]
        .as_str()
        .context("no GPU listed")?
        .to_string();
    let t = chrono::DateTime::parse_from_rfc3339(start_time)?;
    let fmt = |d: chrono::Duration| (t + d).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let span = i64::from(args.scrapes);
    let windows = [
        (
            "5min",
            fmt(chrono::Duration::seconds(span / 2)),
            fmt(chrono::Duration::seconds(span / 2 + 299)),
        ),
        (
            "1h",
            fmt(chrono::Duration::zero()),
            fmt(chrono::Duration::seconds(3599)),
        ),
    ];
    let mut lines = Vec::new();
    for (i, p) in procs.iter().enumerate() {
        for (name, from, to) in &windows {
            read_window(&client, &p.url, &uuid, from, to).await?; // warm-up
            let mut times = Vec::new();
            let mut points = 0;
            for _ in 0..args.queries {
                let (s, n) = read_window(&client, &p.url, &uuid, from, to).await?;
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
    let rss: Vec<f64> = procs.iter().map(|p| peak_rss_mib(p.child.id())).collect();
    // Stop cleanly (final checkpoint), then measure the stores on disk.
    for p in &procs {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    let (mut disk, mut tables, mut broker, mut whole) = (0, 0, 0, 0);
    for mut p in procs {
        let _ = p.child.wait();
        disk += telemetry_storage::disk::allocated_bytes(&p.data.join("store"));
        tables += telemetry_storage::disk::allocated_bytes(&p.data.join("store").join("keyspaces"));
        broker += telemetry_storage::disk::allocated_bytes(&p.data.join("broker"));
        whole += telemetry_storage::disk::allocated_bytes(&p.data);
    }
    println!("bench: {nodes} node(s), {rows} samples, CSV → queryable in {secs:.2} s: {rate:.0} samples/s");
    if let Some(c) = ceiling {
        println!(
            "  storage ceiling {c:.0} samples/s; pipeline at {:.0} % of it",
            100.0 * rate / c
        );
    }
    // After a clean stop the last checkpoint may still sit in fjall's journal rather than in
    // tables, so the figure is the whole store directory (allocated blocks).
    println!(
        "  store on disk after shutdown: {:.3} bytes/sample ({disk} bytes; {tables} in tables)",
        disk as f64 / rows as f64,
    );
    println!(
        "  broker logs after shutdown: {:.3} bytes/sample ({broker} bytes)",
        broker as f64 / rows as f64,
    );
    println!(
        "  whole data directories after shutdown: {:.3} bytes/sample ({whole} bytes, as du -s --block-size=1)",
        whole as f64 / rows as f64,
    );
    println!(
        "  peak RSS per node (MiB): {}",
        rss.iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for l in lines {
        println!("{l}");
    }
    Ok(())
}
