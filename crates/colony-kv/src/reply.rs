//! The result of an operation, in a shape close to Redis's replies but free
//! of any wire format: colony-server encodes it as RESP2, RESP3 or JSON.

use crate::KvError;
use bytes::Bytes;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Reply {
    /// `+OK`.
    Ok,
    /// A status word, such as a type name.
    Status(std::borrow::Cow<'static, str>),
    /// Absent (RESP nil).
    Nil,
    Int(i64),
    Bulk(Bytes),
    Array(Vec<Reply>),
    /// Field/value pairs (RESP3 map; a flat array in RESP2).
    Map(Vec<(Reply, Reply)>),
    /// Pairs that may repeat (HRANDFIELD WITHVALUES): a flat array in
    /// RESP2, an array of two-element arrays in RESP3.
    Pairs(Vec<(Reply, Reply)>),
    /// An unordered collection (RESP3 set; an array in RESP2).
    Set(Vec<Reply>),
    /// A double (RESP3 double; a bulk string in RESP2).
    Double(f64),
    Error(KvError),
}

impl Reply {
    pub fn bulk(b: impl Into<Bytes>) -> Self {
        Self::Bulk(b.into())
    }

    pub fn opt_bulk(b: Option<Bytes>) -> Self {
        b.map_or(Self::Nil, Self::Bulk)
    }

    pub fn bool(b: bool) -> Self {
        Self::Int(i64::from(b))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error(_))
    }
}

impl From<KvError> for Reply {
    fn from(e: KvError) -> Self {
        Self::Error(e)
    }
}

impl From<Result<Reply, KvError>> for Reply {
    fn from(r: Result<Reply, KvError>) -> Self {
        r.unwrap_or_else(Reply::Error)
    }
}
