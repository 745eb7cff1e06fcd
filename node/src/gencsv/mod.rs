//! `telemetry-node gen-csv`: a synthetic DCGM CSV whose values move like real ones.
//!
//! Each GPU runs a workload that switches between idle and busy phases; utilisation walks within
//! the phase (integers 0–100), temperature and power follow utilisation with lag and noise
//! (integers, and watts with 3 decimals), clocks jump between idle and boost levels, framebuffer
//! use is MiB that grows and shrinks with the job. Rows are grouped by scrape time, then metric,
//! host and GPU, like the exporter's own dumps. Deterministic for a given `--seed`.
//!
//! With `--workloads`, GPUs run jobs instead ([`jobs`]): each a pod in a namespace on several
//! GPUs of a host, busy while it runs, with idle gaps between jobs; the rows carry the pod's
//! `container`, `pod` and `namespace` as dcgm-exporter's Kubernetes mapping does.

mod jobs;

pub use jobs::{Job, Jobs};

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The ten DCGM fields the exporter dumps, in its order.
pub const METRICS: [&str; 10] = [
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_MEM_COPY_UTIL",
    "DCGM_FI_DEV_ENC_UTIL",
    "DCGM_FI_DEV_DEC_UTIL",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_SM_CLOCK",
    "DCGM_FI_DEV_MEM_CLOCK",
];

const HEADER: &str =
    "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw";
const MODEL: &str = "NVIDIA H100 80GB HBM3";
const FB_TOTAL_MIB: i64 = 81_559;

/// Options of `gen-csv`.
#[derive(Debug, Clone, Args)]
pub struct GenCsvArgs {
    /// Hosts (8 GPUs each by default).
    #[arg(long, default_value_t = 4)]
    pub hosts: u32,
    /// GPUs per host.
    #[arg(long, default_value_t = 8)]
    pub gpus_per_host: u32,
    /// Scrapes (one row per GPU and metric each).
    #[arg(long, default_value_t = 60)]
    pub scrapes: u32,
    /// Target row count instead of `--scrapes` (rounded up to whole scrapes).
    #[arg(long)]
    pub rows: Option<u64>,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 1)]
    pub interval_secs: u32,
    /// Time of the first scrape (RFC 3339).
    #[arg(long, default_value = "2025-07-18T20:42:34Z")]
    pub start: String,
    /// Random seed; the same seed gives the same file.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output file; standard output when absent.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// GPUs run jobs (pods in namespaces) that start, run on several GPUs, finish, and leave
    /// idle gaps; rows carry their container, pod and namespace.
    #[arg(long)]
    pub workloads: bool,
    /// Mean job length with `--workloads` (seconds).
    #[arg(long, default_value_t = 600)]
    pub job_secs: u32,
    /// Mean idle gap after a job with `--workloads` (seconds).
    #[arg(long, default_value_t = 60)]
    pub idle_secs: u32,
}

struct Gpu {
    host: String,
    index: u32,
    uuid: String,
    busy: bool,
    util: f64,
    temp: f64,
    fb_used: i64,
}

impl Gpu {
    /// One scrape on; `busy` is the job schedule's word when workloads run.
    fn step(&mut self, rng: &mut StdRng, busy: Option<bool>) {
        match busy {
            Some(b) => self.busy = b,
            None if rng.random_bool(if self.busy { 0.01 } else { 0.02 }) => self.busy = !self.busy,
            None => {}
        }
        let target = if self.busy { 96.0 } else { 0.0 };
        self.util += (target - self.util) * 0.5 + rng.random_range(-3.0..3.0);
        self.util = self.util.clamp(0.0, 100.0);
        let temp_target = 28.0 + self.util * 0.38;
        self.temp += (temp_target - self.temp) * 0.2 + rng.random_range(-0.6..0.6);
        let fb_target = if self.busy { 74_000 } else { 4 };
        self.fb_used += (fb_target - self.fb_used) / 3 + rng.random_range(-40..40);
        self.fb_used = self.fb_used.clamp(0, FB_TOTAL_MIB - 500);
    }

    fn value(&self, metric: &str, rng: &mut StdRng) -> String {
        let util = self.util.round() as i64;
        match metric {
            "DCGM_FI_DEV_GPU_UTIL" => util.to_string(),
            "DCGM_FI_DEV_MEM_COPY_UTIL" => ((self.util * 0.78).round() as i64).to_string(),
            "DCGM_FI_DEV_ENC_UTIL" => "0".into(),
            "DCGM_FI_DEV_DEC_UTIL" => (if self.busy && rng.random_bool(0.05) {
                3
            } else {
                0
            })
            .to_string(),
            "DCGM_FI_DEV_FB_FREE" => (FB_TOTAL_MIB - 555 - self.fb_used).to_string(),
            "DCGM_FI_DEV_FB_USED" => self.fb_used.to_string(),
            "DCGM_FI_DEV_GPU_TEMP" => (self.temp.round() as i64).to_string(),
            "DCGM_FI_DEV_POWER_USAGE" => {
                let w = 68.0 + self.util * 2.9 + rng.random_range(-4.0..4.0);
                format!("{w:.3}")
            }
            "DCGM_FI_DEV_SM_CLOCK" => (if self.util > 5.0 { 1980 } else { 345 }).to_string(),
            _ => "2619".into(),
        }
    }
}

fn uuid(rng: &mut StdRng) -> String {
    let b: [u8; 16] = rng.random();
    let h: String = b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    });
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// One generated row, before it is formatted as CSV.
#[derive(Debug, Clone, Copy)]
pub struct GenRow<'a> {
    /// Scrape time, milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// Scrape time as written in the CSV (RFC 3339).
    pub timestamp: &'a str,
    /// DCGM field name.
    pub metric: &'a str,
    /// Host name.
    pub host: &'a str,
    /// GPU index inside the host.
    pub gpu_index: u32,
    /// GPU UUID.
    pub uuid: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Value as DCGM prints it.
    pub value: &'a str,
    /// The pod the GPU runs, with `--workloads`.
    pub job: Option<&'a Job>,
}

/// Calls `f` for every row the options describe, in file order; returns the row count.
pub fn for_each_row(
    args: &GenCsvArgs,
    mut f: impl FnMut(GenRow<'_>) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let start: DateTime<Utc> = DateTime::parse_from_rfc3339(&args.start)
        .with_context(|| format!("--start {:?} is not RFC 3339", args.start))?
        .with_timezone(&Utc);
    let per_scrape = u64::from(args.hosts) * u64::from(args.gpus_per_host) * METRICS.len() as u64;
    let scrapes = match args.rows {
        Some(rows) if per_scrape > 0 => rows.div_ceil(per_scrape),
        _ => u64::from(args.scrapes),
    };
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut gpus: Vec<Gpu> = Vec::new();
    for h in 0..args.hosts {
        for i in 0..args.gpus_per_host {
            let busy = rng.random_bool(0.6);
            gpus.push(Gpu {
                host: format!("gen-dgx-h100-{h:03}"),
                index: i,
                uuid: uuid(&mut rng),
                busy,
                util: if busy { 95.0 } else { 0.0 },
                temp: if busy { 60.0 } else { 30.0 },
                fb_used: if busy { 74_000 } else { 4 },
            });
        }
    }
    let interval = u64::from(args.interval_secs.max(1));
    let mut jobs = args.workloads.then(|| {
        Jobs::new(
            gpus.len(),
            args.gpus_per_host as usize,
            u64::from(args.job_secs) / interval,
            u64::from(args.idle_secs) / interval,
        )
    });
    let mut rows = 0u64;
    for s in 0..scrapes {
        let at = start + chrono::Duration::seconds(s as i64 * i64::from(args.interval_secs));
        let ts = at.to_rfc3339_opts(SecondsFormat::Secs, true);
        if let Some(j) = jobs.as_mut() {
            j.step(s, &mut rng);
        }
        for (i, g) in gpus.iter_mut().enumerate() {
            let busy = jobs.as_ref().map(|j| j.of(i).is_some());
            g.step(&mut rng, busy);
        }
        for metric in METRICS {
            for (i, g) in gpus.iter().enumerate() {
                let value = g.value(metric, &mut rng);
                f(GenRow {
                    timestamp_ms: at.timestamp_millis(),
                    timestamp: &ts,
                    metric,
                    host: &g.host,
                    gpu_index: g.index,
                    uuid: &g.uuid,
                    model: MODEL,
                    value: &value,
                    job: jobs.as_ref().and_then(|j| j.of(i)),
                })?;
                rows += 1;
            }
        }
    }
    Ok(rows)
}

/// Writes the CSV to `out`.
pub fn generate(args: &GenCsvArgs, out: &mut impl Write) -> anyhow::Result<u64> {
    writeln!(out, "{HEADER}")?;
    let mut line = String::with_capacity(512);
    let rows = for_each_row(args, |r| {
        line.clear();
        let _ = write!(
            line,
            "\"{ts}\",\"{metric}\",\"{idx}\",\"nvidia{idx}\",\"{uuid}\",\"{model}\",\"{host}\",\"{container}\",\"{pod}\",\"{namespace}\",\"{value}\",\
             \"DCGM_FI_DRIVER_VERSION=\"\"535.129.03\"\",Hostname=\"\"{host}\"\",UUID=\"\"{uuid}\"\",__name__=\"\"{metric}\"\",\
             device=\"\"nvidia{idx}\"\",gpu=\"\"{idx}\"\",instance=\"\"{host}:9400\"\",job=\"\"dgx_dcgm_exporter\"\",modelName=\"\"{model}\"\"\"",
            ts = r.timestamp,
            metric = r.metric,
            idx = r.gpu_index,
            uuid = r.uuid,
            model = r.model,
            host = r.host,
            value = r.value,
            container = r.job.map_or("", |j| j.container),
            pod = r.job.map_or("", |j| j.pod.as_str()),
            namespace = r.job.map_or("", |j| j.namespace),
        );
        writeln!(out, "{line}")?;
        Ok(())
    })?;
    out.flush()?;
    Ok(rows)
}

/// Runs the subcommand.
pub fn run(args: &GenCsvArgs) -> anyhow::Result<()> {
    let rows = match &args.output {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            generate(args, &mut BufWriter::with_capacity(1 << 20, f))?
        }
        None => generate(args, &mut BufWriter::new(std::io::stdout().lock()))?,
    };
    eprintln!("gen-csv: wrote {rows} rows");
    Ok(())
}

/// The options that produced the embedded sample (`node/sample/dcgm_sample.csv`).
pub fn sample_args() -> GenCsvArgs {
    GenCsvArgs {
        hosts: 2,
        gpus_per_host: 8,
        scrapes: 10,
        rows: None,
        interval_secs: 1,
        start: "2025-07-18T20:42:34Z".into(),
        seed: 7,
        output: None,
        workloads: false,
        job_secs: 600,
        idle_secs: 60,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_sample_is_the_generators_output() {
        let mut out = Vec::new();
        generate(&sample_args(), &mut out).expect("generate");
        assert!(
            out == crate::EMBEDDED_SAMPLE,
            "node/sample/dcgm_sample.csv is stale: regenerate it with \
             `telemetry-node gen-csv --hosts 2 --scrapes 10 --seed 7 -o node/sample/dcgm_sample.csv`"
        );
    }

    #[test]
    fn values_look_like_dcgm() {
        let args = GenCsvArgs {
            rows: Some(3200),
            ..sample_args()
        };
        let mut out = Vec::new();
        assert_eq!(generate(&args, &mut out).expect("generate"), 3200);
        let mut rdr = csv::Reader::from_reader(out.as_slice());
        let mut uuids = std::collections::HashSet::new();
        for rec in rdr.records() {
            let rec = rec.expect("valid csv");
            let (metric, value) = (&rec[1], &rec[10]);
            uuids.insert(rec[4].to_string());
            let v: f64 = value.parse().expect("number");
            match metric {
                "DCGM_FI_DEV_GPU_UTIL" => {
                    assert!((0.0..=100.0).contains(&v) && !value.contains('.'))
                }
                "DCGM_FI_DEV_POWER_USAGE" => {
                    assert_eq!(value.split('.').nth(1).map(str::len), Some(3))
                }
                "DCGM_FI_DEV_FB_USED" | "DCGM_FI_DEV_FB_FREE" => {
                    assert!((0.0..81_559.0).contains(&v))
                }
                _ => assert!(!value.contains('.'), "{metric} {value}"),
            }
        }
        assert_eq!(uuids.len(), 16);
    }
}
