//! `--scrape`: a node scrapes a fake dcgm-exporter whose `/metrics` text is built from the shared
//! CSV (its `labels_raw` column is exactly dcgm-exporter's label set) and stores every GPU and
//! value it serves, scrape after scrape.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::{eventually, reference_csv, Node};

/// What the CSV says of one GPU: its host, model and exporter address (`instance`).
#[derive(Debug, PartialEq)]
struct GpuRow {
    hostname: String,
    model: String,
    instance: Option<String>,
}

/// Each (uuid, metric)'s value as the CSV says.
type Values = BTreeMap<(String, String), f64>;

/// The exposition text of the CSV, each (uuid, metric)'s value and each GPU's attributes.
fn exposition(csv: &std::path::Path) -> (String, Values, BTreeMap<String, GpuRow>) {
    let mut text = String::new();
    let mut values = BTreeMap::new();
    let mut gpus = BTreeMap::new();
    let mut rdr = csv::Reader::from_path(csv).expect("csv");
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let labels: Vec<&str> = rec[11]
            .split(',')
            .filter(|l| !l.starts_with("__name__="))
            .collect();
        text.push_str(&format!(
            "{}{{{}}} {}\n",
            &rec[1],
            labels.join(","),
            &rec[10]
        ));
        values.insert(
            (rec[4].to_string(), rec[1].to_string()),
            rec[10].parse().expect("number"),
        );
        gpus.insert(
            rec[4].to_string(),
            GpuRow {
                hostname: rec[6].to_string(),
                model: rec[5].to_string(),
                instance: labels
                    .iter()
                    .find_map(|l| l.strip_prefix("instance="))
                    .map(|v| v.trim_matches('"').to_string()),
            },
        );
    }
    text.push_str("# a non-DCGM series is ignored\ngo_goroutines 7\n");
    (text, values, gpus)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_scrapes_a_dcgm_exporter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let (text, values, gpus) = exposition(&csv);
    let scrapes = Arc::new(AtomicU64::new(0));
    let counter = scrapes.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            let body = text.clone();
            async move { body }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let node = Node::start(
        &tmp.path().join("d"),
        &[
            "--scrape",
            &url,
            "--scrape-interval",
            "500ms",
            "--partitions",
            "16",
        ],
    );
    let per_scrape = values.len() as u64;
    let cluster = eventually(
        "three scrapes stored",
        Duration::from_secs(60),
        async || {
            let c = node.ok("/api/v1/cluster").await;
            if c["samples_stored"].as_u64().unwrap_or(0) >= 3 * per_scrape {
                Ok(c)
            } else {
                Err(c.to_string())
            }
        },
    )
    .await;
    assert!(scrapes.load(Ordering::Relaxed) >= 3);
    assert_eq!(cluster["members"][0]["rows_rejected"], 0);
    // Every GPU with its attributes from the labels, every value as served.
    let fleet = node.ok("/api/v1/latest?limit=10000").await;
    assert_eq!(fleet["total"].as_u64(), Some(gpus.len() as u64));
    for g in fleet["items"].as_array().expect("items") {
        let uuid = g["uuid"].as_str().expect("uuid");
        let want = &gpus[uuid];
        assert_eq!(g["hostname"].as_str(), Some(want.hostname.as_str()), "{g}");
        assert_eq!(g["model"].as_str(), Some(want.model.as_str()), "{g}");
        for (metric, v) in g["latest"].as_object().expect("latest") {
            assert_eq!(
                v["value"].as_f64(),
                Some(values[&(uuid.to_string(), metric.clone())]),
                "{uuid} {metric}"
            );
        }
    }
    // Prometheus' target labels: the exporter's own when its text has them (this one copies
    // the dump's), else the URL's host:port and `dcgm-exporter`, as a Prometheus scrape sets them.
    let series = node
        .ok("/prometheus/api/v1/series?match[]=DCGM_FI_DEV_GPU_TEMP")
        .await;
    let target = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    for s in series["data"].as_array().expect("series") {
        let want = &gpus[s["UUID"].as_str().expect("UUID")];
        let instance = want.instance.as_deref().unwrap_or(target);
        assert_eq!(s["instance"].as_str(), Some(instance), "{s}");
        assert!(s["job"].as_str().is_some_and(|j| !j.is_empty()), "{s}");
    }
    node.stop();
}

#[test]
fn scrape_and_csv_together_are_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(crate::support::binary())
        .args(["--data-dir", tmp.path().to_str().expect("utf8")])
        .args(["--scrape", "http://127.0.0.1:1/metrics", "--csv", "x.csv"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("give one of them"));
}

/// The exposition text of one GPU whose exporter has Kubernetes mapping on: the `pod` label
/// names the pod that holds the GPU at this scrape.
fn mapped_exposition(pod: &str) -> String {
    let labels = format!(
        "gpu=\"0\",UUID=\"{MAPPED_UUID}\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",\
         Hostname=\"host-a\",container=\"main\",namespace=\"ml\",pod=\"{pod}\""
    );
    format!("DCGM_FI_DEV_GPU_UTIL{{{labels}}} 90\nDCGM_FI_DEV_POWER_USAGE{{{labels}}} 300\n")
}

const MAPPED_UUID: &str = "GPU-5c0a1b2c-0000-4000-8000-00000000a001";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scraped_gpu_keeps_the_history_of_its_pods() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // The first pod holds the GPU for the first scrapes, then another pod takes it.
    let scrapes = Arc::new(AtomicU64::new(0));
    let counter = scrapes.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            async move { mapped_exposition(if n < 4 { "train-0" } else { "infer-0" }) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/metrics", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let node = Node::start(
        &tmp.path().join("d"),
        &["--scrape", &url, "--scrape-interval", "300ms"],
    );
    let path = format!("/api/v1/gpus/{MAPPED_UUID}/attribution");
    let spans = eventually("both pods' spans", Duration::from_secs(60), async || {
        // 404 until the first scrape is stored.
        let (status, a) = node.get(&path).await;
        if status != 200 {
            return Err(format!("{status}: {a}"));
        }
        let pods: Vec<String> = a["spans"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["pod"].as_str().map(str::to_string))
            .collect();
        if pods.len() >= 2 {
            Ok(a["spans"].clone())
        } else {
            Err(a.to_string())
        }
    })
    .await;
    let spans = spans.as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{spans:?}");
    assert_eq!(spans[0]["pod"], "train-0");
    assert_eq!(spans[1]["pod"], "infer-0");
    for s in spans {
        assert_eq!(s["namespace"], "ml");
        assert_eq!(s["container"], "main");
        assert_eq!(s["mean_utilization"].as_f64(), Some(90.0), "{s}");
    }
    assert!(
        spans[0]["end"].as_str() <= spans[1]["start"].as_str(),
        "{spans:?}"
    );
    // The series stay one per GPU and metric: the pods are history, not identity.
    let series = node
        .ok("/prometheus/api/v1/query?query=count(DCGM_FI_DEV_GPU_UTIL)")
        .await;
    assert_eq!(series["data"]["result"][0]["value"][1], "1", "{series}");
    let by_pod = node
        .ok("/prometheus/api/v1/query?query=sum%20by%20(pod)(DCGM_FI_DEV_POWER_USAGE)")
        .await;
    assert_eq!(
        by_pod["data"]["result"][0]["metric"]["pod"], "infer-0",
        "{by_pod}"
    );
    node.stop();
}
