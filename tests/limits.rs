//! REST limits through the real binary: an oversized body is refused with 413 and a JSON error,
//! and the node keeps answering; a PromQL query over `--query-max-samples` is refused with 422.

use std::time::Duration;

use crate::support::Node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_and_the_node_goes_on() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&tmp.path().join("d"), &["--no-stream"]);
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/cluster/nodes/telemetry-0/decommission",
            node.url
        ))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().await.expect("JSON error");
    assert_eq!(body["error"]["code"], "too_large");
    // A node alone cannot be decommissioned: a clear 409, not a crash.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/cluster/nodes/telemetry-0/decommission",
            node.url
        ))
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status().as_u16(), 409);
    assert_eq!(node.ok("/healthz").await["status"], "ok");
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promql_query_over_its_sample_bound_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("d");
    let query =
        "/prometheus/api/v1/query?query=sum(count_over_time(DCGM_FI_DEV_GPU_TEMP%5B100y%5D))";
    let node = Node::start(
        &data,
        &["--rate", "0", "--passes", "1", "--query-max-samples", "50"],
    );
    // Enough of the embedded sample that GPU_TEMP alone is well over 50 samples.
    crate::support::eventually("the sample stored", Duration::from_secs(60), async || {
        let stored = node.cluster().await.members[0].samples_stored;
        if stored >= 1000 {
            Ok(())
        } else {
            Err(format!("{stored} stored"))
        }
    })
    .await;
    let (status, body) = node.get(query).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errorType"], "execution", "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("--query-max-samples")),
        "{body}"
    );
    node.stop();
    // The same data under the default bound: the query runs.
    let node = Node::start(&data, &["--no-stream"]);
    let body = node.ok(query).await;
    let count: f64 = body["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(count > 50.0, "{body}");
    node.stop();
}
