//! A live source: dcgm-exporter `/metrics` endpoints (Prometheus text format) scraped every
//! `--scrape-interval`, their `DCGM_FI_*` samples streamed like CSV rows. The labels dcgm-exporter
//! puts on each sample (the CSV's `labels_raw`) give the GPU: `UUID`, `gpu`, `device`,
//! `modelName`, `Hostname`, and `container`/`pod`/`namespace` when set. Each scrape of a URL gets
//! one timestamp (the exporter's own if it sends one), increasing per URL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use telemetry_storage::{GpuInfo, Timestamp, MAX_NAME_BYTES};

use super::source::{now_ms, Batcher, SourceConfig};
use crate::routing::partition_of;
use crate::stats::PipelineStats;

/// Largest `/metrics` answer read; a larger one is refused (and logged) for that scrape.
pub const MAX_SCRAPE_BYTES: usize = 16 << 20;
/// Longest one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Metric-name prefix of the samples taken (dcgm-exporter's fields).
const DCGM_PREFIX: &str = "DCGM_FI_";

/// One DCGM sample of a scrape: its GPU, metric, value and the exporter's own time, if given.
pub type ScrapedSample = (GpuInfo, String, f64, Option<Timestamp>);

/// Turns one `/metrics` text into a sample per DCGM series, and how many DCGM samples were
/// unusable.
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
        let label = |k: &str| s.labels.get(k).map(str::to_string);
        let opt = |k: &str| label(k).filter(|v| !v.is_empty());
        let Some(uuid) = opt("UUID") else {
            rejected += 1;
            continue;
        };
        if uuid.len() > MAX_NAME_BYTES || s.metric.len() > MAX_NAME_BYTES {
            rejected += 1;
            continue;
        }
        let gpu = GpuInfo {
            uuid,
            hostname: label("Hostname").unwrap_or_default(),
            gpu_index: label("gpu").and_then(|g| g.parse().ok()).unwrap_or(0),
            device: label("device").unwrap_or_default(),
            model: label("modelName").unwrap_or_default(),
            container: opt("container"),
            pod: opt("pod"),
            namespace: opt("namespace"),
        };
        // parse_at stamps samples without their own time at the epoch.
        let ts = s.timestamp.timestamp_millis();
        rows.push((gpu, s.metric, value, (ts != 0).then_some(ts)));
    }
    (rows, rejected)
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let mut resp = client
        .get(url)
        .timeout(SCRAPE_TIMEOUT)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_SCRAPE_BYTES {
            return Err(format!("answer over {MAX_SCRAPE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "answer is not UTF-8".to_string())
}

/// Scrapes every URL each interval until `stop`; batches go out through `batcher`.
pub(super) fn run(
    cfg: &SourceConfig,
    batcher: &mut Batcher,
    stop: &AtomicBool,
    stats: &Arc<PipelineStats>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "scrape runtime did not start");
            return;
        }
    };
    let client = reqwest::Client::new();
    let (shard, shards) = cfg.shard;
    let mut last: Vec<Timestamp> = vec![i64::MIN; cfg.scrape.len()];
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        for (i, url) in cfg.scrape.iter().enumerate() {
            let text = match rt.block_on(fetch(&client, url)) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(%url, error = %e, "scrape failed; next try at the next interval");
                    continue;
                }
            };
            let (rows, rejected) = parse_exposition(&text);
            let stamp = now_ms().max(last[i].saturating_add(1));
            last[i] = stamp;
            if shard == 0 {
                for _ in 0..rejected {
                    stats.reject_row("bad_scrape_sample");
                }
            }
            for (gpu, metric, value, ts) in rows {
                let partition = partition_of(&gpu.uuid, cfg.partitions);
                if partition % shards.max(1) != shard {
                    continue;
                }
                stats.rows_read.inc();
                let Some(b) = batcher.builders.get_mut(partition as usize) else {
                    continue;
                };
                b.push(&gpu, &metric, ts.unwrap_or(stamp), value);
                stats.samples_streamed.inc();
                if b.len() >= super::source::BATCH_MAX_SAMPLES && !batcher.emit(partition) {
                    return;
                }
            }
            if !batcher.emit_all() {
                return;
            }
        }
        // Sleep out the interval in short steps so a stop is noticed.
        while started.elapsed() < cfg.scrape_interval && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(cfg.scrape_interval));
        }
    }
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
