//! Client subcommands against a running cluster: `gpus`, `query`, `cluster`, `import`. They talk to any
//! node's REST API (`--url`, env `TELEMETRY_URL`) with the API token if one is needed, and print
//! a table, CSV or JSON.

use std::time::Duration;
use telemetry_actors::backoff::Backoff;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::Value;
use telemetry_api::{
    ClusterView, FleetGpu, FleetPage, IngestSummary, TelemetryPage, TelemetryPoint,
};

/// Where the cluster is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// API of any node of the cluster.
    #[arg(long, env = "TELEMETRY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token, when the cluster requires one.
    #[arg(long, env = "TELEMETRY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// The API's JSON.
    Json,
}

/// Options of `telemetry-node gpus`.
#[derive(Debug, Clone, Args)]
pub struct GpusArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Options of `telemetry-node query`.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// GPU UUID.
    uuid: String,
    #[command(flatten)]
    client: ClientArgs,
    /// Metric name (repeatable; default: all).
    #[arg(long)]
    metric: Vec<String>,
    /// How far back from now (`90s`, `15m`, `1h`, `7d`); ignored with --start.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    since: Duration,
    /// Window start, RFC 3339 (instead of --since).
    #[arg(long)]
    start: Option<String>,
    /// Window end, RFC 3339 (default: now).
    #[arg(long)]
    end: Option<String>,
    /// Most samples printed.
    #[arg(long, default_value_t = 100_000)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Options of `telemetry-node cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Output format (table or json).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// A blocking-free client on a small runtime.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: args.url.trim_end_matches('/').to_string(),
            token: args.api_token.clone().filter(|t| !t.is_empty()),
        }
    }

    /// GETs `path` (with `query`) and returns the JSON body; API errors become clear messages.
    pub(crate) async fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let mut req = self.http.get(format!("{}{path}", self.base)).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("reaching {}", self.base))?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.as_u16() == 401 {
            bail!("401: the cluster requires an API token (--api-token or TELEMETRY_API_TOKEN), or this one is wrong");
        }
        if !status.is_success() {
            let msg = body["error"]["message"].as_str().unwrap_or("no detail");
            bail!("{status}: {msg}");
        }
        Ok(body)
    }

    /// GETs `path` and reads the answer as the API's response type.
    pub(crate) async fn get_as<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        let body = self.get(path, query).await?;
        serde_json::from_value(body)
            .with_context(|| format!("{path}: an answer of another shape (another version?)"))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn partial_note(partial: bool, unavailable: &[String]) {
    if partial {
        eprintln!(
            "warning: partial answer, these nodes did not answer: {}",
            unavailable.join(", ")
        );
    }
}

fn print_rows(format: Format, header: &[&str], rows: Vec<Vec<String>>) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED)
                .set_header(header.to_vec());
            for r in rows {
                t.add_row(r);
            }
            println!("{t}");
        }
        Format::Csv => {
            let mut w = csv::Writer::from_writer(std::io::stdout());
            w.write_record(header)?;
            for r in rows {
                w.write_record(&r)?;
            }
            w.flush()?;
        }
        Format::Json => {
            let objects: Vec<serde_json::Map<String, Value>> = rows
                .into_iter()
                .map(|r| {
                    header
                        .iter()
                        .map(|h| h.to_string())
                        .zip(r.into_iter().map(Value::String))
                        .collect()
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&objects)?);
        }
    }
    Ok(())
}

/// `telemetry-node gpus`.
pub fn gpus(args: &GpusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let c = Client::new(&args.client);
        let page: FleetPage = c
            .get_as("/api/v1/latest", &[("limit", "10000".into())])
            .await?;
        partial_note(page.partial, &page.unavailable_nodes);
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&page)?);
            return Ok(());
        }
        let metric = |g: &FleetGpu, m: &str| {
            g.latest
                .get(m)
                .map_or(String::new(), |v| v.value.to_string())
        };
        let rows = page
            .items
            .iter()
            .map(|g| {
                vec![
                    g.gpu.uuid.clone(),
                    g.gpu.hostname.clone(),
                    g.gpu.gpu_index.to_string(),
                    g.gpu.model.clone(),
                    metric(g, "DCGM_FI_DEV_GPU_UTIL"),
                    metric(g, "DCGM_FI_DEV_GPU_TEMP"),
                    metric(g, "DCGM_FI_DEV_POWER_USAGE"),
                ]
            })
            .collect();
        print_rows(
            args.format,
            &[
                "uuid", "host", "gpu", "model", "util_%", "temp_c", "power_w",
            ],
            rows,
        )?;
        if args.format == Format::Table {
            eprintln!("{} GPUs", page.total);
        }
        Ok(())
    })
}

/// `telemetry-node query`.
pub fn query(args: &QueryArgs) -> anyhow::Result<()> {
    let end = match &args.end {
        Some(e) => e.clone(),
        None => chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    };
    let start = match &args.start {
        Some(s) => s.clone(),
        None => {
            let end_t = chrono::DateTime::parse_from_rfc3339(&end)
                .with_context(|| format!("--end {end:?} is not RFC 3339"))?;
            let since = chrono::Duration::from_std(args.since).context("--since too long")?;
            (end_t - since).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        }
    };
    runtime()?.block_on(async {
        let c = Client::new(&args.client);
        let path = format!("/api/v1/gpus/{}/telemetry", args.uuid);
        let mut items: Vec<TelemetryPoint> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = vec![
                ("start_time", start.clone()),
                ("end_time", end.clone()),
                ("limit", "10000".to_string()),
            ];
            q.extend(args.metric.iter().map(|m| ("metric", m.clone())));
            if let Some(cur) = &cursor {
                q.push(("cursor", cur.clone()));
            }
            let page: TelemetryPage = c.get_as(&path, &q).await?;
            partial_note(page.partial, &page.unavailable_nodes);
            items.extend(page.items);
            match page.next_cursor {
                Some(next) if items.len() < args.limit => cursor = Some(next),
                _ => break,
            }
        }
        items.truncate(args.limit);
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&items)?);
            return Ok(());
        }
        let rows = items
            .iter()
            .map(|p| vec![p.timestamp.clone(), p.metric.clone(), p.value.to_string()])
            .collect();
        print_rows(args.format, &["timestamp", "metric", "value"], rows)?;
        if args.format == Format::Table {
            eprintln!("{} samples from {start} to {end}", items.len());
        }
        Ok(())
    })
}

/// `telemetry-node cluster`.
pub fn cluster(args: &ClusterArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let c = Client::new(&args.client);
        let view: ClusterView = c.get_as("/api/v1/cluster", &[]).await?;
        partial_note(view.partial, &view.unavailable_nodes);
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&view)?);
            return Ok(());
        }
        let rows = view
            .members
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.status.clone(),
                    m.address.clone(),
                    m.partitions_owned.to_string(),
                    m.samples_stored.to_string(),
                    m.broker_lag_records.to_string(),
                    m.rows_rejected.to_string(),
                ]
            })
            .collect();
        print_rows(
            args.format,
            &[
                "member",
                "status",
                "api",
                "partitions",
                "samples",
                "lag",
                "rejected",
            ],
            rows,
        )?;
        eprintln!(
            "{} partitions, {} samples stored, live: {}",
            view.partitions,
            view.samples_stored,
            view.live.join(", ")
        );
        Ok(())
    })
}

/// Bytes of CSV per request the importer aims for: the node streams each body, so a chunk only
/// bounds what one failed request sends again (and the importer's memory).
const IMPORT_CHUNK_BYTES: usize = 8 << 20;
/// Chunks the importer keeps in flight.
const IMPORT_IN_FLIGHT: usize = 2;
const _: () = assert!(IMPORT_CHUNK_BYTES * 2 < telemetry_api::MAX_INGEST_BYTES);

/// Options of `telemetry-node import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// DCGM CSV file to import (rows keep their own timestamps).
    file: std::path::PathBuf,
    #[command(flatten)]
    client: ClientArgs,
    /// Token for changes, when the cluster has an admin token (else the API token is used).
    #[arg(long, env = "TELEMETRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// `telemetry-node import`: streams a file into a running cluster in chunks, with a progress
/// bar and a final summary.
/// What an import stored and skipped so far.
#[derive(Default)]
struct Totals {
    rows: u64,
    samples: u64,
    rejected: std::collections::BTreeMap<String, u64>,
    examples: Vec<String>,
}

impl Totals {
    /// A node's answer to one chunk.
    fn add(&mut self, s: IngestSummary) {
        self.rows += s.rows;
        self.samples += s.samples;
        for (reason, n) in s.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        for e in s.rejected_examples {
            if self.examples.len() < 5 {
                self.examples.push(e);
            }
        }
    }
}

/// The file cut into request bodies: its header line, then whole lines up to
/// [`IMPORT_CHUNK_BYTES`], cut at a newline outside quotes. The bytes go as they are (the node
/// parses and counts every row), so the importer costs little CPU.
struct Chunker<R> {
    input: R,
    header: Vec<u8>,
    carry: Vec<u8>,
    done: bool,
}

impl<R: std::io::Read> Chunker<R> {
    fn new(mut input: R) -> anyhow::Result<Self> {
        let mut carry = Vec::new();
        let mut done = false;
        let header_end = loop {
            if let Some(at) = cut(&carry, true) {
                break at;
            }
            if done || carry.len() > IMPORT_CHUNK_BYTES {
                anyhow::bail!("no header line");
            }
            done = fill(&mut input, &mut carry, 64 << 10)?;
        };
        let rest = carry.split_off(header_end);
        Ok(Self {
            input,
            header: carry,
            carry: rest,
            done,
        })
    }

    /// The next body, or `None` at the end of the file.
    fn next(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        while !self.done && self.carry.len() < IMPORT_CHUNK_BYTES {
            let want = IMPORT_CHUNK_BYTES - self.carry.len();
            self.done = fill(&mut self.input, &mut self.carry, want)?;
        }
        if self.carry.is_empty() {
            return Ok(None);
        }
        let at = match cut(&self.carry, false) {
            Some(at) if !self.done => at,
            // The end of the file, or one line longer than a chunk: all of it (the node
            // skips and counts an overlong record).
            _ => self.carry.len(),
        };
        let rest = self.carry.split_off(at);
        let mut body = Vec::with_capacity(self.header.len() + at);
        body.extend_from_slice(&self.header);
        body.append(&mut self.carry);
        self.carry = rest;
        Ok(Some(body))
    }
}

/// Reads up to `want` more bytes into `buf`; true at the end of the input.
fn fill(input: &mut impl std::io::Read, buf: &mut Vec<u8>, want: usize) -> anyhow::Result<bool> {
    let start = buf.len();
    buf.resize(start + want, 0);
    let n = input.read(&mut buf[start..]).context("reading the file")?;
    buf.truncate(start + n);
    Ok(n == 0)
}

/// Where to cut `bytes`: after the first (`first`) or the last newline outside quotes.
fn cut(bytes: &[u8], first: bool) -> Option<usize> {
    let mut quoted = false;
    let mut last = None;
    for i in memchr::memchr2_iter(b'"', b'\n', bytes) {
        if bytes[i] == b'"' {
            quoted = !quoted;
        } else if !quoted {
            if first {
                return Some(i + 1);
            }
            last = Some(i + 1);
        }
    }
    last
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut chunks = Chunker::new(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let mut client_args = args.client.clone();
    if let Some(t) = args.admin_token.clone().filter(|t| !t.is_empty()) {
        client_args.api_token = Some(t);
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
        )?,
    );
    let started = std::time::Instant::now();
    let mut t = Totals::default();
    runtime()?.block_on(async {
        let c = Client::new(&client_args);
        let mut sending = tokio::task::JoinSet::new();
        let mut sent = 0u64;
        while let Some(body) = chunks.next()? {
            // A few chunks in flight: each is answered once durable at the owners.
            if sending.len() >= IMPORT_IN_FLIGHT {
                if let Some(done) = sending.join_next().await {
                    t.add(done??);
                }
            }
            sent += body.len() as u64;
            let c = c.clone();
            sending.spawn(async move { c.post_csv("/api/v1/ingest", body).await });
            bar.set_position(sent.min(total));
            bar.set_message(format!("{} samples", t.samples));
        }
        while let Some(done) = sending.join_next().await {
            t.add(done??);
        }
        anyhow::Ok(())
    })?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {}: {} rows, {} samples stored, {} rejected, {:.1} s, {:.0} samples/s",
        args.file.display(),
        t.rows,
        t.samples,
        t.rejected.values().sum::<u64>(),
        secs,
        t.samples as f64 / secs.max(1e-9)
    );
    for (reason, n) in &t.rejected {
        println!("  rejected {reason}: {n}");
    }
    for e in &t.examples {
        println!("  e.g. {e}");
    }
    Ok(())
}

/// Pause before sending a chunk again: 200 ms doubling to 5 s.
const CHUNK_BACKOFF: Backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));

impl Client {
    /// POSTs a CSV chunk, retrying a refusal to store it for a while (the cluster may be busy
    /// or moving partitions); chunks are idempotent, so sending one twice stores it once.
    async fn post_csv(&self, path: &str, body: Vec<u8>) -> anyhow::Result<IngestSummary> {
        let mut pause = CHUNK_BACKOFF;
        for attempt in 0.. {
            let mut req = self
                .http
                .post(format!("{}{path}", self.base))
                .header("content-type", "text/csv")
                .body(body.clone());
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await;
            let (status, value) = match resp {
                Ok(r) => (r.status(), r.json::<Value>().await.unwrap_or(Value::Null)),
                Err(e) if attempt < 10 => {
                    eprintln!("retrying a chunk: {e}");
                    tokio::time::sleep(pause.next_delay()).await;
                    continue;
                }
                Err(e) => return Err(e).context("sending a chunk"),
            };
            match status.as_u16() {
                200 => {
                    return serde_json::from_value(value)
                        .context("an ingest answer of another shape (another version?)")
                }
                503 if attempt < 10 => {
                    tokio::time::sleep(pause.next_delay()).await;
                }
                401 | 403 => bail!(
                    "{status}: importing needs the API token (or the admin token when the cluster has one)"
                ),
                _ => bail!(
                    "{status}: {}",
                    value["error"]["message"].as_str().unwrap_or("no detail")
                ),
            }
        }
        bail!("the cluster did not take a chunk after 10 attempts")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_lines_under_the_header_and_cut_outside_quotes() {
        let file = "h1,h2\na,\"x\ny\"\nb,2\n";
        let mut c = Chunker::new(file.as_bytes()).expect("a header");
        assert_eq!(c.header, b"h1,h2\n");
        let body = c.next().expect("reads").expect("a chunk");
        assert_eq!(body, file.as_bytes());
        assert!(c.next().expect("reads").is_none());
        // The newline inside quotes is no place to cut.
        assert_eq!(cut(b"a,\"x\ny\"\nb", false), Some(8));
        assert_eq!(cut(b"no newline", false), None);
        assert!(Chunker::new(&b""[..]).is_err());
    }
}
