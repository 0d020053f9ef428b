//! The simulated network as the coordinator's transport: a call to
//! another node is two legs, each delayed (sometimes past the replica
//! timeout), lost or cut by a partition; the request is applied when it
//! arrives, whether or not the caller still waits. A call to a node known
//! down is refused at once or hangs until the timeout; a crashed
//! coordinator sends nothing more.

use super::world::{with, Shared};
use colony_core::{NodeId, PartitionId};
use colony_kv::coordinator::{CallFailed, ReplicaTransport, REPLICA_TIMEOUT};
use colony_kv::vnode::{KvRequest, KvResponse};
use colony_kv::KvError;
use rand::Rng;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};

/// One incarnation of one node, as a coordinator.
#[derive(Clone)]
pub struct SimNet {
    world: Shared,
    me: NodeId,
    idx: usize,
    incarnation: u64,
    repairs: Arc<Semaphore>,
}

enum Plan {
    /// The caller is dead: nothing is sent.
    Gone,
    Local,
    Refused,
    /// Sent into a partition or to a node that just died.
    Lost,
    Deliver {
        there: Duration,
        lost_there: bool,
        back: Duration,
        lost_back: bool,
    },
}

fn unavailable(msg: String, maybe_delivered: bool) -> CallFailed {
    CallFailed::new(KvError::Unavailable(msg), maybe_delivered)
}

fn answer(r: KvResponse) -> Result<KvResponse, CallFailed> {
    match r {
        KvResponse::Failed(e) => Err(CallFailed::new(e, false)),
        r => Ok(r),
    }
}

impl SimNet {
    pub fn new(world: &Shared, idx: usize, repairs: Arc<Semaphore>) -> Self {
        let (me, incarnation) = with(world, |w| {
            (w.nodes[idx].id.clone(), w.nodes[idx].incarnation)
        });
        Self {
            world: world.clone(),
            me,
            idx,
            incarnation,
            repairs,
        }
    }

    pub fn alive(&self) -> bool {
        with(&self.world, |w| w.alive(self.idx, self.incarnation))
    }

    async fn send(
        self,
        to: NodeId,
        p: PartitionId,
        req: KvRequest,
    ) -> Result<KvResponse, CallFailed> {
        let what = with(&self.world, |w| w.cfg.messages).then(|| describe(&req));
        let r = self.clone().deliver(to.clone(), p, req).await;
        if let Some(what) = what {
            let outcome = match &r {
                Ok(r) => format!("{r:?}").chars().take(60).collect::<String>(),
                Err(f) => format!("failed ({}, maybe delivered {})", f.err, f.maybe_delivered),
            };
            let line = format!("  {} -> {to} {what}: {outcome}", self.me);
            with(&self.world, |w| w.note(line));
        }
        r
    }

    async fn deliver(
        self,
        to: NodeId,
        p: PartitionId,
        req: KvRequest,
    ) -> Result<KvResponse, CallFailed> {
        let (from, inc) = (self.idx, self.incarnation);
        let (to_idx, plan) = with(&self.world, |w| {
            let to_idx = w.index(&to);
            let plan = if !w.alive(from, inc) {
                Plan::Gone
            } else if to_idx == from {
                Plan::Local
            } else if !w.reachable(from, to_idx) {
                if w.rng.random_bool(0.5) {
                    Plan::Refused
                } else {
                    Plan::Lost
                }
            } else {
                Plan::Deliver {
                    there: w.delay(),
                    lost_there: w.lose(),
                    back: w.delay(),
                    lost_back: w.lose(),
                }
            };
            (to_idx, plan)
        });
        let deadline = tokio::time::Instant::now() + REPLICA_TIMEOUT;
        let timed_out = || unavailable(format!("{to} did not answer in time"), true);
        match plan {
            Plan::Gone => Err(unavailable(format!("{} is down", self.me), false)),
            Plan::Refused => Err(unavailable(format!("{to} is unreachable: refused"), false)),
            Plan::Local => {
                tokio::task::yield_now().await;
                match with(&self.world, |w| {
                    w.alive(from, inc)
                        .then(|| w.serve(from, p, req, false))
                        .flatten()
                }) {
                    Some(r) => answer(r),
                    None => Err(unavailable(format!("{} is down", self.me), false)),
                }
            }
            Plan::Lost => {
                tokio::time::sleep_until(deadline).await;
                Err(timed_out())
            }
            Plan::Deliver {
                there,
                lost_there,
                back,
                lost_back,
            } => {
                let (tx, rx) = oneshot::channel();
                let world = self.world.clone();
                // The message travels on its own: it lands even if the
                // caller has given up waiting.
                tokio::spawn(async move {
                    tokio::time::sleep(there).await;
                    let served = with(&world, |w| {
                        if lost_there || w.is_cut(from, to_idx) {
                            return None;
                        }
                        w.serve(to_idx, p, req, true)
                    });
                    let Some(reply) = served else { return };
                    tokio::time::sleep(back).await;
                    let arrives = with(&world, |w| {
                        !lost_back && !w.is_cut(from, to_idx) && w.alive(from, inc)
                    });
                    if arrives {
                        let _ = tx.send(reply);
                    }
                });
                match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(r)) => answer(r),
                    Ok(Err(_)) => {
                        // Lost on the way: the caller cannot tell, it waits.
                        tokio::time::sleep_until(deadline).await;
                        Err(timed_out())
                    }
                    Err(_) => Err(timed_out()),
                }
            }
        }
    }
}

impl ReplicaTransport for SimNet {
    fn me(&self) -> &NodeId {
        &self.me
    }

    fn call(
        &self,
        node: &NodeId,
        partition: PartitionId,
        req: KvRequest,
    ) -> impl Future<Output = Result<KvResponse, CallFailed>> + Send {
        self.clone().send(node.clone(), partition, req)
    }

    fn repair_budget(&self) -> &Arc<Semaphore> {
        &self.repairs
    }
}

/// A request in a trace line.
fn describe(req: &KvRequest) -> String {
    match req {
        KvRequest::Lead { key, op, hints, .. } => format!("Lead {key:?} {op:?} hints {hints:?}"),
        KvRequest::Merge { key, hints, .. } => format!("Merge {key:?} hints {hints:?}"),
        KvRequest::Fetch { key, .. } => format!("Fetch {key:?}"),
        KvRequest::Hints { node, .. } => format!("Hints for {node}"),
        KvRequest::HintsDelivered { node, items } => {
            format!("HintsDelivered {node} ({} keys)", items.len())
        }
        other => format!("{other:?}"),
    }
}
