//! What the tests add to the process harness ([`telemetry_node::harness`]): nodes whose
//! failures panic with their log, HTTP helpers, and waits for cluster conditions.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;
use telemetry_api::{ClusterView, GpuList, TelemetryPage};
use telemetry_node::harness::{self, NodeProcess};

/// The shared reference CSV.
pub const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/dcgm_metrics_20250718_134233.csv"
);

/// Path of the binary under test: this build's, or `TELEMETRY_TEST_BINARY` (to run the tests
/// against a release build or another version).
pub fn binary() -> String {
    std::env::var("TELEMETRY_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_telemetry-node").to_string())
}

/// Data rows of a CSV file.
pub fn csv_rows(path: &Path) -> u64 {
    csv::Reader::from_path(path).expect("csv").records().count() as u64
}

/// Flags that stream `csv` once, unthrottled, with the file's own timestamps.
pub fn one_pass(csv: &Path) -> [&str; 8] {
    harness::one_pass(csv.to_str().expect("utf-8 path"))
}

/// Polls `check` (every 100 ms) until it yields a value; panics after `timeout`, saying `what`
/// and what the last look saw.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    harness::eventually(what, timeout, Duration::from_millis(100), check)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The shared CSV, or a `gen-csv` file of the same shape in `dir` when it is absent: one row per
/// (GPU, metric), the metrics spread over several scrape timestamps like the exporter's dump.
pub fn reference_csv(dir: &Path) -> PathBuf {
    if Path::new(SHARED_CSV).exists() {
        return PathBuf::from(SHARED_CSV);
    }
    let one_scrape = dir.join("generated-one-scrape.csv");
    let status = Command::new(binary())
        .args(["gen-csv", "--hosts", "31", "--scrapes", "1", "-o"])
        .arg(&one_scrape)
        .status()
        .expect("gen-csv runs");
    assert!(status.success());
    let out = dir.join("generated.csv");
    let mut rdr = csv::Reader::from_path(&one_scrape).expect("generated csv");
    let mut wtr = csv::Writer::from_path(&out).expect("create");
    wtr.write_record(rdr.headers().expect("header"))
        .expect("write");
    let mut metrics: Vec<String> = Vec::new();
    for rec in rdr.records() {
        let rec = rec.expect("record");
        let metric = rec[1].to_string();
        let i = metrics
            .iter()
            .position(|m| *m == metric)
            .unwrap_or_else(|| {
                metrics.push(metric);
                metrics.len() - 1
            });
        let mut fields: Vec<String> = rec.iter().map(str::to_string).collect();
        fields[0] = format!("2025-07-18T20:42:{:02}Z", 34 + i / 3);
        wtr.write_record(&fields).expect("write");
    }
    wtr.flush().expect("flush");
    out
}

/// A running node process; killed when dropped (its log printed if the test panics).
pub struct Node {
    proc: NodeProcess,
    pub url: String,
    pub data_dir: PathBuf,
    /// Where the node's stderr goes (printed if the test panics).
    pub log: PathBuf,
}

impl Node {
    /// Starts a node on a free port with `args` and waits until it listens.
    pub fn start(data_dir: &Path, args: &[&str]) -> Node {
        Self::start_env(data_dir, args, &[])
    }

    /// Starts a node with extra environment variables.
    pub fn start_env(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Node {
        let proc = NodeProcess::start(Path::new(&binary()), data_dir, args, env)
            .unwrap_or_else(|e| panic!("{e:#}"));
        Node {
            url: proc.url.clone(),
            data_dir: proc.data_dir.clone(),
            log: proc.log.clone(),
            proc,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// What the node wrote to stderr so far.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// SIGTERM, wait for a clean exit, and return the whole log.
    pub fn stop_and_log(self) -> String {
        let log = self.log.clone();
        self.stop();
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// GET a path; returns status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{}", self.url, path))
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// The text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.url))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// GET a path that must answer 200, read as the API's own response type.
    pub async fn typed<T: DeserializeOwned>(&self, path: &str) -> T {
        let body = self.ok(path).await;
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// `/api/v1/cluster`.
    pub async fn cluster(&self) -> ClusterView {
        self.typed("/api/v1/cluster").await
    }

    /// GET a path that must answer 200.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Waits until the cluster reports `n` stored samples.
    pub async fn wait_for_samples(&self, n: u64, timeout: Duration) -> Value {
        eventually(&format!("{n} samples stored"), timeout, async || {
            let c = self.ok("/api/v1/cluster").await;
            match c["samples_stored"].as_u64() {
                Some(s) if s == n => Ok(c),
                s => Err(format!("{s:?} stored")),
            }
        })
        .await
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, …) to the process.
    pub fn signal(&self, sig: &str) {
        self.proc.signal(sig).expect("signal sent");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let status = self
            .proc
            .stop(Duration::from_secs(60))
            .expect("node stops after SIGTERM");
        assert!(status.success(), "node exited with {status}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

// ---- cluster helpers (real processes on loopback) ----

/// The cookie of the test clusters.
pub const COOKIE: &str = "test-cookie";
/// Partitions of the test clusters (few, so each member holds several).
pub const PARTITIONS: &str = "16";

/// A cluster member: its name and cluster address (kept across restarts).
pub struct Member {
    /// Node name.
    pub name: String,
    /// Cluster transport address.
    pub cluster: String,
}

impl Member {
    /// Member `i`, `telemetry-{i}`, on a free loopback port.
    pub fn new(i: usize) -> Self {
        Self {
            name: format!("telemetry-{i}"),
            cluster: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// Its data directory under `dir`.
    pub fn data_dir(&self, dir: &Path) -> PathBuf {
        dir.join(&self.name)
    }

    /// Starts the member with the seed `seed` and `extra` flags.
    pub fn start(&self, dir: &Path, seed: &str, cookie: &str, extra: &[&str]) -> Node {
        self.start_seeded(dir, Some(seed), cookie, extra)
    }

    /// Starts the member with its cookie and, if given, a seed list.
    pub fn start_seeded(
        &self,
        dir: &Path,
        seed: Option<&str>,
        cookie: &str,
        extra: &[&str],
    ) -> Node {
        let mut args = vec![
            "--node-name",
            &self.name,
            "--cluster-addr",
            &self.cluster,
            "--cluster-cookie",
            cookie,
            "--partitions",
            PARTITIONS,
            "--liveness-timeout",
            "2s",
        ];
        if let Some(seed) = seed {
            args.extend(["--seeds", seed]);
        }
        args.extend(extra);
        Node::start(&self.data_dir(dir), &args)
    }
}

/// A free loopback port for a cluster transport.
pub fn free_port() -> u16 {
    harness::free_port().expect("a free port")
}

/// Waits until `node` sees `n` live members and its answers are complete (with replicas, the
/// members that joined have repaired).
pub async fn wait_live(node: &Node, n: usize) -> Value {
    eventually(
        &format!("{n} live members"),
        Duration::from_secs(60),
        async || {
            let c = node.cluster().await;
            if c.live.len() == n && !c.partial {
                Ok(node.ok("/api/v1/cluster").await)
            } else {
                Err(format!(
                    "live {:?}, unavailable {:?}",
                    c.live, c.unavailable_nodes
                ))
            }
        },
    )
    .await
}

/// GET a path until the answer is complete (`partial: false`), as a client would after a
/// membership change; fails after 15 s.
pub async fn complete(node: &Node, path: &str) -> Value {
    eventually(
        &format!("{path} complete"),
        Duration::from_secs(15),
        async || match node.get(path).await {
            (200, body) if body["partial"] == false => Ok(body),
            (status, body) => Err(format!("{status} {body}")),
        },
    )
    .await
}

/// Every point of every GPU as `node` answers it (cursor pages), asserting order and no duplicate.
pub async fn all_points(node: &Node) -> (usize, Vec<String>) {
    let gpus: GpuList = typed(complete(node, "/api/v1/gpus?limit=10000").await);
    let mut count = 0;
    let mut digest = Vec::new();
    for g in gpus.items {
        let uuid = g.uuid;
        let mut cursor = String::new();
        let mut last: Option<(String, String)> = None;
        loop {
            let path = format!("/api/v1/gpus/{uuid}/telemetry?limit=10000{cursor}");
            let page: TelemetryPage = typed(complete(node, &path).await);
            for it in page.items {
                let key = (it.timestamp, it.metric);
                if let Some(prev) = &last {
                    assert!(*prev < key, "duplicate or disorder at {uuid} {key:?}");
                }
                digest.push(format!("{uuid} {} {} {}", key.0, key.1, it.value));
                last = Some(key);
                count += 1;
            }
            match page.next_cursor {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    (count, digest)
}

/// A JSON answer as the API's response type.
fn typed<T: DeserializeOwned>(body: Value) -> T {
    serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Waits until every streamer finished and the cluster holds at least `n` distinct samples.
pub async fn wait_stored(node: &Node, n: u64, timeout: Duration) -> Value {
    eventually(
        &format!("{n} samples stored, no lag"),
        timeout,
        async || {
            let c = node.cluster().await;
            let lag: u64 = c.members.iter().map(|m| m.broker_lag_records).sum();
            if c.samples_stored >= n && lag == 0 && !c.partial {
                Ok(node.ok("/api/v1/cluster").await)
            } else {
                Err(format!(
                    "{} of {n}, lag {lag}, unavailable {:?}",
                    c.samples_stored, c.unavailable_nodes
                ))
            }
        },
    )
    .await
}

/// Waits until every replica of every partition holds as many samples of it as its fullest copy
/// (repairs done), then returns the cluster view.
pub async fn replicas_whole(node: &Node) -> ClusterView {
    eventually(
        "every replica a full copy",
        Duration::from_secs(60),
        async || {
            let c = node.cluster().await;
            for p in &c.ownership {
                let fullest = p.samples_by_member.values().max().copied().unwrap_or(0);
                for r in &p.replicas {
                    if p.samples_by_member.get(r).copied().unwrap_or(0) != fullest {
                        return Err(format!(
                            "partition {}: {:?}",
                            p.partition, p.samples_by_member
                        ));
                    }
                }
            }
            Ok(c)
        },
    )
    .await
}
