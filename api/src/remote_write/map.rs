//! Which GPU and metric a remote-written series is, from its labels alone (pure).

use telemetry_actors::dcgm::labels::{self as dcgm_labels, LabelError};
use telemetry_storage::{GpuInfo, MAX_NAME_BYTES};

/// Label names the GPU's attributes are read from; every other label is dropped.
const KEPT: [&str; 14] = [
    "__name__",
    dcgm_labels::UUID,
    dcgm_labels::GPU,
    dcgm_labels::DEVICE,
    dcgm_labels::MODEL,
    dcgm_labels::HOSTNAME,
    "hostname",
    "container",
    "pod",
    "namespace",
    "instance",
    "job",
    dcgm_labels::DRIVER_VERSION,
    "pci_bus_id",
];

/// A series mapped onto a GPU and metric.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped<'a> {
    /// The GPU, its attributes from the labels.
    pub gpu: GpuInfo,
    /// The DCGM field.
    pub metric: String,
    /// Labels not kept.
    pub dropped: Vec<&'a str>,
}

/// Why a series was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `__name__`.
    #[error("no metric name")]
    NoName,
    /// Not a DCGM field (`DCGM_FI_*`).
    #[error("not a DCGM field")]
    NotDcgm,
    /// No `UUID`, and no host with a `gpu` or `device` either.
    #[error("names no GPU")]
    NoGpu,
    /// A name or UUID over the stored limit.
    #[error("a name over {MAX_NAME_BYTES} bytes")]
    TooLong,
}

impl Refusal {
    /// The reason as counted (`not_dcgm`, `no_gpu`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoName => "no_name",
            Self::NotDcgm => "not_dcgm",
            Self::NoGpu => "no_gpu",
            Self::TooLong => "too_long",
        }
    }
}

/// Maps one series' labels: `__name__` must be a `DCGM_FI_*` field; the GPU is its `UUID`,
/// or else `{host}/{gpu}` from `Hostname` (or `hostname`) and `gpu` (or `device`).
pub fn map_series<'a>(
    labels: impl Iterator<Item = (&'a str, &'a str)> + Clone,
) -> Result<Mapped<'a>, Refusal> {
    let get = |k: &str| {
        labels
            .clone()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v)
            .filter(|v| !v.is_empty())
    };
    let name = get("__name__").ok_or(Refusal::NoName)?;
    if !name.starts_with("DCGM_FI_") {
        return Err(Refusal::NotDcgm);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::TooLong);
    }
    let host = get(dcgm_labels::HOSTNAME).or_else(|| get("hostname"));
    let index = get(dcgm_labels::GPU).or_else(|| get(dcgm_labels::DEVICE));
    let synthetic = match (get(dcgm_labels::UUID), host, index) {
        (Some(_), _, _) => None,
        (None, Some(h), Some(i)) => Some(format!("{h}/{i}")),
        _ => return Err(Refusal::NoGpu),
    };
    let gpu = dcgm_labels::gpu_from_labels(|k| match k {
        dcgm_labels::UUID => synthetic.as_deref().or_else(|| get(k)),
        dcgm_labels::HOSTNAME => host,
        _ => get(k),
    })
    .map_err(|e| match e {
        LabelError::NoUuid => Refusal::NoGpu,
        LabelError::UuidTooLong(_) => Refusal::TooLong,
    })?;
    let dropped = labels
        .map(|(n, _)| n)
        .filter(|n| !KEPT.contains(n))
        .collect();
    Ok(Mapped {
        gpu,
        metric: name.to_string(),
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(labels: &[(&'static str, &'static str)]) -> Result<Mapped<'static>, Refusal> {
        map_series(labels.iter().copied())
    }

    #[test]
    fn series_map_onto_gpus_or_are_refused_with_a_reason() {
        let exporter = [
            ("__name__", "DCGM_FI_DEV_GPU_TEMP"),
            ("UUID", "GPU-1"),
            ("gpu", "2"),
            ("device", "nvidia2"),
            ("modelName", "H100"),
            ("Hostname", "node-1"),
            ("instance", "10.0.0.1:9400"),
            ("job", "dcgm"),
            ("DCGM_FI_DRIVER_VERSION", "535"),
            ("err_code", "0"),
            ("namespace", "ml"),
        ];
        let got = m(&exporter).expect("maps");
        assert_eq!(got.metric, "DCGM_FI_DEV_GPU_TEMP");
        assert_eq!(
            (
                got.gpu.uuid.as_str(),
                got.gpu.gpu_index,
                got.gpu.hostname.as_str()
            ),
            ("GPU-1", 2, "node-1")
        );
        assert_eq!(got.gpu.namespace.as_deref(), Some("ml"));
        assert_eq!(got.dropped, ["err_code"]);
        assert_eq!(got.gpu.driver_version.as_deref(), Some("535"));
        assert_eq!(
            (got.gpu.instance.as_deref(), got.gpu.job.as_deref()),
            (Some("10.0.0.1:9400"), Some("dcgm"))
        );
        // No UUID: the host and index name the GPU.
        let got = m(&[
            ("__name__", "DCGM_FI_DEV_POWER_USAGE"),
            ("hostname", "n2"),
            ("device", "nvidia0"),
        ])
        .expect("maps");
        assert_eq!(
            (got.gpu.uuid.as_str(), got.gpu.hostname.as_str()),
            ("n2/nvidia0", "n2")
        );
        // (labels, refusal)
        let table: [(&[(&str, &str)], Refusal); 4] = [
            (&[("__name__", "up"), ("UUID", "GPU-1")], Refusal::NotDcgm),
            (&[("UUID", "GPU-1")], Refusal::NoName),
            (
                &[("__name__", "DCGM_FI_DEV_GPU_TEMP"), ("Hostname", "h")],
                Refusal::NoGpu,
            ),
            (
                &[("__name__", "DCGM_FI_DEV_GPU_TEMP"), ("gpu", "0")],
                Refusal::NoGpu,
            ),
        ];
        for (labels, want) in table {
            assert_eq!(m(labels).err(), Some(want.clone()), "{labels:?}");
            assert!(!want.reason().is_empty());
        }
    }
}
