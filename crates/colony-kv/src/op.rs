//! Operations on one key, applied atomically by the key's vnode.
//!
//! Each variant is one Redis-level operation; the vnode reads the key's
//! object, applies the operation, writes the result and answers, with no
//! other request for that partition in between.

use crate::Object;
use bytes::Bytes;

/// What SET does to an existing expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetExpire {
    /// Drop any expiry (plain SET).
    Clear,
    /// KEEPTTL.
    Keep,
    /// Expire at this Unix time in milliseconds.
    At(u64),
}

/// SET's NX / XX.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SetCond {
    Always,
    IfAbsent,
    IfPresent,
}

/// EXPIRE's NX / XX / GT / LT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpireCond {
    Always,
    Nx,
    Xx,
    Gt,
    Lt,
    /// XX and LT together: has an expiry, and the new one is sooner.
    XxLt,
}

/// GETEX's expiry change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GetExExpire {
    Keep,
    Persist,
    At(u64),
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum KeyOp {
    // Any type.
    Exists,
    Type,
    Del,
    /// Remaining time to live, in milliseconds (`ms`) or seconds.
    Ttl {
        ms: bool,
    },
    Expire {
        at: u64,
        cond: ExpireCond,
    },
    Persist,
    /// Read the whole object (no change).
    Fetch,
    /// Remove and return the whole object.
    Take,
    /// Store a whole object; with `nx`, only if the key is absent.
    Put {
        object: Box<Object>,
        nx: bool,
    },
    /// Replace whatever is there (None deletes).
    Replace(Option<Box<Object>>),

    // Strings.
    Get,
    Set {
        value: Bytes,
        expire: SetExpire,
        cond: SetCond,
        get: bool,
    },
    GetDel,
    GetEx(GetExExpire),
    Append(Bytes),
    StrLen,
    GetRange {
        start: i64,
        end: i64,
    },
    SetRange {
        offset: usize,
        value: Bytes,
    },
    IncrBy(i64),
    IncrByFloat(f64),

    // Hashes.
    HSet {
        pairs: Vec<(Bytes, Bytes)>,
        nx: bool,
    },
    HGet(Bytes),
    HMGet(Vec<Bytes>),
    HDel(Vec<Bytes>),
    HGetAll,
    HKeys,
    HVals,
    HLen,
    HExists(Bytes),
    HStrLen(Bytes),
    HIncrBy(Bytes, i64),
    HIncrByFloat(Bytes, f64),
    HRandField {
        count: Option<i64>,
        with_values: bool,
    },
    HScan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        novalues: bool,
    },

    // Sets.
    SAdd(Vec<Bytes>),
    SRem(Vec<Bytes>),
    SMembers,
    SIsMember(Bytes),
    SMIsMember(Vec<Bytes>),
    SCard,
    SPop(Option<usize>),
    SRandMember(Option<i64>),
    SScan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
    },

    // The replicated object itself (HTTP: siblings and causal contexts).
    /// The key's whole state, merged over the replicas read.
    FetchDoc,
    /// Store a plain value, removing only the siblings `ctx` (an opaque
    /// context from an earlier read) covers; without `ctx`, every sibling
    /// the leader holds. `prior` is the state the coordinator read first,
    /// merged in before the write so that everything the client saw counts.
    PutCtx(Box<CtxPut>),
    /// Delete what `ctx` covers (everything observed without it).
    DelCtx(Box<CtxDel>),
}

// The rare large operations are boxed, so that the common ones (moved
// several times per request) stay small. A boxed struct serializes as its
// fields did inline, so the wire format is unchanged.

/// [`KeyOp::PutCtx`]'s arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtxPut {
    pub value: Bytes,
    pub content_type: Option<Bytes>,
    pub ctx: Option<Bytes>,
    pub prior: Option<Bytes>,
}

/// [`KeyOp::DelCtx`]'s arguments.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtxDel {
    pub ctx: Option<Bytes>,
    pub prior: Option<Bytes>,
}

impl KeyOp {
    /// Whether the operation never changes the key (reads may still remove
    /// an expired key, which is not a change a client can see).
    pub fn is_read_only(&self) -> bool {
        use KeyOp::*;
        matches!(
            self,
            Exists
                | FetchDoc
                | Type
                | Ttl { .. }
                | Fetch
                | Get
                | StrLen
                | GetRange { .. }
                | HGet(_)
                | HMGet(_)
                | HGetAll
                | HKeys
                | HVals
                | HLen
                | HExists(_)
                | HStrLen(_)
                | HRandField { .. }
                | HScan { .. }
                | SMembers
                | SIsMember(_)
                | SMIsMember(_)
                | SCard
                | SRandMember(_)
                | SScan { .. }
        )
    }
}
