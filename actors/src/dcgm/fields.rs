//! What dcgm-exporter says of the DCGM fields it exports by default: Prometheus type and help
//! text (its `default-counters.csv`), for the metadata Grafana's metric browser shows and for
//! telling counters (`rate` material) from gauges.

/// A field's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A value at a time.
    Gauge,
    /// A running total (energy, retries, remapped rows): read it with `rate`/`increase`.
    Counter,
}

impl Kind {
    /// The name Prometheus' metadata API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gauge => "gauge",
            Self::Counter => "counter",
        }
    }
}

const FIELDS: [(&str, Kind, &str); 25] = [
    ("DCGM_FI_DEV_SM_CLOCK", Kind::Gauge, "SM clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEM_CLOCK", Kind::Gauge, "Memory clock frequency (in MHz)."),
    ("DCGM_FI_DEV_MEMORY_TEMP", Kind::Gauge, "Memory temperature (in C)."),
    ("DCGM_FI_DEV_GPU_TEMP", Kind::Gauge, "GPU temperature (in C)."),
    ("DCGM_FI_DEV_POWER_USAGE", Kind::Gauge, "Power draw (in W)."),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Kind::Counter, "Total energy consumption since boot (in mJ)."),
    ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", Kind::Counter, "Total number of PCIe retries."),
    ("DCGM_FI_DEV_GPU_UTIL", Kind::Gauge, "GPU utilization (in %)."),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", Kind::Gauge, "Memory utilization (in %)."),
    ("DCGM_FI_DEV_ENC_UTIL", Kind::Gauge, "Encoder utilization (in %)."),
    ("DCGM_FI_DEV_DEC_UTIL", Kind::Gauge, "Decoder utilization (in %)."),
    ("DCGM_FI_DEV_XID_ERRORS", Kind::Gauge, "Value of the last XID error encountered."),
    ("DCGM_FI_DEV_FB_FREE", Kind::Gauge, "Framebuffer memory free (in MiB)."),
    ("DCGM_FI_DEV_FB_USED", Kind::Gauge, "Framebuffer memory used (in MiB)."),
    ("DCGM_FI_DEV_FB_RESERVED", Kind::Gauge, "Framebuffer memory reserved (in MiB)."),
    ("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", Kind::Counter, "Total number of NVLink bandwidth counters for all lanes."),
    ("DCGM_FI_DEV_VGPU_LICENSE_STATUS", Kind::Gauge, "vGPU License status"),
    ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", Kind::Counter, "Number of remapped rows for uncorrectable errors"),
    ("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", Kind::Counter, "Number of remapped rows for correctable errors"),
    ("DCGM_FI_DEV_ROW_REMAP_FAILURE", Kind::Gauge, "Whether remapping of rows has failed"),
    ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", Kind::Gauge, "Ratio of time the graphics engine is active."),
    ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", Kind::Gauge, "Ratio of cycles the tensor (HMMA) pipe is active."),
    ("DCGM_FI_PROF_DRAM_ACTIVE", Kind::Gauge, "Ratio of cycles the device memory interface is active sending or receiving data."),
    ("DCGM_FI_PROF_PCIE_TX_BYTES", Kind::Gauge, "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
    ("DCGM_FI_PROF_PCIE_RX_BYTES", Kind::Gauge, "The rate of data received over the PCIe bus - including both protocol headers and data payloads - in bytes per second."),
];

/// The type and help text dcgm-exporter gives a field, if it is one of its defaults.
pub fn describe(name: &str) -> Option<(Kind, &'static str)> {
    FIELDS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, k, h)| (*k, *h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_are_told_apart() {
        assert_eq!(
            describe("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION").map(|d| d.0),
            Some(Kind::Counter)
        );
        assert_eq!(
            describe("DCGM_FI_DEV_GPU_TEMP").map(|d| d.0),
            Some(Kind::Gauge)
        );
        assert_eq!(describe("NOT_A_FIELD"), None);
    }
}
