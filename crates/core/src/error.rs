use thiserror::Error;

/// Errors of the core contracts. Variants carry the numbers needed to act on them.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor had a shape the operation cannot take.
    #[error("{what}: expected shape {expected}, got {got:?}")]
    Shape { what: &'static str, expected: String, got: Vec<usize> },
    /// The backbone returned a pooled vector but a token pooling was asked for.
    #[error(
        "pooling '{pooling}' needs the backbone's tokens, but this model outputs an already pooled \
         [B, D] descriptor; use --pooling cls (which takes the model's own output) or export the \
         model with token output"
    )]
    NeedsTokens { pooling: String },
    /// A value is not usable (NaN, infinite, zero vector...).
    #[error("{0}")]
    Invalid(String),
    /// A backend reported a failure (message from the backend, already specific).
    #[error("{0}")]
    Backend(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
