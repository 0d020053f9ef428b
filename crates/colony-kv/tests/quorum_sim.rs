//! Deterministic simulation of quorum reads and writes: a cluster of 3 to
//! 5 nodes, each with a real store (fjall, in a temporary directory) and
//! real `KvVnode`s, the real coordinator flows (`coordinator::write`,
//! `read`, read repair, `deliver_hints`) over a simulated network that
//! delays, loses and reorders messages and partitions nodes, and nodes
//! that crash and restart from their stores. Clients SET, INCR, SADD and
//! read through random nodes. One seed decides a run: tokio on one thread
//! with paused time, every choice from a seeded RNG.
//!
//! Checked during the run: no read shows a write that cannot have taken
//! effect. Once the faults stop and hints are delivered, a few keys vanish
//! from one replica's store each, and anti-entropy exchanges alone (no
//! read) must bring every partition's replicas to equal tree roots and
//! every key's replicas to equal states. Then, every key read (and so
//! repaired): every acknowledged write with w >= quorum
//! is in a quorum read (a SET's value or a later one, INCR totals within
//! [acknowledged, acknowledged + possibly applied], SADD members present),
//! and every key's replicas hold equal states.
//!
//! A failure prints its seed and the command replaying it. Environment:
//! `COLONY_SIM_SEED=<seed>` runs one seed, `COLONY_SIM_SEEDS=a..b` a range,
//! `COLONY_SIM_OPS=<n>` scales the operations per seed (default 250),
//! `COLONY_SIM_TRACE=1` prints every fault and outcome, `=2` every message too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod quorum_sim {
    pub mod check;
    pub mod client;
    pub mod history;
    pub mod nemesis;
    pub mod net;
    pub mod world;
}

use colony_kv::FsyncPolicy;
use quorum_sim::client::{self, Budgets};
use quorum_sim::history::{History, Outcome};
use quorum_sim::world::{with, Config, World};
use quorum_sim::{check, nemesis};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once};

thread_local! {
    /// The test and seed running on this thread, for the panic hook.
    static RUNNING: RefCell<Option<(&'static str, u64)>> = const { RefCell::new(None) };
}

fn replay(test: &str, seed: u64) -> String {
    let ops = std::env::var("COLONY_SIM_OPS")
        .map(|n| format!(" COLONY_SIM_OPS={n}"))
        .unwrap_or_default();
    format!("COLONY_SIM_SEED={seed}{ops} cargo nextest run -p colony-kv --test quorum_sim {test}")
}

/// Whatever panics inside a run, the seed and the command replaying it
/// are printed first.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some((test, seed)) = RUNNING.with(|r| *r.borrow()) {
                eprintln!(
                    "simulation seed {seed} failed\n  replay: {}",
                    replay(test, seed)
                );
            }
            default(info);
        }));
    });
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().map(|s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {s}"))
    })
}

/// The seeds to run: from the environment if given, else `fixed` and one
/// fresh seed, so every run also explores.
fn seeds(fixed: &[u64]) -> Vec<u64> {
    if let Some(s) = env("COLONY_SIM_SEED") {
        return vec![s];
    }
    if let Ok(r) = std::env::var("COLONY_SIM_SEEDS") {
        let (a, b) = r.split_once("..").expect("COLONY_SIM_SEEDS is a..b");
        return (a.trim().parse().unwrap()..b.trim().parse().unwrap()).collect();
    }
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    fixed.iter().copied().chain([fresh]).collect()
}

fn config(seed: u64) -> Config {
    Config {
        nodes: 3 + (seed % 3) as usize,
        ring_size: 8,
        n_val: 3,
        clients: 4,
        ops: env("COLONY_SIM_OPS").unwrap_or(250),
        keys: 6,
        fsync: FsyncPolicy::Always,
        trace: std::env::var("COLONY_SIM_TRACE").is_ok_and(|v| v != "0"),
        messages: std::env::var("COLONY_SIM_TRACE").is_ok_and(|v| v == "2"),
    }
}

/// One whole run; returns its log (every fault and outcome, in order).
fn run(test: &'static str, cfg: Config, seed: u64) -> Vec<String> {
    RUNNING.with(|r| *r.borrow_mut() = Some((test, seed)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let log = rt.block_on(async move {
        let clients = cfg.clients;
        let ops = cfg.ops.div_ceil(clients);
        let world = Arc::new(Mutex::new(World::new(cfg, seed).unwrap()));
        let n = with(&world, |w| w.nodes.len());
        let budgets: Budgets = Arc::new((0..n).map(|_| colony_kv::coordinator::new_repair_budget()).collect());
        let history = Arc::new(Mutex::new(History::default()));
        tokio::spawn(nemesis::gossip(world.clone()));
        for i in 0..n {
            tokio::spawn(nemesis::hints(world.clone(), budgets.clone(), i));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let faults = tokio::spawn(nemesis::nemesis(world.clone(), budgets.clone(), stop.clone()));
        let running: Vec<_> = (0..clients)
            .map(|c| tokio::spawn(client::run(world.clone(), budgets.clone(), history.clone(), c, ops)))
            .collect();
        for c in running {
            if let Err(e) = c.await {
                // A client's check failed: fail the run with its message.
                std::panic::resume_unwind(e.into_panic());
            }
        }
        stop.store(true, Ordering::Relaxed);
        faults.await.unwrap();
        nemesis::heal(&world, &budgets);
        let report = check::after_faults(&world, &budgets, &history).await;
        let h = history.lock().unwrap();
        let summary = format!(
            "seed {seed}: {} nodes, {} writes ({} acknowledged, {} below quorum, {} unknown, {} not applied), {} of {} keys diverged after hints, {} lost from a store, anti-entropy converged in {} rounds",
            n,
            h.writes.len(),
            h.count(Outcome::Acked),
            h.count(Outcome::Applied),
            h.count(Outcome::Unknown),
            h.count(Outcome::NotApplied),
            report.diverged_before_repair,
            report.keys,
            report.lost,
            report.aae_rounds,
        );
        drop(h);
        eprintln!("{summary}");
        let log = with(&world, |w| std::mem::take(&mut w.log));
        drop(world);
        log
    });
    RUNNING.with(|r| *r.borrow_mut() = None);
    log
}

#[test]
fn acknowledged_quorum_writes_survive_loss_partitions_and_crashes() {
    install_panic_hook();
    for seed in seeds(&[1, 2]) {
        run("acknowledged_quorum_writes_survive", config(seed), seed);
    }
}

#[test]
fn a_seed_replays_exactly() {
    install_panic_hook();
    let seed = env("COLONY_SIM_SEED").unwrap_or(7);
    let cfg = Config {
        ops: 60,
        ..config(seed)
    };
    let a = run("a_seed_replays_exactly", cfg.clone(), seed);
    let b = run("a_seed_replays_exactly", cfg, seed);
    assert_eq!(a, b, "seed {seed} ran two different ways");
}
