//! dcgm-exporter's `/metrics` text (the Prometheus exposition format) → one sample per
//! `DCGM_FI_*` series, its GPU read from the labels ([`super::labels`]).

use telemetry_storage::{GpuInfo, Timestamp, MAX_NAME_BYTES};

use super::labels::gpu_from_labels;

/// Metric-name prefix of the samples taken (dcgm-exporter's fields).
pub const DCGM_PREFIX: &str = "DCGM_FI_";

/// One DCGM sample of a scrape: its GPU, metric, value and the exporter's own time, if given.
pub type ScrapedSample = (GpuInfo, String, f64, Option<Timestamp>);

/// Turns one `/metrics` text into a sample per DCGM series, and how many DCGM samples were
/// unusable (no UUID, a name over the limit, a histogram or summary).
pub fn parse_exposition(text: &str) -> (Vec<ScrapedSample>, u64) {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let Ok(scrape) = prometheus_parse::Scrape::parse_at(lines, chrono::DateTime::UNIX_EPOCH) else {
        return (Vec::new(), 0);
    };
    let mut rows = Vec::new();
    let mut rejected = 0;
    for s in scrape.samples {
        if !s.metric.starts_with(DCGM_PREFIX) {
            continue;
        }
        let value = match s.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => {
                rejected += 1;
                continue;
            }
        };
        let gpu = match gpu_from_labels(|k| s.labels.get(k)) {
            Ok(gpu) if s.metric.len() <= MAX_NAME_BYTES => gpu,
            _ => {
                rejected += 1;
                continue;
            }
        };
        // parse_at stamps samples without their own time at the epoch.
        let ts = s.timestamp.timestamp_millis();
        rows.push((gpu, s.metric, value, (ts != 0).then_some(ts)));
    }
    (rows, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_samples_become_rows() {
        let text = "# HELP DCGM_FI_DEV_GPU_TEMP GPU temperature (in C).\n\
            # TYPE DCGM_FI_DEV_GPU_TEMP gauge\n\
            DCGM_FI_DEV_GPU_TEMP{gpu=\"3\",UUID=\"GPU-a\",device=\"nvidia3\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"host-1\",container=\"\",pod=\"p\",namespace=\"ns\"} 61\n\
            DCGM_FI_DEV_POWER_USAGE{gpu=\"3\",UUID=\"GPU-a\",device=\"nvidia3\",Hostname=\"host-1\"} 512.25 1752871354000\n\
            DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",device=\"nvidia0\"} 5\n\
            go_goroutines 12\n";
        let (rows, rejected) = parse_exposition(text);
        assert_eq!(rejected, 1, "the sample without a UUID");
        assert_eq!(rows.len(), 2);
        let (gpu, metric, value, ts) = &rows[0];
        assert_eq!(
            (gpu.uuid.as_str(), gpu.gpu_index, gpu.hostname.as_str()),
            ("GPU-a", 3, "host-1")
        );
        assert_eq!(gpu.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(
            (gpu.container.as_deref(), gpu.pod.as_deref()),
            (None, Some("p"))
        );
        assert_eq!(
            (metric.as_str(), *value, *ts),
            ("DCGM_FI_DEV_GPU_TEMP", 61.0, None)
        );
        assert_eq!(rows[1].3, Some(1_752_871_354_000));
        assert_eq!(parse_exposition("garbage { 1").0.len(), 0);
    }
}
