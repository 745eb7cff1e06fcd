//! Query-string parsing that answers malformed input with a 400 JSON error.
//!
//! axum's `Query` extractor rejects with plain text and cannot collect repeated keys, so the
//! handlers parse the raw query here.

use chrono::{DateTime, SecondsFormat, Utc};
use telemetry_storage::Timestamp;

use crate::error::ApiError;

/// Largest `offset` of a listing (the document states it; a fleet has far fewer GPUs).
pub const MAX_OFFSET: usize = i32::MAX as usize;

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

    /// Every value of a repeated `key`, whole (a PromQL selector holds commas).
    pub fn repeated(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == key && !v.trim().is_empty())
            .map(|(_, v)| v.clone())
            .collect()
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
    let mut buf = [0u8; TIME_LEN];
    match format_time_into(ts, &mut buf) {
        Some(s) => s.to_string(),
        None => DateTime::<Utc>::from_timestamp_millis(ts)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_else(|| ts.to_string()),
    }
}

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub const TIME_LEN: usize = 24;

/// Writes `ts` as `YYYY-MM-DDTHH:MM:SS.mmmZ` into `buf` without allocating (the query path
/// formats every point); `None` outside years 0–9999, which [`format_time`] spells otherwise.
pub fn format_time_into(ts: Timestamp, buf: &mut [u8; TIME_LEN]) -> Option<&str> {
    let days = ts.div_euclid(86_400_000);
    let ms_of_day = ts.rem_euclid(86_400_000);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut put = |at: usize, v: i64, width: usize| {
        let mut v = v;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, ms_of_day / 3_600_000, 2);
    put(14, ms_of_day / 60_000 % 60, 2);
    put(17, ms_of_day / 1000 % 60, 2);
    put(20, ms_of_day % 1000, 3);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        buf[at] = c;
    }
    std::str::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The allocation-free formatter agrees with chrono wherever it answers.
        #[test]
        fn fast_time_format_matches_chrono(ts in -62_135_596_800_000i64..253_402_300_799_999) {
            let mut buf = [0u8; TIME_LEN];
            let want = DateTime::<Utc>::from_timestamp_millis(ts)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true));
            proptest::prop_assert_eq!(format_time_into(ts, &mut buf).map(String::from), want);
        }
    }

    #[test]
    fn a_repeated_selector_keeps_its_commas() {
        let p = Params::parse(Some(
            "match[]=a%7Bx%3D%221%22%2Cy%3D%222%22%7D&match[]=b&match[]=",
        ));
        assert_eq!(p.repeated("match[]"), vec![r#"a{x="1",y="2"}"#, "b"]);
        assert_eq!(p.all("match[]").len(), 3, "all() splits at commas");
    }

    #[test]
    fn edges() {
        let mut buf = [0u8; TIME_LEN];
        assert_eq!(
            format_time_into(0, &mut buf),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            format_time_into(-1, &mut buf),
            Some("1969-12-31T23:59:59.999Z")
        );
        assert_eq!(
            format_time_into(951_782_400_000, &mut buf),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(format_time_into(i64::MAX, &mut buf), None);
        assert_eq!(format_time(i64::MIN), i64::MIN.to_string());
    }
}
