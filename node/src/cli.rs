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

/// Bytes of CSV per request the importer aims for.
const IMPORT_CHUNK_BYTES: usize = 48 << 10;
/// Chunks the importer keeps in flight.
const IMPORT_IN_FLIGHT: usize = 4;
/// The API's request body limit, which no chunk may reach.
const IMPORT_MAX_REQUEST: usize = telemetry_api::MAX_BODY_BYTES;

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
    /// A row skipped here, before sending.
    fn reject(&mut self, reason: &str, example: String) {
        self.rows += 1;
        *self.rejected.entry(reason.to_string()).or_default() += 1;
        if self.examples.len() < 5 {
            self.examples.push(example);
        }
    }

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

/// Records gathered into request bodies: the header, then records up to
/// [`IMPORT_CHUNK_BYTES`] and always under [`IMPORT_MAX_REQUEST`].
struct Chunker {
    header: csv::ByteRecord,
    chunk: csv::Writer<Vec<u8>>,
    records: usize,
}

impl Chunker {
    fn new(header: csv::ByteRecord) -> anyhow::Result<Self> {
        let chunk = Self::start(&header)?;
        Ok(Self {
            header,
            chunk,
            records: 0,
        })
    }

    fn start(header: &csv::ByteRecord) -> anyhow::Result<csv::Writer<Vec<u8>>> {
        let mut w = csv::Writer::from_writer(Vec::with_capacity(IMPORT_CHUNK_BYTES + 4096));
        w.write_byte_record(header)?;
        Ok(w)
    }

    /// Adds a record (one too long for any request is rejected in `t`); returns the chunk
    /// before it when that chunk is full and must be sent first.
    fn add(&mut self, rec: &csv::ByteRecord, t: &mut Totals) -> anyhow::Result<Option<Vec<u8>>> {
        // Worst case of a record written as CSV: every byte a doubled quote.
        let size = 2 * rec.as_slice().len() + 3 * rec.len() + 2;
        if size + self.header.as_slice().len() * 3 > IMPORT_MAX_REQUEST {
            t.reject("line_too_long", "a record too long for one request".into());
            return Ok(None);
        }
        // The writer buffers; flushing into the Vec makes its length the chunk's size.
        self.chunk.flush()?;
        let len = self.chunk.get_ref().len();
        let full = len + size > IMPORT_MAX_REQUEST - 1024 || len >= IMPORT_CHUNK_BYTES;
        let body = if full && self.records > 0 {
            self.take()?
        } else {
            None
        };
        self.chunk.write_byte_record(rec)?;
        self.records += 1;
        Ok(body)
    }

    /// The last chunk, if it holds any record.
    fn finish(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        self.take()
    }

    fn take(&mut self) -> anyhow::Result<Option<Vec<u8>>> {
        if self.records == 0 {
            return Ok(None);
        }
        let next = Self::start(&self.header)?;
        self.records = 0;
        Ok(Some(std::mem::replace(&mut self.chunk, next).into_inner()?))
    }
}

pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let (mut rdr, _) = telemetry_actors::dcgm::open_reader(file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let header = rdr.byte_headers()?.clone();
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
        let mut chunks = Chunker::new(header)?;
        let mut sending = tokio::task::JoinSet::new();
        let mut rec = csv::ByteRecord::new();
        loop {
            match rdr.read_byte_record(&mut rec) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if e.is_io_error() => return Err(e).context("reading the file"),
                Err(e) => {
                    t.reject("unreadable_row", e.to_string());
                    continue;
                }
            }
            let Some(body) = chunks.add(&rec, &mut t)? else {
                continue;
            };
            // A few chunks in flight: each waits for fsyncs at the owners.
            if sending.len() >= IMPORT_IN_FLIGHT {
                if let Some(done) = sending.join_next().await {
                    t.add(done??);
                }
            }
            let c = c.clone();
            sending.spawn(async move { c.post_csv("/api/v1/ingest", body).await });
            bar.set_position(rdr.position().byte());
            bar.set_message(format!("{} samples", t.samples));
        }
        if let Some(body) = chunks.finish()? {
            sending.spawn(async move { c.post_csv("/api/v1/ingest", body).await });
        }
        while let Some(done) = sending.join_next().await {
            t.add(done??);
        }
        for long in rdr.get_mut().take_overlong() {
            t.reject(
                "line_too_long",
                format!("line {long}: record over the length limit"),
            );
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
