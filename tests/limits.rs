//! REST limits through the real binary: an oversized body is refused with 413 and a JSON error,
//! and the node keeps answering.

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
