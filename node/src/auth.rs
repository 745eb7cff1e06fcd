//! Bearer tokens on the REST API.
//!
//! Two optional tokens: the API token lets a client read; the admin token lets it read and also
//! change the cluster (every method other than GET/HEAD/OPTIONS, e.g. decommissioning). Without
//! an admin token the API token allows both. Everything is guarded except the API's description
//! (`/openapi.json`, `/docs`) and the configured open paths (by default `/healthz`, `/readyz`,
//! `/metrics`, which probes and Prometheus scrape without credentials). A missing or wrong token
//! is 401 with `WWW-Authenticate`; the API token on a change is 403.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

/// Paths open without a token unless `--open-paths` says otherwise.
pub const DEFAULT_OPEN_PATHS: &str = "/healthz,/readyz,/metrics";
/// Longest token accepted from a file (a Kubernetes Secret holds a line, not a document).
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;
/// Paths that describe the API or hold the dashboard's static files, no data: never guarded.
const DESCRIPTION_PREFIXES: [&str; 3] = ["/openapi.json", "/docs", "/assets/"];

/// A token: compared in constant time, never printed.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The token given inline or in a file (one of them), if any; an empty one is refused.
    pub fn resolve(
        inline: Option<&str>,
        file: Option<&Path>,
        flag: &str,
    ) -> anyhow::Result<Option<Self>> {
        let value = match (inline, file) {
            (Some(_), Some(_)) => bail!("--{flag} and --{flag}-file are mutually exclusive"),
            (Some(v), None) => v.to_string(),
            (None, Some(path)) => read_token_file(path, flag)?,
            (None, None) => return Ok(None),
        };
        if value.is_empty() {
            bail!("--{flag} is empty: give a token or leave the flag out");
        }
        Ok(Some(Self(value.into())))
    }

    fn matches(&self, presented: &str) -> bool {
        constant_time_eq(presented.as_bytes(), self.0.as_bytes())
    }

    /// The token itself, for a client that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn read_token_file(path: &Path, flag: &str) -> anyhow::Result<String> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("--{flag}-file {}", path.display()))?
        .len();
    if len > MAX_TOKEN_FILE_BYTES {
        bail!(
            "--{flag}-file {}: {len} bytes, more than the {MAX_TOKEN_FILE_BYTES} a token may have",
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--{flag}-file {}", path.display()))?;
    // Secrets mounted from files usually end with a newline that is not part of the token.
    Ok(text.trim().to_string())
}

/// Who may do what.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Token that allows reads (and changes, when there is no admin token).
    pub api: Option<Secret>,
    /// Token that allows changes as well as reads.
    pub admin: Option<Secret>,
    /// Exact paths served without a token.
    pub open_paths: Vec<String>,
}

enum Verdict {
    Allow,
    Unauthorized,
    Forbidden,
}

impl AuthConfig {
    fn enabled(&self) -> bool {
        self.api.is_some() || self.admin.is_some()
    }

    fn judge(&self, method: &Method, path: &str, presented: Option<&str>) -> Verdict {
        if self.open_paths.iter().any(|p| p == path)
            || path == "/"
            || DESCRIPTION_PREFIXES.iter().any(|p| path.starts_with(p))
        {
            return Verdict::Allow;
        }
        let changes = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let is = |s: &Option<Secret>| matches!((s, presented), (Some(s), Some(p)) if s.matches(p));
        if is(&self.admin) {
            return Verdict::Allow;
        }
        if changes && self.admin.is_some() {
            return if is(&self.api) {
                Verdict::Forbidden
            } else {
                Verdict::Unauthorized
            };
        }
        // Reads, or changes where the API token is the only one: an admin-only node reads openly.
        if is(&self.api) || (self.api.is_none() && !changes) {
            Verdict::Allow
        } else {
            Verdict::Unauthorized
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Length is not secret; the content comparison must not stop at the first difference.
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut resp = (status, Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"telemetry\""),
        );
    }
    resp
}

/// Wraps the router with the token check when a token is configured.
pub fn layer(router: Router, auth: AuthConfig) -> Router {
    if !auth.enabled() {
        return router;
    }
    let auth = Arc::new(auth);
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let auth = auth.clone();
        async move {
            let presented = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match auth.judge(req.method(), req.uri().path(), presented) {
                Verdict::Allow => next.run(req).await,
                Verdict::Unauthorized => refusal(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "missing or wrong bearer token",
                ),
                Verdict::Forbidden => refusal(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this token may read but not change the cluster; use the admin token",
                ),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Option<Secret> {
        Some(Secret(s.into()))
    }

    #[test]
    fn verdicts() {
        let open = vec!["/healthz".to_string()];
        let both = AuthConfig {
            api: secret("r"),
            admin: secret("w"),
            open_paths: open.clone(),
        };
        let api_only = AuthConfig {
            api: secret("r"),
            admin: None,
            open_paths: open.clone(),
        };
        let admin_only = AuthConfig {
            api: None,
            admin: secret("w"),
            open_paths: open,
        };
        let (get, post) = (Method::GET, Method::POST);
        let cases: &[(&AuthConfig, &Method, &str, Option<&str>, &str)] = &[
            (&both, &get, "/api/v1/gpus", None, "401"),
            (&both, &get, "/api/v1/gpus", Some("x"), "401"),
            (&both, &get, "/api/v1/gpus", Some("r"), "ok"),
            (&both, &get, "/api/v1/gpus", Some("w"), "ok"),
            (&both, &post, "/api/v1/x", Some("r"), "403"),
            (&both, &post, "/api/v1/x", Some("w"), "ok"),
            (&both, &post, "/api/v1/x", None, "401"),
            (&both, &get, "/healthz", None, "ok"),
            (&both, &get, "/readyz", None, "401"),
            (&both, &get, "/metrics", None, "401"),
            (&both, &get, "/openapi.json", None, "ok"),
            (&both, &get, "/docs/", None, "ok"),
            (&both, &get, "/", None, "ok"),
            (&both, &get, "/assets/app.js", None, "ok"),
            (&both, &get, "/api/v1/latest", None, "401"),
            (&api_only, &post, "/api/v1/x", Some("r"), "ok"),
            (&api_only, &post, "/api/v1/x", Some("w"), "401"),
            (&admin_only, &get, "/api/v1/gpus", None, "ok"),
            (&admin_only, &post, "/api/v1/x", None, "401"),
            (&admin_only, &post, "/api/v1/x", Some("w"), "ok"),
        ];
        for (i, (cfg, m, path, tok, want)) in cases.iter().enumerate() {
            let got = match cfg.judge(m, path, *tok) {
                Verdict::Allow => "ok",
                Verdict::Unauthorized => "401",
                Verdict::Forbidden => "403",
            };
            assert_eq!(got, *want, "case {i}: {m} {path} {tok:?}");
        }
    }

    #[test]
    fn token_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("t");
        std::fs::write(&f, "abc\n").expect("write");
        let s = Secret::resolve(None, Some(&f), "api-token")
            .expect("ok")
            .expect("some");
        assert_eq!(s.expose(), "abc");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        std::fs::write(&f, "\n").expect("write");
        assert!(Secret::resolve(None, Some(&f), "api-token").is_err());
        assert!(Secret::resolve(Some("a"), Some(&f), "api-token").is_err());
        std::fs::write(&f, vec![b'a'; 5000]).expect("write");
        assert!(Secret::resolve(None, Some(&f), "api-token").is_err());
        assert!(Secret::resolve(None, Some(&dir.path().join("missing")), "x").is_err());
        assert!(Secret::resolve(None, None, "x").expect("ok").is_none());
    }
}
