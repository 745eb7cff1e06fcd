//! OpenTelemetry across nodes: two real node processes export over OTLP/gRPC to two in-process
//! receivers (`fake-opentelemetry-collector`), one per node, so each span's node is known. A
//! batch streamed on node A and stored on node B is one trace with the right parent links, and
//! a REST query on A has per-node children that continue on B.

use std::collections::HashMap;
use std::time::Duration;

use crate::support::{free_port, reference_csv, Node};
use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};

fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

fn otel_env(collector: &FakeCollectorServer) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
        ("OTEL_TRACES_SAMPLER", "parentbased_always_on".into()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200".into()),
    ]
}

/// Drains a collector (its channel holds 64 spans) until `stop` fires; returns every span.
fn drain(
    mut collector: FakeCollectorServer,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<Vec<ExportedSpan>> {
    tokio::spawn(async move {
        let mut all = Vec::new();
        loop {
            all.extend(
                collector
                    .exported_spans(64, Duration::from_millis(100))
                    .await,
            );
            if *stop.borrow_and_update() {
                // The nodes have stopped and flushed: take the rest.
                all.extend(
                    collector
                        .exported_spans(usize::MAX, Duration::from_secs(1))
                        .await,
                );
                return all;
            }
        }
    })
}

/// Whether a span attribute holds the string `value` (the receiver renders values as Debug text
/// of the OTLP `AnyValue`).
fn attr_is(span: &ExportedSpan, key: &str, value: &str) -> bool {
    span.attributes
        .get(key)
        .is_some_and(|v| v.contains(&format!("StringValue({value:?})")))
}

fn by_id(spans: &[ExportedSpan]) -> HashMap<&str, &ExportedSpan> {
    spans.iter().map(|s| (s.span_id.as_str(), s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_and_a_query_are_each_one_trace_across_two_nodes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let rows = crate::support::csv_rows(&csv);
    let ca = FakeCollectorServer::start().await.expect("collector A");
    let cb = FakeCollectorServer::start().await.expect("collector B");
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let common = ["--cluster-cookie", "c", "--partitions", "8", "--seeds"];
    let env_b = otel_env(&cb);
    let env_b: Vec<(&str, &str)> = env_b.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut args_b = vec![
        "--node-name",
        "node-b",
        "--cluster-addr",
        &addr_b,
        "--no-stream",
    ];
    args_b.extend(common);
    args_b.push(&addr_b);
    let b = Node::start_env(&tmp.path().join("b"), &args_b, &env_b);
    let env_a = otel_env(&ca);
    let env_a: Vec<(&str, &str)> = env_a.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let csv_arg = csv.to_str().expect("utf8");
    let mut args_a = vec![
        "--node-name",
        "node-a",
        "--cluster-addr",
        &addr_a,
        "--csv",
        csv_arg,
        "--rate",
        "2000",
        "--passes",
        "1",
        "--timestamps",
        "csv",
    ];
    args_a.extend(common);
    args_a.push(&addr_b);
    let a = Node::start_env(&tmp.path().join("a"), &args_a, &env_a);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (da, db) = (drain(ca, stopped.clone()), drain(cb, stopped));
    let c = a.wait_for_samples(rows, Duration::from_secs(60)).await;
    let on_b = c["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "node-b"))
        .and_then(|m| m["samples_stored"].as_u64())
        .unwrap_or(0);
    assert!(on_b > 0, "node B stored nothing: {c}");
    let gpus = a.ok("/api/v1/gpus?limit=5").await;
    assert_eq!(gpus["partial"], false);
    a.stop();
    b.stop();
    let _ = stop.send(true);
    let spans_a = da.await.expect("drained A");
    let spans_b = db.await.expect("drained B");
    let (ia, ib) = (by_id(&spans_a), by_id(&spans_b));
    let names = |v: &[ExportedSpan]| {
        let mut n: Vec<String> = v.iter().map(|s| s.name.clone()).collect();
        n.sort();
        n.dedup();
        n
    };
    eprintln!(
        "A: {} spans {:?}; B: {} spans {:?}",
        spans_a.len(),
        names(&spans_a),
        spans_b.len(),
        names(&spans_b)
    );

    // Ingest: streamer.batch (A) → streamer.append (A) → broker.append (B);
    //         streamer.batch (A) → collector.consume (B) → store.write (B).
    let remote_appends: Vec<&ExportedSpan> = spans_b
        .iter()
        .filter(|s| s.name == "broker.append")
        .collect();
    assert!(!remote_appends.is_empty(), "no append spans on B");
    for append in &remote_appends {
        let parent = ia
            .get(append.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("B's append has no parent on A: {append:?}"));
        assert_eq!(parent.name, "streamer.append");
        assert_eq!(parent.trace_id, append.trace_id);
        let root = ia
            .get(parent.parent_span_id.as_str())
            .expect("streamer.append has its batch as parent");
        assert_eq!(root.name, "streamer.batch");
    }
    let consumes: Vec<&ExportedSpan> = spans_b
        .iter()
        .filter(|s| s.name == "collector.consume")
        .collect();
    assert!(!consumes.is_empty(), "no consume spans on B");
    for consume in &consumes {
        let batch = ia
            .get(consume.parent_span_id.as_str())
            .expect("B's consume continues A's batch");
        assert_eq!(batch.name, "streamer.batch");
        assert_eq!(batch.trace_id, consume.trace_id);
        assert!(
            spans_b
                .iter()
                .any(|w| w.name == "store.write" && w.parent_span_id == consume.span_id),
            "a store.write under each consume"
        );
    }

    // Query: http.request (A) → scatter.call (A) → peer.query (B).
    let request = spans_a
        .iter()
        .find(|s| s.name == "http.request" && attr_is(s, "route", "/api/v1/gpus"))
        .expect("a request span for /api/v1/gpus");
    let call = spans_a
        .iter()
        .find(|s| s.name == "scatter.call" && s.parent_span_id == request.span_id)
        .expect("a per-node child of the request");
    assert!(attr_is(call, "peer", "node-b"), "{call:?}");
    let query = spans_b
        .iter()
        .find(|s| s.name == "peer.query" && s.parent_span_id == call.span_id)
        .expect("B continues the query's trace");
    assert_eq!(query.trace_id, request.trace_id);
    assert!(ib.contains_key(query.span_id.as_str()));
}
