//! Semantic tests: what concurrent commands converge to.
#![allow(clippy::unwrap_used)]

use super::harness::{b, sync, Replica};
use super::*;
use crate::op::{ExpireCond, SetCond, SetExpire};
use crate::{KeyOp, KvError, Object, Reply, Value, ValueKind};
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};

fn set(v: &str) -> KeyOp {
    KeyOp::Set {
        value: b(v),
        expire: SetExpire::Clear,
        cond: SetCond::Always,
        get: false,
    }
}

fn sadd(ms: &[&str]) -> KeyOp {
    KeyOp::SAdd(ms.iter().map(|m| b(m)).collect())
}

fn srem(ms: &[&str]) -> KeyOp {
    KeyOp::SRem(ms.iter().map(|m| b(m)).collect())
}

fn hset(pairs: &[(&str, &str)]) -> KeyOp {
    KeyOp::HSet {
        pairs: pairs.iter().map(|(f, v)| (b(f), b(v))).collect(),
        nx: false,
    }
}

fn members(r: &Replica) -> BTreeSet<Bytes> {
    match r.doc.view().map(|o| o.value) {
        Some(Value::Set(s)) => s,
        None => BTreeSet::new(),
        other => panic!("not a set: {other:?}"),
    }
}

fn fields(r: &Replica) -> BTreeMap<Bytes, Bytes> {
    match r.doc.view().map(|o| o.value) {
        Some(Value::Hash(h)) => h,
        None => BTreeMap::new(),
        other => panic!("not a hash: {other:?}"),
    }
}

fn replicas(n: u64) -> Vec<Replica> {
    (1..=n).map(Replica::new).collect()
}

fn assert_converged(rs: &[Replica]) {
    for r in &rs[1..] {
        assert_eq!(r.doc, rs[0].doc);
        assert_eq!(r.doc.encode(), rs[0].doc.encode());
    }
}

#[test]
fn concurrent_increments_on_three_actors_sum() {
    let mut rs = replicas(3);
    for (r, by) in rs.iter_mut().zip([1, 20, 300]) {
        assert_eq!(r.run(KeyOp::IncrBy(by)), Reply::Int(by));
    }
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(rs[0].get(), Some(b("321")));
    assert_eq!(rs[2].run(KeyOp::IncrBy(-21)), Reply::Int(300));
}

#[test]
fn increments_add_to_a_set_base_and_a_set_resets_only_what_it_saw() {
    let mut rs = replicas(2);
    rs[0].run(set("10"));
    sync(&mut rs);
    rs[0].run(KeyOp::IncrBy(5));
    rs[1].run(KeyOp::IncrBy(7));
    sync(&mut rs);
    assert_eq!(rs[0].get(), Some(b("22")));
    rs[0].run(KeyOp::IncrBy(1)); // unseen by rs[1]'s SET
    rs[1].run(set("100"));
    sync(&mut rs);
    assert_eq!(rs[1].get(), Some(b("101")));
}

#[test]
fn increment_concurrent_with_delete_survives_it() {
    let mut rs = replicas(2);
    rs[0].run(KeyOp::IncrBy(1));
    sync(&mut rs);
    rs[0].run(KeyOp::IncrBy(2));
    assert_eq!(rs[1].run(KeyOp::Del), Reply::Int(1));
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(rs[0].get(), Some(b("2")));
}

#[test]
fn delete_of_every_observed_increment_stays_deleted() {
    let mut rs = replicas(2);
    rs[0].run(KeyOp::IncrBy(4));
    let first = rs[0].doc.clone();
    rs[1].merge_from(&first);
    rs[1].run(KeyOp::Del);
    sync(&mut rs);
    assert_eq!(rs[0].doc.view(), None);
    assert!(rs[0].doc.is_tombstone());
    assert_eq!(rs[0].run(KeyOp::IncrBy(1)), Reply::Int(1));
}

#[test]
fn float_increments_from_several_actors_read_like_incrbyfloat() {
    let mut rs = replicas(2);
    rs[0].run(set("10"));
    sync(&mut rs);
    rs[0].run(KeyOp::IncrByFloat(0.5));
    rs[1].run(KeyOp::IncrByFloat(0.25));
    sync(&mut rs);
    assert_eq!(rs[0].get(), Some(b("10.75")));
    assert_eq!(
        rs[0].run(KeyOp::IncrBy(1)),
        Reply::Error(KvError::NotInteger)
    );
}

#[test]
fn a_counter_over_a_non_number_reads_as_the_string() {
    let mut rs = replicas(2);
    rs[0].run(set("1"));
    sync(&mut rs);
    rs[0].run(KeyOp::IncrBy(1));
    rs[1].wall += 10;
    rs[1].run(set("abc"));
    sync(&mut rs);
    assert_eq!(rs[0].get(), Some(b("abc")));
}

#[test]
fn add_wins_over_a_concurrent_remove_of_the_same_member() {
    let mut rs = replicas(2);
    rs[0].run(sadd(&["x", "m"]));
    sync(&mut rs);
    rs[0].run(srem(&["m"]));
    rs[1].run(srem(&["m"]));
    rs[1].run(sadd(&["m"])); // a fresh add, unseen by rs[0]'s remove
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(members(&rs[0]), BTreeSet::from([b("x"), b("m")]));
}

#[test]
fn re_adding_a_member_wins_over_a_concurrent_remove() {
    // The second SADD changes nothing locally, but it is a write the
    // client was told happened: it must survive a remove it never saw.
    let mut rs = replicas(2);
    rs[0].run(sadd(&["x"]));
    sync(&mut rs);
    rs[1].run(srem(&["x"]));
    assert_eq!(rs[0].run(sadd(&["x"])), Reply::Int(0));
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(members(&rs[0]), BTreeSet::from([b("x")]));
}

#[test]
fn a_later_set_of_the_same_value_beats_an_earlier_concurrent_one() {
    let mut rs = replicas(2);
    rs[0].run(set("a"));
    sync(&mut rs);
    rs[1].wall = 2_000;
    rs[1].run(set("b"));
    rs[0].wall = 5_000;
    rs[0].run(set("a"));
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(rs[1].get(), Some(b("a")));
}

#[test]
fn a_later_hset_of_the_same_value_beats_an_earlier_concurrent_one() {
    let mut rs = replicas(2);
    rs[0].run(hset(&[("f", "v"), ("g", "0")]));
    sync(&mut rs);
    rs[1].wall = 2_000;
    rs[1].run(hset(&[("f", "w"), ("g", "1")]));
    rs[0].wall = 5_000;
    assert_eq!(rs[0].run(hset(&[("f", "v")])), Reply::Int(0));
    sync(&mut rs);
    assert_converged(&rs);
    // Only the field the command named is rewritten.
    let want = BTreeMap::from([(b("f"), b("v")), (b("g"), b("1"))]);
    assert_eq!(fields(&rs[1]), want);
}

#[test]
fn a_sole_replica_stores_nothing_for_a_write_that_changes_nothing() {
    // One copy, no concurrent writer: the vnode may skip the write.
    let mut doc = Doc::new();
    let obj = |v: &str| Object::new(Value::Str(b(v)));
    let hint = |op: &KeyOp| OpHint::of(op, false);
    let stamp = Hlc::new(1).now(1_000);
    assert!(doc.update(
        None,
        Change::Put(&obj("a")),
        hint(&set("a")),
        Actor(1),
        stamp
    ));
    let before = doc.view();
    let stamp = Hlc::new(1).now(2_000);
    let again = obj("a");
    assert!(!doc.update(
        before.as_ref(),
        Change::Put(&again),
        hint(&set("a")),
        Actor(1),
        stamp
    ));
    // A replicated write records it all the same.
    assert!(doc.update(
        before.as_ref(),
        Change::Put(&again),
        OpHint::of(&set("a"), true),
        Actor(1),
        stamp
    ));
}

#[test]
fn delete_removes_only_the_members_it_observed() {
    let mut rs = replicas(2);
    rs[0].run(sadd(&["x"]));
    sync(&mut rs);
    rs[0].run(sadd(&["y"]));
    rs[1].run(KeyOp::Del);
    sync(&mut rs);
    assert_eq!(members(&rs[1]), BTreeSet::from([b("y")]));
}

#[test]
fn hash_fields_are_last_writer_wins_by_stamp_each() {
    let mut rs = replicas(2);
    rs[0].run(hset(&[("f", "0"), ("g", "0")]));
    sync(&mut rs);
    rs[0].wall = 5_000;
    rs[0].run(hset(&[("f", "late")]));
    rs[1].wall = 2_000;
    rs[1].run(hset(&[("f", "early"), ("g", "only")]));
    sync(&mut rs);
    let want = BTreeMap::from([(b("f"), b("late")), (b("g"), b("only"))]);
    assert_eq!(fields(&rs[1]), want);
}

#[test]
fn hincrby_counts_per_field_and_survives_a_concurrent_hdel() {
    let mut rs = replicas(2);
    rs[0].run(KeyOp::HIncrBy(b("n"), 3));
    rs[0].run(hset(&[("keep", "1")]));
    sync(&mut rs);
    rs[0].run(KeyOp::HIncrBy(b("n"), 4));
    rs[1].run(KeyOp::HIncrBy(b("n"), 10));
    rs[1].run(KeyOp::HDel(vec![b("n")]));
    sync(&mut rs);
    assert_eq!(fields(&rs[0]).get(&b("n")), Some(&b("4")));
    rs[0].run(KeyOp::HDel(vec![b("n")]));
    sync(&mut rs);
    assert_eq!(fields(&rs[1]).get(&b("n")), None);
}

#[test]
fn a_stale_http_context_makes_siblings_and_a_merged_one_resolves_them() {
    let mut rs = replicas(2);
    rs[0].put_http("v1", None);
    sync(&mut rs);
    let seen = rs[0].doc.ctx().clone();
    rs[0].put_http("v2", Some(&seen));
    rs[1].wall += 5;
    rs[1].put_http("v3", Some(&seen));
    sync(&mut rs);
    let sibs: Vec<Bytes> = rs[0].doc.siblings().into_iter().map(|s| s.0).collect();
    assert_eq!(sibs, vec![b("v2"), b("v3")]);
    assert_eq!(rs[0].doc.sibling_count(), 2);
    assert_eq!(rs[0].get(), Some(b("v3")), "Redis reads the latest stamp");
    let merged = VersionVector::decode(&rs[0].doc.context_bytes()).unwrap();
    rs[0].put_http("v4", Some(&merged));
    assert_eq!(rs[0].doc.sibling_count(), 1);
    sync(&mut rs);
    assert_eq!(rs[1].doc.siblings(), vec![(b("v4"), Some(b("text/plain")))]);
}

#[test]
fn an_http_delete_with_a_stale_context_keeps_unseen_siblings() {
    let mut rs = replicas(2);
    rs[0].put_http("v1", None);
    let seen = rs[0].doc.ctx().clone();
    sync(&mut rs);
    rs[1].put_http("v2", None);
    rs[0].delete_http(Some(&seen));
    sync(&mut rs);
    assert_eq!(rs[0].get(), Some(b("v2")));
}

#[test]
fn expiry_is_last_writer_wins() {
    let expire = |at| KeyOp::Expire {
        at,
        cond: ExpireCond::Always,
    };
    let mut rs = replicas(2);
    rs[0].run(set("v"));
    rs[0].run(expire(1_000_000));
    sync(&mut rs);
    rs[0].wall = 3_000;
    rs[0].run(expire(2_000_000));
    rs[1].wall = 2_000;
    rs[1].run(KeyOp::Persist);
    sync(&mut rs);
    assert_eq!(rs[1].doc.expire_at(), Some(2_000_000));
    rs[1].wall = 4_000;
    rs[1].run(KeyOp::Persist);
    sync(&mut rs);
    assert_eq!(rs[0].doc.expire_at(), None);
}

#[test]
fn a_write_to_an_expired_key_starts_from_nothing() {
    let mut r = Replica::new(1);
    r.run(sadd(&["old"]));
    r.run(KeyOp::Expire {
        at: r.wall + 10,
        cond: ExpireCond::Always,
    });
    r.wall += 100;
    r.run(sadd(&["new"]));
    assert_eq!(members(&r), BTreeSet::from([b("new")]));
    assert_eq!(r.doc.expire_at(), None);
    r.run(KeyOp::IncrBy(3)); // WRONGTYPE: nothing changes
    r.run(set("5"));
    r.run(KeyOp::Expire {
        at: r.wall + 10,
        cond: ExpireCond::Always,
    });
    r.wall += 100;
    assert_eq!(r.run(KeyOp::IncrBy(1)), Reply::Int(1));
}

#[test]
fn a_type_conflict_keeps_the_later_born_type() {
    let mut rs = replicas(2);
    rs[0].wall = 2_000;
    rs[0].run(sadd(&["m"]));
    rs[1].wall = 1_000;
    rs[1].run(set("s"));
    sync(&mut rs);
    assert_converged(&rs);
    assert_eq!(rs[1].doc.kind(), Some(ValueKind::Set));
    // The loser is cleared (observed) by the next write to the key, so it
    // cannot resurface when the set is later deleted.
    assert!(rs[1].doc.str.body.is_present());
    rs[1].run(sadd(&["n"]));
    assert!(!rs[1].doc.str.body.is_present());
    rs[1].run(srem(&["m", "n"]));
    sync(&mut rs);
    assert_eq!(rs[0].doc.view(), None);
}

#[test]
fn concurrent_creations_of_one_type_merge_whatever_the_grouping() {
    let mut rs = replicas(3);
    rs[0].wall = 5_000;
    rs[0].run(hset(&[("a", "1")]));
    rs[1].wall = 4_000;
    rs[1].run(sadd(&["m"]));
    rs[2].wall = 3_000;
    rs[2].run(hset(&[("c", "3")]));
    let (a, s, c) = (rs[0].doc.clone(), rs[1].doc.clone(), rs[2].doc.clone());
    let mut left = a.clone();
    left.merge(&c);
    left.merge(&s);
    let mut right = s.clone();
    right.merge(&c);
    right.merge(&a);
    assert_eq!(left, right);
    let want = BTreeMap::from([(b("a"), b("1")), (b("c"), b("3"))]);
    assert_eq!(left.view().unwrap().value, Value::Hash(want));
}

#[test]
fn encoding_round_trips_and_the_header_tells_kind_and_expiry() {
    let mut r = Replica::new(9);
    r.run(KeyOp::Set {
        value: b("v"),
        expire: SetExpire::At(77_000),
        cond: SetCond::Always,
        get: false,
    });
    r.run(KeyOp::IncrByFloat(1.5));
    let enc = r.doc.encode();
    assert_eq!(Doc::decode(&enc).unwrap(), r.doc);
    assert_eq!(Doc::peek_kind(&enc).unwrap(), Some(ValueKind::Str));
    assert_eq!(Doc::peek_expiry(&enc).unwrap(), Some(77_000));
    r.run(KeyOp::Del);
    let enc = r.doc.encode();
    assert_eq!(Doc::decode(&enc).unwrap(), r.doc);
    assert_eq!(Doc::peek_kind(&enc).unwrap(), None);
    assert_eq!(Doc::peek_expiry(&enc).unwrap(), None);
}

#[test]
fn format_one_objects_decode_as_docs() {
    let objects = [
        Object {
            value: Value::Str(b("hello")),
            expire_at: Some(123),
            content_type: Some(b("text/plain")),
        },
        Object::new(Value::Hash(BTreeMap::from([(b("f"), b("v"))]))),
        Object::new(Value::Set(BTreeSet::from([b("a"), b("b")]))),
    ];
    for obj in objects {
        let enc = obj.encode();
        let doc = Doc::decode(&enc).unwrap();
        assert_eq!(doc.view(), Some(obj.clone()));
        assert_eq!(Doc::peek_kind(&enc).unwrap(), Some(obj.value.kind()));
        assert_eq!(Doc::peek_expiry(&enc).unwrap(), obj.expire_at);
        assert_eq!(Doc::decode(&doc.encode()).unwrap(), doc);
    }
}

#[test]
fn any_write_after_the_upgrade_beats_legacy_data() {
    let legacy = Doc::decode(&Object::new(Value::Str(b("old"))).encode()).unwrap();
    let mut rs = replicas(1);
    rs[0].doc = legacy.clone();
    rs[0].run(set("new"));
    let mut other = legacy;
    other.merge(&rs[0].doc);
    assert_eq!(other.view().unwrap().value, Value::Str(b("new")));
}

#[test]
fn decoding_rejects_states_that_break_invariants() {
    let mut r = Replica::new(1);
    r.run(sadd(&["m"]));
    let mut enc = r.doc.encode().to_vec();
    assert!(Doc::decode(&enc[..enc.len() - 1]).is_err());
    enc.push(0);
    assert!(Doc::decode(&enc).is_err());
    let mut lying = r.doc.encode().to_vec();
    lying[1] = ValueKind::Hash as u8;
    assert!(Doc::decode(&lying).is_err());
    assert!(Doc::decode(&[]).is_err());
    assert!(Doc::decode(&[9, 1, 0]).is_err());
}

#[test]
fn version_vectors_order_and_encode_canonically() {
    let mut a = VersionVector::new();
    let d = a.next_dot(Actor(1));
    a.add(d);
    assert!(a.contains(d));
    let mut c = VersionVector::new();
    c.add(Dot {
        actor: Actor(2),
        counter: 3,
    });
    assert!(!a.descends(&c) && !c.descends(&a));
    c.merge(&a);
    assert!(c.descends(&a));
    assert_eq!(VersionVector::decode(&c.encode()).unwrap(), c);
    assert!(VersionVector::decode(&[1, 1, 0]).is_err(), "zero entry");
}
