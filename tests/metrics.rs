//! `/metrics` of the real binary: a real Prometheus text parser reads it, and the counters move
//! as the node streams. (`.ci/run` also feeds it to `promtool check metrics`.)

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{reference_csv, Node};

/// Scrapes `/metrics` and parses it; returns sample name (with labels) → value.
async fn scrape(node: &Node) -> HashMap<String, f64> {
    let resp = reqwest::get(format!("{}/metrics", node.url))
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let text = resp.text().await.expect("body");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition format");
    for s in &scrape.samples {
        assert!(
            scrape.docs.contains_key(&s.metric)
                || ["_bucket", "_sum", "_count"].iter().any(|x| s
                    .metric
                    .strip_suffix(x)
                    .is_some_and(|b| scrape.docs.contains_key(b))),
            "{} has no HELP",
            s.metric
        );
    }
    // Families announced with HELP but without samples yet (no partial answer so far) count too;
    // real samples, later in the chain, replace these placeholders.
    let announced: Vec<(String, f64)> = scrape
        .docs
        .keys()
        .map(|name| (format!("{name}{{}}"), f64::NAN))
        .collect();
    let samples = scrape.samples.into_iter().map(|s| {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        };
        (format!("{}{{{}}}", s.metric, labels.join(",")), value)
    });
    announced.into_iter().chain(samples).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_counters_move_while_streaming() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = csv::Reader::from_path(&csv).expect("csv").records().count() as f64;
    let bad = tmp.path().join("bad.csv");
    std::fs::write(
        &bad,
        "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n\
         2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,GPU-x,H100,h,,,,hot,\n",
    )
    .expect("write");
    let node = Node::start(
        &tmp.path().join("d"),
        &[
            "--csv",
            csv.to_str().expect("utf8"),
            "--csv",
            bad.to_str().expect("utf8"),
            "--rate",
            "1500",
            "--passes",
            "1",
            "--timestamps",
            "csv",
        ],
    );
    let early = scrape(&node).await;
    node.wait_for_samples(rows as u64, Duration::from_secs(60))
        .await;
    node.ok("/api/v1/gpus").await;
    let late = scrape(&node).await;
    let v = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    assert!(
        v(&early, "telemetry_samples_stored_total{}") < rows,
        "{early:?}"
    );
    assert_eq!(v(&late, "telemetry_samples_stored_total{}"), rows);
    assert_eq!(v(&late, "telemetry_samples_acked_total{}"), rows);
    assert_eq!(v(&late, "telemetry_csv_rows_read_total{}"), rows + 1.0);
    assert_eq!(
        v(&late, "telemetry_csv_rows_rejected_total{reason=bad_value}"),
        1.0
    );
    assert_eq!(v(&late, "telemetry_store_samples{}"), rows);
    assert_eq!(v(&late, "telemetry_cluster_members{status=up}"), 1.0);
    assert_eq!(v(&late, "telemetry_partitions_owned{}"), 64.0);
    assert!(v(&late, "telemetry_append_duration_seconds_count{}") > 0.0);
    assert!(v(&late, "telemetry_store_write_duration_seconds_count{}") > 0.0);
    assert!(
        v(
            &late,
            "telemetry_http_request_duration_seconds_count{route=/api/v1/gpus,status=200}"
        ) >= 1.0,
        "{late:?}"
    );
    // Every series the Grafana dashboard queries is one this node exposes.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/grafana/telemetry-node.json"
    ))
    .expect("dashboard");
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let exposed: std::collections::HashSet<&str> =
        late.keys().filter_map(|k| k.split('{').next()).collect();
    let mut queried = 0;
    for panel in json["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for name in expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("telemetry_"))
            {
                queried += 1;
                // The parser folds a histogram's _bucket/_sum/_count series into one sample.
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|x| name.strip_suffix(x))
                    .unwrap_or(name);
                assert!(
                    exposed.contains(name) || exposed.contains(family),
                    "the dashboard queries {name}, not exposed"
                );
            }
        }
    }
    assert!(queried >= 12);
    node.stop();
}
