//! Reads answered from a state in place. [`Doc::view`] builds the whole
//! plain object, which for a set or hash costs as much as the collection
//! is large; a membership test or a field read needs one lookup.

use super::Doc;
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
    fn general(r: &Replica, op: &KeyOp) -> Reply {
        let mut rng = SmallRng::seed_from_u64(0);
        let mut ctx = Ctx {
            now_ms: r.wall,
            rng: &mut rng,
        };
        let view = r.doc.view().filter(|o| !o.is_expired(r.wall));
        match apply(op.clone(), view, &mut ctx).out {
            crate::apply::Out::Reply(reply) => reply,
            other => panic!("a read answered {other:?}"),
        }
    }

    #[test]
    fn in_place_reads_answer_as_the_plain_view_does() {
        let mut rng = SmallRng::seed_from_u64(7);
        let names: Vec<String> = (0..6).map(|i| format!("m{i}")).collect();
        let pick = |rng: &mut SmallRng| b(&names[rng.random_range(0..names.len())]);
        for round in 0..200 {
            let mut rs = vec![Replica::new(1), Replica::new(2)];
            // Concurrent adds, removes, field writes, increments and
            // deletes, merged: states with tombstones and reset fields.
            for step in 0..12 {
                let r = &mut rs[step % 2];
                let op = match rng.random_range(0..7) {
                    0 => KeyOp::SAdd(vec![pick(&mut rng), pick(&mut rng)]),
                    1 => KeyOp::SRem(vec![pick(&mut rng)]),
                    2 => KeyOp::HSet {
                        pairs: vec![(pick(&mut rng), pick(&mut rng))],
                        nx: false,
                    },
                    3 => KeyOp::HDel(vec![pick(&mut rng)]),
                    4 => KeyOp::HIncrBy(pick(&mut rng), 2),
                    5 => KeyOp::Del,
                    _ => KeyOp::IncrBy(1),
                };
                // A type clash answers WRONGTYPE and changes nothing.
                let _ = r.run(op);
                if rng.random_bool(0.3) {
                    sync(&mut rs);
                }
            }
            sync(&mut rs);
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
                    assert_eq!(fast, general(r, op), "{op:?} on {:?}", r.doc.view());
                }
            }
        }
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
