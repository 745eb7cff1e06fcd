//! A damaged broker log found at start-up: the node names the partition and the offset, keeps
//! the damaged bytes, serves everything it stores, and says it is not ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{reference_csv, Node};

/// A partition directory whose log holds at least two records, and its segment file.
fn partition_with_records(broker: &Path) -> (u32, PathBuf) {
    let mut dirs: Vec<_> = std::fs::read_dir(broker)
        .expect("broker dir")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Some(p) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("p-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        for seg in std::fs::read_dir(&dir).expect("partition dir") {
            let seg = seg.expect("entry").path();
            if seg.extension().and_then(|e| e.to_str()) != Some("log") {
                continue;
            }
            let bytes = std::fs::read(&seg).expect("segment");
            if bytes.len() < 16 {
                continue;
            }
            let first = 16 + u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if bytes.len() > first + 16 {
                return (p, seg);
            }
        }
    }
    panic!(
        "no partition log with two records under {}",
        broker.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_partition_log_is_reported_and_the_rest_is_served() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = crate::support::csv_rows(&csv);
    let data = tmp.path().join("d");
    let node = Node::start(
        &data,
        &[
            "--csv",
            csv.to_str().expect("utf8"),
            // Slow enough for several batches (records) per partition.
            "--rate",
            "5000",
            "--partitions",
            "2",
            "--passes",
            "1",
            "--timestamps",
            "csv",
        ],
    );
    crate::support::wait_stored(&node, rows, Duration::from_secs(60)).await;
    let gpus_before = node.ok("/api/v1/gpus?limit=1000").await["items"].clone();
    // Killed, not stopped: a graceful stop would delete the consumed segments.
    drop(node);

    // One flipped payload byte in the first record: acknowledged data with records behind it.
    let (partition, segment) = partition_with_records(&data.join("broker"));
    let mut bytes = std::fs::read(&segment).expect("read");
    let len = bytes.len();
    bytes[20] ^= 0x55;
    std::fs::write(&segment, &bytes).expect("write");

    let node = Node::start_env(
        &data,
        &["--no-stream", "--partitions", "2"],
        &[("RUST_LOG", "error")],
    );
    let cluster = node.ok("/api/v1/cluster").await;
    let member = &cluster["members"][0];
    let damaged = member["damaged_partitions"].as_array().expect("list");
    assert_eq!(damaged.len(), 1, "{member}");
    assert_eq!(damaged[0]["partition"], partition);
    let detail = damaged[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("at offset 0") && detail.contains(&format!("p-{partition:04}")),
        "{detail}"
    );
    // Everything stored stays served.
    assert_eq!(cluster["samples_stored"], rows);
    assert_eq!(
        node.ok("/api/v1/gpus?limit=1000").await["items"],
        gpus_before
    );
    let (status, body) = node.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(&partition.to_string()),
        "{body}"
    );
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("telemetry_broker_damaged_partitions 1"),
        "{metrics}"
    );
    let log = node.stop_and_log();
    let line = log
        .lines()
        .find(|l| l.contains("partition log damaged"))
        .unwrap_or_else(|| panic!("no damage report in {log}"));
    assert!(
        line.contains(&format!("p-{partition:04} at offset 0")),
        "{line}"
    );
    // The damaged bytes are kept for repair, not truncated away.
    assert_eq!(
        std::fs::metadata(&segment).expect("segment").len(),
        len as u64
    );
}

/// A store table that fails its checksum stops start-up with an error that says what is damaged
/// and what to do, instead of serving wrong answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_store_file_is_reported_at_start_up() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = crate::support::csv_rows(&csv);
    let data = tmp.path().join("d");
    let args = [
        "--csv",
        csv.to_str().expect("utf8"),
        "--rate",
        "0",
        "--passes",
        "1",
    ];
    let node = Node::start(&data, &args);
    node.wait_for_samples(rows, Duration::from_secs(60)).await;
    node.stop();
    let mut tables = Vec::new();
    for ks in std::fs::read_dir(data.join("store/keyspaces")).expect("keyspaces") {
        let dir = ks.expect("entry").path().join("tables");
        for t in std::fs::read_dir(&dir).into_iter().flatten() {
            tables.push(t.expect("entry").path());
        }
    }
    assert!(!tables.is_empty(), "the store flushed no table");
    for t in &tables {
        let mut bytes = std::fs::read(t).expect("read");
        let mid = bytes.len() / 3;
        bytes[mid] ^= 0xff;
        std::fs::write(t, bytes).expect("write");
    }
    let out = std::process::Command::new(crate::support::binary())
        .args([
            "--data-dir",
            data.to_str().expect("utf8"),
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--no-stream")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("failed its checksum")
            && err.contains(&data.join("store").display().to_string()),
        "{err}"
    );
}
