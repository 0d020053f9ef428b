//! What simulated nodes and the client say to each other. Rings and
//! handoff messages travel encoded, as on the wire, so every hop exercises
//! the codec too.

use bytes::Bytes;
use colony_core::NodeId;

/// The logical clock: the simulation loop advances it one step at a time.
pub type Tick = u64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Node(NodeId),
    Client,
}

#[derive(Debug, Clone)]
pub enum Op {
    Put {
        key: String,
        version: u64,
        value: String,
    },
    Get {
        key: String,
    },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Get { key } => key,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Applied,
    Value(Option<(u64, String)>),
    NotOwner(Option<NodeId>),
    TryAgain(&'static str),
}

#[derive(Debug, Clone)]
pub enum Msg {
    /// A node asks a member to let it in.
    Join,
    JoinReply {
        ring: Result<Vec<u8>, String>,
        sent: Tick,
    },
    /// The sender's ring, stamped with its send tick so a receiver keeps
    /// only the newest report of each peer's digest.
    Exchange {
        ring: Vec<u8>,
        sent: Tick,
        reply: bool,
    },
    /// A handoff RPC (`colony_core::cluster::msg::Handoff`, encoded as on
    /// the wire); `req` matches the answer to the call.
    Handoff { req: u64, body: Bytes },
    /// The answer (`HandoffReply`, encoded) to handoff call `req`.
    HandoffReply { req: u64, body: Bytes },
    /// Client to coordinator.
    Request { id: u64, op: Op },
    /// Coordinator to the owner it routes to.
    Forward { id: u64, op: Op, hops: u8 },
    /// Owner to coordinator.
    Answer {
        id: u64,
        op: Op,
        hops: u8,
        result: Outcome,
    },
    /// Coordinator to client.
    Reply { id: u64, result: Outcome },
}
