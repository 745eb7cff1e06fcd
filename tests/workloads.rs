//! Who used which GPU, end to end: a `gen-csv --workloads` file (jobs that start on several
//! GPUs, run, finish, leave idle gaps) streamed into real nodes, then every answer checked
//! against what the file says: REST spans and totals, PromQL workload labels at each sample's
//! time, across a restart, and on a replicated cluster after a member is wiped and repaired.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::{binary, eventually, one_pass, wait_live, Member, Node, COOKIE};

const INTERVAL_MS: i64 = 15_000;
const SCRAPES: i64 = 120;
const UTIL: &str = "DCGM_FI_DEV_GPU_UTIL";
const POWER: &str = "DCGM_FI_DEV_POWER_USAGE";

fn gen_workloads(dir: &Path) -> PathBuf {
    let path = dir.join("workloads.csv");
    let status = Command::new(binary())
        .args([
            "gen-csv",
            "--hosts",
            "2",
            "--workloads",
            "--job-secs",
            "300",
        ])
        .args(["--idle-secs", "45", "--interval-secs", "15", "--seed", "11"])
        .args(["--scrapes", &SCRAPES.to_string(), "-o"])
        .arg(&path)
        .status()
        .expect("gen-csv runs");
    assert!(status.success());
    path
}

/// One row of the file.
struct Row {
    ts: i64,
    metric: String,
    uuid: String,
    /// (namespace, pod); empty when idle.
    pod: (String, String),
    value: f64,
}

fn rows(csv: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for rec in csv::Reader::from_path(csv).expect("csv").records() {
        let rec = rec.expect("record");
        let ts = chrono::DateTime::parse_from_rfc3339(&rec[0]).expect("time");
        out.push(Row {
            ts: ts.timestamp_millis(),
            metric: rec[1].to_string(),
            uuid: rec[4].to_string(),
            pod: (rec[9].to_string(), rec[8].to_string()),
            value: rec[10].parse().expect("number"),
        });
    }
    out
}

/// What the file says a GPU's spans are: runs of one pod on consecutive scrapes, as
/// (pod, start, end).
fn spans_of(rows: &[Row], uuid: &str) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = Vec::new();
    let mut seen = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.uuid == uuid && !r.pod.1.is_empty())
    {
        seen.insert(r.ts, r.pod.1.clone());
    }
    for (ts, pod) in seen {
        match out.last_mut() {
            Some(last) if last.0 == pod && ts - last.2 == INTERVAL_MS => last.2 = ts,
            _ => out.push((pod, ts, ts)),
        }
    }
    out
}

/// Per pod: (GPUs, GPU seconds, mean utilisation) as the file gives them.
fn pod_totals(rows: &[Row]) -> BTreeMap<String, (usize, f64, f64)> {
    let uuids: BTreeSet<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
    let mut out: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    for uuid in uuids {
        for (pod, start, end) in spans_of(rows, uuid) {
            let t = out.entry(pod).or_default();
            t.0 += 1;
            t.1 += (end - start + INTERVAL_MS) as f64 / 1000.0;
        }
    }
    for (pod, t) in out.iter_mut() {
        let utils: Vec<f64> = rows
            .iter()
            .filter(|r| r.metric == UTIL && r.pod.1 == *pod)
            .map(|r| r.value)
            .collect();
        t.2 = utils.iter().sum::<f64>() / utils.len() as f64;
    }
    out
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's result as `label value → value` for one grouping label ("" when absent).
async fn by_label(node: &Node, q: &str, label: &str, at: i64) -> BTreeMap<String, f64> {
    let path = format!(
        "/prometheus/api/v1/query?query={}&time={}",
        urlencode(q),
        at as f64 / 1000.0
    );
    let body = node.ok(&path).await;
    let mut out = BTreeMap::new();
    for r in body["data"]["result"].as_array().expect("a vector") {
        let key = r["metric"][label].as_str().unwrap_or("").to_string();
        let v: f64 = r["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .expect("a value");
        assert!(
            out.insert(key, v).is_none(),
            "{q}: one series per {label}: {body}"
        );
    }
    out
}

/// Checks the REST and PromQL answers of `node` against the file.
async fn answers_match_the_file(node: &Node, rows: &[Row]) {
    let uuids: BTreeSet<&str> = rows.iter().map(|r| r.uuid.as_str()).collect();
    for uuid in uuids.iter().take(4) {
        let body = node.ok(&format!("/api/v1/gpus/{uuid}/attribution")).await;
        let got: Vec<(String, i64, i64)> = body["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| {
                let t = |k: &str| {
                    chrono::DateTime::parse_from_rfc3339(s[k].as_str().expect("time"))
                        .expect("RFC 3339")
                        .timestamp_millis()
                };
                (
                    s["pod"].as_str().unwrap_or("").to_string(),
                    t("start"),
                    t("end"),
                )
            })
            .collect();
        assert_eq!(got, spans_of(rows, uuid), "{uuid}");
    }
    let want = pod_totals(rows);
    let list = node.ok("/api/v1/workloads").await;
    let pods = list["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), want.len(), "{list}");
    for p in pods {
        let name = p["pod"].as_str().expect("pod");
        let (gpus, secs, util) = want[name];
        assert_eq!(p["gpus"].as_u64(), Some(gpus as u64), "{p}");
        assert_eq!(p["gpu_seconds"].as_f64(), Some(secs), "{p}");
        let mean = p["mean_utilization"].as_f64().expect("a mean");
        assert!((mean - util).abs() < 1e-9, "{p}: {util}");
    }
    let namespaces: BTreeSet<&str> = rows
        .iter()
        .map(|r| r.pod.0.as_str())
        .filter(|n| !n.is_empty())
        .collect();
    assert_eq!(
        list["namespaces"].as_array().map(Vec::len),
        Some(namespaces.len())
    );
    // One pod: its GPUs.
    let (pod, (gpus, _, _)) = want.iter().max_by_key(|(_, t)| t.0).expect("a pod");
    let ns = &rows.iter().find(|r| r.pod.1 == *pod).expect("row").pod.0;
    let one = node.ok(&format!("/api/v1/workloads/{ns}/{pod}")).await;
    assert_eq!(one["items"].as_array().map(Vec::len), Some(*gpus), "{one}");
    let (status, _) = node.get("/api/v1/workloads/nope/nothing").await;
    assert_eq!(status, 404);
    // PromQL: workload labels at each sample's time.
    let times: BTreeSet<i64> = rows.iter().map(|r| r.ts).collect();
    for &at in times.iter().step_by(17) {
        let mut want: BTreeMap<String, f64> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.ts == at && r.metric == POWER) {
            *want.entry(r.pod.1.clone()).or_default() += r.value;
        }
        let got = by_label(node, &format!("sum by (pod) ({POWER})"), "pod", at).await;
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "at {at}"
        );
        for (k, v) in &want {
            assert!(
                (got[k] - v).abs() < 1e-6,
                "pod {k:?} at {at}: {} != {v}",
                got[k]
            );
        }
        // Each GPU once, whatever pods came and went within the lookback.
        let count = by_label(node, &format!("count({UTIL})"), "", at).await;
        assert_eq!(count.get(""), Some(&(uuids.len() as f64)), "at {at}");
    }
    let ns_pick = format!(
        "count({UTIL}{{namespace={:?}}})",
        namespaces.first().expect("a namespace")
    );
    let at = *times.iter().nth(60).expect("a time");
    let want = rows
        .iter()
        .filter(|r| r.ts == at && r.metric == UTIL && Some(&r.pod.0.as_str()) == namespaces.first())
        .count();
    let got = by_label(node, &ns_pick, "", at).await;
    assert_eq!(
        got.get("").copied().unwrap_or(0.0),
        want as f64,
        "{ns_pick}"
    );
}

async fn stored_everything(node: &Node, rows: usize) {
    eventually("the file stored", Duration::from_secs(120), async || {
        let c = node.ok("/api/v1/cluster").await;
        // Every row, plus one observation per busy (GPU, scrape).
        match c["samples_stored"].as_u64() {
            Some(n) if n >= rows as u64 => Ok(()),
            n => Err(format!("{n:?} stored")),
        }
    })
    .await;
    eventually(
        "the newest scrape readable",
        Duration::from_secs(60),
        async || {
            let list = node.ok("/api/v1/workloads").await;
            match list["pods"].as_array() {
                Some(p) if !p.is_empty() => Ok(()),
                _ => Err("no pods yet".into()),
            }
        },
    )
    .await;
}

/// The (GPU, time) pairs the file says carried a workload: one observation each.
fn observations(rows: &[Row]) -> BTreeSet<(&str, i64)> {
    rows.iter()
        .filter(|r| !r.pod.1.is_empty())
        .map(|r| (r.uuid.as_str(), r.ts))
        .collect()
}

/// A node on `data` that streamed the whole file once and stored every row and observation.
async fn streamed(data: &Path, csv: &Path, rows: &[Row]) -> Node {
    let node = Node::start(data, &one_pass(csv));
    node.wait_for_samples(
        (rows.len() + observations(rows).len()) as u64,
        Duration::from_secs(120),
    )
    .await;
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_attributes_every_sample_to_the_pod_that_held_its_gpu() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = gen_workloads(tmp.path());
    let rows = rows(&csv);
    let data = tmp.path().join("data");
    let node = streamed(&data, &csv, &rows).await;
    answers_match_the_file(&node, &rows).await;
    // The hidden series is nobody's metric.
    let metrics = node.ok("/api/v1/metrics").await;
    assert!(!metrics.to_string().contains("__workload__"), "{metrics}");
    let uuid = &rows[0].uuid;
    let page = node
        .ok(&format!("/api/v1/gpus/{uuid}/telemetry?limit=10000"))
        .await;
    assert!(!page.to_string().contains("__workload__"));
    // After a restart, from disk alone.
    node.stop();
    let node = Node::start(&data, &["--no-stream"]);
    answers_match_the_file(&node, &rows).await;
    node.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_count_a_gpu_once_and_repair_brings_its_workloads_back() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = gen_workloads(tmp.path());
    let rows = rows(&csv);
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let seed = m[0].cluster.clone();
    let rf = ["--replication-factor", "2"];
    let quiet: Vec<&str> = rf.iter().copied().chain(["--no-stream"]).collect();
    let n1 = m[1].start(tmp.path(), &seed, COOKIE, &quiet);
    let n2 = m[2].start(tmp.path(), &seed, COOKIE, &quiet);
    let streaming: Vec<&str> = rf.iter().copied().chain(one_pass(&csv)).collect();
    let n0 = m[0].start(tmp.path(), &seed, COOKIE, &streaming);
    for n in [&n0, &n1, &n2] {
        wait_live(n, 3).await;
    }
    stored_everything(&n0, rows.len()).await;
    for n in [&n0, &n1, &n2] {
        eventually(
            "every copy answered",
            Duration::from_secs(120),
            async || {
                let c = n.ok("/api/v1/cluster").await;
                if c["partial"].as_bool() == Some(false) {
                    Ok(())
                } else {
                    Err(format!("{c}"))
                }
            },
        )
        .await;
        answers_match_the_file(n, &rows).await;
    }
    // Member 2 loses everything; repair copies its partitions back, observations and workload
    // names with them. Then member 1 goes: GPUs it shared with member 2 are read from the copy.
    n2.signal("KILL");
    drop(n2);
    std::fs::remove_dir_all(m[2].data_dir(tmp.path())).expect("wipe");
    let n2 = m[2].start(tmp.path(), &seed, COOKIE, &quiet);
    eventually("member 2 repaired", Duration::from_secs(180), async || {
        let c = n2.cluster().await;
        let busy = c.members.iter().any(|m| m.status != "up" || m.syncing);
        if !busy && c.live.len() == 3 {
            Ok(())
        } else {
            Err(format!(
                "{:?}",
                c.members
                    .iter()
                    .map(|m| (&m.name, &m.status, m.syncing))
                    .collect::<Vec<_>>()
            ))
        }
    })
    .await;
    n1.stop();
    answers_match_the_file(&n2, &rows).await;
    n0.stop();
    n2.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_for_one_pod_reads_only_the_gpus_that_held_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = gen_workloads(tmp.path());
    let rows = rows(&csv);
    let observations = observations(&rows);
    // The pod on the fewest GPUs, and every UTIL sample of those GPUs.
    let mut gpus_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.pod.1.is_empty()) {
        gpus_of.entry(&r.pod.1).or_default().insert(&r.uuid);
    }
    let (pod, gpus) = gpus_of.iter().min_by_key(|(_, g)| g.len()).expect("a pod");
    let util = |keep: &dyn Fn(&str) -> bool| {
        rows.iter()
            .filter(|r| r.metric == UTIL && keep(&r.uuid))
            .count()
    };
    // The bound fits every observation and the pod's GPUs, not every GPU.
    let bound = observations.len() + util(&|u| gpus.contains(u)) + 10;
    assert!(
        bound < observations.len() + util(&|_| true),
        "{pod} is on every GPU"
    );
    let data = tmp.path().join("data");
    streamed(&data, &csv, &rows).await.stop();
    let (first, last) = (rows[0].ts / 1000, rows[rows.len() - 1].ts / 1000);
    let range = |q: &str| {
        format!(
            "/prometheus/api/v1/query_range?query={}&start={first}&end={last}&step=60",
            urlencode(q)
        )
    };
    let one = range(&format!("sum by (pod) ({UTIL}{{pod={pod:?}}})"));
    let node = Node::start(
        &data,
        &["--no-stream", "--query-max-samples", &bound.to_string()],
    );
    let (status, body) = node.get(&one).await;
    assert_eq!(status, 200, "{body}");
    let result = body["data"]["result"].as_array().expect("a matrix");
    assert_eq!(result.len(), 1, "{body}");
    assert_eq!(result[0]["metric"]["pod"].as_str(), Some(*pod));
    let bounded = body["data"].clone();
    // Every GPU's samples are over the bound.
    let (status, body) = node.get(&range(&format!("sum by (pod) ({UTIL})"))).await;
    assert_eq!(status, 422, "{body}");
    node.stop();
    // The same answer when nothing bounds the read.
    let node = Node::start(&data, &["--no-stream"]);
    assert_eq!(node.ok(&one).await["data"], bounded);
    node.stop();
}
