//! Deterministic simulation of a Colony cluster: membership changes, ring
//! merge and ownership handoff under message loss, delay, duplication and
//! reordering, and node restarts. All ring logic is the real `Ring`, and
//! every transfer runs the real sender and receiver of
//! `cluster/handoff.rs`, polled by the sim's loop over a simulated network,
//! store and clock (`sim/host.rs`, `sim/store.rs`). The network, the nodes'
//! storage, their housekeeping (gossip, scheduling transfers, dropping
//! data: a model of `cluster/maintain.rs`) and the client are modelled in
//! `sim/`. One seed decides a whole run: no threads, and no wall clock in
//! any decision.
//!
//! Checked after every step: no two nodes serve a partition, no read
//! returns less than was acknowledged before it began, and (every few
//! steps) the node serving a key holds its last acknowledged write.
//! Checked once the network heals: every node holds one ring, no move is
//! left, ownership is balanced, every key takes a new write (no partition
//! is left sealed or refused by its owner), and every acknowledged write is
//! on its owner.
//!
//! A failure prints its seed and the command replaying it. Environment:
//! `COLONY_SIM_SEED=<seed>` runs one seed, `COLONY_SIM_SEEDS=a..b` a range,
//! `COLONY_SIM_TRACE=1` prints every event, `COLONY_SIM_AS_WRITTEN=<flaw>,…`
//! (or `all`) brings back flaws of earlier versions of the housekeeping the
//! sim models (see `sim/config.rs`).
#![allow(clippy::unwrap_used)]

mod sim {
    pub mod client;
    pub mod config;
    pub mod host;
    pub mod msg;
    pub mod net;
    pub mod node;
    pub mod serve;
    pub mod store;
    pub mod world;
}

use sim::config::{AsWritten, Config};
use std::cell::RefCell;
use std::sync::Once;

thread_local! {
    /// The test and seed running on this thread, for the panic hook.
    static RUNNING: RefCell<Option<(&'static str, u64)>> = const { RefCell::new(None) };
}

/// Whatever panics inside a run (an assertion in the model, the ring), the
/// seed and the command replaying it are printed first.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some((test, seed)) = RUNNING.with(|r| *r.borrow()) {
                eprintln!(
                    "simulation seed {seed} panicked\n  replay: {}",
                    replay(test, seed)
                );
            }
            default(info);
        }));
    });
}

/// The seeds to run: from the environment if given, else `fixed`.
fn seeds(fixed: Vec<u64>) -> Vec<u64> {
    if let Ok(s) = std::env::var("COLONY_SIM_SEED") {
        return vec![s.trim().parse().expect("COLONY_SIM_SEED is a u64")];
    }
    if let Ok(r) = std::env::var("COLONY_SIM_SEEDS") {
        let (a, b) = r.split_once("..").expect("COLONY_SIM_SEEDS is a..b");
        return (a.trim().parse().unwrap()..b.trim().parse().unwrap()).collect();
    }
    fixed
}

/// A seed from the time of day, so that every run also explores.
fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn config(ring_size: u32) -> Config {
    let spec = std::env::var("COLONY_SIM_AS_WRITTEN").unwrap_or_default();
    Config::new(ring_size, AsWritten::parse(&spec).unwrap())
}

fn replay(test: &str, seed: u64) -> String {
    let mut cmd = format!("COLONY_SIM_SEED={seed}");
    if let Ok(a) = std::env::var("COLONY_SIM_AS_WRITTEN") {
        cmd += &format!(" COLONY_SIM_AS_WRITTEN={a}");
    }
    format!("{cmd} COLONY_SIM_TRACE=1 cargo test -p colony-core --test sim {test} -- --nocapture")
}

/// Run every seed; report each, and fail naming the seeds that failed.
fn run_seeds(test: &'static str, cfg: &Config, seeds: Vec<u64>) {
    install_panic_hook();
    let trace = std::env::var("COLONY_SIM_TRACE").is_ok();
    let mut failed = Vec::new();
    for seed in seeds {
        RUNNING.with(|r| *r.borrow_mut() = Some((test, seed)));
        match sim::world::run(seed, cfg, trace) {
            Ok(s) => eprintln!(
                "seed {seed}: settled at tick {}, {} members, {} writes acked, {} reads, \
                 {} handoffs, {} crashes, {} messages ({} dropped), refused {:?}",
                s.settled_at,
                s.members,
                s.writes_acked,
                s.reads_done,
                s.handoffs,
                s.crashes,
                s.messages,
                s.dropped,
                s.refused,
            ),
            Err(e) => {
                eprintln!("seed {seed} FAILED: {e}\n  replay: {}", replay(test, seed));
                failed.push(seed);
            }
        }
        RUNNING.with(|r| *r.borrow_mut() = None);
    }
    assert!(failed.is_empty(), "{test}: failing seeds {failed:?}");
}

#[test]
fn joins_leaves_and_restarts_on_a_lossy_network_keep_every_acknowledged_write() {
    let test = "joins_leaves_and_restarts_on_a_lossy_network_keep_every_acknowledged_write";
    run_seeds(test, &config(32), seeds((1..=10).collect()));
}

#[test]
fn a_smaller_ring_on_a_lossier_network_keeps_every_acknowledged_write() {
    let test = "a_smaller_ring_on_a_lossier_network_keeps_every_acknowledged_write";
    let mut cfg = config(16);
    cfg.faults.drop = 0.2;
    cfg.faults.duplicate = 0.05;
    let mut fixed: Vec<u64> = (11..=19).collect();
    fixed.push(fresh_seed());
    run_seeds(test, &cfg, seeds(fixed));
}
