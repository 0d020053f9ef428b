//! A replica as the vnode will drive it: view, apply the command on the
//! plain object, hand the plain write to [`Doc::update`]. Tests run real
//! commands through the real `apply` layer, so they check the integration
//! the vnode relies on, not a model of it.
#![allow(clippy::unwrap_used)]

use super::{Actor, Change, Doc, Hlc, OpHint, VersionVector};
use crate::apply::{apply, Ctx, Out, Write};
use crate::{KeyOp, Reply};
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::SeedableRng;

pub(super) struct Replica {
    pub doc: Doc,
    pub actor: Actor,
    pub hlc: Hlc,
    /// This replica's wall clock, in ms; tests move it.
    pub wall: u64,
    rng: SmallRng,
}

pub(super) fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// The hint the vnode derives from a replicated command.
pub(super) fn hint_for(op: &KeyOp) -> OpHint {
    OpHint::of(op, true)
}

impl Replica {
    pub fn new(id: u64) -> Self {
        Self {
            doc: Doc::new(),
            actor: Actor(id),
            hlc: Hlc::new(id),
            wall: 1_000,
            rng: SmallRng::seed_from_u64(id),
        }
    }

    /// Run one command and check that the doc now shows exactly what the
    /// plain write said it should: the CRDT translation loses nothing.
    pub fn run(&mut self, op: KeyOp) -> Reply {
        let now_ms = self.wall;
        let live = self.doc.view().filter(|o| !o.is_expired(now_ms));
        let hint = hint_for(&op);
        let mut ctx = Ctx {
            now_ms,
            rng: &mut self.rng,
        };
        let applied = apply(op, live.clone(), &mut ctx);
        let change = match &applied.write {
            Write::None => Change::None,
            Write::Put(o) => Change::Put(o),
            Write::Delete => Change::Delete,
        };
        let stamp = self.hlc.now(self.wall);
        let prior = self.doc.clone();
        let changed = self
            .doc
            .update(live.as_ref(), change, hint, self.actor, stamp);
        if !changed {
            // The vnode then stores nothing: the state must be exactly
            // what it was.
            assert_eq!(self.doc, prior, "update said nothing changed");
        }
        match &applied.write {
            Write::None => {}
            Write::Delete => assert_eq!(self.doc.view(), None, "after a delete"),
            Write::Put(o) if o.value.is_empty_collection() => {
                assert_eq!(self.doc.view(), None, "after emptying")
            }
            Write::Put(o) => assert_eq!(self.doc.view().as_ref(), Some(o), "after a put"),
        }
        match applied.out {
            Out::Reply(r) => r,
            Out::Object(_) => Reply::Nil,
        }
    }

    pub fn put_http(&mut self, value: &str, ctx: Option<&VersionVector>) {
        let stamp = self.hlc.now(self.wall);
        self.doc
            .put_with_context(b(value), Some(b("text/plain")), ctx, self.actor, stamp);
    }

    pub fn delete_http(&mut self, ctx: Option<&VersionVector>) {
        let stamp = self.hlc.now(self.wall);
        self.doc.delete_with_context(ctx, stamp);
    }

    /// Receive another replica's whole state.
    pub fn merge_from(&mut self, other: &Doc) {
        self.hlc.observe(other.max_stamp());
        self.doc.merge(other);
    }

    /// The string value Redis would read.
    pub fn get(&self) -> Option<Bytes> {
        match self.doc.view()?.value {
            crate::Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Full exchange: everyone merges everyone's state.
pub(super) fn sync(rs: &mut [Replica]) {
    let all: Vec<Doc> = rs.iter().map(|r| r.doc.clone()).collect();
    for r in rs.iter_mut() {
        for d in &all {
            r.merge_from(d);
        }
    }
}
