//! The client: writes new versions of keys and reads them back through
//! random coordinators, retrying what is refused or unanswered, and keeps
//! the history the checks use: the last acknowledged version of each key.

use super::config::Config;
use super::msg::{Addr, Msg, Op, Outcome, Tick};
use super::node::Ctx;
use colony_core::NodeId;
use rand::Rng;
use std::collections::BTreeMap;

struct Pending {
    op: Op,
    /// For reads: the version acknowledged before the read began.
    floor: u64,
    due: Tick,
}

#[derive(Default)]
pub struct Client {
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    next_version: BTreeMap<String, u64>,
    /// key -> (version, value) of the newest acknowledged write.
    pub acked: BTreeMap<String, (u64, String)>,
    pub writes_acked: u64,
    pub reads_done: u64,
    pub retries: u64,
    /// Refusals by reason ("moved" for a redirect).
    pub refused: BTreeMap<&'static str, u64>,
    /// The first read that returned less than was acknowledged before it.
    pub violation: Option<String>,
}

pub fn value_of(key: &str, version: u64) -> String {
    format!("{key}@{version}")
}

impl Client {
    pub fn tick(&mut self, ctx: &mut Ctx, nodes: &[NodeId], issuing: bool) {
        let due: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due <= ctx.now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.retries += 1;
            self.send(ctx, nodes, id);
        }
        if issuing
            && self.pending.len() < ctx.cfg.client_outstanding
            && ctx.rng.random_bool(ctx.cfg.client_rate)
        {
            let key = format!("k{:03}", ctx.rng.random_range(0..ctx.cfg.keys));
            let floor = self.acked.get(&key).map_or(0, |(v, _)| *v);
            let op = if ctx.rng.random_bool(0.7) {
                let v = self.next_version.entry(key.clone()).or_default();
                *v += 1;
                let version = *v;
                let value = value_of(&key, version);
                Op::Put {
                    key,
                    version,
                    value,
                }
            } else {
                Op::Get { key }
            };
            self.next_id += 1;
            let id = self.next_id;
            self.pending.insert(id, Pending { op, floor, due: 0 });
            self.send(ctx, nodes, id);
        }
    }

    /// Write a new version of one key of every partition that has keys
    /// (sent at the next tick).
    pub fn write_every_partition(&mut self, cfg: &Config) {
        let mut seen = std::collections::BTreeSet::new();
        for k in 0..cfg.keys {
            let key = format!("k{k:03}");
            if !seen.insert(cfg.partition(&key)) {
                continue;
            }
            let floor = self.acked.get(&key).map_or(0, |(v, _)| *v);
            let v = self.next_version.entry(key.clone()).or_default();
            *v += 1;
            let (version, value) = (*v, value_of(&key, *v));
            let op = Op::Put {
                key,
                version,
                value,
            };
            self.next_id += 1;
            self.pending
                .insert(self.next_id, Pending { op, floor, due: 0 });
        }
    }

    /// No operation is waiting for an answer.
    pub fn idle(&self) -> bool {
        self.pending.is_empty()
    }

    fn send(&mut self, ctx: &mut Ctx, nodes: &[NodeId], id: u64) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        p.due = ctx.now + ctx.cfg.client_timeout;
        let to = nodes[ctx.rng.random_range(0..nodes.len())].clone();
        let op = p.op.clone();
        ctx.out.push((Addr::Node(to), Msg::Request { id, op }));
    }

    pub fn on_reply(&mut self, ctx: &mut Ctx, id: u64, result: Outcome) {
        let Some(p) = self.pending.get_mut(&id) else {
            return;
        };
        match (&p.op, result) {
            (
                Op::Put {
                    key,
                    version,
                    value,
                },
                Outcome::Applied,
            ) => {
                let newest = self.acked.get(key).is_none_or(|(v, _)| v < version);
                if newest {
                    self.acked.insert(key.clone(), (*version, value.clone()));
                }
                self.writes_acked += 1;
                self.pending.remove(&id);
            }
            (Op::Get { key }, Outcome::Value(found)) => {
                let got = found.as_ref().map_or(0, |(v, _)| *v);
                if got < p.floor && self.violation.is_none() {
                    self.violation = Some(format!(
                        "read of {key} at tick {} returned version {got}, \
                         but version {} was acknowledged before the read began",
                        ctx.now, p.floor
                    ));
                }
                self.reads_done += 1;
                self.pending.remove(&id);
            }
            (_, Outcome::NotOwner(_)) => {
                *self.refused.entry("not the owner").or_default() += 1;
                p.due = ctx.now + ctx.rng.random_range(5..40);
            }
            (_, Outcome::TryAgain(why)) => {
                *self.refused.entry(why).or_default() += 1;
                p.due = ctx.now + ctx.rng.random_range(5..40);
            }
            (op, r) => panic!("answer {r:?} to {op:?}"),
        }
    }
}
