//! Bearer-token check on `/api/v1`; health, readiness and the API docs stay open.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; the content comparison must not stop at the first difference.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    let body = serde_json::json!({"error": {"code": "unauthorized", "message": "missing or wrong bearer token"}});
    let mut resp = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"telemetry\""),
    );
    resp
}

/// Wraps the router with the token check when a token is configured.
pub fn layer(router: Router, token: Option<String>) -> Router {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return router;
    };
    let token: Arc<str> = token.into();
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let token = token.clone();
        async move {
            if !req.uri().path().starts_with("/api/") {
                return next.run(req).await;
            }
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match presented {
                Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => next.run(req).await,
                _ => unauthorized(),
            }
        }
    }))
}
