//! Causal identities: who wrote ([`Actor`]), which of its writes ([`Dot`]),
//! and what a replica has seen ([`VersionVector`]).
//!
//! Replicas always exchange whole states, and an actor's state at counter
//! `n` already contains all of that actor's earlier writes, so "seen up to
//! `n` from each actor" is an exact causal context: no dot cloud is needed.

use super::vecmap::{VecMap, VecSet};
use crate::KvError;
use bytes::Bytes;

/// One vnode incarnation. A vnode picks a fresh random actor at each start
/// and after it drops data, so a dot is never issued twice.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Actor(pub u64);

/// One write of one actor: its `counter`-th event on this key (from 1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Dot {
    pub actor: Actor,
    pub counter: u64,
}

/// Per actor, the highest counter observed. Never holds a zero entry, so
/// equal contexts have equal representations (and encodings).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionVector(VecMap<Actor, u64>);

impl VersionVector {
    pub fn new() -> Self {
        Self::default()
    }

    /// The highest counter seen from `actor` (0 if none).
    pub fn get(&self, actor: Actor) -> u64 {
        self.0.get(&actor).copied().unwrap_or(0)
    }

    pub fn contains(&self, dot: Dot) -> bool {
        self.get(dot.actor) >= dot.counter
    }

    /// The dot `actor` would issue next on a state with this context.
    pub fn next_dot(&self, actor: Actor) -> Dot {
        Dot {
            actor,
            counter: self.get(actor).saturating_add(1),
        }
    }

    pub fn add(&mut self, dot: Dot) {
        if dot.counter == 0 {
            return;
        }
        let e = self.0.get_or_insert_with(dot.actor, || 0);
        *e = (*e).max(dot.counter);
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (&actor, &counter) in other.0.iter() {
            self.add(Dot { actor, counter });
        }
    }

    /// Whether everything `other` has seen, this has seen too.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(&a, &c)| self.get(a) >= c)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (Actor, u64)> + '_ {
        self.0.iter().map(|(&a, &c)| (a, c))
    }

    /// Opaque, canonical bytes (what HTTP clients carry as a context).
    pub fn encode(&self) -> Bytes {
        // An assertion: a map of integers always serializes.
        Bytes::from(postcard::to_stdvec(self).expect("a version vector always serializes"))
    }

    /// Parse [`VersionVector::encode`]'s output; anything else (including a
    /// non-canonical zero entry or trailing bytes) is [`KvError::Corrupt`].
    pub fn decode(buf: &[u8]) -> Result<Self, KvError> {
        let (vv, rest): (Self, _) = postcard::take_from_bytes(buf)
            .map_err(|e| KvError::Corrupt(format!("version vector: {e}")))?;
        if !rest.is_empty() || vv.0.values().any(|&c| c == 0) {
            return Err(KvError::Corrupt("version vector not canonical".into()));
        }
        Ok(vv)
    }
}

/// The join of two dot-keyed stores under their contexts: a dot survives if
/// both sides hold it, or one side holds it and the other has not seen it
/// (had it seen it and dropped it, that was a removal). On a collision of
/// values under one dot, which only legacy conversions can produce, the
/// greater value wins so that the join stays commutative.
pub(crate) fn join_dotted<V: Clone + Ord>(
    a: &VecMap<Dot, V>,
    ca: &VersionVector,
    b: &VecMap<Dot, V>,
    cb: &VersionVector,
) -> VecMap<Dot, V> {
    let mut out = VecMap::new();
    for (dot, va) in a.iter() {
        match b.get(dot) {
            Some(vb) => {
                out.insert(*dot, va.max(vb).clone());
            }
            None if !cb.contains(*dot) => {
                out.insert(*dot, va.clone());
            }
            None => {}
        }
    }
    for (dot, vb) in b.iter() {
        if !a.contains_key(dot) && !ca.contains(*dot) {
            out.insert(*dot, vb.clone());
        }
    }
    out
}

/// [`join_dotted`] for bare dot sets (the dots of one set member).
pub(crate) fn join_dot_set(
    a: &VecSet<Dot>,
    ca: &VersionVector,
    b: &VecSet<Dot>,
    cb: &VersionVector,
) -> VecSet<Dot> {
    let keep_a = a.iter().filter(|d| b.contains(d) || !cb.contains(**d));
    let keep_b = b.iter().filter(|d| !a.contains(d) && !ca.contains(**d));
    keep_a.chain(keep_b).copied().collect()
}
