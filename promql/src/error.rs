//! Why an evaluation failed.

/// A failed evaluation. [`EvalError::is_bad_query`] tells the caller's 400 from its 422.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A construct this evaluator does not implement (named, so the user can rewrite it).
    #[error("{0} is not supported")]
    Unsupported(String),
    /// The query is valid PromQL but cannot be evaluated as asked (bad argument, bad regex,
    /// many-to-many match, duplicate label sets).
    #[error("{0}")]
    Execution(String),
    /// The query would hold more than the evaluator's bound of points.
    #[error("the query would produce more than {0} points; narrow it or use a larger step")]
    TooManyPoints(usize),
    /// The data could not be read.
    #[error("reading series: {0}")]
    Source(String),
}

impl EvalError {
    /// True when the query itself is at fault (asking again unchanged fails again).
    pub fn is_bad_query(&self) -> bool {
        matches!(self, Self::Unsupported(_))
    }
}

/// Evaluation result.
pub type Result<T> = std::result::Result<T, EvalError>;
