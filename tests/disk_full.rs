//! A full data volume is a state, not a crash: on a tmpfs the test mounts, a streaming node
//! whose free space drops below its reserve refuses new data, stays up and keeps answering,
//! then resumes by itself once the volume is grown, and loses nothing.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{binary, eventually, Node};

/// Unmounts the tmpfs when the test ends, however it ends.
struct Mount(std::path::PathBuf);

impl Mount {
    /// Mounts a tmpfs of `size` at `dir`; `None` where this machine does not allow it.
    fn tmpfs(dir: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); this test needs root",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Mount(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(status.success(), "remount failed");
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn poll<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    eventually(what, Duration::from_secs(90), async || {
        f().await.ok_or_else(|| "not yet".to_string())
    })
    .await
}

/// Appends the node's partitions refused so far (`telemetry_broker_refusals`).
async fn refusals(node: &Node) -> f64 {
    let text = node.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix("telemetry_broker_refusals_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Passes of the generated file each test streams.
const PASSES: u64 = 20;

/// Streams PASSES passes of a generated 32,000-row file onto `mount` with `extra` flags (info
/// logs); returns the node, its data directory and the samples it will store in all.
fn stream_onto(tmp: &Path, mount: &Mount, extra: &[&str]) -> (Node, std::path::PathBuf, u64) {
    let csv = tmp.join("fleet.csv");
    let status = Command::new(binary())
        .args(["gen-csv", "--hosts", "2", "--scrapes", "200", "-o"])
        .arg(&csv)
        .status()
        .expect("gen-csv");
    assert!(status.success());
    let total = PASSES * crate::support::csv_rows(&csv);
    let data = mount.0.join("d");
    let passes = PASSES.to_string();
    let mut args = vec!["--csv", csv.to_str().expect("utf-8"), "--passes", &passes];
    args.extend(["--partitions", "8"]);
    args.extend(extra);
    let node = Node::start_env(&data, &args, &[("RUST_LOG", "info")]);
    (node, data, total)
}

/// After a clean stop, a restart on the same data serves exactly `total` samples.
async fn restart_holds(data: &Path, total: u64) {
    let node = Node::start(data, &["--no-stream", "--partitions", "8"]);
    let c = node.ok("/api/v1/cluster").await;
    assert_eq!(c["samples_stored"].as_u64(), Some(total));
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_new_data_serves_reads_and_resumes_when_grown() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(mount) = Mount::tmpfs(&tmp.path().join("vol"), "64m") else {
        return;
    };
    let (node, data, total) = stream_onto(
        tmp.path(),
        &mount,
        &["--rate", "50000", "--min-free-disk", "16MiB"],
    );
    poll("some samples are stored", async || {
        let c = node.ok("/api/v1/cluster").await;
        (c["samples_stored"].as_u64() > Some(0)).then_some(())
    })
    .await;

    // Fill the volume to 8 MiB short of full: below the 16 MiB reserve.
    let filler = mount.0.join("filler");
    let fill = mount.free_bytes().saturating_sub(8 << 20);
    std::fs::write(&filler, vec![0u8; fill as usize]).expect("filler");
    let reason = poll("the node says its disk is full", async || {
        let (status, body) = node.get("/readyz").await;
        (status == 503 && body.to_string().contains("disk full")).then_some(body)
    })
    .await;
    assert!(reason.to_string().contains("--min-free-disk"), "{reason}");
    let cluster = node.ok("/api/v1/cluster").await;
    assert!(cluster["members"][0]["disk_full"].is_string(), "{cluster}");
    assert!(node.metrics_text().await.contains("telemetry_disk_full 1"));
    // Reads go on, and the node does not take new data (in-flight batches may still land).
    let stalled = node.ok("/api/v1/cluster").await["samples_stored"]
        .as_u64()
        .expect("count");
    assert!(
        stalled < total,
        "streamed everything before the disk filled"
    );
    let gpus = node.ok("/api/v1/gpus?limit=100").await;
    assert_eq!(gpus["partial"], false);
    let acked = |c: &serde_json::Value| c["members"][0]["samples_acked"].as_u64().unwrap_or(0);
    let before = acked(&node.ok("/api/v1/cluster").await);
    // The streamer keeps trying (and is refused) rather than giving up or getting through.
    let refused = refusals(&node).await;
    poll("the streamer refused again and again", async || {
        (refusals(&node).await >= refused + 5.0).then_some(())
    })
    .await;
    let after = acked(&node.ok("/api/v1/cluster").await);
    assert!(
        after - before < total / PASSES,
        "still taking data: {before} -> {after}"
    );

    // More room: ingestion resumes by itself and every sample of every pass arrives.
    mount.resize("512m");
    poll("the node is ready again", async || {
        (node.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    node.wait_for_samples(total, Duration::from_secs(120)).await;
    assert!(node.metrics_text().await.contains("telemetry_disk_full 0"));
    let log = node.stop_and_log();
    assert_eq!(
        log.matches("refusing new data until space is freed")
            .count(),
        1,
        "{log}"
    );
    assert!(log.contains("disk has room again"), "{log}");

    restart_holds(&data, total).await;
}

/// Without a reserve the volume really runs out: appends and checkpoints fail with ENOSPC. The
/// node stays up, refuses new data, recovers its store once the volume is grown, and stores
/// every sample of every pass exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enospc_without_a_reserve_is_survived_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(mount) = Mount::tmpfs(&tmp.path().join("vol"), "3m") else {
        return;
    };
    let (node, data, total) = stream_onto(
        tmp.path(),
        &mount,
        &[
            "--rate",
            "100000",
            "--min-free-disk",
            "0",
            "--checkpoint-interval",
            "1s",
        ],
    );
    poll("the volume runs out", async || {
        let (status, body) = node.get("/readyz").await;
        (status == 503 && body.to_string().contains("disk full")).then_some(())
    })
    .await;
    // Up and answering while full.
    assert_eq!(node.ok("/api/v1/gpus?limit=10").await["partial"], false);

    mount.resize("512m");
    node.wait_for_samples(total, Duration::from_secs(120)).await;
    poll("the node is ready again", async || {
        (node.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    node.stop();
    restart_holds(&data, total).await;
}
