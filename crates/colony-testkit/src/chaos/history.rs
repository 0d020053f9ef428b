//! What a chaos run's clients did and were told: one record per operation,
//! with its invocation and completion times and its outcome, and the state
//! read back once the faults stopped. Written as JSON so a run can be
//! checked again later, or by another checker.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpKind {
    /// SET with a value never written before.
    Set {
        key: String,
        value: String,
    },
    /// INCRBY `by` (> 0).
    Incr {
        key: String,
        by: i64,
    },
    Sadd {
        key: String,
        member: String,
    },
    Srem {
        key: String,
        member: String,
    },
    /// HTTP PUT of a unique value; `context` says whether it carried the
    /// causal context of an earlier GET.
    Put {
        key: String,
        value: String,
        context: bool,
    },
}

impl OpKind {
    pub fn key(&self) -> &str {
        match self {
            Self::Set { key, .. }
            | Self::Incr { key, .. }
            | Self::Sadd { key, .. }
            | Self::Srem { key, .. }
            | Self::Put { key, .. } => key,
        }
    }
}

/// What the client was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (the write quorum was met).
    Ok,
    /// An error reply: the write may still have been applied somewhere
    /// (an unmet quorum leaves it on the replicas that took it).
    Error,
    /// No answer (timeout, connection lost): it may or may not have
    /// been applied.
    Unknown,
}

impl Outcome {
    /// Whether the operation certainly took effect.
    pub fn acked(self) -> bool {
        self == Self::Ok
    }
}

/// One operation's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub id: u64,
    pub client: u32,
    /// The node the client sent it to.
    pub node: String,
    #[serde(flatten)]
    pub kind: OpKind,
    /// Milliseconds since the run started, when sent and when answered
    /// (or given up on).
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub outcome: Outcome,
    /// The reply or error text, for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// A key's state as read back after healing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Observed {
    /// A string (None: the key does not exist).
    Str(Option<String>),
    Counter(i64),
    Set(BTreeSet<String>),
    /// An HTTP object's values: one, or several siblings (none: absent).
    Values(BTreeSet<String>),
}

/// Everything a check needs: the run's seed, every operation, the state
/// read back after healing, and each partition's tree roots per node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub seed: u64,
    pub ops: Vec<Op>,
    /// Key → state read back (through a quorum read).
    pub final_state: BTreeMap<String, Observed>,
    /// Partition → (node, tree root) of each replica, once converged.
    pub roots: BTreeMap<u16, Vec<(String, String)>>,
    /// How long after the faults stopped the roots agreed (None: never
    /// within the run's limit).
    pub converged_after_ms: Option<u64>,
}
