//! `bench --scenario repair`: what it takes to get a lost volume back. `--nodes` nodes with
//! `--replication-factor` ingest the generated file; then the last node is killed (-9), its data
//! directory deleted and the node started again, empty, under its name. Timed: from its start
//! until it no longer says `syncing` (its first repair pass compared every partition it holds
//! and copied what it lacked). Figures are reported, never asserted.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{cluster, start_cluster, stop_and_measure, wait_ingested};
use crate::harness::{eventually, POLL};

/// Longest wait for the emptied node to finish its repair.
const REPAIR_DEADLINE: Duration = Duration::from_secs(1800);

/// Ingests, wipes the last node, restarts it and times its repair.
pub(super) async fn wiped_node(
    args: &super::BenchArgs,
    dir: &Path,
    csv: &Path,
    rows: u64,
) -> anyhow::Result<()> {
    if args.replication_factor < 2 || args.nodes < args.replication_factor {
        bail!(
            "--scenario repair needs --replication-factor 2 or more and at least as many --nodes"
        );
    }
    let client = reqwest::Client::new();
    let (mut procs, t0) = start_cluster(&client, args, dir, csv).await?;
    let secs = wait_ingested(&client, &procs[0].url, rows, t0).await?;
    println!(
        "bench: {} nodes, replication factor {}, {rows} samples ingested in {secs:.2} s ({:.0} samples/s)",
        args.nodes,
        args.replication_factor,
        rows as f64 / secs
    );
    // Every replica's collector caught up, so the victim holds its whole share.
    eventually("every log consumed", REPAIR_DEADLINE, POLL, async || {
        let c = cluster(&client, &procs[0].url)
            .await
            .map_err(|e| e.to_string())?;
        let lag: u64 = c["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|m| m["broker_lag_records"].as_u64())
                    .sum()
            })
            .unwrap_or(u64::MAX);
        (lag == 0)
            .then_some(())
            .ok_or(format!("{lag} records not consumed"))
    })
    .await?;
    let mut victim = procs.pop().context("no node")?;
    let held = member_samples(&client, &procs[0].url, &victim_name(args)).await?;
    victim.signal("KILL")?;
    let _ = victim.child.wait();
    std::fs::remove_dir_all(&victim.data_dir)
        .with_context(|| format!("deleting {}", victim.data_dir.display()))?;
    let started = Instant::now();
    let back = victim.start_again()?;
    let copied = eventually(
        "the emptied node repaired",
        REPAIR_DEADLINE,
        POLL,
        async || {
            let c = cluster(&client, &back.url)
                .await
                .map_err(|e| e.to_string())?;
            let me = &c["members"][0];
            match (
                me["syncing"].as_bool(),
                me["repair"]["samples_copied"].as_u64(),
            ) {
                (Some(false), Some(n)) => Ok(n),
                _ => Err(format!("repairing: {}", me["repair"])),
            }
        },
    )
    .await?;
    let took = started.elapsed().as_secs_f64();
    let after = member_samples(&client, &back.url, &victim_name(args)).await?;
    println!(
        "  node held {held} samples; emptied and restarted, it repaired in {took:.2} s: \
         {copied} samples copied ({:.0} samples/s), {after} stored after",
        copied as f64 / took
    );
    procs.push(back);
    stop_and_measure(procs)?;
    Ok(())
}

/// The name `start_cluster` gives the last node.
fn victim_name(args: &super::BenchArgs) -> String {
    format!("bench-{}", args.nodes.max(1) - 1)
}

/// Samples one member stores, as `url`'s cluster view says.
async fn member_samples(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<u64> {
    let c = cluster(client, url).await?;
    c["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .and_then(|m| m["samples_stored"].as_u64())
        .with_context(|| format!("{name} is not in the cluster view"))
}
