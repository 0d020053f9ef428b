//! What simulated nodes and the client say to each other. Rings travel
//! encoded, as on the wire, so every hop exercises the codec too.

use colony_core::{NodeId, PartitionId};

/// The logical clock: the simulation loop advances it one step at a time.
pub type Tick = u64;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Addr {
    Node(NodeId),
    Client,
}

/// One transfer attempt of a partition. Handoff as written names a transfer
/// `owner/partition/generation`; the sim's protocol adds the sender's
/// dirty-tracking session, so a resume cursor is trusted only while the
/// keys written since that session began are all still tracked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct XferId {
    pub gen: u64,
    pub session: u64,
    pub from: NodeId,
    pub partition: PartitionId,
}

impl XferId {
    /// Attempts are ordered by the partition's generation (one owner per
    /// generation), then by the owner's session counter.
    pub fn newer_than(&self, other: &XferId) -> bool {
        (self.gen, self.session) > (other.gen, other.session)
    }
}

impl std::fmt::Display for XferId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/s{}",
            self.from, self.partition, self.gen, self.session
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub version: u64,
    pub value: String,
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
pub enum HandoffReply {
    Resume(Option<String>),
    Ok,
    Refused(String),
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
    Begin {
        req: u64,
        xfer: XferId,
    },
    Chunk {
        req: u64,
        xfer: XferId,
        items: Vec<Item>,
        cursor: Option<String>,
    },
    Commit {
        req: u64,
        xfer: XferId,
        ring: Vec<u8>,
        sent: Tick,
    },
    HandoffReply {
        req: u64,
        reply: HandoffReply,
    },
    /// Client to coordinator.
    Request {
        id: u64,
        op: Op,
    },
    /// Coordinator to the owner it routes to.
    Forward {
        id: u64,
        op: Op,
        hops: u8,
    },
    /// Owner to coordinator.
    Answer {
        id: u64,
        op: Op,
        hops: u8,
        result: Outcome,
    },
    /// Coordinator to client.
    Reply {
        id: u64,
        result: Outcome,
    },
}
