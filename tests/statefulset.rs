//! A local StatefulSet: `telemetry-0..N-1` with identical flags, the seed list the Helm chart
//! generates (the first three members) and its default of two copies, scaled 3 → 5 → 3 while
//! every member streams, the two extra members decommissioned before they are removed. At each
//! stage the answers are complete (not partial), duplicate-free and hold every sample, and after
//! the scale-down every sample still has two copies.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{all_points, binary, eventually, free_port, replicas_whole, wait_live, Node};

struct Replica {
    name: String,
    cluster: String,
}

/// Starts a replica with the flags every replica gets (only the name and addresses differ, as
/// the pod name and its DNS name do in the chart).
fn start(dir: &Path, r: &Replica, seeds: &str, csv: &str) -> Node {
    Node::start(
        &dir.join(&r.name),
        &[
            "--node-name",
            &r.name,
            "--cluster-addr",
            &r.cluster,
            "--seeds",
            seeds,
            "--cluster-cookie",
            "sts",
            "--partitions",
            "16",
            "--liveness-timeout",
            "2s",
            "--replication-factor",
            "2",
            "--csv",
            csv,
            "--timestamps",
            "csv",
            "--passes",
            "0",
            "--rate",
            "1000",
        ],
    )
}

/// Waits until `node` answers with every one of `rows` samples (complete, ordered, no duplicate),
/// while streams go on; returns the answer's digest.
async fn wait_all(node: &Node, rows: u64) -> Vec<String> {
    eventually(
        "every sample answered",
        Duration::from_secs(60),
        async || {
            let (count, digest) = all_points(node).await;
            if count as u64 == rows {
                Ok(digest)
            } else {
                Err(format!("{count} of {rows} samples"))
            }
        },
    )
    .await
}

/// Samples telemetry-0's streamer had acknowledged.
async fn acked(node: &Node) -> u64 {
    node.ok("/api/v1/cluster").await["members"][0]["samples_acked"]
        .as_u64()
        .unwrap_or(0)
}

async fn decommission(via: &Node, name: &str) {
    let out = Command::new(binary())
        .args(["decommission", name, "--url", &via.url])
        .output()
        .expect("decommission runs");
    assert!(
        out.status.success(),
        "decommission of {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_3_to_5_to_3_while_streaming_loses_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("dcgm.csv");
    // 5 hosts × 8 GPUs × 10 metrics × 50 scrapes: 20,000 rows; every replica streams them over
    // and over at 1,000 rows/s (the same samples again: idempotent) until the test stops it, so
    // scaling always happens while every replica streams.
    let status = Command::new(binary())
        .args([
            "gen-csv",
            "--hosts",
            "5",
            "--scrapes",
            "50",
            "--seed",
            "9",
            "-o",
        ])
        .arg(&csv)
        .status()
        .expect("gen-csv");
    assert!(status.success());
    let rows = 20_000u64;
    let csv = csv.to_str().expect("utf8").to_string();
    let replicas: Vec<Replica> = (0..5)
        .map(|i| Replica {
            name: format!("telemetry-{i}"),
            cluster: format!("127.0.0.1:{}", free_port()),
        })
        .collect();
    let seeds = replicas[..3]
        .iter()
        .map(|r| r.cluster.as_str())
        .collect::<Vec<_>>()
        .join(",");

    // Stage 1: three replicas.
    let mut nodes: Vec<Node> = replicas[..3]
        .iter()
        .map(|r| start(tmp.path(), r, &seeds, &csv))
        .collect();
    wait_live(&nodes[0], 3).await;

    // Stage 2: scale up to five; nothing else to do.
    nodes.extend(
        replicas[3..]
            .iter()
            .map(|r| start(tmp.path(), r, &seeds, &csv)),
    );
    wait_live(&nodes[0], 5).await;
    let five = wait_all(&nodes[4], rows).await;

    // Stage 3: decommission the two highest, then remove them, while every replica streams.
    let before = acked(&nodes[0]).await;
    for name in ["telemetry-4", "telemetry-3"] {
        decommission(&nodes[0], name).await;
    }
    let n4 = nodes.pop().expect("telemetry-4");
    let n3 = nodes.pop().expect("telemetry-3");
    n4.stop();
    n3.stop();
    wait_live(&nodes[1], 3).await;
    let three = wait_all(&nodes[2], rows).await;
    assert_eq!(three, five, "the same answers after the scale-down");
    let c = nodes[1].ok("/api/v1/cluster").await;
    assert_eq!(
        c["members"].as_array().map(Vec::len),
        Some(3),
        "the removed replicas are forgotten: {c}"
    );

    // The streams went on through the scale-down.
    let after = acked(&nodes[0]).await;
    assert!(
        after > before,
        "telemetry-0 stopped streaming: {before} -> {after}"
    );
    // Still complete, still no duplicates, every replica agrees. (The per-member counts may sum
    // to more: a sample written while two members briefly disagreed on an owner lives on both;
    // answers merge it once, which is what is checked.)
    for n in &nodes {
        assert_eq!(wait_all(n, rows).await, five);
    }
    // The leavers handed their data over through replicated appends: two copies of everything.
    let c = replicas_whole(&nodes[0]).await;
    assert_eq!(c.samples_stored, rows, "{c:?}");
    assert!(c.sample_copies >= 2 * rows, "fewer than two copies: {c:?}");
    for n in nodes {
        n.stop();
    }
}
