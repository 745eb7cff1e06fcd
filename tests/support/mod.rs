//! Test harness: real `telemetry-node` processes on free ports, spoken to over HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The shared reference CSV.
pub const SHARED_CSV: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/dcgm_metrics_20250718_134233.csv"
);

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_telemetry-node")
}

/// Data rows of a CSV file.
pub fn csv_rows(path: &Path) -> u64 {
    csv::Reader::from_path(path).expect("csv").records().count() as u64
}

/// Flags that stream `csv` once, unthrottled, with the file's own timestamps.
pub fn one_pass(csv: &Path) -> [&str; 8] {
    let csv = csv.to_str().expect("utf-8 path");
    [
        "--csv",
        csv,
        "--rate",
        "0",
        "--passes",
        "1",
        "--timestamps",
        "csv",
    ]
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

/// A running node process; killed when dropped.
pub struct Node {
    pub child: Child,
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
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(binary())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--http-addr", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .expect("binary starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reads stdout");
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("node did not start: {line:?}\n{text}")
            })
            .to_string();
        Node {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            log,
        }
    }

    /// What the node wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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

    /// GET a path that must answer 200.
    pub async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Waits until the cluster reports `n` stored samples (and no broker lag).
    pub async fn wait_for_samples(&self, n: u64, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.ok("/api/v1/cluster").await;
            if c["samples_stored"].as_u64() == Some(n) {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {n} samples: {}",
                c["samples_stored"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a signal (`TERM`, `KILL`, `STOP`, …) to the process.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "node exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log_text());
        }
    }
}

// ---- cluster helpers (real processes on loopback) ----

/// A free loopback port for a cluster transport.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits until `node` sees `n` live members.
pub async fn wait_live(node: &Node, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = node.ok("/api/v1/cluster").await;
        if c["live"].as_array().map(Vec::len) == Some(n) && c["partial"] == false {
            return c;
        }
        assert!(Instant::now() < deadline, "cluster did not form: {c}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET a path until the answer is complete (`partial: false`), as a client would after a
/// membership change; fails after 15 s.
pub async fn complete(node: &Node, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = node.get(path).await;
        if status == 200 && body["partial"] == false {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stays incomplete: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every point of every GPU as `node` answers it (cursor pages), asserting order and no duplicate.
pub async fn all_points(node: &Node) -> (usize, Vec<String>) {
    let gpus = complete(node, "/api/v1/gpus?limit=10000").await;
    let mut count = 0;
    let mut digest = Vec::new();
    for g in gpus["items"].as_array().expect("items") {
        let uuid = g["uuid"].as_str().expect("uuid");
        let mut cursor = String::new();
        let mut last: Option<(String, String)> = None;
        loop {
            let page = complete(
                node,
                &format!("/api/v1/gpus/{uuid}/telemetry?limit=10000{cursor}"),
            )
            .await;
            for it in page["items"].as_array().expect("items") {
                let key = (
                    it["timestamp"].as_str().unwrap_or("").to_string(),
                    it["metric"].as_str().unwrap_or("").to_string(),
                );
                if let Some(prev) = &last {
                    assert!(*prev < key, "duplicate or disorder at {uuid} {key:?}");
                }
                digest.push(format!("{uuid} {} {} {}", key.0, key.1, it["value"]));
                last = Some(key);
                count += 1;
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break,
            }
        }
    }
    (count, digest)
}

/// Waits until every streamer finished and the cluster holds at least `n` distinct samples.
pub async fn wait_stored(node: &Node, n: u64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let c = node.ok("/api/v1/cluster").await;
        let stored = c["samples_stored"].as_u64().unwrap_or(0);
        let lag: u64 = c["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .filter_map(|x| x["broker_lag_records"].as_u64())
                    .sum()
            })
            .unwrap_or(1);
        if stored >= n && lag == 0 && c["partial"] == false {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "timed out at {stored} of {n}: {c}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
