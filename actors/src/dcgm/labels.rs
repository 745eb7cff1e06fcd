//! The one mapping between dcgm-exporter's labels and a GPU's attributes: how a scraped sample
//! finds its GPU, and which labels a stored series carries in PromQL answers.

use telemetry_storage::{GpuInfo, MAX_NAME_BYTES};

/// The GPU's UUID.
pub const UUID: &str = "UUID";
/// Index of the GPU in its host.
pub const GPU: &str = "gpu";
/// Device name (`nvidia0`).
pub const DEVICE: &str = "device";
/// Model name.
pub const MODEL: &str = "modelName";
/// Host name.
pub const HOSTNAME: &str = "Hostname";
/// The workload labels (Kubernetes' and the HPC job mapping's), present only when set. A
/// sample's workload is resolved at its own time ([`telemetry_storage::Workload`]), never a
/// stored GPU's.
pub const WORKLOAD: [&str; 4] = ["container", "pod", "namespace", "hpc_job"];
/// Prometheus' target labels (the exporter's address and the scrape job) and the exporter's
/// per-GPU labels (driver version, PCI bus id), present only when set: from remote write and
/// from a CSV's `labels_raw`.
pub const TARGET: [&str; 4] = ["instance", "job", DRIVER_VERSION, "pci_bus_id"];
/// The driver version label dcgm-exporter puts on every series.
pub const DRIVER_VERSION: &str = "DCGM_FI_DRIVER_VERSION";
/// Every label a GPU series has or may have, sorted.
pub const NAMES: [&str; 13] = [
    DRIVER_VERSION,
    HOSTNAME,
    UUID,
    "container",
    DEVICE,
    GPU,
    "hpc_job",
    "instance",
    "job",
    MODEL,
    "namespace",
    "pci_bus_id",
    "pod",
];

/// Why labels name no usable GPU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No `UUID` label, or an empty one.
    #[error("no UUID label")]
    NoUuid,
    /// A UUID over the stored name limit.
    #[error("UUID of {0} bytes is over the limit")]
    UuidTooLong(usize),
}

/// The GPU a sample's labels describe; `get` looks a label up by name.
pub fn gpu_from_labels<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<GpuInfo, LabelError> {
    let text = |k: &str| get(k).unwrap_or_default().to_string();
    let set = |k: &str| get(k).filter(|v| !v.is_empty()).map(str::to_string);
    let uuid = set(UUID).ok_or(LabelError::NoUuid)?;
    if uuid.len() > MAX_NAME_BYTES {
        return Err(LabelError::UuidTooLong(uuid.len()));
    }
    Ok(GpuInfo {
        uuid,
        hostname: text(HOSTNAME),
        gpu_index: get(GPU).and_then(|g| g.parse().ok()).unwrap_or(0),
        device: text(DEVICE),
        model: text(MODEL),
        container: set(WORKLOAD[0]),
        pod: set(WORKLOAD[1]),
        namespace: set(WORKLOAD[2]),
        hpc_job: set(WORKLOAD[3]),
        instance: set(TARGET[0]),
        job: set(TARGET[1]),
        driver_version: set(TARGET[2]),
        pci_bus_id: set(TARGET[3]),
    })
}

/// The labels of a GPU's series (workload and target labels only when set), inverse of
/// [`gpu_from_labels`].
pub fn labels_of(gpu: &GpuInfo) -> Vec<(&'static str, String)> {
    let mut l = vec![
        (UUID, gpu.uuid.clone()),
        (GPU, gpu.gpu_index.to_string()),
        (DEVICE, gpu.device.clone()),
        (MODEL, gpu.model.clone()),
        (HOSTNAME, gpu.hostname.clone()),
    ];
    let optional = [
        &gpu.container,
        &gpu.pod,
        &gpu.namespace,
        &gpu.hpc_job,
        &gpu.instance,
        &gpu.job,
        &gpu.driver_version,
        &gpu.pci_bus_id,
    ];
    for (k, v) in WORKLOAD.into_iter().chain(TARGET).zip(optional) {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            l.push((k, v.clone()));
        }
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn labels_and_gpus_map_both_ways() {
        let labels: HashMap<&str, &str> = [
            ("UUID", "GPU-a"),
            ("gpu", "3"),
            ("device", "nvidia3"),
            ("modelName", "H100"),
            ("Hostname", "h"),
            ("container", ""),
            ("pod", "p"),
        ]
        .into();
        let gpu = gpu_from_labels(|k| labels.get(k).copied()).expect("a GPU");
        assert_eq!(
            (gpu.gpu_index, gpu.container.as_deref(), gpu.pod.as_deref()),
            (3, None, Some("p"))
        );
        let back: HashMap<&str, String> = labels_of(&gpu).into_iter().collect();
        assert_eq!(back.len(), 6, "an empty container is no label");
        assert!(labels_of(&gpu).iter().all(|(k, _)| NAMES.contains(k)));
        let full = GpuInfo {
            driver_version: Some("535".into()),
            pci_bus_id: Some("00000000:1B:00.0".into()),
            instance: Some("h:9400".into()),
            job: Some("dcgm".into()),
            ..gpu.clone()
        };
        let back: HashMap<&str, String> = labels_of(&full).into_iter().collect();
        assert_eq!(back.len(), 10, "every optional label once set");
        let again = gpu_from_labels(|k| back.get(k).map(String::as_str)).expect("a GPU");
        assert_eq!(again, full);
        assert_eq!(gpu_from_labels(|_| None), Err(LabelError::NoUuid));
        let mut sorted = NAMES;
        sorted.sort_unstable();
        assert_eq!(sorted, NAMES);
    }
}
