//! `telemetry-node decommission NAME`: asks a running cluster to decommission a node, then
//! follows its progress until the node can be removed.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(500);

/// Options of `telemetry-node decommission`.
#[derive(Debug, Clone, Args)]
pub struct DecommissionArgs {
    /// The node to decommission (its pod name).
    pub name: String,
    /// API of any node of the cluster.
    #[arg(long, env = "TELEMETRY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Bearer token, when the cluster requires one (the admin token when it has one).
    #[arg(long, env = "TELEMETRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the token; instead of --admin-token.
    #[arg(long, env = "TELEMETRY_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
}

async fn send(req: reqwest::RequestBuilder, token: Option<&str>) -> anyhow::Result<Value> {
    let req = match token {
        Some(t) => req.bearer_auth(t),
        None => req,
    };
    let resp = req.send().await.context("reaching the cluster")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["error"]["message"].as_str().unwrap_or("no detail");
        bail!("{status}: {msg}");
    }
    Ok(body)
}

/// Runs the subcommand.
pub fn run(args: &DecommissionArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let client = reqwest::Client::new();
        let path = format!(
            "{}/api/v1/cluster/nodes/{}/decommission",
            args.url.trim_end_matches('/'),
            args.name
        );
        let secret = crate::auth::Secret::resolve(
            args.admin_token.as_deref(),
            args.admin_token_file.as_deref(),
            "admin-token",
        )?;
        let token = secret.as_ref().map(|s| s.expose());
        let mut p = send(client.post(&path), token).await?;
        loop {
            eprintln!(
                "{}: {} — partitions running {}, samples copied {} of {} ({:.1} s)",
                args.name,
                p["state"].as_str().unwrap_or("?"),
                p["partitions_running"],
                p["samples_copied"],
                p["samples_total"],
                p["elapsed_ms"].as_f64().unwrap_or(0.0) / 1000.0
            );
            match p["state"].as_str() {
                Some("done") => {
                    println!(
                        "{} is decommissioned: remove it (scale the StatefulSet down)",
                        args.name
                    );
                    return Ok(());
                }
                Some("failed") => bail!(
                    "decommission of {} failed: {}",
                    args.name,
                    p["error"].as_str().unwrap_or("no detail")
                ),
                _ => {}
            }
            tokio::time::sleep(POLL).await;
            p = send(client.get(&path), token).await?;
        }
    })
}
