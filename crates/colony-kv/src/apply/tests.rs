use super::*;
use crate::op::{GetExExpire, SetCond, SetExpire};
use bytes::Bytes;
use rand::SeedableRng;

fn run(op: KeyOp, cur: Option<Object>) -> Applied {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut ctx = Ctx {
        now_ms: 1_000,
        rng: &mut rng,
    };
    apply(op, cur, &mut ctx)
}

fn s(v: &str) -> Option<Object> {
    Some(Object::new(Value::Str(Bytes::copy_from_slice(
        v.as_bytes(),
    ))))
}

fn reply(a: &Applied) -> &Reply {
    match &a.out {
        Out::Reply(r) => r,
        Out::Object(_) => panic!("expected a reply"),
    }
}

#[test]
fn incr_counts_from_zero_and_refuses_non_integers() {
    let a = run(KeyOp::IncrBy(5), None);
    assert_eq!(reply(&a), &Reply::Int(5));
    let a = run(KeyOp::IncrBy(1), s("012"));
    assert_eq!(reply(&a), &Reply::Error(KvError::NotInteger));
    assert_eq!(a.write, Write::None);
    let a = run(KeyOp::IncrBy(1), s(&i64::MAX.to_string()));
    assert_eq!(reply(&a), &Reply::Error(KvError::Overflow));
}

#[test]
fn incrbyfloat_formats_like_redis() {
    let a = run(KeyOp::IncrByFloat(0.1), s("10.5"));
    assert_eq!(reply(&a), &Reply::bulk("10.6"));
    let a = run(KeyOp::IncrByFloat(200.0), s("5.0e3"));
    assert_eq!(reply(&a), &Reply::bulk("5200"));
}

#[test]
fn set_nx_on_existing_key_is_refused_and_get_returns_old_value() {
    let op = |cond, get| KeyOp::Set {
        value: Bytes::from_static(b"new"),
        expire: SetExpire::Clear,
        cond,
        get,
    };
    let a = run(op(SetCond::IfAbsent, false), s("old"));
    assert_eq!((reply(&a), &a.write), (&Reply::Nil, &Write::None));
    let a = run(op(SetCond::Always, true), s("old"));
    assert_eq!(reply(&a), &Reply::bulk("old"));
    assert!(matches!(a.write, Write::Put(_)));
}

#[test]
fn wrong_type_is_refused_without_writing() {
    let set = Some(Object::new(Value::Set(Default::default())));
    for op in [KeyOp::Get, KeyOp::IncrBy(1), KeyOp::HGet(Bytes::new())] {
        let a = run(op, set.clone());
        assert_eq!(reply(&a), &Reply::Error(KvError::WrongType));
        assert_eq!(a.write, Write::None);
    }
}

#[test]
fn removing_the_last_member_deletes_the_key() {
    let a = run(KeyOp::SAdd(vec![Bytes::from_static(b"m")]), None);
    let Write::Put(obj) = a.write else {
        panic!("expected a put")
    };
    let a = run(KeyOp::SRem(vec![Bytes::from_static(b"m")]), Some(obj));
    assert_eq!((reply(&a), &a.write), (&Reply::Int(1), &Write::Delete));
}

#[test]
fn expire_in_the_past_deletes_and_conditions_apply() {
    let a = run(
        KeyOp::Expire {
            at: 10,
            cond: ExpireCond::Always,
        },
        s("v"),
    );
    assert_eq!(a.write, Write::Delete);
    let a = run(
        KeyOp::Expire {
            at: 5_000,
            cond: ExpireCond::Gt,
        },
        s("v"),
    );
    assert_eq!(
        reply(&a),
        &Reply::Int(0),
        "GT against no expiry (infinite) fails"
    );
    let a = run(
        KeyOp::Expire {
            at: 5_000,
            cond: ExpireCond::Lt,
        },
        s("v"),
    );
    assert_eq!(reply(&a), &Reply::Int(1));
}

#[test]
fn getrange_handles_negative_and_out_of_range_indices() {
    let a = run(
        KeyOp::GetRange { start: -3, end: -1 },
        s("This is a string"),
    );
    assert_eq!(reply(&a), &Reply::bulk("ing"));
    let a = run(KeyOp::GetRange { start: 5, end: 1 }, s("abc"));
    assert_eq!(reply(&a), &Reply::bulk(""));
    let a = run(KeyOp::GetRange { start: 0, end: 100 }, s("abc"));
    assert_eq!(reply(&a), &Reply::bulk("abc"));
}

#[test]
fn setrange_pads_with_zero_bytes() {
    let a = run(
        KeyOp::SetRange {
            offset: 3,
            value: Bytes::from_static(b"x"),
        },
        None,
    );
    assert_eq!(reply(&a), &Reply::Int(4));
    let Write::Put(o) = a.write else { panic!() };
    assert_eq!(o.value, Value::Str(Bytes::from_static(b"\0\0\0x")));
}

#[test]
fn getex_persist_removes_the_expiry() {
    let mut o = s("v").unwrap();
    o.expire_at = Some(9_000);
    let a = run(KeyOp::GetEx(GetExExpire::Persist), Some(o));
    let Write::Put(o) = a.write else { panic!() };
    assert_eq!(o.expire_at, None);
}
