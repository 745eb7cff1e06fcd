//! What a cluster-wide query returns: the merged value and who it heard from, or a typed
//! error.

use telemetry_storage::StorageError;

use crate::coverage::Coverage;

/// A merged answer and the members it misses.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The members' answers merged.
    pub value: T,
    /// Who answered, who did not, and whether that is enough for every sample.
    pub coverage: Coverage,
}

impl<T> Answer<T> {
    /// True when the value may miss samples: too many members did not answer or are repairing.
    pub fn partial(&self) -> bool {
        !self.coverage.complete()
    }

    /// Members that are down or did not answer in time, sorted.
    pub fn unavailable(&self) -> &[String] {
        &self.coverage.unavailable
    }
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No member that answered knows the GPU (`coverage` says whether it may still exist).
    #[error("unknown GPU {uuid:?}")]
    UnknownGpu {
        /// The GPU asked for.
        uuid: String,
        /// Who answered; when incomplete, the GPU may be on the members that did not.
        coverage: Coverage,
    },
    /// This node's store failed to read.
    #[error("store: {0}")]
    Store(#[from] StorageError),
    /// The task reading the store did not finish (it panicked or was cancelled).
    #[error("a query task failed: {0}")]
    Task(String),
    /// The answer would be over a bound; the message says which and what to narrow.
    #[error("{0}")]
    TooLarge(String),
}

impl QueryError {
    /// True when asking again later may succeed (a member was missing, the store was
    /// recovering), as opposed to a GPU that does not exist or a damaged store.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::UnknownGpu { coverage, .. } => !coverage.complete(),
            Self::Store(e) => matches!(e, StorageError::Recovering) || e.is_out_of_space(),
            Self::Task(_) | Self::TooLarge(_) => false,
        }
    }
}

impl From<tokio::task::JoinError> for QueryError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Task(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_gpu_is_transient_only_while_a_member_is_missing() {
        let unknown = |unavailable: Vec<String>, copies| QueryError::UnknownGpu {
            uuid: "GPU-1".into(),
            coverage: Coverage {
                unavailable,
                syncing: vec![],
                copies,
            },
        };
        assert!(!unknown(vec![], 1).is_transient());
        assert!(unknown(vec!["n-2".into()], 1).is_transient());
        assert!(
            !unknown(vec!["n-2".into()], 2).is_transient(),
            "another copy answered"
        );
        assert!(QueryError::Store(StorageError::Recovering).is_transient());
        assert!(!QueryError::Store(StorageError::Poisoned).is_transient());
        assert!(!QueryError::Task("panicked".into()).is_transient());
    }
}
