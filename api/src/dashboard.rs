//! The dashboard at `/`: static files embedded in the binary (no CDN at run time), with uPlot
//! vendored under `assets/vendor/`. They hold no data: every number on the page comes from the
//! REST API, with the token the user enters.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../assets/index.html");

/// The embedded files under `/assets/`: (path, content type, bytes).
const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.iife.min.js"),
    ),
    (
        "vendor/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/vendor/uPlot.min.css"),
    ),
];

/// `GET /`: the page.
pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

/// `GET /assets/{*path}`: a script or stylesheet of the page.
pub async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            *bytes,
        )
            .into_response(),
        None => crate::error::ApiError::not_found("no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_references_only_embedded_assets() {
        for src in super::INDEX.split("\"/assets/").skip(1) {
            let path = src.split('"').next().unwrap_or_default();
            assert!(
                super::ASSETS.iter().any(|(p, _, _)| *p == path),
                "{path} is not embedded"
            );
        }
    }
}
