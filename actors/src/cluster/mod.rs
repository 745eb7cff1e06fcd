//! The cluster: membership (pure, in [`membership`]) and, around it, the transport that feeds it.
mod accept;
pub mod endpoint;
pub mod membership;
pub mod protocol;
pub mod tls;
pub mod transport;
