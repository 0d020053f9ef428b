//! Handoff, as cluster/handoff.rs runs it: the owner records keys written
//! from now on, streams the partition in chunks (the receiver remembers a
//! cursor, so a retried transfer resumes), re-sends what was written
//! meanwhile, seals the partition for writes, sends the last dirty keys,
//! marks it moved, hands it over in the ring and tells the receiver.
//!
//! Each step is one request and one awaited reply; a reply that does not
//! come within the timeout fails the attempt, and the scheduler starts
//! another. The sim's protocol differs from the one as written where
//! `AsWritten` says so.

use super::msg::{HandoffReply, Item, Msg, Tick, XferId};
use super::node::{Ctx, Node};
use colony_core::{NodeId, PartitionId};
use std::ops::Bound;

/// Keys written to a partition since tracking began, with a write stamp.
pub struct Tracking {
    pub session: u64,
    pub keys: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Begin,
    /// Streaming; `last` when the chunk in flight ends the partition.
    Stream {
        last: bool,
    },
    /// Catch-up round `round`; `more` when another round should follow.
    CatchUp {
        round: u8,
        more: bool,
    },
    Sealed,
    Commit {
        tries: u8,
    },
}

pub struct Sender {
    pub to: NodeId,
    pub xfer: XferId,
    pub step: Step,
    req: u64,
    deadline: Tick,
    cursor: Option<String>,
    /// Dirty keys in the chunk in flight, with the stamps they were sent at.
    in_flight: Vec<(String, u64)>,
}

enum End {
    Done,
    Cancelled,
    Failed(String),
}

const CATCH_UP_ROUNDS: u8 = 5;
const COMMIT_TRIES: u8 = 3;

impl Node {
    fn still_planned(&self, p: PartitionId, to: &NodeId) -> bool {
        self.ring()
            .is_some_and(|r| r.owner(p) == Some(&self.id) && r.next(p) == Some(to))
    }

    pub fn start_transfer(&mut self, ctx: &mut Ctx, p: PartitionId, to: NodeId) {
        let Some(ring) = self.ring() else { return };
        let gen = ring.generation(p);
        // `begin`: a store already recording keeps what it has.
        if !self.mem.tracking.contains_key(&p) {
            let session = if ctx.cfg.as_written.resume_after_restart {
                0
            } else {
                self.disk.sessions += 1;
                self.disk.sessions
            };
            let t = Tracking {
                session,
                keys: Default::default(),
            };
            self.mem.tracking.insert(p, t);
        }
        let session = self.mem.tracking.get(&p).map_or(0, |t| t.session);
        let xfer = XferId {
            gen,
            session,
            from: self.id.clone(),
            partition: p,
        };
        ctx.log(&self.id, || format!("begins transfer {xfer} to {to}"));
        let mut s = Sender {
            to,
            xfer: xfer.clone(),
            step: Step::Begin,
            req: 0,
            deadline: 0,
            cursor: None,
            in_flight: Vec::new(),
        };
        let msg = Msg::Begin {
            req: self.next_req(ctx, &mut s),
            xfer,
        };
        ctx.send(&s.to, msg);
        self.mem.sending.insert(p, s);
    }

    fn next_req(&mut self, ctx: &Ctx, s: &mut Sender) -> u64 {
        self.disk.next_req += 1;
        s.req = self.disk.next_req;
        s.deadline = ctx.now + ctx.cfg.request_timeout;
        s.req
    }

    pub fn on_handoff_reply(
        &mut self,
        ctx: &mut Ctx,
        from: &NodeId,
        req: u64,
        reply: HandoffReply,
    ) {
        let Some((&p, _)) = self
            .mem
            .sending
            .iter()
            .find(|(_, s)| s.req == req && s.to == *from)
        else {
            return;
        };
        let Some(mut s) = self.mem.sending.remove(&p) else {
            return;
        };
        let end = match (s.step, reply) {
            (Step::Commit { .. }, _) => Some(End::Done),
            (_, HandoffReply::Refused(e)) => Some(End::Failed(e)),
            (Step::Begin, HandoffReply::Resume(cursor)) => {
                s.cursor = cursor;
                self.stream(ctx, p, &mut s)
            }
            (Step::Stream { last }, HandoffReply::Ok) => {
                if last {
                    self.catch_up(ctx, p, &mut s, 0)
                } else {
                    self.stream(ctx, p, &mut s)
                }
            }
            (Step::CatchUp { round, more }, HandoffReply::Ok) => {
                self.acked(p, &mut s);
                if more && round + 1 < CATCH_UP_ROUNDS {
                    self.catch_up(ctx, p, &mut s, round + 1)
                } else {
                    self.seal(ctx, p, &mut s)
                }
            }
            (Step::Sealed, HandoffReply::Ok) => {
                self.acked(p, &mut s);
                self.finish(ctx, p, &mut s)
            }
            (_, r) => Some(End::Failed(format!("unexpected reply {r:?}"))),
        };
        self.settle(ctx, p, s, end);
    }

    /// Keep the sender running, or wind it up.
    fn settle(&mut self, ctx: &mut Ctx, p: PartitionId, s: Sender, end: Option<End>) {
        match end {
            None => {
                self.mem.sending.insert(p, s);
            }
            Some(End::Done) => ctx.log(&self.id, || format!("transfer {} done", s.xfer)),
            Some(End::Cancelled) => {
                ctx.log(&self.id, || format!("transfer {} called off", s.xfer));
                self.mem.sealed.remove(&p);
                self.mem.tracking.remove(&p);
            }
            Some(End::Failed(e)) => {
                ctx.log(&self.id, || format!("transfer {} failed: {e}", s.xfer));
                self.mem.sealed.remove(&p);
            }
        }
    }

    pub fn handoff_timeouts(&mut self, ctx: &mut Ctx) {
        let late: Vec<PartitionId> = self
            .mem
            .sending
            .iter()
            .filter(|(_, s)| s.deadline <= ctx.now)
            .map(|(p, _)| *p)
            .collect();
        for p in late {
            let Some(mut s) = self.mem.sending.remove(&p) else {
                continue;
            };
            let end = match s.step {
                Step::Commit { tries } if tries < COMMIT_TRIES => {
                    self.send_commit(ctx, &mut s, tries + 1);
                    None
                }
                // The ring reaches the receiver by gossip anyway.
                Step::Commit { .. } => Some(End::Done),
                _ => Some(End::Failed("timed out".into())),
            };
            self.settle(ctx, p, s, end);
        }
    }

    fn stream(&mut self, ctx: &mut Ctx, p: PartitionId, s: &mut Sender) -> Option<End> {
        if !self.still_planned(p, &s.to) {
            return Some(End::Cancelled);
        }
        let lower = match &s.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let data = self.disk.data.get(&p);
        let mut range = data
            .into_iter()
            .flat_map(|d| d.range::<String, _>((lower.clone(), Bound::Unbounded)));
        let items: Vec<Item> = range
            .by_ref()
            .take(ctx.cfg.chunk_keys)
            .map(|(k, (v, val))| item(k, *v, val))
            .collect();
        let more = range.next().is_some();
        let next = if more {
            items.last().map(|i| i.key.clone())
        } else {
            None
        };
        ctx.log(&self.id, || {
            let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
            format!("streams {keys:?} of {} (more: {more})", s.xfer)
        });
        s.step = Step::Stream { last: !more };
        s.cursor = next.clone();
        s.in_flight.clear();
        let msg = Msg::Chunk {
            req: self.next_req(ctx, s),
            xfer: s.xfer.clone(),
            items,
            cursor: next,
        };
        ctx.send(&s.to, msg);
        None
    }

    /// The current value of every dirty key. As written the keys are
    /// forgotten here; the sim's protocol forgets them once acknowledged.
    fn take_dirty(&mut self, ctx: &Ctx, p: PartitionId, s: &mut Sender) -> Vec<Item> {
        let forget = ctx.cfg.as_written.dirty_drop;
        let Some(t) = self.mem.tracking.get_mut(&p) else {
            return Vec::new();
        };
        let keys = if forget {
            std::mem::take(&mut t.keys)
        } else {
            t.keys.clone()
        };
        s.in_flight = if forget {
            Vec::new()
        } else {
            keys.iter().map(|(k, st)| (k.clone(), *st)).collect()
        };
        let data = self.disk.data.get(&p);
        keys.keys()
            .filter_map(|k| data.and_then(|d| d.get(k)).map(|(v, val)| item(k, *v, val)))
            .collect()
    }

    fn acked(&mut self, p: PartitionId, s: &mut Sender) {
        let Some(t) = self.mem.tracking.get_mut(&p) else {
            return;
        };
        for (k, stamp) in s.in_flight.drain(..) {
            if t.keys.get(&k) == Some(&stamp) {
                t.keys.remove(&k);
            }
        }
    }

    fn catch_up(
        &mut self,
        ctx: &mut Ctx,
        p: PartitionId,
        s: &mut Sender,
        round: u8,
    ) -> Option<End> {
        let items = self.take_dirty(ctx, p, s);
        if items.is_empty() {
            return self.seal(ctx, p, s);
        }
        s.step = Step::CatchUp {
            round,
            more: items.len() >= ctx.cfg.catch_up_threshold,
        };
        self.send_items(ctx, s, items);
        None
    }

    fn seal(&mut self, ctx: &mut Ctx, p: PartitionId, s: &mut Sender) -> Option<End> {
        if !self.still_planned(p, &s.to) {
            return Some(End::Cancelled);
        }
        self.mem.sealed.insert(p);
        let items = self.take_dirty(ctx, p, s);
        if items.is_empty() {
            return self.finish(ctx, p, s);
        }
        s.step = Step::Sealed;
        self.send_items(ctx, s, items);
        None
    }

    fn send_items(&mut self, ctx: &mut Ctx, s: &mut Sender, items: Vec<Item>) {
        ctx.log(&self.id, || {
            let keys: Vec<String> = items
                .iter()
                .map(|i| format!("{}@{}", i.key, i.version))
                .collect();
            format!("sends dirty {keys:?} of {} ({:?})", s.xfer, s.step)
        });
        let msg = Msg::Chunk {
            req: self.next_req(ctx, s),
            xfer: s.xfer.clone(),
            items,
            cursor: None,
        };
        ctx.send(&s.to, msg);
    }

    /// Mark the partition moved, hand it over in the ring, tell the receiver.
    fn finish(&mut self, ctx: &mut Ctx, p: PartitionId, s: &mut Sender) -> Option<End> {
        let sticky = ctx.cfg.as_written.sticky_moved;
        if sticky {
            self.mem.moved.insert(p, s.to.clone());
        }
        let me = self.id.clone();
        let mut to = s.to.clone();
        if ctx.cfg.as_written.complete_to_next {
            // `Ring::complete` used to hand over to whoever was planned
            // when it ran, not to the node the data went to.
            if let Some(next) = self.ring().and_then(|r| r.next(p)) {
                to = next.clone();
            }
        }
        if let Err(e) = self.change_ring(ctx, |r| r.complete(p, &me, &to)) {
            return Some(End::Failed(e.to_string()));
        }
        self.mem.moved.insert(p, s.to.clone());
        self.mem.sealed.remove(&p);
        self.mem.tracking.remove(&p);
        self.disk.handed_off += 1;
        ctx.log(&self.id, || format!("hands {p} to {to}"));
        self.send_commit(ctx, s, 1);
        None
    }

    fn send_commit(&mut self, ctx: &mut Ctx, s: &mut Sender, tries: u8) {
        let Some(ring) = self.ring().map(|r| r.encode()) else {
            return;
        };
        s.step = Step::Commit { tries };
        let msg = Msg::Commit {
            req: self.next_req(ctx, s),
            xfer: s.xfer.clone(),
            ring,
            sent: ctx.now,
        };
        ctx.send(&s.to, msg);
    }

    /// The receiving side of every transfer to this node.
    pub fn receive(&mut self, ctx: &mut Ctx, from: &NodeId, msg: Msg) {
        let (req, reply) = match msg {
            Msg::Begin { req, xfer } => (req, self.on_begin(ctx, xfer)),
            Msg::Chunk {
                req,
                xfer,
                items,
                cursor,
            } => (req, self.on_chunk(ctx, xfer, items, cursor)),
            Msg::Commit {
                req,
                xfer,
                ring,
                sent,
            } => {
                self.merge_in(ctx, from, &ring, sent);
                let p = xfer.partition;
                if self.mem.incoming.get(&p).is_some_and(|(x, _)| *x == xfer) {
                    self.mem.incoming.remove(&p);
                }
                (req, HandoffReply::Ok)
            }
            _ => return,
        };
        ctx.send(from, Msg::HandoffReply { req, reply });
    }

    fn on_begin(&mut self, ctx: &mut Ctx, xfer: XferId) -> HandoffReply {
        let p = xfer.partition;
        if ctx.cfg.as_written.stale_begin {
            if let Some((x, cursor)) = self.mem.incoming.get(&p) {
                if *x == xfer {
                    return HandoffReply::Resume(cursor.clone());
                }
            }
        } else {
            match self.disk.accepted.get(&p) {
                Some(a) if *a == xfer => {
                    let cursor = self
                        .mem
                        .incoming
                        .get(&p)
                        .filter(|(x, _)| *x == xfer)
                        .and_then(|(_, c)| c.clone());
                    self.mem.incoming.insert(p, (xfer, cursor.clone()));
                    return HandoffReply::Resume(cursor);
                }
                Some(a) if !xfer.newer_than(a) => {
                    return HandoffReply::Refused(format!("{xfer} is older than {a}"));
                }
                _ => {}
            }
            self.disk.accepted.insert(p, xfer.clone());
        }
        // A new transfer: whatever an earlier one left is stale. `reset`
        // also forgets the handoff state of a partition handed away before.
        ctx.log(&self.id, || format!("accepts transfer {xfer}: wipes {p}"));
        self.disk.data.remove(&p);
        self.mem.moved.remove(&p);
        self.mem.sealed.remove(&p);
        self.mem.tracking.remove(&p);
        self.mem.incoming.insert(p, (xfer, None));
        HandoffReply::Resume(None)
    }

    fn on_chunk(
        &mut self,
        ctx: &mut Ctx,
        xfer: XferId,
        items: Vec<Item>,
        cursor: Option<String>,
    ) -> HandoffReply {
        let p = xfer.partition;
        let current = if ctx.cfg.as_written.stale_begin {
            self.mem.incoming.get(&p).map(|(x, _)| x)
        } else {
            self.disk.accepted.get(&p)
        };
        if current != Some(&xfer) {
            return HandoffReply::Refused(format!("no transfer {xfer} in progress here"));
        }
        let overwrite = ctx.cfg.as_written.overwrite;
        let data = self.disk.data.entry(p).or_default();
        for i in items {
            if overwrite || data.get(&i.key).is_none_or(|(v, _)| *v < i.version) {
                data.insert(i.key, (i.version, i.value));
            }
        }
        if cursor.is_some() {
            match self.mem.incoming.get_mut(&p) {
                Some((x, c)) if *x == xfer => *c = cursor,
                Some(_) => {}
                None => {
                    self.mem.incoming.insert(p, (xfer, cursor));
                }
            }
        }
        HandoffReply::Ok
    }
}

fn item(key: &str, version: u64, value: &str) -> Item {
    Item {
        key: key.to_string(),
        version,
        value: value.to_string(),
    }
}
