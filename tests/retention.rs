//! `--retention` through the real binary: samples older than the retention (here, the reference
//! CSV's own 2025 timestamps) are dropped at the next checkpoint; GPU metadata stays listed.

use std::time::Duration;

use crate::support::{eventually, reference_csv, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_samples_are_dropped_and_counted_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = crate::support::csv_rows(&csv);
    let common = crate::support::one_pass(&csv);

    // Without retention the same stream is kept (control).
    let keep = Node::start(&tmp.path().join("keep"), &common);
    keep.wait_for_samples(rows, Duration::from_secs(60)).await;
    keep.stop();

    let mut args = common.to_vec();
    args.extend(["--retention", "7d", "--checkpoint-interval", "200ms"]);
    let node = Node::start(&tmp.path().join("expire"), &args);
    let cluster = eventually(
        "retention dropped the samples",
        Duration::from_secs(60),
        async || {
            let c = node.ok("/api/v1/cluster").await;
            let m = &c["members"][0];
            if m["rows_read"].as_u64() == Some(rows)
                && m["samples_acked"].as_u64() == Some(rows)
                && m["broker_lag_records"].as_u64() == Some(0)
                && c["samples_stored"].as_u64() == Some(0)
            {
                Ok(c)
            } else {
                Err(c.to_string())
            }
        },
    )
    .await;
    assert!(cluster["members"][0]["storage_bytes"].is_u64());
    let gpus = node.ok("/api/v1/gpus?limit=10000").await;
    let items = gpus["items"].as_array().expect("items");
    assert!(!items.is_empty(), "GPU metadata is kept");
    let uuid = items[0]["uuid"].as_str().expect("uuid");
    let t = node.ok(&format!("/api/v1/gpus/{uuid}/telemetry")).await;
    assert_eq!(t["items"].as_array().map(Vec::len), Some(0));
    node.stop();
}
