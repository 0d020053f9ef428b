//! The knobs of one simulation run.

use super::msg::Tick;
use super::net::Faults;
use colony_core::{PartitionId, Partitioner};

/// Behaviours of the protocol as written (cluster/mod.rs, cluster/handoff.rs
/// and the KV vnode) that the sim's protocol changes. Each is a flaw, and
/// all but `sticky_moved` have seeds that show it;
/// `COLONY_SIM_AS_WRITTEN=name,name` (or `all`) brings it back.
#[derive(Debug, Clone, Copy, Default)]
pub struct AsWritten {
    /// `take_dirty` forgets keys before the chunk carrying them is
    /// acknowledged: a lost catch-up chunk loses those writes.
    pub dirty_drop: bool,
    /// The transfer id is `owner/partition/generation`, the same after the
    /// sender restarts (or cancels and re-plans) and loses its dirty keys,
    /// so the receiver resumes past keys written meanwhile.
    pub resume_after_restart: bool,
    /// Any Begin with an id the receiver does not hold in memory wipes the
    /// partition: a late Begin wipes a finished transfer.
    pub stale_begin: bool,
    /// Import overwrites: a late duplicate chunk rolls a key back.
    pub overwrite: bool,
    /// `moved` is set before `complete`, and stays set when it fails (as it
    /// does now when the move was re-planned meanwhile): the owner refuses
    /// a partition it still owns until it restarts.
    pub sticky_moved: bool,
    /// A node stops as soon as its ring says it has left.
    pub leave_at_once: bool,
    /// Data is dropped once every *live* member reports our ring: just
    /// after a restart nobody is live yet, so a node drops a partition its
    /// stale ring says it does not own, though it was handed it meanwhile.
    pub drop_live_only: bool,
    /// The partition goes to whoever is planned when the transfer ends
    /// (`Ring::complete` without a target), not to the node sent the data.
    pub complete_to_next: bool,
    /// Nothing commits but joins and leaves: a partition can be stranded
    /// on an exiting member, and the ring can settle unbalanced.
    pub no_replan: bool,
}

impl AsWritten {
    pub const NAMES: [&'static str; 9] = [
        "dirty-drop",
        "resume-after-restart",
        "stale-begin",
        "overwrite",
        "sticky-moved",
        "leave-at-once",
        "drop-live-only",
        "complete-to-next",
        "no-replan",
    ];

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

    fn flags_mut(&mut self) -> [&mut bool; 9] {
        [
            &mut self.dirty_drop,
            &mut self.resume_after_restart,
            &mut self.stale_begin,
            &mut self.overwrite,
            &mut self.sticky_moved,
            &mut self.leave_at_once,
            &mut self.drop_live_only,
            &mut self.complete_to_next,
            &mut self.no_replan,
        ]
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub ring_size: u32,
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
    pub chunk_keys: usize,
    /// Catch-up rounds stop early once a round has fewer dirty keys.
    pub catch_up_threshold: usize,
    pub request_timeout: Tick,
    pub handoff_concurrency: usize,
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
            n_val: 3,
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
            chunk_keys: 3,
            catch_up_threshold: 2,
            request_timeout: 120,
            handoff_concurrency: 2,
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
