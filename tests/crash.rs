//! kill -9 in the middle of streaming, restart on the same data dir: every sample acknowledged
//! before the kill is stored after the restart, and nothing is stored twice.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{binary, eventually, Node};

fn gen_csv(path: &Path, hosts: &str, scrapes: &str) {
    let status = Command::new(binary())
        .args([
            "gen-csv",
            "--hosts",
            hosts,
            "--scrapes",
            scrapes,
            "--seed",
            "3",
            "-o",
        ])
        .arg(path)
        .status()
        .expect("gen-csv");
    assert!(status.success());
}

fn epoch_ms(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("RFC 3339")
        .timestamp_millis()
}

/// Waits until the node acknowledged at least `at_least` samples, then kills it with SIGKILL;
/// returns how many were acknowledged just before.
async fn kill_after_acked(node: &Node, at_least: u64) -> u64 {
    let acked = eventually("enough acknowledged", Duration::from_secs(60), async || {
        let c = node.ok("/api/v1/cluster").await;
        match c["members"][0]["samples_acked"].as_u64().unwrap_or(0) {
            n if n >= at_least => Ok(n),
            _ => Err(c.to_string()),
        }
    })
    .await;
    node.signal("KILL");
    acked
}

/// Waits until the collectors have replayed the broker logs after a restart.
async fn wait_replayed(node: &Node) -> serde_json::Value {
    eventually("replay finished", Duration::from_secs(60), async || {
        let c = node.ok("/api/v1/cluster").await;
        if c["members"][0]["broker_lag_records"].as_u64() == Some(0) {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await
}

/// Every stored point of every GPU, through cursor pages: (uuid, metric, ms) → value. Asserts
/// that each GPU's points come strictly ordered by (time, metric), hence without duplicates.
async fn stored_points(node: &Node) -> HashMap<(String, String, i64), f64> {
    let gpus = node.ok("/api/v1/gpus?limit=10000").await;
    let mut out = HashMap::new();
    for g in gpus["items"].as_array().expect("items") {
        let uuid = g["uuid"].as_str().expect("uuid");
        let mut cursor = String::new();
        let mut last: Option<(i64, String)> = None;
        loop {
            let page = node
                .ok(&format!(
                    "/api/v1/gpus/{uuid}/telemetry?limit=10000{cursor}"
                ))
                .await;
            for it in page["items"].as_array().expect("items") {
                let metric = it["metric"].as_str().expect("metric").to_string();
                let ts = epoch_ms(it["timestamp"].as_str().expect("timestamp"));
                if let Some(prev) = &last {
                    assert!(*prev < (ts, metric.clone()), "disorder at {ts} {metric}");
                }
                last = Some((ts, metric.clone()));
                let key = (uuid.to_string(), metric, ts);
                let v = it["value"].as_f64().expect("value");
                assert!(out.insert(key.clone(), v).is_none(), "duplicate {key:?}");
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_sample() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("gen.csv");
    gen_csv(&csv, "25", "100");
    let total_rows = 25 * 8 * 10 * 100u64;
    let data = tmp.path().join("node");
    let args = [
        "--csv",
        csv.to_str().expect("utf8"),
        "--rate",
        "40000",
        "--passes",
        "1",
        "--timestamps",
        "csv",
        "--partitions",
        "8",
    ];
    let node = Node::start(&data, &args);

    // Let it ingest a while, note what was acknowledged, then kill -9 while it still streams.
    let acked = kill_after_acked(&node, total_rows / 4).await;
    drop(node);

    let node = Node::start(&data, &["--no-stream", "--partitions", "8"]);
    // The collectors replay the broker logs from their committed offsets.
    let cluster = wait_replayed(&node).await;
    let stored = cluster["samples_stored"].as_u64().expect("count");
    assert!(
        stored >= acked,
        "acknowledged {acked} before kill -9, only {stored} stored after restart"
    );
    assert!(
        stored < total_rows,
        "the kill came after the end of the stream ({stored}); test proves nothing"
    );
    // No duplicates, order kept, and the count adds up.
    assert_eq!(stored_points(&node).await.len() as u64, stored);
    node.stop();
}

/// Three passes rewrite the same samples, so the replay after kill -9 lands in buckets that
/// checkpoints already wrote and sealed: values stay exact and the distinct count stays exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_rewrites_keeps_values_and_count_exact() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("gen.csv");
    // 5 hosts × 8 GPUs × 10 metrics × 50 scrapes a second apart: 20,000 rows over 50 s.
    gen_csv(&csv, "5", "50");
    let rows = 20_000u64;
    let mut want = HashMap::new();
    let mut rdr = csv::Reader::from_path(&csv).expect("csv");
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let key = (rec[4].to_string(), rec[1].to_string(), epoch_ms(&rec[0]));
        want.insert(key, rec[10].parse::<f64>().expect("value"));
    }
    assert_eq!(want.len() as u64, rows);

    let data = tmp.path().join("node");
    // 10 s buckets: the data spans several, so seals happen; checkpoints every 200 ms.
    let store_flags = [
        "--partitions",
        "8",
        "--bucket-width",
        "10s",
        "--checkpoint-interval",
        "200ms",
    ];
    let mut args = vec![
        "--csv",
        csv.to_str().expect("utf8"),
        "--rate",
        "15000",
        "--passes",
        "3",
        "--timestamps",
        "csv",
    ];
    args.extend(store_flags);
    let node = Node::start(&data, &args);
    let acked = kill_after_acked(&node, rows * 3 / 2).await;
    drop(node);
    assert!(
        acked < rows * 3,
        "the kill came after the stream ended; test proves nothing"
    );

    let mut args = vec!["--no-stream"];
    args.extend(store_flags);
    let node = Node::start(&data, &args);
    let cluster = wait_replayed(&node).await;
    let got = stored_points(&node).await;
    assert_eq!(cluster["samples_stored"].as_u64(), Some(got.len() as u64));
    // More than a full pass was acknowledged, so every sample of the file was, at least once.
    assert_eq!(got.len() as u64, rows, "distinct samples after the replay");
    for (key, v) in &got {
        assert_eq!(want.get(key), Some(v), "{key:?}");
    }
    node.stop();
}
