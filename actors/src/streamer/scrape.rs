//! A live source: dcgm-exporter `/metrics` endpoints scraped every interval, their `DCGM_FI_*`
//! samples ([`crate::dcgm::exposition`]) streamed like CSV rows. Each scrape of a URL gets one
//! timestamp (the exporter's own if it sends one), increasing per URL.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use telemetry_storage::Timestamp;

use super::source::{now_ms, Batcher, Source, STOP_CHECK};
use crate::dcgm::parse_exposition;

/// Largest `/metrics` answer read; a larger one is refused (and logged) for that scrape.
pub const MAX_SCRAPE_BYTES: usize = 16 << 20;
/// Longest one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The `job` label of scraped GPUs, as a Prometheus scrape job for dcgm-exporter is commonly
/// named; `instance` is the scraped URL's `host:port`, as Prometheus sets it.
pub const SCRAPE_JOB: &str = "dcgm-exporter";
/// Time between two scrapes of a URL unless configured (dcgm-exporter's own default
/// collection interval is 30 s; 10 s keeps dashboards fresh).
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(10);

/// What a scrape source reads.
#[derive(Debug, Clone)]
pub struct ScrapeConfig {
    /// dcgm-exporter `/metrics` URLs.
    pub urls: Vec<String>,
    /// Time between two scrapes of a URL.
    pub interval: Duration,
}

/// Scrapes [`ScrapeConfig::urls`].
pub(super) struct Scraper {
    cfg: ScrapeConfig,
    /// The last stamp given per URL.
    last: Vec<Timestamp>,
}

impl Scraper {
    pub(super) fn new(cfg: ScrapeConfig) -> Self {
        let last = vec![i64::MIN; cfg.urls.len()];
        Self { cfg, last }
    }

    /// One scrape of URL `i`; false once the actor is gone.
    fn scrape(
        &mut self,
        rt: &tokio::runtime::Runtime,
        client: &reqwest::Client,
        i: usize,
        out: &mut Batcher,
    ) -> bool {
        let url = &self.cfg.urls[i];
        let text = match rt.block_on(fetch(client, url)) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(%url, error = %e, "scrape failed; next try at the next interval");
                return true;
            }
        };
        let (rows, rejected) = parse_exposition(&text);
        let stamp = now_ms().max(self.last[i].saturating_add(1));
        self.last[i] = stamp;
        if out.counts_rejects() {
            for _ in 0..rejected {
                out.stats.reject_row("bad_scrape_sample");
            }
        }
        let instance = instance_of(url);
        for (mut gpu, metric, value, ts) in rows {
            if !out.handles(&gpu.uuid) {
                continue;
            }
            if gpu.instance.is_none() {
                gpu.instance.clone_from(&instance);
            }
            if gpu.job.is_none() {
                gpu.job = Some(SCRAPE_JOB.to_string());
            }
            out.stats.rows_read.inc();
            if !out.push(&gpu, &metric, ts.unwrap_or(stamp), value) {
                return false;
            }
        }
        out.emit_all()
    }
}

/// `host:port` of a URL (the scheme's port when it names none), as Prometheus' `instance`.
fn instance_of(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?))
}

impl Source for Scraper {
    fn run(&mut self, out: &mut Batcher, stop: &AtomicBool) {
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
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            for i in 0..self.cfg.urls.len() {
                if !self.scrape(&rt, &client, i, out) {
                    return;
                }
            }
            // Sleep out the interval in short steps so a stop is noticed.
            while started.elapsed() < self.cfg.interval && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(STOP_CHECK.min(self.cfg.interval));
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_is_the_targets_host_and_port() {
        assert_eq!(
            instance_of("http://10.0.0.1:9400/metrics").as_deref(),
            Some("10.0.0.1:9400")
        );
        assert_eq!(
            instance_of("https://gpu-node-3/metrics").as_deref(),
            Some("gpu-node-3:443")
        );
        assert_eq!(instance_of("not a url"), None);
    }
}
