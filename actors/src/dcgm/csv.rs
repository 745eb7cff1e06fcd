//! Parsing DCGM exporter CSV: header validation and one row at a time, never panicking.

use rustc_hash::FxHashMap;
use std::io::Read;

use chrono::DateTime;
use telemetry_storage::{GpuInfo, Timestamp, MAX_NAME_BYTES};

use super::lines::LineLimit;

/// Finds the exporter's `hpc_job` label in a row's `labels_raw`.
static HPC_JOB: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new("hpc_job=\""));

/// Columns a DCGM CSV must have; a file without any of them is refused at start-up.
pub const REQUIRED_COLUMNS: [&str; 8] = [
    "timestamp",
    "metric_name",
    "gpu_id",
    "device",
    "uuid",
    "modelName",
    "Hostname",
    "value",
];

/// Why a header is not a DCGM CSV header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first record could not be read.
    #[error("unreadable header: {0}")]
    Unreadable(String),
    /// Required columns are missing (all of them named).
    #[error("not a DCGM CSV: missing column(s) {}", .0.join(", "))]
    Missing(Vec<&'static str>),
}

/// Column positions of one file.
#[derive(Debug, Clone)]
pub struct Columns {
    timestamp: usize,
    metric: usize,
    gpu_id: usize,
    device: usize,
    uuid: usize,
    model: usize,
    hostname: usize,
    value: usize,
    container: Option<usize>,
    pod: Option<usize>,
    namespace: Option<usize>,
    hpc_job: Option<usize>,
    labels_raw: Option<usize>,
    count: usize,
}

impl Columns {
    /// Locates the DCGM columns in a header, or names every missing one.
    pub fn from_header(header: &csv::StringRecord) -> Result<Self, HeaderError> {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let found = REQUIRED_COLUMNS.map(find);
        let missing: Vec<&'static str> = REQUIRED_COLUMNS
            .iter()
            .zip(&found)
            .filter(|(_, at)| at.is_none())
            .map(|(c, _)| *c)
            .collect();
        // In REQUIRED_COLUMNS' order; all present once nothing is missing.
        let [Some(timestamp), Some(metric), Some(gpu_id), Some(device), Some(uuid), Some(model), Some(hostname), Some(value)] =
            found
        else {
            return Err(HeaderError::Missing(missing));
        };
        Ok(Self {
            timestamp,
            metric,
            gpu_id,
            device,
            uuid,
            model,
            hostname,
            value,
            container: find("container"),
            pod: find("pod"),
            namespace: find("namespace"),
            hpc_job: find("hpc_job"),
            labels_raw: find("labels_raw"),
            count: header.len(),
        })
    }
}

/// One parsed row; borrowed from the record it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Row<'a> {
    /// The CSV's own timestamp column, verbatim (used to group a scrape).
    pub csv_timestamp: &'a str,
    /// Metric name.
    pub metric: &'a str,
    /// GPU UUID.
    pub uuid: &'a str,
    /// Value.
    pub value: f64,
}

/// Why a row was skipped; the label is what the rejected-rows counter is keyed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// Short reason label (`bad_value`, `missing_uuid`, …).
    pub reason: &'static str,
    /// Human-readable detail.
    pub detail: String,
}

fn reject(reason: &'static str, detail: impl Into<String>) -> RowError {
    RowError {
        reason,
        detail: detail.into(),
    }
}

fn opt(rec: &csv::StringRecord, col: Option<usize>) -> Option<String> {
    col.and_then(|c| rec.get(c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// Parses rows of one file, caching GPU attributes so an unchanged GPU costs no allocation.
#[derive(Debug)]
pub struct RowParser {
    cols: Columns,
    gpus: FxHashMap<String, GpuInfo>,
}

impl RowParser {
    /// A parser for a file with these columns.
    pub fn new(cols: Columns) -> Self {
        Self {
            cols,
            gpus: FxHashMap::default(),
        }
    }

    /// Parses one record into a row and its GPU's attributes.
    pub fn parse<'r>(
        &mut self,
        rec: &'r csv::StringRecord,
    ) -> Result<(Row<'r>, &GpuInfo), RowError> {
        let c = &self.cols;
        if rec.len() != c.count {
            return Err(reject(
                "wrong_column_count",
                format!("{} columns, header has {}", rec.len(), c.count),
            ));
        }
        let field = |i: usize| rec.get(i).map(str::trim).unwrap_or("");
        let uuid = field(c.uuid);
        if uuid.is_empty() {
            return Err(reject("missing_uuid", "empty uuid"));
        }
        if uuid.len() > MAX_NAME_BYTES {
            return Err(reject(
                "uuid_too_long",
                format!("uuid of {} bytes", uuid.len()),
            ));
        }
        let metric = field(c.metric);
        if metric.is_empty() {
            return Err(reject("missing_metric", "empty metric_name"));
        }
        if metric.len() > MAX_NAME_BYTES {
            return Err(reject(
                "metric_too_long",
                format!("metric_name of {} bytes", metric.len()),
            ));
        }
        let raw = field(c.value);
        let value: f64 = raw
            .parse()
            .map_err(|_| reject("bad_value", format!("value {raw:?} is not a number")))?;
        if !value.is_finite() {
            return Err(reject("bad_value", format!("value {raw:?} is not finite")));
        }
        let raw_idx = field(c.gpu_id);
        let gpu_index: u32 = raw_idx
            .parse()
            .map_err(|_| reject("bad_gpu_id", format!("gpu_id {raw_idx:?} is not an index")))?;
        let row = Row {
            csv_timestamp: field(c.timestamp),
            metric,
            uuid,
            value,
        };
        let hostname = field(c.hostname);
        let (device, model) = (field(c.device), field(c.model));
        let (container, pod, namespace) = (
            opt(rec, c.container),
            opt(rec, c.pod),
            opt(rec, c.namespace),
        );
        // `instance` and `job` are read from `labels_raw` only when the GPU's record is
        // (re)built: scanning it on every row would cost more than the rest of the row.
        let raw_labels = c.labels_raw.and_then(|i| rec.get(i)).unwrap_or("");
        // The workload is the row's own: an `hpc_job` column, else the exporter's `hpc_job`
        // label in `labels_raw` (looked for with one SIMD search per row).
        let hpc_job = match c.hpc_job {
            Some(i) => opt(rec, Some(i)),
            None if HPC_JOB.find(raw_labels.as_bytes()).is_some() => {
                raw_label(raw_labels, "hpc_job")
            }
            None => None,
        };
        let fresh = |uuid: &str| GpuInfo {
            uuid: uuid.to_string(),
            hostname: hostname.to_string(),
            gpu_index,
            device: device.to_string(),
            model: model.to_string(),
            container: container.clone(),
            pod: pod.clone(),
            namespace: namespace.clone(),
            instance: raw_label(raw_labels, "instance"),
            job: raw_label(raw_labels, "job"),
            driver_version: raw_label(raw_labels, super::labels::DRIVER_VERSION),
            pci_bus_id: raw_label(raw_labels, "pci_bus_id"),
            hpc_job: hpc_job.clone(),
        };
        let info = self
            .gpus
            .entry(uuid.to_string())
            .or_insert_with(|| fresh(uuid));
        if info.hostname != hostname
            || info.gpu_index != gpu_index
            || info.device != device
            || info.model != model
            || info.container != container
            || info.pod != pod
            || info.namespace != namespace
            || info.hpc_job != hpc_job
        {
            *info = fresh(uuid);
        }
        Ok((row, info))
    }
}

/// The value of `name` in an exporter's `labels_raw` (`a="x",name="y",…`), if set.
pub fn raw_label(raw: &str, name: &str) -> Option<String> {
    let mut rest = raw;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let end = after.find('"')?;
        if key.trim_start_matches(',').trim() == name {
            return Some(after[..end].to_string()).filter(|v| !v.is_empty());
        }
        rest = &after[end + 1..];
    }
    None
}

/// Parses CSV timestamps, reusing the previous answer for the same text: the rows of one
/// scrape share their timestamp, and RFC 3339 parsing is a visible cost per row.
#[derive(Debug, Default)]
pub struct TimestampCache {
    last_time: Option<(String, Timestamp)>,
}

impl TimestampCache {
    /// The timestamp of `s` in milliseconds.
    pub fn parse(&mut self, s: &str) -> Result<Timestamp, RowError> {
        if let Some((text, ts)) = &self.last_time {
            if text == s {
                return Ok(*ts);
            }
        }
        let ts = parse_timestamp(s)?;
        match &mut self.last_time {
            Some((text, last)) => {
                text.clear();
                text.push_str(s);
                *last = ts;
            }
            None => self.last_time = Some((s.to_string(), ts)),
        }
        Ok(ts)
    }
}

/// Parses a CSV timestamp (RFC 3339) to milliseconds.
pub fn parse_timestamp(s: &str) -> Result<Timestamp, RowError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| reject("bad_timestamp", format!("timestamp {s:?}: {e}")))
}

/// Opens a CSV reader over `input` (records bounded by [`LineLimit`]) and validates its header.
pub fn open_reader<R: Read>(input: R) -> Result<(csv::Reader<LineLimit<R>>, Columns), HeaderError> {
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(LineLimit::new(input));
    let header = rdr
        .headers()
        .map_err(|e| HeaderError::Unreadable(e.to_string()))?;
    let cols = Columns::from_header(header)?;
    Ok((rdr, cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n";

    type Parsed = Result<(String, String, f64, String), &'static str>;

    fn rows(body: &str) -> Vec<Parsed> {
        let text = format!("{HEADER}{body}");
        let (mut rdr, cols) = open_reader(text.as_bytes()).expect("header");
        let mut p = RowParser::new(cols);
        let mut out = Vec::new();
        let mut rec = csv::StringRecord::new();
        while rdr.read_record(&mut rec).expect("csv") {
            out.push(
                p.parse(&rec)
                    .map(|(r, g)| {
                        (
                            r.uuid.to_string(),
                            r.metric.to_string(),
                            r.value,
                            g.hostname.clone(),
                        )
                    })
                    .map_err(|e| e.reason),
            );
        }
        out
    }

    proptest::proptest! {
        /// Any bytes after a valid header parse row by row into rows or rejections with a
        /// reason, never a panic; a parsed row always has a UUID and a metric.
        #[test]
        fn arbitrary_rows_never_panic(body in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::num::u8::ANY,
                proptest::strategy::Just(b','),
                proptest::strategy::Just(b'"'),
                proptest::strategy::Just(b'\n'),
            ], 0..600)) {
            let mut text = HEADER.as_bytes().to_vec();
            text.extend_from_slice(&body);
            let (mut rdr, cols) = open_reader(text.as_slice()).expect("header");
            let mut p = RowParser::new(cols);
            let mut rec = csv::StringRecord::new();
            loop {
                match rdr.read_record(&mut rec) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => continue,
                }
                match p.parse(&rec) {
                    Ok((row, _)) => {
                        proptest::prop_assert!(!row.uuid.is_empty() && !row.metric.is_empty());
                    }
                    Err(e) => proptest::prop_assert!(!e.reason.is_empty()),
                }
            }
        }
    }

    #[test]
    fn instance_and_job_come_from_labels_raw() {
        let raw = r#"DCGM_FI_DRIVER_VERSION="535.129.03",Hostname="h",instance="h:9400",job="dcgm",modelName="M""#;
        assert_eq!(raw_label(raw, "instance").as_deref(), Some("h:9400"));
        assert_eq!(raw_label(raw, "job").as_deref(), Some("dcgm"));
        assert_eq!(raw_label(raw, "pod"), None);
        assert_eq!(raw_label("", "job"), None);
        assert_eq!(raw_label("broken=\"x", "broken"), None);
    }

    #[test]
    fn parses_good_rows_and_names_bad_ones() {
        let got = rows(concat!(
            "\"2025-07-18T20:42:34Z\",\"DCGM_FI_DEV_POWER_USAGE\",\"0\",\"nvidia0\",\"GPU-1\",\"H100\",\"host-a\",\"\",\"\",\"\",\"156.596\",\"x=\"\"y\"\"\"\n",
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,,H100,host-a,,,,5,\n",
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100,host-a,,,,abc,\n",
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100\n",
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,x,nvidia0,GPU-1,H100,host-a,,,,1,\n",
            "2025-07-18T20:42:34Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100,host-a,,,,NaN,\n",
            "2025-07-18T20:42:35Z,DCGM_FI_DEV_GPU_UTIL,0,nvidia0,GPU-1,H100,host-b,,,,100,\n",
        ));
        assert_eq!(
            got,
            vec![
                Ok((
                    "GPU-1".into(),
                    "DCGM_FI_DEV_POWER_USAGE".into(),
                    156.596,
                    "host-a".into()
                )),
                Err("missing_uuid"),
                Err("bad_value"),
                Err("wrong_column_count"),
                Err("bad_gpu_id"),
                Err("bad_value"),
                Ok((
                    "GPU-1".into(),
                    "DCGM_FI_DEV_GPU_UTIL".into(),
                    100.0,
                    "host-b".into()
                )),
            ]
        );
    }

    #[test]
    fn each_row_carries_its_own_workload() {
        let text = concat!(
            "timestamp,metric_name,gpu_id,device,uuid,modelName,Hostname,container,pod,namespace,value,labels_raw\n",
            "2025-07-18T20:42:34Z,U,0,nvidia0,GPU-1,H100,h,main,train-1,ml,5,\n",
            "2025-07-18T20:42:35Z,U,0,nvidia0,GPU-1,H100,h,,,,5,\n",
            "2025-07-18T20:42:36Z,U,0,nvidia0,GPU-1,H100,h,,,,5,\"hpc_job=\"\"4711\"\",job=\"\"dcgm\"\"\"\n",
            "2025-07-18T20:42:37Z,U,0,nvidia0,GPU-1,H100,h,,,,5,\"job=\"\"dcgm\"\"\"\n",
        );
        let (mut rdr, cols) = open_reader(text.as_bytes()).expect("header");
        let mut p = RowParser::new(cols);
        let mut rec = csv::StringRecord::new();
        let mut got = Vec::new();
        while rdr.read_record(&mut rec).expect("csv") {
            let (_, g) = p.parse(&rec).expect("a row");
            got.push((g.pod.clone(), g.namespace.clone(), g.hpc_job.clone()));
        }
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            got,
            vec![
                (s("train-1"), s("ml"), None),
                (None, None, None),
                (None, None, s("4711")),
                (None, None, None),
            ]
        );
    }

    #[test]
    fn overlong_names_are_rejected_per_row() {
        let long = "G".repeat(MAX_NAME_BYTES + 1);
        let got = rows(&format!(
            "2025-07-18T20:42:34Z,M,0,nvidia0,{long},H100,h,,,,1,\n\
             2025-07-18T20:42:34Z,{long},0,nvidia0,GPU-1,H100,h,,,,1,\n"
        ));
        assert_eq!(got, vec![Err("uuid_too_long"), Err("metric_too_long")]);
    }

    #[test]
    fn missing_columns_are_named() {
        let err = open_reader("timestamp,uuid,value\n".as_bytes()).expect_err("refused");
        assert_eq!(
            err,
            HeaderError::Missing(vec![
                "metric_name",
                "gpu_id",
                "device",
                "modelName",
                "Hostname"
            ])
        );
        assert!(err
            .to_string()
            .contains("missing column(s) metric_name, gpu_id"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            parse_timestamp("2025-07-18T20:42:34Z").map_err(|e| e.reason),
            Ok(1_752_871_354_000)
        );
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn shared_reference_file_parses_completely() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/dcgm_metrics_20250718_134233.csv"
        );
        let Ok(file) = std::fs::File::open(path) else {
            eprintln!("reference CSV not present; covered by the generator tests");
            return;
        };
        let (mut rdr, cols) = open_reader(file).expect("header");
        let mut p = RowParser::new(cols);
        let mut rec = csv::StringRecord::new();
        let (mut ok, mut bad) = (0, 0);
        while rdr.read_record(&mut rec).expect("csv") {
            match p.parse(&rec) {
                Ok(_) => ok += 1,
                Err(_) => bad += 1,
            }
        }
        assert_eq!((ok, bad), (2470, 0));
    }
}
