//! Hybrid logical clock: the timestamps last-writer-wins decisions use.
//!
//! Wall clocks of different nodes disagree and may step back; a pure
//! logical clock ignores real time, so "last" would mean nothing to a
//! client. An HLC stamp is the wall clock in its high 48 bits and a logical
//! counter in its low 16, never lower than any stamp the node has issued or
//! seen. Ties between nodes are broken by node id, so stamps are totally
//! ordered and two different writes never compare equal.

/// An HLC timestamp, ordered by `(time, node)`.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Stamp {
    /// `wall_ms << 16 | logical`.
    pub time: u64,
    /// The issuing node, to break ties.
    pub node: u64,
}

impl Stamp {
    /// Below every stamp a clock issues: the stamp of converted legacy data.
    pub const ZERO: Stamp = Stamp { time: 0, node: 0 };

    /// The wall-clock part, in milliseconds since the epoch.
    pub fn wall_ms(self) -> u64 {
        self.time >> LOGICAL_BITS
    }
}

const LOGICAL_BITS: u32 = 16;

/// One node's clock. The caller feeds it wall time (a seam: tests and the
/// simulator drive it) and every stamp it receives from elsewhere.
#[derive(Debug, Clone)]
pub struct Hlc {
    node: u64,
    last: u64,
}

impl Hlc {
    pub fn new(node: u64) -> Self {
        Self { node, last: 0 }
    }

    /// A stamp strictly greater than any this clock issued or observed.
    /// A wall clock beyond year 10889 saturates rather than wrapping.
    pub fn now(&mut self, wall_ms: u64) -> Stamp {
        let physical = wall_ms.saturating_mul(1 << LOGICAL_BITS);
        self.last = if physical > self.last {
            physical
        } else {
            self.last.saturating_add(1)
        };
        Stamp {
            time: self.last,
            node: self.node,
        }
    }

    /// Note a stamp seen in a remote state, so the next local write orders
    /// after it even if this node's wall clock is behind.
    pub fn observe(&mut self, seen: Stamp) {
        self.last = self.last.max(seen.time);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_increase_even_when_the_wall_clock_steps_back() {
        let mut c = Hlc::new(7);
        let a = c.now(1000);
        let b = c.now(900);
        let d = c.now(1000);
        assert!(a < b && b < d);
        assert_eq!(a.wall_ms(), 1000);
    }

    #[test]
    fn observed_stamps_are_never_undercut() {
        let mut c = Hlc::new(1);
        let remote = Stamp {
            time: 5000 << 16,
            node: 2,
        };
        c.observe(remote);
        assert!(c.now(10) > remote);
    }

    #[test]
    fn ties_break_by_node() {
        let a = Stamp { time: 5, node: 1 };
        let b = Stamp { time: 5, node: 2 };
        assert!(a < b);
    }
}
