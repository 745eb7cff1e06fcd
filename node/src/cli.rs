//! Client subcommands against a running cluster: `gpus`, `query`, `cluster`. They talk to any
//! node's REST API (`--url`, env `TELEMETRY_URL`) with the API token if one is needed, and print
//! a table, CSV or JSON.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::Value;

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
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

fn partial_note(body: &Value) {
    if body["partial"].as_bool() == Some(true) {
        eprintln!(
            "warning: partial answer, these nodes did not answer: {}",
            body["unavailable_nodes"]
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

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `telemetry-node gpus`.
pub fn gpus(args: &GpusArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let c = Client::new(&args.client);
        let body = c
            .get("/api/v1/latest", &[("limit", "10000".into())])
            .await?;
        partial_note(&body);
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        let metric = |g: &Value, m: &str| text(&g["latest"][m]["value"]);
        let rows = body["items"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|g| {
                vec![
                    text(&g["uuid"]),
                    text(&g["hostname"]),
                    text(&g["gpu_index"]),
                    text(&g["model"]),
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
            eprintln!("{} GPUs", body["total"]);
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
        let mut items: Vec<Value> = Vec::new();
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
            let page = c.get(&path, &q).await?;
            partial_note(&page);
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) if items.len() < args.limit => cursor = Some(next.to_string()),
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
            .map(|p| vec![text(&p["timestamp"]), text(&p["metric"]), text(&p["value"])])
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
        let body = c.get("/api/v1/cluster", &[]).await?;
        partial_note(&body);
        if args.format == Format::Json {
            println!("{}", serde_json::to_string_pretty(&body)?);
            return Ok(());
        }
        let rows = body["members"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|m| {
                [
                    "name",
                    "status",
                    "address",
                    "partitions_owned",
                    "samples_stored",
                    "broker_lag_records",
                    "rows_rejected",
                ]
                .iter()
                .map(|k| text(&m[*k]))
                .collect()
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
            body["partitions"], body["samples_stored"], body["live"]
        );
        Ok(())
    })
}
