//! The client subcommands against a live node: `gpus`, `query` and `cluster` in each output
//! format, and a clear error without the token.

use std::process::Command;
use std::time::Duration;

use crate::support::{eventually, reference_csv, Node};
use serde_json::Value;

fn run(url: &str, token: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(crate::support::binary());
    cmd.args(args)
        .env("TELEMETRY_URL", url)
        .env_remove("TELEMETRY_API_TOKEN");
    if let Some(t) = token {
        cmd.env("TELEMETRY_API_TOKEN", t);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_query_and_cluster_against_a_live_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let mut rdr = csv::Reader::from_path(&csv).expect("csv");
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("record")).collect();
    let gpus: std::collections::BTreeSet<&str> = rows.iter().map(|r| &r[4]).collect();
    let args = [
        &crate::support::one_pass(&csv)[..],
        &["--api-token", "cli-token"],
    ]
    .concat();
    let node = Node::start(&tmp.path().join("d"), &args);
    // wait_for_samples talks without a token: poll through the CLI instead.
    let c = eventually(
        "stored, seen through the CLI",
        Duration::from_secs(60),
        async || {
            let (ok, out, _) = run(
                &node.url,
                Some("cli-token"),
                &["cluster", "--format", "json"],
            );
            let c: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
            if ok && c["samples_stored"].as_u64() == Some(rows.len() as u64) {
                Ok(c)
            } else {
                Err(out)
            }
        },
    )
    .await;
    assert_eq!(c["members"][0]["status"], "up");

    let (ok, out, err) = run(&node.url, Some("cli-token"), &["gpus", "--format", "csv"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "uuid,host,gpu,model,util_%,temp_c,power_w");
    assert_eq!(lines.len() - 1, gpus.len());
    let (ok, table, _) = run(&node.url, Some("cli-token"), &["gpus"]);
    assert!(
        ok && table.contains(gpus.iter().next().expect("a GPU")),
        "{table}"
    );

    // One GPU over the file's window: every row of it, in JSON and CSV.
    let uuid = *gpus.iter().next().expect("a GPU");
    let want = rows.iter().filter(|r| &r[4] == uuid).count();
    let window = [
        "--start",
        "2025-07-18T00:00:00Z",
        "--end",
        "2025-07-19T00:00:00Z",
    ];
    let (ok, out, err) = run(
        &node.url,
        Some("cli-token"),
        &[&["query", uuid, "--format", "json"][..], &window[..]].concat(),
    );
    assert!(ok, "{err}");
    let points: Vec<Value> = serde_json::from_str(&out).expect("json");
    assert_eq!(points.len(), want);
    let (ok, out, _) = run(
        &node.url,
        Some("cli-token"),
        &[
            &[
                "query",
                uuid,
                "--format",
                "csv",
                "--metric",
                "DCGM_FI_DEV_GPU_TEMP",
            ][..],
            &window[..],
        ]
        .concat(),
    );
    assert!(ok);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.contains(",DCGM_FI_DEV_GPU_TEMP,")),
        "{out}"
    );
    // The default window (the last hour) holds none of 2025's samples.
    let (ok, out, _) = run(
        &node.url,
        Some("cli-token"),
        &["query", uuid, "--format", "json"],
    );
    assert!(ok);
    assert_eq!(out.trim(), "[]");

    let (ok, out, _) = run(&node.url, Some("cli-token"), &["cluster"]);
    assert!(ok && out.contains("telemetry-0"), "{out}");
    // Without the token: a clear error and a failing exit status.
    let (ok, _, err) = run(&node.url, None, &["gpus"]);
    assert!(!ok);
    assert!(err.contains("requires an API token"), "{err}");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_streams_a_file_into_a_running_node() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = crate::support::csv_rows(&csv);
    // The reference rows plus two bad ones, in the middle of the file.
    let text = std::fs::read_to_string(&csv).expect("read");
    let mut lines: Vec<&str> = text.lines().collect();
    let bad = [
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,GPU-x,H100,h,,,,hot,",
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,,H100,h,,,,1,",
    ];
    lines.splice(1000..1000, bad);
    let mixed = tmp.path().join("mixed.csv");
    std::fs::write(&mixed, lines.join("\n") + "\n").expect("write");
    let node = Node::start(
        &tmp.path().join("d"),
        &[
            "--no-stream",
            "--api-token",
            "reader",
            "--admin-token",
            "writer",
        ],
    );
    let file = mixed.to_str().expect("utf8");
    // The read token may not write.
    let (ok, _, err) = run(&node.url, Some("reader"), &["import", file]);
    assert!(!ok && err.contains("403"), "{err}");
    let mut cmd = Command::new(crate::support::binary());
    let out = cmd
        .args(["import", file])
        .env("TELEMETRY_URL", &node.url)
        .env("TELEMETRY_ADMIN_TOKEN", "writer")
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{} rows, {rows} samples stored, 2 rejected",
            rows + 2
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("rejected bad_value: 1") && stdout.contains("rejected missing_uuid: 1"),
        "{stdout}"
    );
    // Durable at the answer: the node counts every sample at once.
    let (ok, out, _) = run(&node.url, Some("reader"), &["cluster", "--format", "json"]);
    assert!(ok);
    let c: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c["samples_stored"].as_u64(), Some(rows), "{c}");
    // Importing again stores nothing twice.
    let again = Command::new(crate::support::binary())
        .args(["import", file])
        .env("TELEMETRY_URL", &node.url)
        .env("TELEMETRY_ADMIN_TOKEN", "writer")
        .output()
        .expect("runs");
    assert!(again.status.success());
    let (_, out, _) = run(&node.url, Some("reader"), &["cluster", "--format", "json"]);
    let c: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(c["samples_stored"].as_u64(), Some(rows), "{c}");
    node.stop();
}
