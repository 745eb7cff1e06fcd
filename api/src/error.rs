//! API errors: a status code and a JSON body `{"error":{"code","message"}}`, never a bare 500 for
//! bad input.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use telemetry_service::decommission::DecommissionError;
use telemetry_service::QueryError;
use utoipa::ToSchema;

/// The error body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Machine-readable code and human-readable message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `bad_request`, `not_found`, `not_ready`, `internal`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// 400: a parameter is malformed or inconsistent.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    /// 409: the request is well formed but the cluster's state does not allow it.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: message.into(),
        }
    }

    /// 404: the resource does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }

    /// 413: the request body is over its limit.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "too_large",
            message: message.into(),
        }
    }

    /// 503: the node cannot answer yet.
    pub fn not_ready(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "not_ready",
            message: message.into(),
        }
    }

    /// 500: the node failed (storage error); never used for bad input.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The members an incomplete answer may lack, for error messages and warnings.
pub fn missing_members(c: &telemetry_service::Coverage) -> String {
    let mut parts = Vec::new();
    if !c.unavailable.is_empty() {
        parts.push(format!("{} (not answering)", c.unavailable.join(", ")));
    }
    if !c.syncing.is_empty() {
        parts.push(format!("{} (repairing)", c.syncing.join(", ")));
    }
    parts.join(", ")
}

impl From<QueryError> for ApiError {
    /// An unknown GPU is 404 when every member answered, 503 when some did not (it may be
    /// there); a store that is recovering is 503 (ask again shortly); other failures are 500.
    fn from(e: QueryError) -> Self {
        match &e {
            QueryError::UnknownGpu { uuid, coverage } if !coverage.complete() => {
                Self::not_ready(format!(
                    "GPU {uuid:?} is unknown to the members that answered; it may be on {}",
                    missing_members(coverage)
                ))
            }
            QueryError::UnknownGpu { .. } => Self::not_found(e.to_string()),
            QueryError::TooLarge(m) => Self::bad_request(m.clone()),
            _ if e.is_transient() => Self::not_ready(e.to_string()),
            _ => Self::internal(e.to_string()),
        }
    }
}

impl From<DecommissionError> for ApiError {
    fn from(e: DecommissionError) -> Self {
        match &e {
            DecommissionError::Alone | DecommissionError::Refused(_) => {
                Self::conflict(e.to_string())
            }
            DecommissionError::NoSuchMember(_) => Self::not_found(e.to_string()),
            DecommissionError::NoAnswer(_) => Self::not_ready(e.to_string()),
        }
    }
}
