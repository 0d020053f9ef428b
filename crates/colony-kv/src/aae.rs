//! Active anti-entropy: replicas of a partition converge on their own, for
//! every key, whether or not anyone reads it.
//!
//! Each vnode keeps a hash tree of its partition ([`tree`]), updated with
//! every write it stages and rebuilt from the store on a slow schedule
//! (`vnode/aae.rs`). Exchanges ([`exchange`]) compare two replicas' trees
//! top-down and merge the keys that differ on both sides; a sweep reaps
//! tombstones every replica was found holding. The node's loop that
//! schedules them is `service/aae.rs`. Design notes:
//! docs/design/anti-entropy.md.

pub mod exchange;
pub mod tree;

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Anti-entropy settings of a node.
#[derive(Debug, Clone)]
pub struct AaeConfig {
    /// Run exchanges at all (trees are kept either way).
    pub enabled: bool,
    /// Pause between exchanges that found nothing to repair (one exchange
    /// covers one partition with one other replica).
    pub exchange_interval: Duration,
    /// Rebuild every tree from the store this often.
    pub rebuild_interval: Duration,
    /// Entries per second tree builds may read, node-wide.
    pub build_rate: u64,
    /// Keys per second exchanges may repair, node-wide.
    pub repair_rate: u64,
    /// Tombstones younger than this are not reaped (hints of older writes
    /// held elsewhere get time to arrive first).
    pub tombstone_grace: Duration,
}

impl Default for AaeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            exchange_interval: Duration::from_millis(500),
            rebuild_interval: Duration::from_secs(24 * 3600),
            build_rate: 200_000,
            repair_rate: 10_000,
            tombstone_grace: Duration::from_secs(10),
        }
    }
}

/// A token bucket shared by a node's vnodes or exchanges: at most `rate`
/// units a second, with a second's worth of burst.
#[derive(Debug)]
pub struct Budget {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Take up to `want` units; returns how many were granted (0 when the
    /// budget is spent for now).
    pub fn take_up_to(&self, want: u64) -> u64 {
        let Ok(mut s) = self.state.lock() else {
            return want;
        };
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.rate);
        s.1 = now;
        let granted = s.0.min(want as f64).max(0.0).floor();
        s.0 -= granted;
        granted as u64
    }

    /// How long until `units` more are available.
    pub fn wait_for(&self, units: u64) -> Duration {
        let have = self.state.lock().map(|s| s.0).unwrap_or(0.0);
        let missing = (units as f64 - have).max(0.0);
        Duration::from_secs_f64(missing / self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_grants_no_more_than_its_burst_at_once() {
        let b = Budget::new(100);
        assert_eq!(b.take_up_to(60), 60);
        let second = b.take_up_to(60);
        assert!(second <= 41, "granted {second}");
        assert!(b.wait_for(50) > Duration::ZERO);
    }
}
