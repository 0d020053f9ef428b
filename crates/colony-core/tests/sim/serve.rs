//! Serving clients: a coordinator routes each request by its own ring to
//! the owner and follows the owner's hint when its ring is behind; the
//! owner serves only what its ring says it owns and has not moved away,
//! and refuses writes while the partition is sealed for a handoff.

use super::msg::{Addr, Msg, Op, Outcome};
use super::node::{Ctx, Node};

/// Redirects a coordinator follows before it gives up and lets the client
/// retry.
const MAX_HOPS: u8 = 4;

impl Node {
    /// Route a client request by our ring to the owner.
    pub fn coordinate(&mut self, ctx: &mut Ctx, id: u64, op: Op, hops: u8) {
        let Some(ring) = self.ring() else {
            ctx.out.push((
                Addr::Client,
                Msg::Reply {
                    id,
                    result: Outcome::TryAgain("coordinator has no ring"),
                },
            ));
            return;
        };
        let p = ctx.cfg.partition(op.key());
        match ring.owner(p).cloned() {
            Some(o) if o != self.id => ctx.send(
                &o,
                Msg::Forward {
                    id,
                    op,
                    hops: hops + 1,
                },
            ),
            _ => {
                let result = self.serve(ctx, &op);
                self.on_answer(ctx, id, op, hops, result);
            }
        }
    }

    pub fn on_answer(&mut self, ctx: &mut Ctx, id: u64, op: Op, hops: u8, result: Outcome) {
        if let Outcome::NotOwner(Some(hint)) = &result {
            if hops < MAX_HOPS {
                if *hint == self.id {
                    let result = self.serve(ctx, &op);
                    return self.on_answer(ctx, id, op, hops + 1, result);
                }
                let hint = hint.clone();
                ctx.send(
                    &hint,
                    Msg::Forward {
                        id,
                        op,
                        hops: hops + 1,
                    },
                );
                return;
            }
        }
        ctx.out.push((Addr::Client, Msg::Reply { id, result }));
    }

    /// Serve a request if this node is the owner by its ring and the
    /// partition is neither moved nor sealed (for writes).
    pub fn serve(&mut self, ctx: &mut Ctx, op: &Op) -> Outcome {
        let Some(ring) = &self.disk.ring else {
            return Outcome::TryAgain("no ring");
        };
        let p = ctx.cfg.partition(op.key());
        if let Some(to) = self.mem.moved.get(&p) {
            return Outcome::NotOwner(Some(to.clone()));
        }
        if ring.owner(p) != Some(&self.id) {
            return Outcome::NotOwner(ring.owner(p).cloned());
        }
        match op {
            Op::Get { key } => {
                Outcome::Value(self.disk.data.get(&p).and_then(|d| d.get(key)).cloned())
            }
            Op::Put {
                key,
                version,
                value,
            } => {
                if self.mem.sealed.contains(&p) {
                    return Outcome::TryAgain("partition sealed for handoff");
                }
                let data = self.disk.data.entry(p).or_default();
                if data.get(key).is_none_or(|(v, _)| v < version) {
                    data.insert(key.clone(), (*version, value.clone()));
                }
                let tracked = self.mem.tracking.get_mut(&p).map(|t| t.insert(key.clone()));
                ctx.log(&self.id, || {
                    let t = if tracked.is_some() { " (tracked)" } else { "" };
                    format!("applies {key}@{version} in {p}{t}")
                });
                Outcome::Applied
            }
        }
    }
}
