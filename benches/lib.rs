//! Benchmarks only; see `hot_paths.rs`.
