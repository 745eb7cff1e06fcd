//! Query-string parsing that answers malformed input with a 400 JSON error.
//!
//! axum's `Query` extractor rejects with plain text and cannot collect repeated keys, so the
//! handlers parse the raw query here.

use chrono::{DateTime, SecondsFormat, Utc};
use telemetry_storage::Timestamp;

use crate::error::ApiError;

/// Decoded query parameters, in order.
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses a raw query string (absent = empty).
    pub fn parse(raw: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(raw.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    /// The last value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeatable `key`; comma-separated values are split too.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// An unsigned integer in `1..=max`, or `default` when absent.
    pub fn bounded(
        &self,
        key: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be an integer from {min} to {max}, got {v:?}"
                ))),
            },
        }
    }

    /// An RFC 3339 time, or `None` when absent.
    pub fn time(&self, key: &str) -> Result<Option<Timestamp>, ApiError> {
        self.get(key)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| ApiError::bad_request(format!("{key} must be an RFC 3339 time (e.g. 2025-07-18T20:42:34Z), got {v:?}: {e}")))
            })
            .transpose()
    }
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds.
pub fn format_time(ts: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| ts.to_string())
}
