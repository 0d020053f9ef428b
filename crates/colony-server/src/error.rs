//! Errors facing clients, mapped in one place each: RESP text here, HTTP
//! status and JSON code in [`http_error`].

use colony_core::CoreError;
use colony_kv::KvError;

/// The RESP error line (without the leading `-`) for a data-service error.
pub fn resp_error(e: &KvError) -> String {
    match e {
        KvError::WrongType => {
            "WRONGTYPE Operation against a key holding the wrong kind of value".into()
        }
        KvError::NotInteger => "ERR value is not an integer or out of range".into(),
        KvError::NotFloat => "ERR value is not a valid float".into(),
        KvError::HashNotInteger => "ERR hash value is not an integer".into(),
        KvError::HashNotFloat => "ERR hash value is not a float".into(),
        KvError::Overflow => "ERR increment or decrement would overflow".into(),
        KvError::NanOrInfinity => "ERR increment would produce NaN or Infinity".into(),
        KvError::NoSuchKey => "ERR no such key".into(),
        KvError::StringTooLong => {
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)".into()
        }
        KvError::ValueTooLarge { size, max } => {
            format!("ERR value too large: {size} bytes exceeds the limit of {max} bytes (max-value-bytes)")
        }
        KvError::KeyTooLarge { size, max } => {
            format!(
                "ERR key too large: {size} bytes exceeds the limit of {max} bytes (max-key-bytes)"
            )
        }
        KvError::Core(CoreError::Overloaded { partition }) => {
            format!("BUSY partition {partition} is overloaded, retry later")
        }
        KvError::Core(CoreError::VnodeCrashed { partition }) => {
            format!("TRYAGAIN partition {partition} restarted while handling the request")
        }
        KvError::QuorumUnmet(_) => format!("NOQUORUM {e}"),
        other if other.is_retryable() => format!("TRYAGAIN {other}"),
        other => format!("ERR {other}"),
    }
}

/// HTTP status and stable JSON error code for a data-service error.
pub fn http_error(e: &KvError) -> (u16, &'static str) {
    match e {
        KvError::WrongType => (409, "wrong_type"),
        KvError::NotInteger
        | KvError::NotFloat
        | KvError::HashNotInteger
        | KvError::HashNotFloat
        | KvError::Overflow
        | KvError::NanOrInfinity => (400, "invalid_value"),
        KvError::NoSuchKey => (404, "not_found"),
        KvError::StringTooLong | KvError::ValueTooLarge { .. } => (413, "value_too_large"),
        KvError::KeyTooLarge { .. } => (414, "key_too_large"),
        KvError::InvalidBucket(_) => (400, "invalid_bucket"),
        KvError::InvalidProps(_) => (400, "invalid_props"),
        KvError::Core(CoreError::Overloaded { .. }) => (503, "overloaded"),
        KvError::Core(_) | KvError::Storage(_) | KvError::Unavailable(_) => (503, "unavailable"),
        KvError::TryAgain(_) | KvError::NotOwner(_) => (503, "try_again"),
        KvError::QuorumUnmet(_) => (503, "quorum_unmet"),
        KvError::BadContext(_) => (400, "invalid_context"),
        KvError::TooManySiblings { .. } => (409, "too_many_siblings"),
        KvError::Corrupt(_) => (500, "corrupt"),
    }
}
