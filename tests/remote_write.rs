//! `POST /api/v1/write` through the real binary: a remote write request as Prometheus sends it
//! (snappy-compressed protobuf, built here with prost) is stored, its non-DCGM series refused and
//! counted, and a body that is not a request is a 400 that loses nothing.

use std::time::Duration;

use prost::Message;

use crate::support::Node;

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: n.to_string(),
                value: v.to_string(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| Sample { value, timestamp })
            .collect(),
    }
}

async fn post(node: &Node, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/write", node.url))
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .expect("answered");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_written_dcgm_series_are_stored_and_the_rest_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&tmp.path().join("d"), &["--no-stream"]);
    let t0 = 1_752_871_354_000i64;
    let gpu = |g: &'static str| {
        [
            ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
            ("UUID", if g == "0" { "GPU-rw-0" } else { "GPU-rw-1" }),
            ("gpu", g),
            ("Hostname", "rw-host"),
            ("instance", "rw-host:9400"),
            ("job", "dcgm"),
            ("err_code", "0"),
        ]
    };
    let req = WriteRequest {
        timeseries: vec![
            series(&gpu("0"), &[(t0, 40.0), (t0 + 1000, 41.0)]),
            series(&gpu("1"), &[(t0, 50.0)]),
            series(
                &[("__name__", "up"), ("instance", "rw-host:9400")],
                &[(t0, 1.0)],
            ),
        ],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&req.encode_to_vec())
        .expect("compresses");
    let (status, summary) = post(&node, body.clone()).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["samples"], 3);
    assert_eq!(summary["refused_series"]["not_dcgm"], 1);
    assert_eq!(summary["dropped_labels"]["err_code"], 2);
    // Durable on answer: stored at once, with the target labels kept.
    node.wait_for_samples(3, Duration::from_secs(30)).await;
    let got = node
        .ok("/prometheus/api/v1/series?match[]=DCGM_FI_DEV_GPU_TEMP")
        .await;
    let got = got["data"].as_array().expect("series");
    assert_eq!(got.len(), 2);
    assert!(got
        .iter()
        .all(|s| s["instance"] == "rw-host:9400" && s["job"] == "dcgm" && s["err_code"].is_null()));
    // The same request again changes nothing (idempotent); garbage is a 400.
    assert_eq!(post(&node, body).await.0, 200);
    let (status, err) = post(&node, b"not snappy at all".to_vec()).await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(node.ok("/api/v1/cluster").await["samples_stored"], 3);
    let metrics = reqwest::get(format!("{}/metrics", node.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l
                .starts_with("telemetry_remote_write_refused_series_total{reason=\"not_dcgm\"} 2")),
        "{metrics}"
    );
    node.stop();
}
