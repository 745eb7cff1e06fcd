//! End-to-end: the real binary streams the reference CSV once, then the REST API must return
//! exactly what the file holds, before and after a restart.

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::Duration;

use crate::support::{binary, reference_csv, Node};
use serde_json::Value;

struct Expected {
    /// uuid → (hostname, gpu index)
    gpus: BTreeMap<String, (String, u64)>,
    /// (uuid, metric) → value
    values: HashMap<(String, String), f64>,
    rows: u64,
}

fn expected(path: &std::path::Path) -> Expected {
    let mut rdr = csv::Reader::from_path(path).expect("csv");
    let mut e = Expected {
        gpus: BTreeMap::new(),
        values: HashMap::new(),
        rows: 0,
    };
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let uuid = rec[4].to_string();
        e.gpus.insert(
            uuid.clone(),
            (rec[6].to_string(), rec[2].parse().expect("index")),
        );
        e.values
            .insert((uuid, rec[1].to_string()), rec[10].parse().expect("value"));
        e.rows += 1;
    }
    e
}

/// All points of a GPU through cursor pagination with page size `limit`.
async fn all_points(
    node: &Node,
    uuid: &str,
    extra: &str,
    limit: usize,
) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/gpus/{uuid}/telemetry?limit={limit}{extra}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = node.ok(&path).await;
        assert_eq!(page["gpu"], uuid);
        assert_eq!(page["partial"], false);
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit);
        for it in items {
            out.push((
                it["timestamp"].as_str().expect("ts").to_string(),
                it["metric"].as_str().expect("metric").to_string(),
                it["value"].as_f64().expect("value"),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

fn assert_ordered(points: &[(String, String, f64)]) {
    // RFC 3339 with fixed millisecond precision in UTC sorts lexicographically by time.
    for w in points.windows(2) {
        assert!(
            (&w[0].0, &w[0].1) < (&w[1].0, &w[1].1),
            "not strictly ordered: {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pass_is_stored_exactly_and_survives_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let exp = expected(&csv);
    let data = tmp.path().join("node");
    let csv_arg = csv.to_str().expect("utf8 path");
    let node = Node::start(
        &data,
        &[
            "--csv",
            csv_arg,
            "--rate",
            "0",
            "--passes",
            "1",
            "--partitions",
            "16",
        ],
    );
    let cluster = node
        .wait_for_samples(exp.rows, Duration::from_secs(120))
        .await;
    assert_eq!(cluster["partitions"], 16);
    assert_eq!(cluster["members"][0]["partitions_owned"], 16);
    assert_eq!(cluster["members"][0]["rows_rejected"], 0);
    assert_eq!(node.ok("/readyz").await["status"], "ready");
    // Disk use is reported while the data is still in the store's journal, not only once fjall
    // flushed a table; the broker's figure stands beside it.
    for figure in ["storage_bytes", "broker_bytes"] {
        assert!(
            cluster["members"][0][figure].as_u64() > Some(0),
            "{figure}: {cluster}"
        );
    }

    // Every GPU, with hostname and index.
    let gpus = node.ok("/api/v1/gpus?limit=10000").await;
    assert_eq!(gpus["total"].as_u64(), Some(exp.gpus.len() as u64));
    let listed: BTreeMap<String, (String, u64)> = gpus["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|g| {
            (
                g["uuid"].as_str().expect("uuid").to_string(),
                (
                    g["hostname"].as_str().expect("host").to_string(),
                    g["gpu_index"].as_u64().expect("idx"),
                ),
            )
        })
        .collect();
    assert_eq!(listed, exp.gpus);
    // Offset paging of the list covers it exactly once.
    let mut paged = Vec::new();
    for offset in (0..exp.gpus.len()).step_by(100) {
        let page = node
            .ok(&format!("/api/v1/gpus?limit=100&offset={offset}"))
            .await;
        paged.extend(
            page["items"]
                .as_array()
                .expect("items")
                .iter()
                .map(|g| g["uuid"].clone()),
        );
    }
    assert_eq!(paged.len(), exp.gpus.len());

    // Every (GPU, metric): the stored value is the CSV's, ordered, and paginated exactly once.
    let mut before_restart = BTreeMap::new();
    for (i, uuid) in exp.gpus.keys().enumerate() {
        let points = all_points(&node, uuid, "", 10_000).await;
        assert_ordered(&points);
        let mut seen = HashMap::new();
        for (_, metric, value) in &points {
            assert!(
                seen.insert(metric.clone(), *value).is_none(),
                "{uuid} {metric} twice"
            );
            assert_eq!(
                Some(value),
                exp.values.get(&(uuid.clone(), metric.clone())),
                "{uuid} {metric}"
            );
        }
        let want = exp.values.keys().filter(|(u, _)| u == uuid).count();
        assert_eq!(seen.len(), want, "{uuid}");
        if i % 20 == 0 {
            // The columnar form holds the same points.
            let page = node
                .ok(&format!(
                    "/api/v1/gpus/{uuid}/telemetry?limit=10000&format=columnar"
                ))
                .await;
            let mut columnar = Vec::new();
            for s in page["series"].as_array().expect("series") {
                let metric = s["metric"].as_str().expect("metric");
                let times = s["timestamps"].as_array().expect("timestamps");
                let values = s["values"].as_array().expect("values");
                assert_eq!(times.len(), values.len());
                for (t, v) in times.iter().zip(values) {
                    let t = chrono::DateTime::from_timestamp_millis(t.as_i64().expect("ms"))
                        .expect("time")
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                    columnar.push((t, metric.to_string(), v.as_f64().expect("value")));
                }
            }
            columnar.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            assert_eq!(columnar, points, "{uuid}");
            for limit in [1, 3, 7] {
                assert_eq!(
                    all_points(&node, uuid, "", limit).await,
                    points,
                    "limit {limit}"
                );
            }
            let detail = node.ok(&format!("/api/v1/gpus/{uuid}")).await;
            assert_eq!(detail["metrics"].as_array().map(Vec::len), Some(want));
            assert_eq!(
                detail["first_timestamp"].as_str(),
                points.first().map(|p| p.0.as_str())
            );
            assert_eq!(
                detail["last_timestamp"].as_str(),
                points.last().map(|p| p.0.as_str())
            );
        }
        before_restart.insert(uuid.clone(), points);
    }

    // start_time/end_time are inclusive at both ends; metric filters are repeatable.
    let uuid = exp.gpus.keys().next().expect("a gpu");
    let points = &before_restart[uuid];
    let stamps: Vec<&str> = {
        let mut s: Vec<&str> = points.iter().map(|p| p.0.as_str()).collect();
        s.dedup();
        s
    };
    assert!(stamps.len() >= 2, "the reference file has several scrapes");
    for (a, b) in [(0, 0), (0, stamps.len() - 1), (1, stamps.len() - 1)] {
        let (start, end) = (stamps[a], stamps[b]);
        let got = all_points(
            &node,
            uuid,
            &format!("&start_time={start}&end_time={end}"),
            1000,
        )
        .await;
        let want: Vec<_> = points
            .iter()
            .filter(|p| p.0.as_str() >= start && p.0.as_str() <= end)
            .cloned()
            .collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "[{start}, {end}]");
    }
    let two = all_points(
        &node,
        uuid,
        "&metric=DCGM_FI_DEV_GPU_TEMP&metric=DCGM_FI_DEV_POWER_USAGE",
        1000,
    )
    .await;
    assert_eq!(two.len(), 2);
    assert!(two
        .iter()
        .all(|p| p.1 == "DCGM_FI_DEV_GPU_TEMP" || p.1 == "DCGM_FI_DEV_POWER_USAGE"));
    let metrics = node.ok("/api/v1/metrics").await;
    assert_eq!(metrics["items"].as_array().map(Vec::len), Some(10));

    // Bad parameters: 400 with a JSON error; unknown GPU: 404.
    let base = format!("/api/v1/gpus/{uuid}/telemetry");
    for bad in [
        "?start_time=yesterday",
        "?end_time=2025-13-45T00:00:00Z",
        "?start_time=2025-07-18T20:42:35Z&end_time=2025-07-18T20:42:34Z",
        "?limit=0",
        "?limit=abc",
        "?limit=1000000",
        "?limit=10001",
        "?format=columnar&limit=100001",
        "?cursor=not-a-cursor",
        "?cursor=%FF%FE",
    ] {
        let (status, body) = node.get(&format!("{base}{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{bad}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Every cursor of the documented form TIMESTAMP_MS:METRIC is one: the page after that point.
    let after = node.ok(&format!("{base}?cursor=0:")).await;
    assert!(after["items"].as_array().is_some_and(|i| !i.is_empty()));
    for bad in [
        "?limit=-1",
        "?offset=x",
        "?limit=10001",
        "?offset=2147483648",
    ] {
        assert_eq!(
            node.get(&format!("/api/v1/gpus{bad}")).await.0,
            400,
            "{bad}"
        );
    }
    for path in [
        "/api/v1/gpus/GPU-does-not-exist",
        "/api/v1/gpus/GPU-does-not-exist/telemetry",
    ] {
        let (status, body) = node.get(path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "not_found");
    }

    // Restart on the same data dir, serving only: same counts, same answers, no duplicates.
    node.stop();
    // A graceful stop consumed everything, so no partition keeps a byte of consumed log.
    let mut segments = 0;
    for part in std::fs::read_dir(data.join("broker")).expect("broker dir") {
        for f in std::fs::read_dir(part.expect("entry").path()).expect("partition dir") {
            let f = f.expect("entry").path();
            if f.extension().is_some_and(|e| e == "log") {
                segments += 1;
                let len = std::fs::metadata(&f).expect("metadata").len();
                assert_eq!(len, 0, "{} keeps consumed records", f.display());
            }
        }
    }
    assert_eq!(segments, 16, "one empty active segment per partition");
    let node = Node::start(&data, &["--no-stream", "--partitions", "16"]);
    let cluster = node.ok("/api/v1/cluster").await;
    assert_eq!(cluster["samples_stored"].as_u64(), Some(exp.rows));
    assert_eq!(
        node.ok("/api/v1/gpus?limit=10000").await["total"].as_u64(),
        Some(exp.gpus.len() as u64)
    );
    for (uuid, points) in before_restart.iter().step_by(25) {
        assert_eq!(
            &all_points(&node, uuid, "", 4).await,
            points,
            "{uuid} after restart"
        );
    }
    node.stop();
}

#[test]
fn a_file_without_dcgm_columns_stops_start_up_naming_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bad = tmp.path().join("bad.csv");
    std::fs::write(&bad, "timestamp,uuid,value\n2025-07-18T20:42:34Z,GPU-1,1\n").expect("write");
    let out = Command::new(binary())
        .arg("--data-dir")
        .arg(tmp.path().join("d"))
        .args(["--http-addr", "127.0.0.1:0", "--csv"])
        .arg(&bad)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for col in ["metric_name", "gpu_id", "Hostname", "modelName"] {
        assert!(err.contains(col), "stderr does not name {col}: {err}");
    }
    assert!(err.contains("bad.csv"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_rows_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("mixed.csv");
    let header = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw";
    let rows = [
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,0,nvidia0,GPU-a,H100,host-1,,,,40,",
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,1,nvidia1,,H100,host-1,,,,41,",
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,2,nvidia2,GPU-c,H100,host-1,,,,hot,",
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,3,nvidia3,GPU-d",
        // Over the 64 KiB record limit: skipped without being buffered whole.
        &format!(
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,5,nvidia5,GPU-f,H100,host-1,,,,45,{}",
            "x".repeat(200_000)
        ),
        "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_TEMP,4,nvidia4,GPU-e,H100,host-1,,,,44,",
    ];
    std::fs::write(&path, format!("{header}\n{}\n", rows.join("\n"))).expect("write");
    let node = Node::start(&tmp.path().join("d"), &crate::support::one_pass(&path));
    let cluster = node.wait_for_samples(2, Duration::from_secs(60)).await;
    assert_eq!(cluster["members"][0]["rows_read"], 6);
    assert_eq!(cluster["members"][0]["rows_rejected"], 4);
    let metrics = node.metrics_text().await;
    assert!(
        metrics.contains("telemetry_csv_rows_rejected_total{reason=\"line_too_long\"} 1"),
        "{metrics}"
    );
    let gpus: Vec<Value> = node.ok("/api/v1/gpus").await["items"]
        .as_array()
        .expect("items")
        .clone();
    assert_eq!(
        gpus.iter()
            .map(|g| g["uuid"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["GPU-a", "GPU-e"]
    );
    // --timestamps csv keeps the file's own time.
    let t = node.ok("/api/v1/gpus/GPU-e/telemetry").await;
    assert_eq!(t["items"][0]["timestamp"], "2025-07-18T20:42:34.000Z");
    assert_eq!(t["items"][0]["value"], 44.0);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sample_streams_without_any_csv_flag() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Node::start(&tmp.path().join("d"), &["--rate", "0", "--passes", "1"]);
    node.wait_for_samples(2 * 8 * 10 * 10, Duration::from_secs(60))
        .await;
    assert_eq!(node.ok("/api/v1/gpus").await["total"], 16);
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_token_guards_the_api_but_not_health() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let node = Node::start(
        &tmp.path().join("d"),
        &["--no-stream", "--api-token", "s3cret"],
    );
    let client = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("s3cret"),
        Some("Bearer s3cre"),
    ] {
        let mut req = client.get(format!("{}/api/v1/gpus", node.url));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
        assert!(resp.headers().get("www-authenticate").is_some());
        let body: Value = resp.json().await.expect("json");
        assert_eq!(body["error"]["code"], "unauthorized");
    }
    let resp = client
        .get(format!("{}/api/v1/gpus", node.url))
        .header("Authorization", "Bearer s3cret")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(node.get("/healthz").await.0, 200);
    assert_eq!(node.get("/readyz").await.0, 200);
    assert_eq!(node.get("/metrics").await.0, 200);
    assert_eq!(node.get("/openapi.json").await.0, 200);
    node.stop();
}

/// Tokens from files (as Kubernetes mounts Secrets), the admin token for changes (403 for the
/// read token), a configured open path list, and no token in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_from_file_and_open_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (api, admin) = (tmp.path().join("api"), tmp.path().join("admin"));
    std::fs::write(&api, "reader-token\n").expect("write");
    std::fs::write(&admin, "admin-token\n").expect("write");
    let node = Node::start_env(
        &tmp.path().join("d"),
        &[
            "--no-stream",
            "--api-token-file",
            api.to_str().expect("utf-8"),
            "--admin-token-file",
            admin.to_str().expect("utf-8"),
            "--open-paths",
            "/healthz",
        ],
        &[("RUST_LOG", "debug")],
    );
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut req = client.request(method, format!("{}{path}", node.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.expect("request").status().as_u16() }
    };
    use reqwest::Method;
    let decommission = "/api/v1/cluster/nodes/telemetry-0/decommission";
    assert_eq!(
        call(Method::GET, "/api/v1/gpus", Some("reader-token")).await,
        200
    );
    assert_eq!(
        call(Method::GET, "/api/v1/gpus", Some("admin-token")).await,
        200
    );
    assert_eq!(
        call(Method::GET, "/api/v1/gpus", Some("reader-tokeN")).await,
        401
    );
    assert_eq!(
        call(Method::POST, decommission, Some("reader-token")).await,
        403
    );
    assert_eq!(call(Method::POST, decommission, None).await, 401);
    // The admin token gets through to the handler, which refuses to empty a lone node.
    assert_eq!(
        call(Method::POST, decommission, Some("admin-token")).await,
        409
    );
    assert_eq!(call(Method::GET, "/healthz", None).await, 200);
    assert_eq!(call(Method::GET, "/readyz", None).await, 401);
    assert_eq!(call(Method::GET, "/metrics", None).await, 401);
    assert_eq!(
        call(Method::GET, "/metrics", Some("reader-token")).await,
        200
    );
    let log = node.stop_and_log();
    assert!(
        !log.contains("reader-token") && !log.contains("admin-token"),
        "{log}"
    );
}

/// Runs `telemetry-node bench` with `args`, asserts it succeeded, returns what it printed.
fn bench(args: &[&str]) -> String {
    let out = std::process::Command::new(crate::support::binary())
        .arg("bench")
        .args(args)
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `telemetry-node bench` (the performance benchmark) runs end to end on a tiny file with two
/// real nodes and prints every figure it promises.
#[test]
fn bench_subcommand_reports_every_figure() {
    let text = bench(&[
        "--nodes",
        "2",
        "--hosts",
        "1",
        "--scrapes",
        "30",
        "--queries",
        "2",
        "--settle",
        "0s",
    ]);
    assert!(
        text.contains("bench: 2 node(s), replication factor 1, 2400 samples"),
        "{text}"
    );
    assert!(
        text.contains("% of it") && text.contains("bytes/sample"),
        "{text}"
    );
    let rss = text
        .lines()
        .find(|l| l.contains("peak RSS per node"))
        .unwrap_or_else(|| panic!("no RSS line: {text}"));
    assert_eq!(rss.split(',').count(), 2, "{rss}");
    // Both nodes answer both windows with every point: the "1 h" window holds all 30 scrapes
    // of the GPU's 10 metrics, the "5 min" one starts halfway (15 scrapes).
    assert_eq!(
        text.matches("1h of one GPU (300 points)").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("5min of one GPU (150 points)").count(),
        2,
        "{text}"
    );
}

#[test]
fn bench_repair_times_a_wiped_node() {
    let text = bench(&[
        "--scenario",
        "repair",
        "--nodes",
        "2",
        "--replication-factor",
        "2",
        "--hosts",
        "1",
        "--scrapes",
        "30",
    ]);
    assert!(
        text.contains("replication factor 2, 2400 samples"),
        "{text}"
    );
    let line = text
        .lines()
        .find(|l| l.contains("repaired in"))
        .unwrap_or_else(|| panic!("no repair line: {text}"));
    // With two nodes and two copies, the emptied node holds everything again.
    assert!(line.contains("node held 2400 samples"), "{line}");
    assert!(line.contains("2400 stored after"), "{line}");
}

#[test]
fn bench_reads_during_ingest_reports_both_phases() {
    let text = bench(&[
        "--scenario",
        "reads-during-ingest",
        "--hosts",
        "2",
        "--scrapes",
        "30",
        "--queries",
        "5",
        "--warmup",
        "0s",
    ]);
    assert!(text.contains("16 GPUs × 10 metrics streamed"), "{text}");
    for phase in ["ingesting: 5 reads", "idle: 5 reads"] {
        let line = text
            .lines()
            .find(|l| l.contains(phase))
            .unwrap_or_else(|| panic!("no {phase:?} line: {text}"));
        // Every read found points of the GPU's last 5 minutes.
        assert!(!line.contains("(0 points)"), "{line}");
    }
    assert!(text.contains("p99 ingesting / idle"), "{text}");
}
