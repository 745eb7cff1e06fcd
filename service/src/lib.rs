//! The cluster's query and write service: what a node answers, whoever asks.
//!
//! The REST layer (`telemetry-api`) parses requests, calls this crate and shapes JSON; it knows
//! nothing about peers. Everything that does lives here: which members to ask and for how long,
//! what this node answers its peers, how the members' answers merge, and moving a leaving
//! node's data to the partitions' owners.
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | [`node`] | [`NodeContext`]: the store, broker registry, router and cluster view a query needs |
//! | [`fanout`] | asking every live peer at once, each within [`SCATTER_TIMEOUT`]; who did not answer |
//! | [`attribution`] | who used which GPU: workload spans per GPU, totals per workload |
//! | [`query`] | one module per query kind: this node's part, the merge, the cluster-wide call |
//! | [`answer`] | [`Answer`] (a value and who did not answer) and [`QueryError`] |
//! | [`coverage`] | [`Coverage`]: whether the members that answered hold every sample (`partial`) |
//! | [`peer`] | [`PeerHandler`]: this node's answers to its peers' requests |
//! | [`write`] | appending partition batches at their owners until durable, with backoff |
//! | [`repair`] | getting back to a full copy of every partition held: digests, plan, copy |
//! | [`decommission`] | leaving the cluster: hand over partitions, copy samples to their owners |
//!
//! May call: `telemetry-actors` (broker, router, cluster transport) and `telemetry-storage`.
//! Called by: `telemetry-api` (handlers) and `telemetry-node` (start-up).

pub mod answer;
pub mod attribution;
pub mod coverage;
pub mod decommission;
pub mod fanout;
pub mod node;
pub mod peer;
pub mod query;
pub mod repair;
pub mod write;

pub use answer::{Answer, QueryError};
pub use coverage::Coverage;
pub use fanout::{FanoutStats, SCATTER_TIMEOUT};
pub use node::NodeContext;
pub use peer::PeerHandler;
