//! What a cluster-wide query returns: the merged value and the members that did not answer,
//! or a typed error.

use telemetry_storage::StorageError;

/// A merged answer and the members it misses.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The members' answers merged.
    pub value: T,
    /// Members that are down or did not answer in time, sorted.
    pub unavailable: Vec<String>,
}

impl<T> Answer<T> {
    /// True when some member did not answer: the value may be incomplete.
    pub fn partial(&self) -> bool {
        !self.unavailable.is_empty()
    }
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// No member that answered knows the GPU (`unavailable` names those that did not answer).
    #[error("unknown GPU {uuid:?}")]
    UnknownGpu {
        /// The GPU asked for.
        uuid: String,
        /// Members that did not answer (it may be there).
        unavailable: Vec<String>,
    },
    /// This node's store failed to read.
    #[error("store: {0}")]
    Store(#[from] StorageError),
    /// The task reading the store did not finish (it panicked or was cancelled).
    #[error("a query task failed: {0}")]
    Task(String),
}

impl QueryError {
    /// True when asking again later may succeed (a member was missing, the store was
    /// recovering), as opposed to a GPU that does not exist or a damaged store.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::UnknownGpu { unavailable, .. } => !unavailable.is_empty(),
            Self::Store(e) => matches!(e, StorageError::Recovering) || e.is_out_of_space(),
            Self::Task(_) => false,
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
        let unknown = |unavailable: Vec<String>| QueryError::UnknownGpu {
            uuid: "GPU-1".into(),
            unavailable,
        };
        assert!(!unknown(vec![]).is_transient());
        assert!(unknown(vec!["n-2".into()]).is_transient());
        assert!(QueryError::Store(StorageError::Recovering).is_transient());
        assert!(!QueryError::Store(StorageError::Poisoned).is_transient());
        assert!(!QueryError::Task("panicked".into()).is_transient());
    }
}
