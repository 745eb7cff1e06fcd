//! Integration tests: real `telemetry-node` processes started on free ports and spoken to over
//! HTTP, one module per area, one binary (so the node is linked once). The process harness is
//! the benchmark's ([`telemetry_node::harness`]); [`support`] adds the assertions tests need.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

mod support;

mod cli;
mod cluster;
mod cluster_tls;
mod corrupt;
mod crash;
mod disk_full;
mod e2e;
mod limits;
mod metrics;
mod remote_write;
mod replication;
mod retention;
mod scrape;
mod statefulset;
mod summary;
mod tracing;
mod workloads;
