//! The simulated network: a queue of messages ordered by delivery time.
//! Each send may be dropped, delayed, stalled or duplicated; random delays
//! make messages overtake each other.

use super::msg::{Addr, Tick};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub drop: f64,
    pub duplicate: f64,
    /// Delays are drawn from `1..=max_delay` ticks...
    pub max_delay: Tick,
    /// ...except for this share of messages, which stall for up to
    /// `stall_delay` ticks (a retransmission, a paused process), long
    /// enough for their sender to time out and retry.
    pub stall: f64,
    pub stall_delay: Tick,
}

pub struct Envelope<M> {
    pub from: Addr,
    pub to: Addr,
    pub msg: M,
}

pub struct Net<M> {
    /// (delivery tick, send order) -> message; the order breaks ties.
    queue: BTreeMap<(Tick, u64), Envelope<M>>,
    seq: u64,
    pub faults: Faults,
    pub sent: u64,
    pub dropped: u64,
}

impl<M: Clone> Net<M> {
    pub fn new(faults: Faults) -> Self {
        Self {
            queue: BTreeMap::new(),
            seq: 0,
            faults,
            sent: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: Tick, rng: &mut StdRng, from: Addr, to: Addr, msg: M) {
        self.sent += 1;
        if rng.random_bool(self.faults.drop) {
            self.dropped += 1;
            return;
        }
        if rng.random_bool(self.faults.duplicate) {
            let copy = Envelope {
                from: from.clone(),
                to: to.clone(),
                msg: msg.clone(),
            };
            self.enqueue(now, rng, copy);
        }
        self.enqueue(now, rng, Envelope { from, to, msg });
    }

    fn enqueue(&mut self, now: Tick, rng: &mut StdRng, e: Envelope<M>) {
        let max = if rng.random_bool(self.faults.stall) {
            self.faults.stall_delay
        } else {
            self.faults.max_delay
        };
        let at = now + rng.random_range(1..=max.max(1));
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    /// The next message due at or before `now`, if any.
    pub fn due(&mut self, now: Tick) -> Option<Envelope<M>> {
        let (&(at, _), _) = self.queue.first_key_value()?;
        if at > now {
            return None;
        }
        self.queue.pop_first().map(|(_, e)| e)
    }
}
