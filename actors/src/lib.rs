//! The pipeline's actors: streamer → broker partition → collector, under one supervisor.
#![deny(clippy::unwrap_used, clippy::expect_used)]

pub mod broker;
mod error;
pub mod routing;

pub use error::{ActorError, Result};
