//! Lattice laws over reachable states: three replicas run random commands
//! (through the real apply layer) interleaved with random merges; every
//! state any replica passes through goes into a pool, and merge must be
//! commutative, associative and idempotent on any states of that pool, and
//! replicas must converge to equal docs and bytes after a full exchange.
#![allow(clippy::unwrap_used)]

use super::harness::{b, sync, Replica};
use super::{Doc, VersionVector};
use crate::op::{ExpireCond, SetCond, SetExpire};
use crate::KeyOp;
use proptest::prelude::*;
use proptest::sample::Index;

const REPLICAS: usize = 3;
const VALUES: [&str; 5] = ["1", "7", "x", "2.5", "-3"];
const NAMES: [&str; 3] = ["a", "b", "c"];
const FLOATS: [f64; 4] = [0.5, -1.25, 0.1, 3.0];

#[derive(Debug, Clone)]
enum Ctx {
    Blind,
    Fresh,
    Stale(Index),
}

#[derive(Debug, Clone)]
enum Cmd {
    Set(usize, Option<u64>),
    IncrBy(i64),
    IncrByFloat(usize),
    Del,
    SAdd(usize),
    SRem(usize),
    HSet(usize, usize),
    HDel(usize),
    HIncrBy(usize, i64),
    HIncrByFloat(usize, usize),
    Expire(u64),
    Persist,
    HttpPut(usize, Ctx),
    HttpDelete(Ctx),
    Tick(u64),
}

#[derive(Debug, Clone)]
enum Step {
    Run(usize, Cmd),
    Merge(usize, usize),
}

fn arb_ctx() -> impl Strategy<Value = Ctx> {
    prop_oneof![
        Just(Ctx::Blind),
        Just(Ctx::Fresh),
        any::<Index>().prop_map(Ctx::Stale)
    ]
}

fn arb_cmd() -> impl Strategy<Value = Cmd> {
    let v = 0..VALUES.len();
    let n = || 0..NAMES.len();
    prop_oneof![
        (v.clone(), proptest::option::of(0u64..3_000)).prop_map(|(v, e)| Cmd::Set(v, e)),
        (-5i64..6).prop_map(Cmd::IncrBy),
        (0..FLOATS.len()).prop_map(Cmd::IncrByFloat),
        Just(Cmd::Del),
        n().prop_map(Cmd::SAdd),
        n().prop_map(Cmd::SRem),
        (n(), v.clone()).prop_map(|(f, v)| Cmd::HSet(f, v)),
        n().prop_map(Cmd::HDel),
        (n(), -5i64..6).prop_map(|(f, by)| Cmd::HIncrBy(f, by)),
        (n(), 0..FLOATS.len()).prop_map(|(f, x)| Cmd::HIncrByFloat(f, x)),
        (0u64..3_000).prop_map(Cmd::Expire),
        Just(Cmd::Persist),
        (v, arb_ctx()).prop_map(|(v, c)| Cmd::HttpPut(v, c)),
        arb_ctx().prop_map(Cmd::HttpDelete),
        (0u64..50).prop_map(Cmd::Tick),
    ]
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        3 => (0..REPLICAS, arb_cmd()).prop_map(|(r, c)| Step::Run(r, c)),
        1 => (0..REPLICAS, 0..REPLICAS).prop_map(|(a, b)| Step::Merge(a, b)),
    ];
    proptest::collection::vec(step, 1..48)
}

/// Run a step on replica `r`; `seen` is the contexts it had so far.
fn run(r: &mut Replica, cmd: Cmd, seen: &[VersionVector]) {
    r.wall += 1;
    let pick = |c: &Ctx, r: &Replica| match c {
        Ctx::Blind => None,
        Ctx::Fresh => Some(r.doc.ctx().clone()),
        Ctx::Stale(i) => seen.get(i.index(seen.len().max(1))).cloned(),
    };
    let name = |i: usize| b(NAMES[i]);
    let op = match cmd {
        Cmd::Set(v, e) => KeyOp::Set {
            value: b(VALUES[v]),
            expire: e.map_or(SetExpire::Clear, |d| SetExpire::At(r.wall + d)),
            cond: SetCond::Always,
            get: false,
        },
        Cmd::IncrBy(by) => KeyOp::IncrBy(by),
        Cmd::IncrByFloat(x) => KeyOp::IncrByFloat(FLOATS[x]),
        Cmd::Del => KeyOp::Del,
        Cmd::SAdd(m) => KeyOp::SAdd(vec![name(m)]),
        Cmd::SRem(m) => KeyOp::SRem(vec![name(m)]),
        Cmd::HSet(f, v) => KeyOp::HSet {
            pairs: vec![(name(f), b(VALUES[v]))],
            nx: false,
        },
        Cmd::HDel(f) => KeyOp::HDel(vec![name(f)]),
        Cmd::HIncrBy(f, by) => KeyOp::HIncrBy(name(f), by),
        Cmd::HIncrByFloat(f, x) => KeyOp::HIncrByFloat(name(f), FLOATS[x]),
        // Some land in the past, which deletes the key.
        Cmd::Expire(d) => KeyOp::Expire {
            at: (r.wall + d).saturating_sub(100),
            cond: ExpireCond::Always,
        },
        Cmd::Persist => KeyOp::Persist,
        Cmd::HttpPut(v, c) => return r.put_http(VALUES[v], pick(&c, r).as_ref()),
        Cmd::HttpDelete(c) => return r.delete_http(pick(&c, r).as_ref()),
        Cmd::Tick(ms) => {
            r.wall += ms;
            return;
        }
    };
    r.run(op);
}

/// Play the steps; return the replicas and every state they went through.
fn play(steps: Vec<Step>) -> (Vec<Replica>, Vec<Doc>) {
    let mut rs: Vec<Replica> = (0..REPLICAS as u64).map(|i| Replica::new(i + 1)).collect();
    for (i, r) in rs.iter_mut().enumerate() {
        r.wall += 7 * i as u64; // clocks disagree a little
    }
    let mut seen: Vec<Vec<VersionVector>> = vec![Vec::new(); REPLICAS];
    let mut pool = Vec::new();
    for step in steps {
        match step {
            Step::Run(i, cmd) => run(&mut rs[i], cmd, &seen[i]),
            Step::Merge(from, to) => {
                let d = rs[from].doc.clone();
                rs[to].merge_from(&d);
            }
        }
        for (r, s) in rs.iter().zip(seen.iter_mut()) {
            s.push(r.doc.ctx().clone());
            pool.push(r.doc.clone());
        }
    }
    (rs, pool)
}

fn join(a: &Doc, b: &Doc) -> Doc {
    let mut x = a.clone();
    x.merge(b);
    x
}

proptest! {
    #[test]
    fn merge_is_a_join_on_reachable_states(
        steps in arb_steps(),
        picks in proptest::array::uniform3(any::<Index>()),
    ) {
        let (_, pool) = play(steps);
        let [a, b, c] = picks.map(|i| &pool[i.index(pool.len())]);
        prop_assert_eq!(join(a, b), join(b, a));
        prop_assert_eq!(join(&join(a, b), c), join(a, &join(b, c)));
        prop_assert_eq!(&join(a, a), a);
        prop_assert_eq!(join(&join(a, b), b), join(a, b));
        prop_assert!(join(a, b).ctx().descends(a.ctx()));
    }

    #[test]
    fn replicas_converge_after_a_full_exchange(steps in arb_steps()) {
        let (mut rs, _) = play(steps);
        sync(&mut rs);
        for r in &rs[1..] {
            prop_assert_eq!(&r.doc, &rs[0].doc);
            prop_assert_eq!(r.doc.encode(), rs[0].doc.encode());
        }
    }

    #[test]
    fn reachable_states_round_trip_through_bytes(steps in arb_steps()) {
        let (_, pool) = play(steps);
        for d in pool.iter().rev().take(6) {
            let enc = d.encode();
            prop_assert_eq!(&Doc::decode(&enc).unwrap(), d);
            prop_assert_eq!(Doc::peek_kind(&enc).unwrap(), d.kind());
            prop_assert_eq!(Doc::peek_expiry(&enc).unwrap(), d.expire_at());
        }
    }

    #[test]
    fn decoding_random_bytes_never_panics(
        buf in proptest::collection::vec(any::<u8>(), 0..96),
        first in 0u8..4,
    ) {
        let mut buf = buf;
        if let Some(b0) = buf.first_mut() {
            *b0 = first; // reach the format-2 and format-1 parsers often
        }
        if let Ok(d) = Doc::decode(&buf) {
            let _ = join(&d, &d).encode();
        }
        let _ = Doc::peek_kind(&buf);
        let _ = Doc::peek_expiry(&buf);
        let _ = VersionVector::decode(&buf);
    }

    #[test]
    fn decoding_corrupted_encodings_never_panics(
        steps in arb_steps(),
        at in any::<Index>(),
        byte in any::<u8>(),
        cut in any::<Index>(),
    ) {
        let (rs, _) = play(steps);
        let mut enc = rs[0].doc.encode().to_vec();
        let i = at.index(enc.len());
        enc[i] = byte;
        enc.truncate(cut.index(enc.len() + 1).max(i));
        if let Ok(d) = Doc::decode(&enc) {
            let _ = d.view();
            let _ = join(&d, &rs[1].doc).encode();
        }
    }
}
