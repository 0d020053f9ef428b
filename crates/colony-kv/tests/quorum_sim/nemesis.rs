//! The cluster's background: the failure detector's gossip (each node's
//! view of the others catches up with the truth, late), each node's hint
//! delivery loop (the real `deliver_hints`), and the nemesis that cuts,
//! crashes, restarts, loses and delays while clients run.

use super::client::Budgets;
use super::net::SimNet;
use super::world::{with, Shared};
use colony_kv::coordinator;
use rand::Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the failure detector may change its mind.
const GOSSIP_EVERY: Duration = Duration::from_millis(250);
/// How often a node looks for hints to deliver (as the service does).
const HINTS_EVERY: Duration = Duration::from_secs(1);

pub async fn gossip(world: Shared) {
    loop {
        tokio::time::sleep(GOSSIP_EVERY).await;
        with(&world, |w| {
            let n = w.nodes.len();
            for i in 0..n {
                if !w.nodes[i].up {
                    continue;
                }
                for j in 0..n {
                    let truth = w.reachable(i, j);
                    if w.nodes[i].view[j] != truth && w.rng.random_bool(0.5) {
                        w.nodes[i].view[j] = truth;
                        w.note(format!(
                            "n{i} sees n{j} {}",
                            if truth { "up" } else { "down" }
                        ));
                    }
                }
            }
        });
    }
}

/// Whether every live node's view is the truth.
pub fn views_settled(world: &Shared) -> bool {
    with(world, |w| {
        let n = w.nodes.len();
        (0..n)
            .filter(|i| w.nodes[*i].up)
            .all(|i| (0..n).all(|j| w.nodes[i].view[j] == w.reachable(i, j)))
    })
}

/// Node `i`'s hint delivery, for its current incarnation.
pub async fn hints(world: Shared, budgets: Budgets, i: usize) {
    let net = SimNet::new(&world, i, budgets[i].clone());
    let (ring, parts) = with(&world, |w| {
        (
            w.ring.clone(),
            w.partitioner.partitions().collect::<Vec<_>>(),
        )
    });
    loop {
        tokio::time::sleep(HINTS_EVERY).await;
        if !net.alive() {
            return;
        }
        let peers: Vec<_> = with(&world, |w| {
            (0..w.nodes.len())
                .filter(|j| *j != i && w.nodes[i].view[*j])
                .map(|j| w.nodes[j].id.clone())
                .collect()
        });
        for peer in peers {
            for &p in &parts {
                if !with(&world, |w| w.has_hints(i, p, &peer)) {
                    continue;
                }
                if coordinator::deliver_hints(&net, &ring, &peer, p)
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
}

/// Faults until `stop`: partitions, crashes and restarts, loss and delay.
pub async fn nemesis(world: Shared, budgets: Budgets, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let pause = with(&world, |w| {
            Duration::from_millis(w.rng.random_range(200..1_500))
        });
        tokio::time::sleep(pause).await;
        let restarted = with(&world, |w| {
            let n = w.nodes.len();
            let down: Vec<usize> = (0..n).filter(|i| !w.nodes[*i].up).collect();
            let up: Vec<usize> = (0..n).filter(|i| w.nodes[*i].up).collect();
            match w.rng.random_range(0..10) {
                0 | 1 => {
                    let a = w.rng.random_range(0..n);
                    for b in (0..n).filter(|b| *b != a) {
                        if w.rng.random_bool(0.7) {
                            w.cut.insert((a.min(b), a.max(b)));
                        }
                    }
                    w.note(format!("partition: n{a} cut from some, {:?}", w.cut));
                }
                2 | 3 => {
                    w.cut.clear();
                    w.note("partitions healed".into());
                }
                4 | 5 if down.len() < (n - 1) / 2 && !up.is_empty() => {
                    let i = up[w.rng.random_range(0..up.len())];
                    w.crash(i);
                    w.note(format!("n{i} crashed"));
                }
                6 | 7 if !down.is_empty() => {
                    let i = down[w.rng.random_range(0..down.len())];
                    w.start(i).expect("a crashed node reopens its store");
                    w.note(format!("n{i} restarted"));
                    return Some(i);
                }
                _ => {
                    w.loss = [0.0, 0.05, 0.2][w.rng.random_range(0..3)];
                    w.late = [0.0, 0.02, 0.05][w.rng.random_range(0..3)];
                    w.note(format!("loss {} late {}", w.loss, w.late));
                }
            }
            None
        });
        if let Some(i) = restarted {
            tokio::spawn(hints(world.clone(), budgets.clone(), i));
        }
    }
}

/// Faults stop: partitions heal, every node runs, no loss, no late leg.
pub fn heal(world: &Shared, budgets: &Budgets) {
    let restarted = with(world, |w| {
        w.cut.clear();
        w.loss = 0.0;
        w.late = 0.0;
        let down: Vec<usize> = (0..w.nodes.len()).filter(|i| !w.nodes[*i].up).collect();
        for i in &down {
            w.start(*i).expect("a crashed node reopens its store");
        }
        w.note(format!("faults stop; restarted {down:?}"));
        down
    });
    for i in restarted {
        tokio::spawn(hints(world.clone(), budgets.clone(), i));
    }
}
