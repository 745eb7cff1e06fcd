//! The actors crate's error type.

use std::path::PathBuf;

/// Result alias for the actors crate.
pub type Result<T, E = ActorError> = std::result::Result<T, E>;

/// Everything that can go wrong in the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A partition log holds a damaged record that was acknowledged once.
    #[error("corrupt partition log {} at offset {offset}: {detail}", dir.display())]
    CorruptLog {
        /// The partition directory.
        dir: PathBuf,
        /// First offset that could not be read.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// A CSV input cannot be streamed at all (unreadable, missing DCGM columns).
    #[error("{}: {detail}", path.display())]
    BadInput {
        /// The CSV file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// The store failed.
    #[error(transparent)]
    Storage(#[from] telemetry_storage::StorageError),
    /// An actor could not be spawned or reached.
    #[error("actor: {0}")]
    Actor(String),
    /// A broken invariant; a bug, reported instead of panicking.
    #[error("internal: {0}")]
    Internal(String),
}
