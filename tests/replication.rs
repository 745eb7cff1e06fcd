//! Replication (`--replication-factor 2`) under real faults: a member killed and wiped, a
//! rolling restart, a frozen member, two members of three down. Three real processes each;
//! writes come from a streamer or from a test writer posting CSV chunks with retries, as a
//! client of `POST /api/v1/ingest` would.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telemetry_api::ClusterView;

use crate::support::{
    all_points, eventually, reference_csv, replicas_whole, wait_live, Member, Node, COOKIE,
};

const RF: [&str; 2] = ["--replication-factor", "2"];

/// Starts three members with `--replication-factor 2`; member 0 gets `first` flags.
fn start_three(tmp: &Path, m: &[Member], first: &[&str]) -> Vec<Node> {
    let seed = m[0].cluster.clone();
    let rest: Vec<&str> = RF.iter().copied().chain(["--no-stream"]).collect();
    let n1 = m[1].start(tmp, &seed, COOKIE, &rest);
    let n2 = m[2].start(tmp, &seed, COOKIE, &rest);
    let flags: Vec<&str> = RF.iter().copied().chain(first.iter().copied()).collect();
    let n0 = m[0].start(tmp, &seed, COOKIE, &flags);
    vec![n0, n1, n2]
}

/// Waits until every node of `nodes` sees all three members.
async fn formed(nodes: &[Node]) {
    for n in nodes {
        wait_live(n, 3).await;
    }
}

/// `/api/v1/cluster` as `node` answers it.
async fn view(node: &Node) -> ClusterView {
    node.cluster().await
}

/// Waits until no member of the cluster repairs and every one is up and ready.
async fn settled(node: &Node) -> ClusterView {
    eventually(
        "every member up, repaired",
        Duration::from_secs(120),
        async || {
            let c = view(node).await;
            let busy: Vec<&str> = c
                .members
                .iter()
                .filter(|m| m.status != "up" || m.syncing)
                .map(|m| m.name.as_str())
                .collect();
            if busy.is_empty() && c.live.len() == 3 {
                Ok(c)
            } else {
                Err(format!("not settled: {busy:?}, live {:?}", c.live))
            }
        },
    )
    .await
}

/// The reference CSV's value of each (GPU, metric), and its row count.
fn file_values(csv: &Path) -> (BTreeMap<(String, String), f64>, u64) {
    let mut rdr = csv::Reader::from_path(csv).expect("csv");
    let mut values = BTreeMap::new();
    let mut rows = 0;
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let value: f64 = rec[10].parse().expect("a number");
        values.insert((rec[4].to_string(), rec[1].to_string()), value);
        rows += 1;
    }
    (values, rows)
}

/// Every point `node` answers: `passes` per (GPU, metric) of the file, each with the file's value.
async fn holds_every_pass(node: &Node, values: &BTreeMap<(String, String), f64>, passes: usize) {
    let (count, points) = all_points(node).await;
    assert_eq!(count, values.len() * passes, "{} answers", node.url);
    let mut per_series: BTreeMap<(String, String), usize> = BTreeMap::new();
    for p in &points {
        let f: Vec<&str> = p.split(' ').collect();
        let key = (f[0].to_string(), f[2].to_string());
        let want = values
            .get(&key)
            .unwrap_or_else(|| panic!("{p} is not in the file"));
        assert_eq!(f[3].parse::<f64>().expect("value"), *want, "{p}");
        *per_series.entry(key).or_default() += 1;
    }
    assert!(
        per_series.values().all(|n| *n == passes),
        "a series short or doubled"
    );
    // PromQL reads whole series from every member (two copies each) and counts each sample once.
    let mut per_metric: BTreeMap<&str, (usize, f64)> = BTreeMap::new();
    for ((_, metric), v) in values {
        let e = per_metric.entry(metric).or_default();
        e.0 += passes;
        e.1 += v * passes as f64;
    }
    for (metric, (count, sum)) in per_metric {
        let q = format!("sum(count_over_time({metric}[1h])) or vector(0)");
        let body = node
            .ok(&format!("/prometheus/api/v1/query?query={}", urlencode(&q)))
            .await;
        let got = body["data"]["result"][0]["value"][1].as_str().unwrap_or("");
        assert_eq!(got, count.to_string(), "{}: {q}: {body}", node.url);
        let q = format!("sum(sum_over_time({metric}[1h]))");
        let body = node
            .ok(&format!("/prometheus/api/v1/query?query={}", urlencode(&q)))
            .await;
        let got: f64 = body["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        assert!(
            (got - sum).abs() <= 1e-6 * sum.abs().max(1.0),
            "{q}: {got} != {sum}"
        );
    }
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_wiped_member_comes_back_with_every_copy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let csv = reference_csv(tmp.path());
    let (values, rows) = file_values(&csv);
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let stream = [
        "--csv",
        csv.to_str().expect("utf8"),
        "--rate",
        "2000",
        "--passes",
        "20",
    ];
    let mut nodes = start_three(tmp.path(), &m, &stream);
    formed(&nodes).await;
    // Every member's own view: a peer learns that another stopped repairing only from its next
    // pong, and an answer counts a member it still sees repairing as possibly missing data.
    for n in &nodes {
        settled(n).await;
    }
    eventually(
        "the stream under way",
        Duration::from_secs(30),
        async || match view(&nodes[0]).await.members[0].samples_acked {
            0 => Err("nothing acknowledged".to_string()),
            n => Ok(n),
        },
    )
    .await;
    let n2 = nodes.pop().expect("member 2");
    n2.signal("KILL");
    drop(n2);
    std::fs::remove_dir_all(m[2].data_dir(tmp.path())).expect("wipe its volume");
    // While it is down, the others answer completely and the stream goes on.
    let down = eventually("member 2 seen down", Duration::from_secs(30), async || {
        let c = view(&nodes[0]).await;
        match c.members.iter().find(|x| x.name == "telemetry-2") {
            Some(x) if x.status == "down" => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        !down.partial,
        "one member of three down with two copies: {down:?}"
    );
    assert!(
        down.members[0].samples_acked < 20 * rows,
        "the stream ended before the kill"
    );
    // Each live member answers with member 2 missing and the answer complete (two copies, one
    // lost). A member's view of another's repair state comes from its pings, so a complete
    // answer may take a ping or two after the kill; it must come within the deadline, and the
    // failure says which member the view still counted as repairing.
    for n in &nodes {
        eventually(
            "member 2 missing from complete answers",
            Duration::from_secs(30),
            async || {
                let g = n.ok("/api/v1/gpus?limit=10000").await;
                let missing = &g["unavailable_nodes"];
                if *missing == serde_json::json!(["telemetry-2"]) && g["partial"] == false {
                    return Ok(());
                }
                let c = n.ok("/api/v1/cluster").await;
                Err(format!(
                    "{}: unavailable {missing}, partial {}; repairing in its view {}; members {}",
                    n.url, g["partial"], c["syncing_nodes"], c["members"]
                ))
            },
        )
        .await;
    }
    nodes.push(m[2].start(
        tmp.path(),
        &m[0].cluster,
        COOKIE,
        &[RF[0], RF[1], "--no-stream"],
    ));
    eventually(
        "the stream done",
        Duration::from_secs(120),
        async || match view(&nodes[0]).await.members[0].samples_acked {
            n if n == 20 * rows => Ok(()),
            n => Err(format!("{n} of {} acknowledged", 20 * rows)),
        },
    )
    .await;
    let c = settled(&nodes[2]).await;
    let wiped = c
        .members
        .iter()
        .find(|x| x.name == "telemetry-2")
        .expect("member 2");
    assert!(
        wiped.repair.samples_copied > 0,
        "no repair happened: {wiped:?}"
    );
    eventually("every sample stored", Duration::from_secs(60), async || {
        let c = view(&nodes[0]).await;
        let lag: u64 = c.members.iter().map(|m| m.broker_lag_records).sum();
        if c.samples_stored == 20 * rows && lag == 0 {
            Ok(())
        } else {
            Err(format!("{} stored, lag {lag}", c.samples_stored))
        }
    })
    .await;
    // Every replica ends up with a full copy of its partitions (a member that came up is
    // compared with), and every sample has two copies at least.
    let c = replicas_whole(&nodes[0]).await;
    assert!(
        c.sample_copies >= 2 * 20 * rows,
        "fewer than two copies: {c:?}"
    );
    for n in &nodes {
        holds_every_pass(n, &values, 20).await;
    }
    // The wiped member's copies are whole again: with member 0 gone, it and member 1 answer
    // everything.
    let n0 = nodes.remove(0);
    n0.signal("KILL");
    drop(n0);
    eventually("member 0 seen down", Duration::from_secs(30), async || {
        let c = view(&nodes[1]).await;
        (c.unavailable_nodes == ["telemetry-0"])
            .then_some(())
            .ok_or(format!("{c:?}"))
    })
    .await;
    holds_every_pass(&nodes[1], &values, 20).await;
    for n in nodes {
        n.stop();
    }
}

/// A client of `POST /api/v1/ingest`: chunks of `GPUS` GPUs × 4 metrics at one new second each,
/// sent to the nodes in turn; a chunk that fails goes to the next node until one takes it.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

const GPUS: usize = 6;
const WRITER_METRICS: [&str; 4] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_FB_USED",
];

/// The value the writer sends for GPU `g`, metric `m` at second `t`.
fn writer_value(g: usize, m: usize, t: i64) -> f64 {
    ((t * 31 + g as i64 * 7 + m as i64) % 1000) as f64
}

fn chunk(t: i64) -> String {
    let mut body =
        String::from("timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,value\n");
    let ts = chrono::DateTime::from_timestamp(t, 0)
        .expect("time")
        .to_rfc3339();
    for g in 0..GPUS {
        for (m, metric) in WRITER_METRICS.iter().enumerate() {
            body.push_str(&format!(
                "{ts},{metric},{g},nvidia{g},GPU-writer-{g},H100,host-w,{}\n",
                writer_value(g, m, t)
            ));
        }
    }
    body
}

impl Writer {
    /// Starts writing to `urls` (shared, so restarts can swap a node's address in).
    fn start(urls: Arc<std::sync::Mutex<Vec<String>>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let start = chrono::Utc::now().timestamp() - 7200;
            let (mut t, mut i) = (start, 0usize);
            while !s.load(Ordering::Acquire) {
                let url = {
                    let u = urls.lock().expect("urls");
                    format!("{}/api/v1/ingest", u[i % u.len()])
                };
                i += 1;
                let sent = client.post(&url).body(chunk(t)).send().await;
                if matches!(sent, Ok(r) if r.status() == 200) {
                    a.fetch_add((GPUS * WRITER_METRICS.len()) as u64, Ordering::AcqRel);
                    t += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { stop, acked, task }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Stops after the chunk in flight; returns the samples acknowledged.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let acked = self.acked.clone();
        self.task.await.expect("writer");
        acked.load(Ordering::Acquire)
    }
}

/// Waits until the writer has had `more` samples acknowledged beyond `from`.
async fn writes_go_on(w: &Writer, from: u64, more: u64) {
    eventually("writes acknowledged", Duration::from_secs(60), async || {
        let n = w.acked();
        (n >= from + more)
            .then_some(n)
            .ok_or(format!("{n} acknowledged"))
    })
    .await;
}

/// Every node holds exactly `acked` distinct samples of the writer, each with its value.
async fn writer_data_everywhere(nodes: &[Node], acked: u64) {
    eventually(
        "the writer's samples stored",
        Duration::from_secs(60),
        async || {
            let c = view(&nodes[0]).await;
            let lag: u64 = c.members.iter().map(|m| m.broker_lag_records).sum();
            if c.samples_stored == acked && lag == 0 && !c.partial {
                Ok(())
            } else {
                Err(format!("{} of {acked} stored, lag {lag}", c.samples_stored))
            }
        },
    )
    .await;
    for n in nodes {
        let (count, points) = all_points(n).await;
        assert_eq!(count as u64, acked, "{} answers", n.url);
        for p in points {
            let f: Vec<&str> = p.split(' ').collect();
            let g: usize = f[0].trim_start_matches("GPU-writer-").parse().expect("gpu");
            let m = WRITER_METRICS
                .iter()
                .position(|x| *x == f[2])
                .expect("metric");
            let t = chrono::DateTime::parse_from_rfc3339(f[1])
                .expect("time")
                .timestamp();
            assert_eq!(
                f[3].parse::<f64>().expect("value"),
                writer_value(g, m, t),
                "{p}"
            );
        }
    }
}

/// Three store-only members with two copies, formed and repaired.
async fn three_quiet(tmp: &Path, m: &[Member]) -> Vec<Node> {
    let nodes = start_three(tmp, m, &["--no-stream"]);
    formed(&nodes).await;
    for n in &nodes {
        settled(n).await;
    }
    nodes
}

/// Stops the writer, waits for the repairs, checks every node holds everything it wrote, and
/// stops the nodes.
async fn writer_done(writer: Writer, nodes: Vec<Node>) {
    let acked = writer.finish().await;
    settled(&nodes[0]).await;
    writer_data_everywhere(&nodes, acked).await;
    for n in nodes {
        n.stop();
    }
}

/// Reads `/api/v1/cluster` from the nodes in turn until stopped, as a client behind a
/// Kubernetes Service would: only from nodes that say they are ready. Returns every answer that
/// said partial or counted fewer samples than an earlier one, and that the same node's next
/// answer (a dashboard's next refresh, 200 ms later) did not put right: on this shared machine,
/// under the whole suite's load, one member can miss a single 2 s scatter deadline, which the
/// answer rightly reports; a member really missing stays missing.
fn watch_answers(
    urls: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let (mut best, mut bad, mut i) = (0u64, Vec::new(), 0usize);
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let url = {
                let u = urls.lock().expect("urls");
                u[i % u.len()].clone()
            };
            i += 1;
            let Some(c) = ready_view(&client, &url).await else {
                continue;
            };
            if !c.partial && c.samples_stored >= best {
                best = c.samples_stored;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match ready_view(&client, &url).await {
                Some(again) if !again.partial && again.samples_stored >= best => {
                    best = again.samples_stored;
                }
                _ => bad.push(format!(
                    "{url}: partial {}, {} stored after {best}, unavailable {:?}, syncing {:?}",
                    c.partial, c.samples_stored, c.unavailable_nodes, c.syncing_nodes
                )),
            }
        }
        bad
    })
}

/// `url`'s cluster view, if it says it is ready.
async fn ready_view(client: &reqwest::Client, url: &str) -> Option<ClusterView> {
    let get = |path: &str| {
        client
            .get(format!("{url}{path}"))
            .timeout(Duration::from_secs(10))
            .send()
    };
    match get("/readyz").await {
        Ok(r) if r.status() == 200 => {}
        _ => return None,
    }
    get("/api/v1/cluster").await.ok()?.json().await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_keeps_every_answer_complete() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let mut nodes = three_quiet(tmp.path(), &m).await;
    let urls = Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
    ));
    let writer = Writer::start(urls.clone());
    writes_go_on(&writer, 0, 500).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_answers(urls.clone(), stop.clone());
    for i in 0..3 {
        let old = nodes.remove(i);
        old.stop();
        let before = writer.acked();
        let others: Vec<&Node> = nodes.iter().collect();
        eventually(
            "the member seen down",
            Duration::from_secs(30),
            async || {
                let c = view(others[0]).await;
                (c.live.len() == 2)
                    .then_some(())
                    .ok_or(format!("live {:?}", c.live))
            },
        )
        .await;
        writes_go_on(&writer, before, 200).await;
        let seed = &m[(i + 1) % 3].cluster;
        let back = m[i].start(tmp.path(), seed, COOKIE, &[RF[0], RF[1], "--no-stream"]);
        urls.lock().expect("urls")[i] = back.url.clone();
        nodes.insert(i, back);
        // A rolling update waits for readiness, which waits for the repair.
        eventually(
            "the restarted member ready",
            Duration::from_secs(120),
            async || match nodes[i].get("/readyz").await {
                (200, _) => Ok(()),
                (s, b) => Err(format!("{s} {b}")),
            },
        )
        .await;
    }
    stop.store(true, Ordering::Release);
    let bad = watcher.await.expect("watcher");
    assert!(bad.is_empty(), "answers during the roll: {bad:#?}");
    writer_done(writer, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_member_neither_stops_writes_nor_makes_answers_partial() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let nodes = three_quiet(tmp.path(), &m).await;
    let urls = Arc::new(std::sync::Mutex::new(vec![
        nodes[0].url.clone(),
        nodes[1].url.clone(),
    ]));
    let writer = Writer::start(urls.clone());
    writes_go_on(&writer, 0, 200).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_answers(urls, stop.clone());
    nodes[2].signal("STOP");
    let started = std::time::Instant::now();
    let before = writer.acked();
    writes_go_on(&writer, before, 500).await;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(started.elapsed())).await;
    nodes[2].signal("CONT");
    stop.store(true, Ordering::Release);
    let bad = watcher.await.expect("watcher");
    assert!(bad.is_empty(), "answers while frozen: {bad:#?}");
    writer_done(writer, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_of_three_down_is_partial_and_writes_wait_until_they_return() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..3).map(Member::new).collect();
    let mut nodes = three_quiet(tmp.path(), &m).await;
    let urls = Arc::new(std::sync::Mutex::new(vec![nodes[0].url.clone()]));
    let writer = Writer::start(urls.clone());
    writes_go_on(&writer, 0, 200).await;
    for _ in 0..2 {
        let n = nodes.pop().expect("a member");
        n.signal("KILL");
        drop(n);
    }
    let c = eventually("both seen down", Duration::from_secs(30), async || {
        let c = view(&nodes[0]).await;
        if c.live.len() == 1 {
            Ok(c)
        } else {
            Err(format!("live {:?}", c.live))
        }
    })
    .await;
    assert!(
        c.partial,
        "two of three down with two copies must say partial: {c:?}"
    );
    let gpus = nodes[0].ok("/api/v1/gpus?limit=10000").await;
    assert_eq!(gpus["partial"], true, "{gpus}");
    // Writes wait: with one live member a write cannot get two copies.
    let stalled = writer.acked();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        writer.acked() <= stalled + (GPUS * WRITER_METRICS.len()) as u64,
        "a write was acknowledged with one copy"
    );
    for i in 1..3 {
        let back = m[i].start(
            tmp.path(),
            &m[0].cluster,
            COOKIE,
            &[RF[0], RF[1], "--no-stream"],
        );
        nodes.push(back);
    }
    writes_go_on(&writer, stalled, 200).await;
    writer_done(writer, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_replication_factor_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m: Vec<Member> = (0..2).map(Member::new).collect();
    let n0 = m[0].start(
        tmp.path(),
        &m[0].cluster,
        COOKIE,
        &[RF[0], RF[1], "--no-stream"],
    );
    let n1 = m[1].start(
        tmp.path(),
        &m[0].cluster,
        COOKIE,
        &["--replication-factor", "3", "--no-stream"],
    );
    let log = eventually("the refusal logged", Duration::from_secs(30), async || {
        let log = n0.log_text();
        log.contains("another --replication-factor")
            .then_some(log)
            .ok_or("not yet".to_string())
    })
    .await;
    assert!(log.contains("telemetry-1"), "{log}");
    assert_eq!(view(&n0).await.live, ["telemetry-0"]);
    assert_eq!(view(&n1).await.live, ["telemetry-1"]);
    n0.stop();
    n1.stop();
}
