//! The dashboard's reads through the real binary: the newest value of every metric per GPU
//! (`/api/v1/latest`) and series averaged per step (`/api/v1/gpus/{uuid}/steps`), checked against
//! the CSV the node streamed, and their bounds.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_values_and_steps_match_the_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = tmp.path().join("gen.csv");
    let status = Command::new(crate::support::binary())
        .args(["gen-csv", "--hosts", "1", "--scrapes", "120", "-o"])
        .arg(&csv)
        .status()
        .expect("gen-csv runs");
    assert!(status.success());
    // Expected: per (uuid, metric) the values in file order (time order).
    let mut values: BTreeMap<(String, String), Vec<(String, f64)>> = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(&csv).expect("csv");
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let value: f64 = rec[10].parse().expect("number");
        values
            .entry((rec[4].to_string(), rec[1].to_string()))
            .or_default()
            .push((rec[0].to_string(), value));
    }
    let rows: usize = values.values().map(Vec::len).sum();
    let node = Node::start(&tmp.path().join("d"), &crate::support::one_pass(&csv));
    node.wait_for_samples(rows as u64, Duration::from_secs(60))
        .await;

    let fleet = node.ok("/api/v1/latest").await;
    assert_eq!(fleet["total"], 8);
    for gpu in fleet["items"].as_array().expect("items") {
        let uuid = gpu["uuid"].as_str().expect("uuid");
        let latest = gpu["latest"].as_object().expect("latest");
        assert_eq!(latest.len(), 10, "{gpu}");
        for (metric, v) in latest {
            let (time, value) = values[&(uuid.to_string(), metric.clone())]
                .last()
                .expect("rows")
                .clone();
            assert_eq!(v["value"].as_f64(), Some(value), "{uuid} {metric}");
            assert_eq!(
                v["timestamp"].as_str().map(|t| t.replace(".000", "")),
                Some(time)
            );
        }
    }
    let two = node
        .ok("/api/v1/latest?limit=2&offset=1&metric=DCGM_FI_DEV_GPU_TEMP")
        .await;
    assert_eq!(two["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        two["items"][0]["latest"].as_object().map(|o| o.len()),
        Some(1)
    );

    // One minute steps over the two minutes: 60 samples each, averages as computed here.
    let (uuid, metric) = ("GPU", "DCGM_FI_DEV_POWER_USAGE");
    let key = values
        .keys()
        .find(|(u, m)| u.starts_with(uuid) && m == metric)
        .expect("series")
        .clone();
    let path = format!(
        "/api/v1/gpus/{}/steps?start_time=2025-07-18T20:42:00Z&end_time=2025-07-18T20:45:00Z&step=1m&metric={metric}",
        key.0
    );
    let steps = node.ok(&path).await;
    assert_eq!(steps["step_ms"], 60_000);
    let series = &steps["series"][0];
    assert_eq!(series["metric"], metric);
    let counts: Vec<u64> = series["count"]
        .as_array()
        .expect("count")
        .iter()
        .filter_map(|c| c.as_u64())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 120);
    let all = &values[&key];
    let mut offset = 0;
    for (i, n) in counts.iter().enumerate() {
        let chunk = &all[offset..offset + *n as usize];
        let mean = chunk.iter().map(|(_, v)| v).sum::<f64>() / chunk.len() as f64;
        let got = series["avg"][i].as_f64().expect("avg");
        assert!(
            (got - mean).abs() < 1e-9 * mean.abs().max(1.0),
            "step {i}: {got} vs {mean}"
        );
        offset += *n as usize;
    }
    // Bounds: a step too fine for 10,000 steps is widened (and said), a malformed step is
    // refused, an unknown GPU is not found.
    let (status, body) = node
        .get(&format!("{}&step=1ms", path.replace("&step=1m", "")))
        .await;
    assert_eq!(status, 200, "{body}");
    let used = body["step_ms"].as_i64().expect("step_ms");
    for series in body["series"].as_array().expect("series") {
        assert!(series["timestamps"].as_array().map(Vec::len) <= Some(10_000));
    }
    assert!(used > 1, "{body}");
    assert_eq!(node.get(&path.replace("step=1m", "step=soon")).await.0, 400);
    assert_eq!(node.get("/api/v1/gpus/GPU-nope/steps").await.0, 404);

    // Every panel of the Grafana fleet dashboard runs on the node's Prometheus-compatible API
    // and finds data (the host variable set to all).
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../k8s/helm/gpu-telemetry/dashboards/gpu-fleet.json"
        ))
        .expect("dashboard"),
    )
    .expect("JSON");
    let at = "2025-07-18T20:44:30Z";
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$host", ".*");
            let body: serde_json::Value = reqwest::Client::new()
                .get(format!("{}/prometheus/api/v1/query", node.url))
                .query(&[("time", at), ("query", expr.as_str())])
                .send()
                .await
                .expect("query")
                .json()
                .await
                .expect("JSON");
            assert_eq!(body["status"], "success", "{expr}: {body}");
            assert!(
                body["data"]["result"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty()),
                "{expr}: no data: {body}"
            );
        }
    }
    let hosts = node.ok("/prometheus/api/v1/label/Hostname/values").await;
    assert_eq!(hosts["data"].as_array().map(Vec::len), Some(1));
    node.stop();
}
