//! DCGM input: everything that turns what GPUs report into samples, whoever reads it (the
//! streamer's sources, `POST /api/v1/ingest`, `telemetry-node import` and the benchmark).
//!
//! | module | owns |
//! |---|---|
//! | [`csv`] | the exporter's CSV: required columns, one row at a time, timestamps |
//! | [`lines`] | [`MAX_CSV_LINE_BYTES`]: a record longer than that is skipped, never buffered |
//! | [`rows`] | [`CsvRows`]: a whole CSV as rows or rejections with their line and reason |
//! | [`exposition`] | dcgm-exporter's `/metrics` text as samples |
//! | [`labels`] | the one mapping between exporter labels and a GPU's attributes |
//! | [`batches`] | [`PartitionBatches`]: samples → one batch per partition, [`BATCH_MAX_SAMPLES`] each |

pub mod batches;
pub mod csv;
pub mod exposition;
pub mod fields;
pub mod labels;
pub mod lines;
pub mod rows;

pub use batches::{PartitionBatches, BATCH_MAX_SAMPLES};
pub use csv::{
    open_reader, parse_timestamp, Row, RowError, RowParser, TimestampCache, REQUIRED_COLUMNS,
};
pub use exposition::parse_exposition;
pub use lines::MAX_CSV_LINE_BYTES;
pub use rows::{CsvRows, Rejected};
