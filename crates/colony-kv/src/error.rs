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
    /// Bucket properties that cannot be set: unknown name, bad value, or
    /// counts that do not fit n_val.
    #[error("invalid bucket properties: {0}")]
    InvalidProps(String),
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
    /// A causal context sent back by a client does not decode.
    #[error("invalid causal context: {0}")]
    BadContext(String),
    /// A write would leave more concurrent values than the limit.
    #[error("the key has {count} concurrent values (siblings), more than the limit of {max}; read it and write back one value with the context the read returned")]
    TooManySiblings { count: usize, max: usize },
    /// Too few replicas answered a read or write in time.
    /// (Boxed: errors travel inside every reply type, which should stay
    /// small; it serializes as its fields did inline.)
    #[error("{0}")]
    QuorumUnmet(Box<Unmet>),
    #[error(transparent)]
    Core(#[from] CoreError),
}

/// The evidence of an unmet quorum.
#[derive(Debug, Clone, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("quorum not met for {op}: {got} of {needed} replicas answered ({} of {} primaries, {} of {} durable){}", primaries.0, primaries.1, durable.0, durable.1, failure_list(failures))]
pub struct Unmet {
    pub op: String,
    pub needed: usize,
    pub got: usize,
    /// (answered, needed) among primaries (pr/pw).
    pub primaries: (usize, usize),
    /// (answered, needed) durable copies (dw).
    pub durable: (usize, usize),
    pub failures: Vec<String>,
}

fn failure_list(failures: &[String]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!("; {}", failures.join("; "))
    }
}

impl KvError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Core(e) => e.is_retryable(),
            Self::Storage(_)
            | Self::TryAgain(_)
            | Self::Unavailable(_)
            | Self::NotOwner(_)
            | Self::QuorumUnmet(_) => true,
            _ => false,
        }
    }
}

impl From<fjall::Error> for KvError {
    fn from(e: fjall::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
