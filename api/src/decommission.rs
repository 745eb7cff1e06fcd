//! `POST /api/v1/cluster/nodes/{name}/decommission` (on any node; forwarded to the named one)
//! and `GET` of the same path for progress. The workflow is
//! [`telemetry_service::decommission`].

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_service::decommission::{self, DecommissionProgress};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::AppState;

/// A node's decommission as the REST API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DecommissionStatus {
    /// Node being decommissioned.
    pub node: String,
    /// `idle`, `handing_over`, `copying`, `done` or `failed`.
    pub state: String,
    /// Partitions still running on the node.
    pub partitions_running: u32,
    /// Distinct samples it held when copying began.
    pub samples_total: u64,
    /// Samples copied to their owners so far.
    pub samples_copied: u64,
    /// Milliseconds since it began.
    pub elapsed_ms: u64,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

fn status(node: &str, p: DecommissionProgress) -> DecommissionStatus {
    DecommissionStatus {
        node: node.to_string(),
        state: p.state,
        partitions_running: p.partitions_running,
        samples_total: p.samples_total,
        samples_copied: p.samples_copied,
        elapsed_ms: p.elapsed_ms,
        error: p.error,
    }
}

/// Starts decommissioning a node (202) before it is removed; repeating it is safe.
#[utoipa::path(post, path = "/api/v1/cluster/nodes/{name}/decommission", tag = "cluster",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 202, description = "Decommission running (or done)", body = DecommissionStatus),
        (status = 409, description = "Not possible now (a node alone)", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 503, description = "The member did not answer", body = ErrorBody),
    ))]
pub async fn start_decommission(
    State(api): State<AppState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<DecommissionStatus>), ApiError> {
    let progress = decommission::ask(&api.node, &name, true).await?;
    Ok((StatusCode::ACCEPTED, Json(status(&name, progress))))
}

/// A node's decommission progress.
#[utoipa::path(get, path = "/api/v1/cluster/nodes/{name}/decommission", tag = "cluster",
    params(("name" = String, Path, description = "Node name")),
    responses(
        (status = 200, description = "Progress", body = DecommissionStatus),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 503, description = "The member did not answer", body = ErrorBody),
    ))]
pub async fn get_decommission(
    State(api): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<DecommissionStatus>, ApiError> {
    let progress = decommission::ask(&api.node, &name, false).await?;
    Ok(Json(status(&name, progress)))
}
