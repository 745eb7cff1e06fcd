//! kill -9 in the middle of streaming, restart on the same data dir: every sample acknowledged
//! before the kill is stored after the restart, and nothing is stored twice.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{binary, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_sample() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("gen.csv");
    let status = Command::new(binary())
        .args([
            "gen-csv",
            "--hosts",
            "25",
            "--scrapes",
            "100",
            "--seed",
            "3",
            "-o",
        ])
        .arg(&csv)
        .status()
        .expect("gen-csv");
    assert!(status.success());
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
    let deadline = Instant::now() + Duration::from_secs(60);
    let acked = loop {
        let c = node.ok("/api/v1/cluster").await;
        let acked = c["members"][0]["samples_acked"].as_u64().unwrap_or(0);
        if acked >= total_rows / 4 {
            break acked;
        }
        assert!(Instant::now() < deadline, "no progress: {c}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    node.signal("KILL");
    drop(node);

    let node = Node::start(&data, &["--no-stream", "--partitions", "8"]);
    // The collectors replay the broker logs from their committed offsets.
    let deadline = Instant::now() + Duration::from_secs(60);
    let cluster = loop {
        let c = node.ok("/api/v1/cluster").await;
        if c["members"][0]["broker_lag_records"].as_u64() == Some(0) {
            break c;
        }
        assert!(Instant::now() < deadline, "replay did not finish: {c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stored = cluster["samples_stored"].as_u64().expect("count");
    assert!(
        stored >= acked,
        "acknowledged {acked} before kill -9, only {stored} stored after restart"
    );
    assert!(
        stored < total_rows,
        "the kill came after the end of the stream ({stored}); test proves nothing"
    );

    // No duplicates: per GPU, every (timestamp, metric) appears once and the count adds up.
    let gpus = node.ok("/api/v1/gpus?limit=10000").await;
    let mut counted = 0u64;
    for g in gpus["items"].as_array().expect("items") {
        let uuid = g["uuid"].as_str().expect("uuid");
        let mut cursor = String::new();
        let mut last: Option<(String, String)> = None;
        loop {
            let page = node
                .ok(&format!(
                    "/api/v1/gpus/{uuid}/telemetry?limit=10000{cursor}"
                ))
                .await;
            for it in page["items"].as_array().expect("items") {
                let key = (
                    it["timestamp"].as_str().unwrap_or("").to_string(),
                    it["metric"].as_str().unwrap_or("").to_string(),
                );
                if let Some(prev) = &last {
                    assert!(*prev < key, "duplicate or disorder at {key:?}");
                }
                last = Some(key);
                counted += 1;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    assert_eq!(counted, stored);
    node.stop();
}
