//! Errors of the data service. Each knows whether a retry may succeed; the
//! server maps them to RESP and HTTP in one place each.

use colony_core::CoreError;

#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum KvError {
    #[error("operation against a key holding the wrong kind of value")]
    WrongType,
    #[error("value is not an integer or out of range")]
    NotInteger,
    #[error("value is not a valid float")]
    NotFloat,
    #[error("hash value is not an integer")]
    HashNotInteger,
    #[error("hash value is not a float")]
    HashNotFloat,
    #[error("increment or decrement would overflow")]
    Overflow,
    #[error("increment would produce NaN or Infinity")]
    NanOrInfinity,
    #[error("no such key")]
    NoSuchKey,
    #[error("string exceeds maximum allowed size")]
    StringTooLong,
    #[error("value of {size} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { size: usize, max: usize },
    #[error("key of {size} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { size: usize, max: usize },
    #[error("invalid bucket name: {0}")]
    InvalidBucket(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("stored object is corrupt: {0}")]
    Corrupt(String),
    /// The partition lives on another node (the coordinator retries there).
    #[error("partition moved to {0}")]
    NotOwner(String),
    /// Retry shortly: e.g. the partition is in the last step of a handoff.
    #[error("{0}")]
    TryAgain(String),
    /// The node owning the key cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Core(#[from] CoreError),
}

impl KvError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Core(e) => e.is_retryable(),
            Self::Storage(_) | Self::TryAgain(_) | Self::Unavailable(_) | Self::NotOwner(_) => true,
            _ => false,
        }
    }
}

impl From<fjall::Error> for KvError {
    fn from(e: fjall::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
