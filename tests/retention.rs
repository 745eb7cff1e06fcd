//! `--retention` through the real binary: samples older than the retention (here, the reference
//! CSV's own 2025 timestamps) are dropped at the next checkpoint; GPU metadata stays listed.

mod support;

use std::time::{Duration, Instant};

use support::{reference_csv, Node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_samples_are_dropped_and_counted_out() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = support::csv_rows(&csv);
    let common = support::one_pass(&csv);

    // Without retention the same stream is kept (control).
    let keep = Node::start(&tmp.path().join("keep"), &common);
    keep.wait_for_samples(rows, Duration::from_secs(60)).await;
    keep.stop();

    let mut args = common.to_vec();
    args.extend(["--retention", "7d", "--checkpoint-interval", "200ms"]);
    let node = Node::start(&tmp.path().join("expire"), &args);
    let deadline = Instant::now() + Duration::from_secs(60);
    let cluster = loop {
        let c = node.ok("/api/v1/cluster").await;
        let m = &c["members"][0];
        if m["rows_read"].as_u64() == Some(rows)
            && m["samples_acked"].as_u64() == Some(rows)
            && m["broker_lag_records"].as_u64() == Some(0)
            && c["samples_stored"].as_u64() == Some(0)
        {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "retention did not drop the samples: {c}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(cluster["members"][0]["storage_bytes"].is_u64());
    let gpus = node.ok("/api/v1/gpus?limit=10000").await;
    let items = gpus["items"].as_array().expect("items");
    assert!(!items.is_empty(), "GPU metadata is kept");
    let uuid = items[0]["uuid"].as_str().expect("uuid");
    let t = node.ok(&format!("/api/v1/gpus/{uuid}/telemetry")).await;
    assert_eq!(t["items"].as_array().map(Vec::len), Some(0));
    node.stop();
}
