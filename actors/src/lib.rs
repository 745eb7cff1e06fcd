//! The pipeline's actors: streamer → broker partition → collector, under one supervisor.
//!
//! See [`supervisor`] for the supervision tree, [`broker`] for the message queue, [`routing`]
//! for partitioning and ownership.

pub mod backoff;
pub mod broker;
pub mod cluster;
pub mod collector;
pub mod dcgm;
mod error;
pub mod priority;
pub mod registry;
pub mod router;
pub mod routing;
pub mod stats;
pub mod streamer;
pub mod supervisor;
pub mod trace;

pub use error::{ActorError, Result};
