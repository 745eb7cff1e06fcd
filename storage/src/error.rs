//! The storage crate's error type.

/// Result alias for storage operations.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The LSM engine failed (I/O, corruption, poisoned after a failed write).
    #[error("fjall: {0}")]
    Fjall(#[from] fjall::Error),
    /// A stored record could not be decoded: the data directory is damaged or from another version.
    #[error("corrupt {what} record: {detail}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The store cannot be opened as asked (another format, another bucket width).
    #[error("store configuration: {0}")]
    Config(String),
    /// An earlier checkpoint failed; the store refuses writes until [`crate::Store::recover`]
    /// reopens it (the collectors then replay the broker logs).
    #[error("the store failed during a checkpoint and must be recovered")]
    Poisoned,
    /// The store is reopening its database after a failed checkpoint; retry shortly.
    #[error("the store is recovering from a failed checkpoint")]
    Recovering,
    /// A batch that cannot be stored (dangling index, too many metrics).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
}

impl StorageError {
    /// The I/O error underneath, when there is one.
    pub fn io(&self) -> Option<&std::io::Error> {
        match self {
            Self::Fjall(fjall::Error::Io(e)) => Some(e),
            _ => None,
        }
    }

    /// True when data on disk is damaged (a checksum, header or trailer that does not hold, a
    /// record that does not decode): retrying cannot help; restore or move the store aside.
    pub fn is_corruption(&self) -> bool {
        use fjall::LsmError;
        match self {
            Self::Corrupt { .. } => true,
            Self::Fjall(fjall::Error::Storage(e)) => matches!(
                e,
                LsmError::ChecksumMismatch { .. }
                    | LsmError::InvalidTrailer
                    | LsmError::InvalidHeader(_)
                    | LsmError::InvalidTag(_)
                    | LsmError::Unrecoverable
                    | LsmError::Decompress(_)
            ),
            Self::Fjall(
                fjall::Error::InvalidTrailer
                | fjall::Error::InvalidTag(_)
                | fjall::Error::Decompress(_)
                | fjall::Error::JournalRecovery(_),
            ) => true,
            _ => false,
        }
    }

    /// True when the volume (or the quota) is out of space: retryable once space is freed.
    pub fn is_out_of_space(&self) -> bool {
        self.io().is_some_and(crate::disk::is_out_of_space)
    }
}
