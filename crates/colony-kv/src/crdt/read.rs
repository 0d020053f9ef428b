//! Reads answered from a state in place. [`Doc::view`] builds the whole
//! plain object, which for a set or hash costs as much as the collection
//! is large; a membership test or a field read needs one lookup. So does
//! telling that a write would change nothing (a member already there).

use super::Doc;
use crate::op::{SetCond, SetExpire};
use crate::{KeyOp, Reply, ValueKind};

impl Doc {
    /// The reply to `op` read straight from the state, for the reads that
    /// need one member or field (or a count). None when the general path
    /// must run: another op, a key of another type (WRONGTYPE) or of no
    /// type (absent), or an expired one (the read deletes it). The reply is
    /// the one `apply` gives on the plain view.
    pub fn read_in_place(&self, op: &KeyOp, now_ms: u64) -> Option<Reply> {
        if self.expire_at().is_some_and(|at| at <= now_ms) {
            return None;
        }
        let set = &self.set.body;
        let hash = &self.hash.body;
        Some(match (op, self.kind()?) {
            (KeyOp::SIsMember(m), ValueKind::Set) => Reply::bool(set.contains(m)),
            (KeyOp::SMIsMember(ms), ValueKind::Set) => {
                Reply::Array(ms.iter().map(|m| Reply::bool(set.contains(m))).collect())
            }
            (KeyOp::SCard, ValueKind::Set) => Reply::Int(set.count() as i64),
            (KeyOp::HGet(f), ValueKind::Hash) => Reply::opt_bulk(hash.field_view(f)),
            (KeyOp::HMGet(fs), ValueKind::Hash) => Reply::Array(
                fs.iter()
                    .map(|f| Reply::opt_bulk(hash.field_view(f)))
                    .collect(),
            ),
            (KeyOp::HExists(f), ValueKind::Hash) => Reply::bool(hash.field_view(f).is_some()),
            _ => return None,
        })
    }

    /// Whether [`unchanged_by`](Self::unchanged_by) may answer `op`: the
    /// caller need not look the state up for the others.
    pub fn may_leave_unchanged(op: &KeyOp) -> bool {
        matches!(op, KeyOp::SAdd(_) | KeyOp::HSet { .. } | KeyOp::Set { .. })
    }

    /// The reply to a write that would leave this state exactly as it is,
    /// told from the state in place: an SADD of members all present, an
    /// HSET of fields all holding those values (an HSETNX of one present),
    /// a plain SET of the value the key already holds, without expiry. None
    /// when the general path must decide. Only for a key's sole replica: a
    /// replicated write gives what it names fresh dots even when the value
    /// stays (see [`super::OpHint::of`]), so it always changes the state.
    pub fn unchanged_by(&self, op: &KeyOp, now_ms: u64) -> Option<Reply> {
        if !Self::may_leave_unchanged(op) {
            return None;
        }
        let expiry = self.expire_at();
        if expiry.is_some_and(|at| at <= now_ms) {
            return None;
        }
        let kind = self.kind()?;
        if self.others_present(kind) {
            // Concurrent writes of other types left values a write of this
            // type clears.
            return None;
        }
        Some(match (op, kind) {
            (KeyOp::SAdd(ms), ValueKind::Set) if ms.iter().all(|m| self.set.body.contains(m)) => {
                Reply::Int(0)
            }
            (KeyOp::HSet { pairs, nx: false }, ValueKind::Hash)
                if pairs
                    .iter()
                    .all(|(f, v)| self.hash.body.field_view(f).as_ref() == Some(v)) =>
            {
                Reply::Int(0)
            }
            (KeyOp::HSet { pairs, nx: true }, ValueKind::Hash)
                if pairs
                    .iter()
                    .all(|(f, _)| self.hash.body.field_view(f).is_some()) =>
            {
                Reply::Int(0)
            }
            (
                KeyOp::Set {
                    value,
                    expire: SetExpire::Clear,
                    cond: SetCond::Always,
                    get: false,
                },
                ValueKind::Str,
            ) if expiry.is_none() && self.str.body.view() == Some((value.clone(), None)) => {
                Reply::Ok
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::harness::{b, sync, Replica};
    use crate::apply::{apply, Ctx};
    use crate::{KeyOp, Reply};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// What the general path answers: `apply` on the plain view.
    /// One of the values 0-3, as a member, field or string.
    fn pick(rng: &mut SmallRng) -> bytes::Bytes {
        b(&format!("{}", rng.random_range(0..4)))
    }

    #[test]
    fn in_place_reads_answer_as_the_plain_view_does() {
        let mut rng = SmallRng::seed_from_u64(7);
        // Which reads were answered in place: set reads, hash reads.
        let mut answered = [0; 2];
        for round in 0..2000 {
            let mut rs = mixed_states(&mut rng);
            rs[round % 2].wall += rng.random_range(0..12);
            let r = &rs[round % 2];
            let m = pick(&mut rng);
            let ops = [
                KeyOp::SIsMember(m.clone()),
                KeyOp::SMIsMember(vec![m.clone(), pick(&mut rng)]),
                KeyOp::SCard,
                KeyOp::HGet(m.clone()),
                KeyOp::HMGet(vec![m.clone(), pick(&mut rng)]),
                KeyOp::HExists(m),
            ];
            for op in &ops {
                if let Some(fast) = r.doc.read_in_place(op, r.wall) {
                    let (_, applied, general) = apply_to_view(r, op);
                    assert!(matches!(applied.write, crate::apply::Write::None));
                    assert_eq!(fast, general, "{op:?} on {:?}", r.doc.view());
                    answered[match op {
                        KeyOp::SIsMember(_) | KeyOp::SMIsMember(_) | KeyOp::SCard => 0,
                        _ => 1,
                    }] += 1;
                }
            }
        }
        assert!(
            answered.iter().all(|&n| n >= 50),
            "answered in place: {answered:?}"
        );
    }

    /// `op` through `apply` on `r`'s live plain view: the view, what apply
    /// gave, and its reply.
    fn apply_to_view(
        r: &Replica,
        op: &KeyOp,
    ) -> (Option<crate::Object>, crate::apply::Applied, Reply) {
        let mut rng = SmallRng::seed_from_u64(0);
        let mut ctx = Ctx {
            now_ms: r.wall,
            rng: &mut rng,
        };
        let live = r.doc.view().filter(|o| !o.is_expired(r.wall));
        let applied = apply(op.clone(), live.clone(), &mut ctx);
        let reply = match &applied.out {
            crate::apply::Out::Reply(reply) => reply.clone(),
            other => panic!("{op:?} answered {other:?}"),
        };
        (live, applied, reply)
    }

    /// What the general path does with `op` on `r`'s state when `r` is the
    /// key's sole replica: the reply, and whether the state changed.
    fn general_write(r: &Replica, op: &KeyOp) -> (Reply, bool) {
        use crate::apply::Write;
        use crate::crdt::{Change, OpHint};
        let (live, applied, reply) = apply_to_view(r, op);
        let change = match &applied.write {
            Write::None => return (reply, false),
            Write::Put(o) => Change::Put(o),
            Write::Delete => Change::Delete,
        };
        let mut doc = r.doc.clone();
        let stamp = r.hlc.clone().now(r.wall);
        let changed = doc.update(live.as_ref(), change, OpHint::of(op, false), r.actor, stamp);
        assert_eq!(
            changed,
            doc != r.doc,
            "update's answer and the state disagree"
        );
        (reply, changed)
    }

    /// Two replicas' states after random writes of every type, with
    /// concurrent writes merged (siblings, counters under a string,
    /// add-wins members), expiries and content types; values are the
    /// integers 0-3, so strings often hold numbers, some made floats.
    fn mixed_states(rng: &mut SmallRng) -> Vec<Replica> {
        use crate::op::{SetCond, SetExpire};
        let mut rs = vec![Replica::new(1), Replica::new(2)];
        for step in 0..10 {
            let r = &mut rs[step % 2];
            let op = match rng.random_range(0..10) {
                0 => KeyOp::SAdd(vec![pick(rng), pick(rng)]),
                9 => KeyOp::IncrByFloat(if rng.random_bool(0.5) { 0.5 } else { 1.0 }),
                1 => KeyOp::SRem(vec![pick(rng)]),
                2 => KeyOp::HSet {
                    pairs: vec![(pick(rng), pick(rng))],
                    nx: false,
                },
                3 => KeyOp::HIncrBy(pick(rng), 1),
                4 => KeyOp::IncrBy(rng.random_range(-2..3)),
                5 => KeyOp::Set {
                    value: pick(rng),
                    expire: SetExpire::Clear,
                    cond: SetCond::Always,
                    get: false,
                },
                6 => KeyOp::Expire {
                    at: r.wall + rng.random_range(1..20),
                    cond: crate::op::ExpireCond::Always,
                },
                7 => KeyOp::Del,
                _ => {
                    let v = format!("{}", rng.random_range(0..4));
                    r.put_http(&v, None);
                    continue;
                }
            };
            let _ = r.run(op);
            if rng.random_bool(0.3) {
                sync(&mut rs);
            }
        }
        if rng.random_bool(0.5) {
            sync(&mut rs);
        }
        rs
    }

    #[test]
    fn writes_told_unchanged_in_place_change_nothing_on_the_general_path() {
        use crate::op::{SetCond, SetExpire};
        let mut rng = SmallRng::seed_from_u64(11);
        // Writes told unchanged, by op: SADD, HSET, HSETNX, SET.
        let mut told = [0; 4];
        for round in 0..5000 {
            let mut rs = mixed_states(&mut rng);
            let r = &mut rs[round % 2];
            r.wall += rng.random_range(0..12);
            let (m, v) = (pick(&mut rng), pick(&mut rng));
            let ops = [
                KeyOp::SAdd(vec![m.clone()]),
                KeyOp::SAdd(vec![m.clone(), v.clone()]),
                KeyOp::HSet {
                    pairs: vec![(m.clone(), v.clone())],
                    nx: false,
                },
                KeyOp::HSet {
                    pairs: vec![(m.clone(), v.clone()), (v.clone(), m.clone())],
                    nx: false,
                },
                KeyOp::HSet {
                    pairs: vec![(m.clone(), v.clone())],
                    nx: true,
                },
                KeyOp::Set {
                    value: v.clone(),
                    expire: SetExpire::Clear,
                    cond: SetCond::Always,
                    get: false,
                },
                KeyOp::Set {
                    value: v.clone(),
                    expire: SetExpire::Keep,
                    cond: SetCond::Always,
                    get: false,
                },
            ];
            for op in &ops {
                if let Some(fast) = r.doc.unchanged_by(op, r.wall) {
                    told[match op {
                        KeyOp::SAdd(_) => 0,
                        KeyOp::HSet { nx: false, .. } => 1,
                        KeyOp::HSet { nx: true, .. } => 2,
                        _ => 3,
                    }] += 1;
                    let (reply, changed) = general_write(r, op);
                    assert_eq!(fast, reply, "{op:?} on {:?}", r.doc.view());
                    assert!(!changed, "{op:?} changed {:?}", r.doc.view());
                }
            }
        }
        // The states and ops above must reach the in-place answer for every
        // kind of write, or this test checks nothing.
        assert!(told.iter().all(|&n| n >= 20), "told unchanged: {told:?}");
    }

    #[test]
    fn writes_that_change_something_are_left_to_the_general_path() {
        use crate::op::{SetCond, SetExpire};
        let set = |value: &str, cond| KeyOp::Set {
            value: b(value),
            expire: SetExpire::Clear,
            cond,
            get: false,
        };
        let mut r = Replica::new(1);
        r.run(set("v", SetCond::Always));
        assert_eq!(
            r.doc.unchanged_by(&set("v", SetCond::Always), r.wall),
            Some(Reply::Ok)
        );
        assert_eq!(r.doc.unchanged_by(&set("w", SetCond::Always), r.wall), None);
        // SET clears an expiry: with one, the same value is a change.
        r.run(KeyOp::Expire {
            at: r.wall + 10,
            cond: crate::op::ExpireCond::Always,
        });
        assert_eq!(r.doc.unchanged_by(&set("v", SetCond::Always), r.wall), None);
        // A content type from HTTP: a Redis SET of the same bytes drops it.
        let mut h = Replica::new(2);
        h.put_http("v", None);
        assert_eq!(h.doc.unchanged_by(&set("v", SetCond::Always), h.wall), None);
        // Another type: SADD answers WRONGTYPE, from the general path.
        assert_eq!(r.doc.unchanged_by(&KeyOp::SAdd(vec![b("v")]), r.wall), None);
        let mut s = Replica::new(3);
        s.run(KeyOp::SAdd(vec![b("a")]));
        let sadd = KeyOp::SAdd(vec![b("a"), b("b")]);
        assert_eq!(s.doc.unchanged_by(&sadd, s.wall), None, "b is new");
        // Absent: the general path creates the key.
        assert_eq!(Replica::new(4).doc.unchanged_by(&sadd, 1_000), None);
    }

    /// An INCRBY made in place (`incr_base`, `incr_to`) answers as the
    /// general path does and leaves exactly the state it leaves: the same
    /// dots, counts and siblings.
    #[test]
    fn an_increment_in_place_is_the_general_paths_to_the_bit() {
        use crate::apply::Write;
        use crate::crdt::{Change, OpHint};
        let mut rng = SmallRng::seed_from_u64(5);
        let mut in_place = 0;
        for round in 0..3000 {
            let mut rs = mixed_states(&mut rng);
            let r = &mut rs[round % 2];
            r.wall += rng.random_range(0..12);
            let by = match rng.random_range(0..4) {
                0 => i64::MAX,
                1 => i64::MIN,
                _ => rng.random_range(-5..6),
            };
            let Some(base) = r.doc.incr_base(r.wall) else {
                continue;
            };
            let op = KeyOp::IncrBy(by);
            // The general path, as the vnode runs it for a sole replica.
            let (live, applied, reply) = apply_to_view(r, &op);
            let Some(value) = base.checked_add(by) else {
                // Overflow: the vnode leaves it to the general path,
                // which refuses it and changes nothing.
                assert!(matches!(applied.write, Write::None), "{reply:?}");
                continue;
            };
            assert_eq!(reply, Reply::Int(value), "on {:?}", r.doc.view());
            let Write::Put(after) = &applied.write else {
                panic!("INCRBY wrote {:?}", applied.write);
            };
            let stamp = r.hlc.now(r.wall);
            let mut general = r.doc.clone();
            let _ = general.update(
                live.as_ref(),
                Change::Put(after),
                OpHint::of(&op, false),
                r.actor,
                stamp,
            );
            let mut fast = r.doc.clone();
            fast.incr_to(value, by, r.actor, stamp);
            assert_eq!(fast, general, "INCRBY {by} on {:?}", r.doc.view());
            in_place += 1;
        }
        assert!(in_place > 300, "only {in_place} increments made in place");
    }

    #[test]
    fn reads_the_general_path_must_answer_are_left_to_it() {
        let mut r = Replica::new(1);
        // Absent: the general path answers (and knows the type is none).
        assert_eq!(r.doc.read_in_place(&KeyOp::SCard, r.wall), None);
        r.run(KeyOp::SAdd(vec![b("x")]));
        assert_eq!(
            r.doc.read_in_place(&KeyOp::SIsMember(b("x")), r.wall),
            Some(Reply::Int(1))
        );
        // Another type: WRONGTYPE comes from the general path.
        assert_eq!(r.doc.read_in_place(&KeyOp::HGet(b("x")), r.wall), None);
        // Expired: the general path deletes the key.
        r.run(KeyOp::Expire {
            at: r.wall + 10,
            cond: crate::op::ExpireCond::Always,
        });
        r.wall += 10;
        assert_eq!(r.doc.read_in_place(&KeyOp::SCard, r.wall), None);
    }
}
