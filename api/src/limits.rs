//! Limits of the REST layer, each a named constant with a defined answer at the bound:
//!
//! | limit | value | at the limit |
//! |---|---|---|
//! | [`MAX_BODY_BYTES`] | 64 KiB per request body | 413, body not read further |
//! | [`crate::remote_write::MAX_WRITE_BYTES`] | 16 MiB per remote write body (`/api/v1/write`) | 413 |
//! | [`MAX_INGEST_BYTES`] | 64 GiB per streamed ingest body (`/api/v1/ingest`) | 413 (what came before is stored) |
//! | [`INGEST_REQUEST_TIMEOUT`] | 1 h per ingest request | 503 (what came before is stored) |
//! | [`MAX_CONCURRENT_REQUESTS`] | 256 requests in flight per node | 503 with `Retry-After: 1` |
//! | [`REQUEST_TIMEOUT`] | 30 s per request | 503 |
//!
//! Page sizes are bounded where they are parsed (`MAX_TELEMETRY_LIMIT`, `MAX_GPU_LIMIT`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Requests handled at once by one node.
pub const MAX_CONCURRENT_REQUESTS: usize = 256;
/// Longest time one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest streamed ingest body (its memory is bounded by queues, not by this).
pub const MAX_INGEST_BYTES: usize = 64 << 30;
/// Longest time one streamed ingest request may take (a whole file at a few hundred MB/s).
pub const INGEST_REQUEST_TIMEOUT: Duration = Duration::from_secs(3600);

/// Permits for requests in flight.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl Default for InFlight {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_CONCURRENT_REQUESTS)))
    }
}

/// Middleware: refuses what is over a limit instead of queueing or reading it without bound.
pub async fn enforce(State(inflight): State<InFlight>, req: Request, next: Next) -> Response {
    let limit = body_limit(req.uri().path());
    let path_is_ingest = req.uri().path() == "/api/v1/ingest";
    let too_big = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit);
    if too_big {
        return ApiError::too_large(format!("request bodies are limited to {limit} bytes"))
            .into_response();
    }
    let Ok(_permit) = inflight.0.try_acquire() else {
        let mut resp = ApiError::not_ready(format!(
            "more than {MAX_CONCURRENT_REQUESTS} requests in flight; retry shortly"
        ))
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    };
    // Bodies without a length (chunked) are capped while read.
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit)));
    let timeout = if path_is_ingest {
        INGEST_REQUEST_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::not_ready(format!(
            "the request took longer than {timeout:?} and was abandoned"
        ))
        .into_response(),
    }
}

/// The body limit of a path: remote write batches are larger than REST bodies.
fn body_limit(path: &str) -> usize {
    match path {
        "/api/v1/write" => crate::remote_write::MAX_WRITE_BYTES,
        "/api/v1/ingest" => MAX_INGEST_BYTES,
        _ => MAX_BODY_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    fn app(inflight: InFlight) -> Router {
        Router::new()
            .route("/fast", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(REQUEST_TIMEOUT * 2).await;
                    "late"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(inflight, enforce))
    }

    fn get_req(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Body::empty())
            .unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn each_bound_has_its_answer() {
        let ok = app(InFlight::default()).oneshot(get_req("/fast")).await;
        assert_eq!(ok.map(|r| r.status()).ok(), Some(StatusCode::OK));

        let slow = app(InFlight::default()).oneshot(get_req("/slow")).await;
        assert_eq!(
            slow.map(|r| r.status()).ok(),
            Some(StatusCode::SERVICE_UNAVAILABLE)
        );

        let full = app(InFlight(Arc::new(Semaphore::new(0))))
            .oneshot(get_req("/fast"))
            .await
            .expect("answered");
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            full.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );

        let big = Request::builder()
            .method("POST")
            .uri("/fast")
            .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![0u8; MAX_BODY_BYTES + 1]))
            .unwrap_or_default();
        let big = app(InFlight::default())
            .oneshot(big)
            .await
            .expect("answered");
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
