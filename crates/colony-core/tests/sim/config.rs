//! The knobs of one simulation run.

use super::msg::Tick;
use super::net::Faults;
use colony_core::cluster::HandoffConfig;
use colony_core::{PartitionId, Partitioner};

/// Flaws of earlier versions of the node's housekeeping (`maintain.rs`),
/// which the sim models rather than runs (see `node.rs`); each has seeds
/// that show it (leave-at-once: seed 10 of the smaller ring; drop-live-only:
/// seed 32 of the larger; no-replan: seeds 32 and 58 of the larger).
/// `COLONY_SIM_AS_WRITTEN=name,name` (or `all`) brings it back. (The handoff protocol's own flaws the sim once found were fixed in
/// `cluster/handoff.rs`, which the sim now runs, so there is nothing to
/// bring back there: a regression fails the sim as it is.)
#[derive(Debug, Clone, Copy, Default)]
pub struct AsWritten {
    /// A node stops as soon as its ring says it has left.
    pub leave_at_once: bool,
    /// Data is dropped once every *live* member reports our ring: just
    /// after a restart nobody is live yet, so a node drops a partition its
    /// stale ring says it does not own, though it was handed it meanwhile.
    pub drop_live_only: bool,
    /// Nothing commits but joins and leaves: a partition can be stranded
    /// on an exiting member, and the ring can settle unbalanced.
    pub no_replan: bool,
}

impl AsWritten {
    pub const NAMES: [&'static str; 3] = ["leave-at-once", "drop-live-only", "no-replan"];

    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut a = Self::default();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let all = name == "all";
            let mut known = all;
            for (n, flag) in Self::NAMES.iter().zip(a.flags_mut()) {
                if all || *n == name {
                    *flag = true;
                    known = true;
                }
            }
            if !known {
                return Err(format!("unknown flaw {name}; known: {:?}", Self::NAMES));
            }
        }
        Ok(a)
    }

    fn flags_mut(&mut self) -> [&mut bool; 3] {
        [
            &mut self.leave_at_once,
            &mut self.drop_live_only,
            &mut self.no_replan,
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ring_size: u32,
    /// One copy of each key: the sim's store keeps a partition on its
    /// owner only (there is no replication to model), so a move must carry
    /// the whole partition to the new owner, which with one copy is what
    /// the real handoff does. (With more copies it would send only the
    /// ranges whose replica set gains a node, and the new owner, already a
    /// replica, would be expected to hold the rest.)
    pub n_val: u8,
    pub keys: usize,
    pub partitioner: Partitioner,
    pub faults: Faults,
    /// Faults, membership changes and client load run this long; then the
    /// network heals and the cluster must settle within `settle_ticks`.
    pub fault_ticks: Tick,
    pub settle_ticks: Tick,
    pub gossip_every: Tick,
    pub join_retry: Tick,
    /// A peer heard from this recently counts as live.
    pub live_window: Tick,
    /// Foreign data is dropped every `drop_every` gossip rounds.
    pub drop_every: Tick,
    /// Keys one drop step removes (a drop re-checks its conditions before
    /// every step, so a step may be the last for a while).
    pub drop_chunk_keys: usize,
    /// Chunk size, rate (a tick is a millisecond) and transfers at once,
    /// for the real handoff.
    pub handoff: HandoffConfig,
    /// A handoff call with no answer this long fails.
    pub request_timeout: Tick,
    pub client_timeout: Tick,
    pub client_outstanding: usize,
    /// Chance per tick that the client starts an operation.
    pub client_rate: f64,
    pub as_written: AsWritten,
}

impl Config {
    pub fn new(ring_size: u32, as_written: AsWritten) -> Self {
        Self {
            ring_size,
            n_val: 1,
            keys: 120,
            partitioner: Partitioner::new(ring_size).unwrap_or_else(|e| panic!("{e}")),
            faults: Faults {
                drop: 0.10,
                duplicate: 0.03,
                max_delay: 50,
                stall: 0.02,
                stall_delay: 600,
            },
            fault_ticks: 3000,
            settle_ticks: 20_000,
            gossip_every: 30,
            join_retry: 60,
            live_window: 200,
            drop_every: 5,
            drop_chunk_keys: 2,
            handoff: HandoffConfig {
                // About three entries (`k007`, `12 k007@12`) a chunk...
                chunk_bytes: 40,
                // ...and a chunk every 10 ticks at most.
                rate_bytes: 4000,
                concurrency: 2,
            },
            request_timeout: 120,
            client_timeout: 150,
            client_outstanding: 24,
            client_rate: 0.4,
            as_written,
        }
    }

    pub fn partition(&self, key: &str) -> PartitionId {
        self.partitioner.locate(b"sim", key.as_bytes()).0
    }
}
