use super::*;
use colony_core::NodeId;
use proptest::prelude::*;

fn q(s: &str) -> Quorum {
    s.parse().unwrap()
}

#[test]
fn quorum_names_and_numbers_parse_and_display_alike() {
    for (text, want) in [
        ("one", Quorum::One),
        ("quorum", Quorum::Quorum),
        ("all", Quorum::All),
        ("default", Quorum::Default),
        ("0", Quorum::Num(0)),
        ("3", Quorum::Num(3)),
        ("255", Quorum::Num(255)),
    ] {
        assert_eq!(q(text), want);
        assert_eq!(want.to_string(), text);
    }
    for bad in ["", "ONE", "majority", "-1", "256", "2.5"] {
        assert!(bad.parse::<Quorum>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn json_has_numbers_as_numbers_and_postcard_round_trips() {
    let p = BucketProps {
        n_val: Some(NVal::Num(3)),
        r: Quorum::Num(2),
        w: Quorum::All,
        ..BucketProps::default()
    };
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"n_val": 3, "r": 2, "w": "all", "pr": 0, "pw": 0, "dw": 0})
    );
    assert_eq!(serde_json::from_value::<BucketProps>(json).unwrap(), p);
    let from_text: Quorum = serde_json::from_str("\"2\"").unwrap();
    assert_eq!(from_text, Quorum::Num(2));
    assert!(serde_json::from_str::<Quorum>("300").is_err());
    assert!(serde_json::from_str::<Quorum>("-1").is_err());
    assert_eq!(BucketProps::decode(&p.encode()).unwrap(), p);
    assert!(BucketProps::decode(b"\xff\xff").is_err());
}

#[test]
fn defaults_are_quorum_reads_and_writes_and_no_primaries() {
    let d = BucketProps::default();
    assert_eq!(d.n_val, None);
    assert_eq!((d.r, d.w), (Quorum::Quorum, Quorum::Quorum));
    assert_eq!(
        (d.pr, d.pw, d.dw),
        (Quorum::Num(0), Quorum::Num(0), Quorum::Num(0))
    );
    let r = d.resolve(3, 3, &Overrides::default());
    assert_eq!(
        r,
        Resolved {
            n: 3,
            r: 2,
            w: 2,
            pr: 0,
            pw: 0,
            dw: 0
        }
    );
}

#[test]
fn set_reports_unknown_properties_bad_values_and_counts_over_n_val() {
    let mut p = BucketProps::default();
    p.set("n_val", "2").unwrap();
    p.set("w", "all").unwrap();
    p.set("r", "1").unwrap();
    assert_eq!(
        (p.n_val, p.w, p.r),
        (Some(NVal::Num(2)), Quorum::All, Quorum::Num(1))
    );
    let err = |p: &mut BucketProps, k: &str, v: &str| {
        let before = p.clone();
        let e = p.set(k, v).unwrap_err();
        assert!(matches!(e, KvError::InvalidProps(_)), "{e:?}");
        assert!(!e.is_retryable());
        assert_eq!(*p, before, "a refused value is not kept");
        e.to_string()
    };
    let mut p2 = p.clone();
    assert!(err(&mut p2, "bogus", "1").contains("unknown property \"bogus\""));
    assert!(err(&mut p2, "w", "lots").contains("w=\"lots\" is not one, quorum"));
    assert!(err(&mut p2, "n_val", "0").contains("n_val=\"0\""));
    let mut p3 = p.clone();
    assert!(err(&mut p3, "dw", "3").contains("dw=3 exceeds n_val=2"));
    let mut p4 = p.clone();
    assert!(err(&mut p4, "r", "0").contains("at least one replica"));
    // `default` restores the built-in value.
    p.set("w", "default").unwrap();
    p.set("n_val", "default").unwrap();
    assert_eq!((p.n_val, p.w), (None, Quorum::Quorum));
    assert_eq!(p.get("n_val").as_deref(), Some("default"));
    assert_eq!(p.get("r").as_deref(), Some("1"));
    assert_eq!(p.get("x"), None);
}

#[test]
fn edit_applies_all_or_nothing_and_checks_the_clusters_n_val() {
    let mut p = BucketProps::default();
    p.edit([("n_val", "2"), ("w", "2")], 3).unwrap();
    // Raising n_val and w together is fine whatever the order.
    p.edit([("w", "3"), ("n_val", "3")], 3).unwrap();
    assert_eq!((p.n_val, p.w), (Some(NVal::Num(3)), Quorum::Num(3)));
    let before = p.clone();
    let e = p.edit([("r", "1"), ("n_val", "5")], 3).unwrap_err();
    assert!(
        e.to_string().contains("exceeds the cluster's n_val of 3"),
        "{e}"
    );
    assert_eq!(p, before);
    // Without a bucket n_val the cluster's bounds the counts.
    let e = BucketProps::default().edit([("w", "4")], 3).unwrap_err();
    assert!(e.to_string().contains("w=4 exceeds n_val=3"), "{e}");
}

#[test]
fn resolve_caps_n_at_the_ring_and_the_replicas_and_applies_overrides() {
    let p = BucketProps {
        n_val: Some(NVal::Num(5)),
        w: Quorum::Num(4),
        ..BucketProps::default()
    };
    // The ring keeps 3: n is 3, numbers are capped.
    let r = p.resolve(3, 3, &Overrides::default());
    assert_eq!((r.n, r.r, r.w), (3, 2, 3));
    // Two nodes: two copies, a majority of two is two.
    let r = p.resolve(3, 2, &Overrides::default());
    assert_eq!((r.n, r.r, r.w), (2, 2, 2));
    let o = Overrides {
        r: Some(Quorum::One),
        w: Some(Quorum::Default),
        pw: Some(Quorum::All),
        dw: Some(Quorum::Num(9)),
        ..Overrides::default()
    };
    let r = BucketProps::default().resolve(5, 5, &o);
    assert_eq!(
        r,
        Resolved {
            n: 5,
            r: 1,
            w: 3,
            pr: 0,
            pw: 5,
            dw: 5
        }
    );
    // A request asking for r=0 still reads one replica.
    let zero = Overrides {
        r: Some(Quorum::Num(0)),
        ..Overrides::default()
    };
    assert_eq!(BucketProps::default().resolve(3, 3, &zero).r, 1);
}

#[test]
fn props_live_in_the_ring_under_one_key_per_bucket() {
    assert_eq!(meta_key(b"photos"), "bucket/photos");
    assert_eq!(meta_key(b"a%b"), "bucket/%612562");
    assert_eq!(meta_key(b"\xff"), "bucket/%ff");
    let mut ring = Ring::single(NodeId::new("n"), 64).unwrap();
    assert_eq!(
        BucketProps::lookup(&ring, b"photos"),
        BucketProps::default()
    );
    let mut p = BucketProps::default();
    p.set("w", "1").unwrap();
    ring.set_meta(&meta_key(b"photos"), p.encode());
    assert_eq!(BucketProps::lookup(&ring, b"photos"), p);
    assert_eq!(BucketProps::lookup(&ring, b"other"), BucketProps::default());
    ring.set_meta(&meta_key(b"junk"), b"\xff\xff\xff".to_vec());
    assert_eq!(BucketProps::lookup(&ring, b"junk"), BucketProps::default());
}

fn quorum() -> impl Strategy<Value = Quorum> {
    prop_oneof![
        Just(Quorum::One),
        Just(Quorum::Quorum),
        Just(Quorum::All),
        Just(Quorum::Default),
        any::<u8>().prop_map(Quorum::Num),
    ]
}

fn n_val() -> impl Strategy<Value = NVal> {
    prop_oneof![(1u8..=255).prop_map(NVal::Num), Just(NVal::All)]
}

fn props() -> impl Strategy<Value = BucketProps> {
    (
        proptest::option::of(n_val()),
        (quorum(), quorum(), quorum(), quorum(), quorum()),
    )
        .prop_map(|(n_val, (r, w, pr, pw, dw))| BucketProps {
            n_val,
            r,
            w,
            pr,
            pw,
            dw,
        })
}

fn overrides() -> impl Strategy<Value = Overrides> {
    let o = || proptest::option::of(quorum());
    (o(), o(), o(), o(), o()).prop_map(|(r, w, pr, pw, dw)| Overrides { r, w, pr, pw, dw })
}

proptest! {
    /// Whatever is stored or asked for, even values `set` would refuse,
    /// the counts fit the copies kept.
    #[test]
    fn resolved_counts_always_fit_n(
        p in props(),
        ring_n_val in any::<u8>(),
        available in 0usize..300,
        o in overrides(),
    ) {
        let r = p.resolve(ring_n_val, available, &o);
        prop_assert!(r.n >= 1);
        prop_assert!(r.n <= available.max(1));
        prop_assert!(r.r >= 1 && r.w >= 1);
        if p.is_shared() {
            // Every node there is; only numbers asked for may exceed it.
            prop_assert_eq!(r.n, available.max(1));
            return Ok(());
        }
        prop_assert!(r.n <= usize::from(ring_n_val.max(1)));
        for (name, c) in [("r", r.r), ("w", r.w), ("pr", r.pr), ("pw", r.pw), ("dw", r.dw)] {
            prop_assert!(c <= r.n, "{}={} > n={}", name, c, r.n);
        }
        prop_assert_eq!(r.excess(true), None);
        prop_assert_eq!(r.excess(false), None);
    }

    /// Encoding and the text of every property round-trip.
    #[test]
    fn props_round_trip_through_postcard_json_and_text(p in props()) {
        prop_assert_eq!(BucketProps::decode(&p.encode()).unwrap(), p.clone());
        let json = serde_json::to_string(&p).unwrap();
        prop_assert_eq!(serde_json::from_str::<BucketProps>(&json).unwrap(), p.clone());
        let mut back = BucketProps::default();
        for name in ["n_val", "r", "w", "pr", "pw", "dw"] {
            back.assign(name, &p.get(name).unwrap()).unwrap();
        }
        prop_assert_eq!(back.n_val, p.n_val);
        prop_assert_eq!((back.r, back.w), (
            if p.r == Quorum::Default { Quorum::Quorum } else { p.r },
            if p.w == Quorum::Default { Quorum::Quorum } else { p.w },
        ));
    }

    /// Text edits never panic, whatever they say.
    #[test]
    fn set_never_panics(key in "[a-z_]{0,6}", value in "\\PC{0,8}") {
        let mut p = BucketProps::default();
        let _ = p.set(&key, &value);
        let _ = p.edit([(key.as_str(), value.as_str())], 3);
    }
}

#[test]
fn n_val_all_is_accepted_shown_as_all_and_any_count_goes_with_it() {
    let mut p = BucketProps::default();
    p.set("n_val", "all").unwrap();
    assert_eq!(p.n_val, Some(NVal::All));
    assert!(p.is_shared());
    assert_eq!(p.get("n_val").as_deref(), Some("all"));
    // The nodes holding the bucket change with the membership: a count
    // is not checked against any number when it is set.
    p.edit([("w", "7"), ("r", "one"), ("pw", "all")], 3)
        .unwrap();
    assert_eq!((p.w, p.r, p.pw), (Quorum::Num(7), Quorum::One, Quorum::All));
    // `all` does not exceed the cluster's n_val: it is not a number.
    BucketProps::default().edit([("n_val", "all")], 1).unwrap();
    // Back to a number: the counts are checked against it again.
    let e = p.clone().edit([("n_val", "3")], 3).unwrap_err();
    assert!(e.to_string().contains("w=7 exceeds n_val=3"), "{e}");
    for bad in ["ALL", "every", "0", "-1", "256"] {
        let e = BucketProps::default().set("n_val", bad).unwrap_err();
        assert!(e.to_string().contains("or default"), "{bad}: {e}");
    }
}

#[test]
fn n_val_all_resolves_against_every_node_and_does_not_cap_numbers() {
    let p = BucketProps {
        n_val: Some(NVal::All),
        ..BucketProps::default()
    };
    // Four nodes own partitions (the ring's n_val, 3, plays no part).
    let r = p.resolve(3, 4, &Overrides::default());
    assert_eq!(
        r,
        Resolved {
            n: 4,
            r: 3,
            w: 3,
            pr: 0,
            pw: 0,
            dw: 0
        }
    );
    assert_eq!((r.excess(true), r.excess(false)), (None, None));
    let o = Overrides {
        r: Some(Quorum::One),
        pr: Some(Quorum::One),
        w: Some(Quorum::All),
        dw: Some(Quorum::Num(5)),
        ..Overrides::default()
    };
    let r = p.resolve(3, 4, &o);
    assert_eq!((r.r, r.pr, r.w, r.dw), (1, 1, 4, 5));
    assert_eq!(r.excess(true), None);
    assert_eq!(r.excess(false), Some(("dw", 5)));
    // Five nodes now: the same request fits.
    assert_eq!(p.resolve(3, 5, &o).excess(false), None);
    // A single node holds every copy.
    let one = p.resolve(3, 1, &Overrides::default());
    assert_eq!((one.n, one.r, one.w), (1, 1, 1));
}

#[test]
fn n_val_all_is_stored_in_the_old_format_and_old_properties_still_decode() {
    let p = BucketProps {
        n_val: Some(NVal::All),
        w: Quorum::Num(2),
        ..BucketProps::default()
    };
    assert_eq!(BucketProps::decode(&p.encode()).unwrap(), p);
    let json = serde_json::to_value(p.effective(3)).unwrap();
    assert_eq!(json["n_val"], "all");
    assert_eq!(serde_json::from_value::<BucketProps>(json).unwrap(), p);
    assert_eq!(
        BucketProps::default().effective(3).n_val,
        Some(NVal::Num(3))
    );
    // What an older version stored: n_val as a plain Option<u8>.
    #[derive(serde::Serialize)]
    struct Before {
        n_val: Option<u8>,
        r: Quorum,
        w: Quorum,
        pr: Quorum,
        pw: Quorum,
        dw: Quorum,
    }
    let d = BucketProps::default();
    for (old, now) in [(Some(2), Some(NVal::Num(2))), (None, None)] {
        let bytes = postcard::to_stdvec(&Before {
            n_val: old,
            r: d.r,
            w: Quorum::One,
            pr: d.pr,
            pw: d.pw,
            dw: d.dw,
        })
        .unwrap();
        let got = BucketProps::decode(&bytes).unwrap();
        assert_eq!((got.n_val, got.w), (now, Quorum::One));
    }
}

#[test]
fn shared_buckets_are_found_in_the_ring_by_name_whatever_the_name() {
    let mut ring = Ring::single(NodeId::new("n"), 64).unwrap();
    assert!(shared_buckets(&ring).is_empty());
    let mut all = BucketProps::default();
    all.set("n_val", "all").unwrap();
    let mut two = BucketProps::default();
    two.set("n_val", "2").unwrap();
    for (bucket, p) in [
        (&b"photos"[..], &all),
        (b"a%b", &all),
        (b"\xff", &all),
        (b"db1", &two),
        (b"zz", &all),
    ] {
        ring.set_meta(&meta_key(bucket), p.encode());
    }
    assert_eq!(
        shared_buckets(&ring),
        [&b"\xff"[..], b"zz", b"a%b", b"photos"].map(bytes::Bytes::from_static)
    );
    // Set back to a number: no longer shared.
    ring.set_meta(&meta_key(b"photos"), two.encode());
    assert_eq!(shared_buckets(&ring).len(), 3);
}
