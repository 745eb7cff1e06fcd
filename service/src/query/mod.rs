//! One module per cluster-wide query (mini-redis' `cmd/` style). Each owns this node's part of
//! the answer (`local`, also what it answers a peer), the merge of the members' parts, and the
//! call that asks them all through [`crate::fanout`].

pub mod cluster;
pub mod gpus;
pub mod latest;
pub mod metrics;
pub mod series;
pub mod steps;
pub mod telemetry;
