//! The large, rare variants of the wire types are boxed to keep the common
//! ones small. Their encoding must stay what it was when the fields were
//! inline (a variant index, then the fields in order), or nodes of mixed
//! versions would misread each other.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use colony_kv::error::Unmet;
use colony_kv::op::{CtxDel, CtxPut};
use colony_kv::{KeyOp, KvError, Object, Value};

/// The encoding of `whole` is one variant-index byte followed by `fields`.
fn inline_layout<T: serde::Serialize, F: serde::Serialize>(whole: &T, fields: &F) {
    let whole = postcard::to_stdvec(whole).unwrap();
    let fields = postcard::to_stdvec(fields).unwrap();
    assert!(whole[0] < 0x80, "a one-byte variant index");
    assert_eq!(&whole[1..], &fields[..]);
}

#[test]
fn boxed_key_ops_encode_as_their_fields_did_inline() {
    let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    let put = CtxPut {
        value: b("v"),
        content_type: Some(b("text/plain")),
        ctx: None,
        prior: Some(b("p")),
    };
    inline_layout(
        &KeyOp::PutCtx(Box::new(put.clone())),
        &(&put.value, &put.content_type, &put.ctx, &put.prior),
    );
    let del = CtxDel {
        ctx: Some(b("c")),
        prior: None,
    };
    inline_layout(
        &KeyOp::DelCtx(Box::new(del.clone())),
        &(&del.ctx, &del.prior),
    );
    let object = Object::new(Value::Str(b("x")));
    inline_layout(
        &KeyOp::Put {
            object: Box::new(object.clone()),
            nx: true,
        },
        &(&object, true),
    );
    inline_layout(
        &KeyOp::Replace(Some(Box::new(object.clone()))),
        &Some(&object),
    );
}

#[test]
fn a_boxed_quorum_error_encodes_as_its_fields_did_inline() {
    let u = Unmet {
        op: "write".into(),
        needed: 2,
        got: 1,
        primaries: (1, 0),
        durable: (1, 0),
        failures: vec!["n2: timeout".into()],
    };
    inline_layout(
        &KvError::QuorumUnmet(Box::new(u.clone())),
        &(&u.op, u.needed, u.got, u.primaries, u.durable, &u.failures),
    );
    let back: KvError = postcard::from_bytes(
        &postcard::to_stdvec(&KvError::QuorumUnmet(Box::new(u.clone()))).unwrap(),
    )
    .unwrap();
    assert_eq!(back, KvError::QuorumUnmet(Box::new(u)));
}
