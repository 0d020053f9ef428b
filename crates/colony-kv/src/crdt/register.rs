//! A register: the value of a string key or of one hash field.
//!
//! Two parts. Siblings are the concurrent values written by SET/HSET/HTTP
//! PUT, each under its dot; a write removes the siblings it observed, so
//! concurrent writes leave several, and Redis reads the one with the
//! greatest stamp. The counter part makes INCR-style commands commute: each
//! actor keeps its running totals, and a write or delete records the totals
//! it observed (the reset snapshot) so that only unobserved increments
//! survive it.

use super::vecmap::VecMap;
use super::version::{join_dotted, Actor, Dot, VersionVector};
use super::Stamp;
use crate::apply::{format_f64, parse_f64, parse_i64};
use bytes::Bytes;
use std::cmp::Ordering;

/// One written value.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub(crate) struct Sibling {
    pub value: Bytes,
    pub content_type: Option<Bytes>,
    pub stamp: Stamp,
    /// Written with a client's causal context (HTTP): shown beside the
    /// values it is concurrent with. A value written without one (RESP SET,
    /// a plain PUT) is last-writer-wins: of those only the latest shows.
    pub kept: bool,
}

/// An actor's running totals; `seq` is the dot counter of its latest
/// increment, so a greater `seq` always carries the newer totals.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct Count {
    pub seq: u64,
    pub int: i64,
    pub float: f64,
}

/// Bitwise, so that equal counts always encode equally (and NaN == NaN).
impl PartialEq for Count {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Count {}

impl Count {
    fn key(&self) -> (u64, i64, u64) {
        (self.seq, self.int, self.float.to_bits())
    }
    /// The newer of two totals (deterministic even on a corrupt collision).
    fn later(self, o: Count) -> Count {
        match self.key().cmp(&o.key()) {
            Ordering::Less => o,
            _ => self,
        }
    }
}

/// Merge two per-actor count maps, keeping the greater `seq` per actor.
fn join_counts(a: &mut VecMap<Actor, Count>, b: &VecMap<Actor, Count>) {
    for (actor, cb) in b.iter() {
        let e = a.get_or_insert_with(*actor, || *cb);
        *e = e.later(*cb);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Register {
    siblings: VecMap<Dot, Sibling>,
    /// Increments not covered by `reset` (normalized: seq > reset's seq).
    counts: VecMap<Actor, Count>,
    /// Totals observed by the last writes and deletes: a tombstone that
    /// stops observed increments from coming back in a merge.
    reset: VecMap<Actor, Count>,
}

impl Register {
    /// Nothing stored, not even a tombstone: the register can be dropped.
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty() && self.counts.is_empty() && self.reset.is_empty()
    }

    /// Whether the register has a value (Redis sees the key or field).
    pub fn is_present(&self) -> bool {
        !self.siblings.is_empty() || !self.counts.is_empty()
    }

    /// Siblings in stamp order (the last is the Redis view).
    pub fn siblings(&self) -> Vec<(&Dot, &Sibling)> {
        let mut v: Vec<_> = self.siblings.iter().collect();
        v.sort_by_key(|(d, s)| (s.stamp, **d));
        v
    }

    pub fn sibling_count(&self) -> usize {
        self.siblings.len()
    }

    pub fn has_counter(&self) -> bool {
        !self.counts.is_empty()
    }

    fn winner(&self) -> Option<&Sibling> {
        self.siblings
            .iter()
            .max_by_key(|(d, s)| (s.stamp, **d))
            .map(|(_, s)| s)
    }

    /// The Redis view: the winning sibling plus the counter. If the winning
    /// sibling is not a number the counter cannot be added to it, and the
    /// view is that string unchanged (the increments stay stored, unseen).
    pub fn view(&self) -> Option<(Bytes, Option<Bytes>)> {
        let win = self.winner();
        let ct = win.and_then(|s| s.content_type.clone());
        if self.counts.is_empty() {
            return win.map(|s| (s.value.clone(), ct));
        }
        let value = match win {
            None => self.counted(Base::Int(0)),
            Some(s) => match Base::parse(&s.value) {
                Some(base) => self.counted(base),
                None => s.value.clone(),
            },
        };
        Some((value, ct))
    }

    /// Base plus every actor's increments beyond its reset snapshot. Integer
    /// sums wrap: wrapping addition is associative, so the result is exact
    /// whenever the true value fits in an i64, and never panics otherwise.
    fn counted(&self, base: Base) -> Bytes {
        let (mut int, mut float, mut floaty) = (0i64, 0.0f64, false);
        for (actor, c) in self.counts.iter() {
            let r = self.reset.get(actor).copied().unwrap_or_default();
            int = int.wrapping_add(c.int.wrapping_sub(r.int));
            let df = c.float - r.float;
            floaty |= df != 0.0;
            float += df;
        }
        match base {
            Base::Int(b) if !floaty => Bytes::from(b.wrapping_add(int).to_string()),
            Base::Int(b) => Bytes::from(format_f64(b as f64 + int as f64 + float)),
            Base::Float(b) => Bytes::from(format_f64(b + int as f64 + float)),
        }
    }

    /// The view as an integer when it is one computed without floats (an
    /// integer string plus integer increments): what parsing [`view`](Self::view)
    /// gives then, without formatting it. None otherwise, even where the
    /// view happens to read as an integer.
    pub fn int_view(&self) -> Option<i64> {
        let win = self.winner();
        if self.counts.is_empty() {
            return parse_i64(&win?.value);
        }
        let base = match win {
            None => 0,
            Some(s) => parse_i64(&s.value)?,
        };
        let mut int = 0i64;
        for (actor, c) in self.counts.iter() {
            let r = self.reset.get(actor).copied().unwrap_or_default();
            if c.float - r.float != 0.0 {
                return None;
            }
            int = int.wrapping_add(c.int.wrapping_sub(r.int));
        }
        Some(base.wrapping_add(int))
    }

    /// Whether the winning sibling carries a content type.
    pub fn has_content_type(&self) -> bool {
        self.winner().is_some_and(|s| s.content_type.is_some())
    }

    /// Overwrite: remove the siblings in `observed` (all, for SET), reset
    /// the observed counts, and add `sib` under `dot`.
    pub fn write(&mut self, observed: &VersionVector, dot: Dot, sib: Sibling) {
        self.clear_within(observed);
        self.siblings.insert(dot, sib);
    }

    /// Remove what `observed` covers: siblings whose dot it contains, and
    /// counts whose latest increment it contains (into the reset snapshot).
    pub fn clear_within(&mut self, observed: &VersionVector) {
        self.siblings.retain(|d, _| !observed.contains(*d));
        let seen: Vec<Actor> = self
            .counts
            .iter()
            .filter(|(a, c)| observed.get(**a) >= c.seq)
            .map(|(a, _)| *a)
            .collect();
        for a in seen {
            if let Some(c) = self.counts.remove(&a) {
                join_counts(&mut self.reset, &VecMap::from([(a, c)]));
            }
        }
    }

    /// Add to `dot.actor`'s running totals; `dot` must be fresh.
    pub fn increment(&mut self, dot: Dot, int: i64, float: f64) {
        let a = dot.actor;
        let prev = match (self.counts.get(&a), self.reset.get(&a)) {
            (Some(c), _) => *c,
            (None, Some(r)) => *r,
            (None, None) => Count::default(),
        };
        let next = Count {
            seq: dot.counter,
            int: prev.int.wrapping_add(int),
            float: prev.float + float,
        };
        self.counts.insert(a, next);
    }

    pub fn merge(&mut self, mine: &VersionVector, other: &Register, theirs: &VersionVector) {
        self.siblings = join_dotted(&self.siblings, mine, &other.siblings, theirs);
        join_counts(&mut self.counts, &other.counts);
        join_counts(&mut self.reset, &other.reset);
        self.normalize();
    }

    /// Drop counts the reset snapshot covers, so that equal states have one
    /// representation.
    pub fn normalize(&mut self) {
        let reset = &self.reset;
        self.counts
            .retain(|a, c| reset.get(a).is_none_or(|r| c.seq > r.seq));
    }

    /// Whether [`normalize`](Self::normalize) would leave it unchanged.
    pub fn is_normal(&self) -> bool {
        self.counts
            .iter()
            .all(|(a, c)| self.reset.get(a).is_none_or(|r| c.seq > r.seq))
    }

    /// Every dot the register holds, counts included (for validation).
    pub fn dots(&self) -> impl Iterator<Item = Dot> + '_ {
        let counts = self.counts.iter().chain(self.reset.iter());
        let counts = counts.map(|(a, c)| Dot {
            actor: *a,
            counter: c.seq,
        });
        self.siblings.keys().copied().chain(counts)
    }

    pub fn max_stamp(&self) -> Stamp {
        self.siblings
            .values()
            .map(|s| s.stamp)
            .max()
            .unwrap_or_default()
    }

    /// Roughly the stored bytes.
    pub fn size(&self) -> usize {
        let sibs: usize = self
            .siblings
            .values()
            .map(|s| s.value.len() + s.content_type.as_ref().map_or(0, |c| c.len()) + 24)
            .sum();
        sibs + (self.counts.len() + self.reset.len()) * 24
    }
}

/// A winning sibling read as a number.
enum Base {
    Int(i64),
    Float(f64),
}

impl Base {
    fn parse(b: &[u8]) -> Option<Base> {
        parse_i64(b)
            .map(Base::Int)
            .or_else(|| parse_f64(b).map(Base::Float))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_normal_is_what_normalize_leaves_alone() {
        let a = Actor(7);
        let mut r = Register::default();
        r.increment(
            Dot {
                actor: a,
                counter: 2,
            },
            5,
            0.0,
        );
        assert!(r.is_normal());
        // A reset snapshot that covers the count: normalize drops the count.
        r.reset.insert(
            a,
            Count {
                seq: 2,
                int: 5,
                float: 0.0,
            },
        );
        assert!(!r.is_normal());
        let mut n = r.clone();
        n.normalize();
        assert!(n.is_normal() && n != r);
    }
}
