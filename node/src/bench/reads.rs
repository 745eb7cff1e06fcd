//! `bench --scenario reads-during-ingest`: what a dashboard sees while data floods in. One node
//! streams the generated file over and over, unthrottled and stamped with the current time;
//! after `--warmup`, `--queries` reads of one GPU's last 5 minutes of one metric are timed, one
//! every [`READ_PACE`]. Then the
//! node is restarted with `--no-stream` on the same data and the same reads are timed idle.
//! Figures are reported, never asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::SecondsFormat;
use serde_json::Value;

use super::{cluster, percentile, read_window, STOP_DEADLINE};
use crate::harness::{eventually, NodeProcess, POLL};

/// The metric read (one series of the GPU, as a dashboard panel reads it).
const METRIC: &str = "DCGM_FI_DEV_GPU_TEMP";
/// The window read: the last 5 minutes.
const WINDOW: chrono::Duration = chrono::Duration::minutes(5);
/// Longest wait for the first pass of the file to be stored before the reads start.
const FIRST_PASS_DEADLINE: Duration = Duration::from_secs(300);
/// Pause between two timed reads, as a dashboard's panels arrive: the reads span several
/// checkpoints instead of slipping between two.
const READ_PACE: Duration = Duration::from_millis(50);

/// Times `queries` reads while the node ingests, then idle; prints both.
pub(super) async fn during_ingest(
    args: &super::BenchArgs,
    dir: &Path,
    csv: &Path,
    rows: u64,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this binary")?;
    let data = dir.join("node");
    let csv = csv.to_str().context("the CSV path is not UTF-8")?;
    let streaming = [
        "--node-name",
        "bench-0",
        "--csv",
        csv,
        "--rate",
        "0",
        "--passes",
        "0",
    ];
    let mut node = NodeProcess::start(&exe, &data, &streaming, &[])?;
    let client = reqwest::Client::new();
    eventually(
        "the first pass stored",
        FIRST_PASS_DEADLINE,
        POLL,
        async || {
            let c = cluster(&client, &node.url)
                .await
                .map_err(|e| e.to_string())?;
            match c["samples_stored"].as_u64().unwrap_or(0) {
                n if n >= rows => Ok(()),
                n => Err(format!("{n} of {rows} stored")),
            }
        },
    )
    .await?;
    tokio::time::sleep(args.warmup).await;
    let uuid = first_gpu(&client, &node.url).await?;
    let acked = |c: &Value| c["members"][0]["samples_acked"].as_u64().unwrap_or(0);
    let (before, t0) = (acked(&cluster(&client, &node.url).await?), Instant::now());
    let busy = time_reads(&client, &node.url, &uuid, args.queries, None).await?;
    let rate =
        (acked(&cluster(&client, &node.url).await?) - before) as f64 / t0.elapsed().as_secs_f64();
    let stopped_at = chrono::Utc::now();
    node.stop(STOP_DEADLINE)?;
    drop(node);
    let idle_node =
        NodeProcess::start(&exe, &data, &["--node-name", "bench-0", "--no-stream"], &[])?;
    let idle = time_reads(
        &client,
        &idle_node.url,
        &uuid,
        args.queries,
        Some(stopped_at),
    )
    .await?;
    println!(
        "bench: reads during ingest, one node, {} GPUs × 10 metrics streamed without pause",
        rows / 10 / u64::from(args.scrapes().max(1))
    );
    println!("  ingest while reading: {rate:.0} samples/s");
    println!("  {}", busy.line("ingesting"));
    println!("  {}", idle.line("idle"));
    println!(
        "  p99 ingesting / idle: {:.1}×",
        busy.percentile(0.99) / idle.percentile(0.99)
    );
    Ok(())
}

/// The first GPU the node lists.
async fn first_gpu(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let gpus: Value = client
        .get(format!("{url}/api/v1/gpus?limit=1"))
        .send()
        .await?
        .json()
        .await?;
    Ok(gpus["items"][0]["uuid"]
        .as_str()
        .context("no GPU listed")?
        .to_string())
}

/// Latencies (ms, sorted) of a series of reads and the points of the last.
struct Timings {
    ms: Vec<f64>,
    points: usize,
}

impl Timings {
    fn percentile(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }

    fn line(&self, what: &str) -> String {
        format!(
            "{what}: {} reads of one GPU's last 5 min of {METRIC} ({} points): p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.ms.len(),
            self.points,
            self.percentile(0.5),
            self.percentile(0.9),
            self.percentile(0.99),
            self.ms.last().copied().unwrap_or(f64::NAN),
        )
    }
}

/// `queries` reads of the 5 minutes before `end` (before each read's own time when `None`).
async fn time_reads(
    client: &reqwest::Client,
    url: &str,
    uuid: &str,
    queries: u32,
    end: Option<chrono::DateTime<chrono::Utc>>,
) -> anyhow::Result<Timings> {
    let mut ms = Vec::with_capacity(queries as usize);
    let mut points = 0;
    for _ in 0..queries {
        let to = end.unwrap_or_else(chrono::Utc::now);
        let (from, to) = (
            (to - WINDOW).to_rfc3339_opts(SecondsFormat::Millis, true),
            to.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
        let (secs, n) = read_window(client, url, uuid, Some(METRIC), (&from, &to)).await?;
        ms.push(secs * 1000.0);
        points = n;
        tokio::time::sleep(READ_PACE).await;
    }
    ms.sort_by(f64::total_cmp);
    Ok(Timings { ms, points })
}
