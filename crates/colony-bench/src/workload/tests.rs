use super::*;

fn count_kinds(workload: Workload, n: usize) -> [usize; 7] {
    let keys = KeyChooser::new(Distribution::Uniform, 1000);
    let mut gen = OpGenerator::new(workload.mix(), keys, 7);
    let mut counts = [0usize; 7];
    for _ in 0..n {
        counts[gen.next_op().kind.index()] += 1;
    }
    counts
}

fn share(count: usize, n: usize) -> f64 {
    count as f64 / n as f64
}

#[test]
fn workload_mixes_have_the_advertised_proportions() {
    let n = 100_000;
    let a = count_kinds(Workload::A, n);
    assert!((share(a[OpKind::Get.index()], n) - 0.5).abs() < 0.01);
    assert_eq!(a[OpKind::Get.index()] + a[OpKind::Set.index()], n);

    let b = count_kinds(Workload::B, n);
    assert!((share(b[OpKind::Set.index()], n) - 0.05).abs() < 0.005);

    let sets = count_kinds(Workload::Sets, n);
    assert!((share(sets[OpKind::Sadd.index()], n) - 0.5).abs() < 0.01);
    assert_eq!(
        sets[OpKind::Sadd.index()] + sets[OpKind::Sismember.index()],
        n
    );

    let hashes = count_kinds(Workload::Hashes, n);
    assert!((share(hashes[OpKind::Hget.index()], n) - 0.5).abs() < 0.01);
}

#[test]
fn pure_workloads_send_only_their_command() {
    let n = 10_000;
    assert_eq!(count_kinds(Workload::C, n)[OpKind::Get.index()], n);
    assert_eq!(count_kinds(Workload::Get, n)[OpKind::Get.index()], n);
    assert_eq!(count_kinds(Workload::Set, n)[OpKind::Set.index()], n);
    assert_eq!(count_kinds(Workload::Incr, n)[OpKind::Incr.index()], n);
}

#[test]
fn zipfian_favours_low_ranks_heavily() {
    let items = 10_000u64;
    let z = Zipfian::new(items, Zipfian::YCSB_THETA);
    let mut rng = SmallRng::seed_from_u64(1);
    let n = 200_000;
    let mut counts = vec![0u32; items as usize];
    for _ in 0..n {
        let v = z.sample(&mut rng);
        assert!(v < items);
        counts[v as usize] += 1;
    }
    // Rank 0 is the most popular and rank 1 about half as popular (1/2^0.99).
    assert!(counts[0] > counts[1] && counts[1] > counts[2]);
    let ratio = f64::from(counts[0]) / f64::from(counts[1]);
    assert!((1.7..2.3).contains(&ratio), "rank0/rank1 = {ratio}");
    // P(rank 0) = 1 / zeta(10000, 0.99), about 0.1.
    let p0 = f64::from(counts[0]) / n as f64;
    assert!((0.08..0.12).contains(&p0), "p0 = {p0}");
    // The top 1% of items draw far more than 1% of requests.
    let top: u32 = counts[..100].iter().sum();
    assert!(f64::from(top) / n as f64 > 0.5);
}

#[test]
fn uniform_keys_cover_the_keyspace_evenly() {
    let keys = KeyChooser::new(Distribution::Uniform, 10);
    let mut gen = OpGenerator::new(Workload::C.mix(), keys, 3);
    let mut counts = [0u32; 10];
    for _ in 0..100_000 {
        counts[gen.next_op().key as usize] += 1;
    }
    assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)));
}

#[test]
fn scrambled_zipfian_keys_stay_in_the_keyspace() {
    let keys = KeyChooser::new(Distribution::Zipfian, 1234);
    let mut gen = OpGenerator::new(Workload::A.mix(), keys, 9);
    assert!((0..50_000).all(|_| gen.next_op().key < 1234));
}

#[test]
fn the_same_seed_gives_the_same_operations() {
    let keys = KeyChooser::new(Distribution::Zipfian, 1000);
    let mut a = OpGenerator::new(Workload::A.mix(), keys, 42);
    let mut b = OpGenerator::new(Workload::A.mix(), keys, 42);
    assert!((0..1000).all(|_| a.next_op() == b.next_op()));
}

#[test]
fn keys_have_a_fixed_width_number_after_the_prefix() {
    let payload = Payload::new("key:", 3);
    let mut out = Vec::new();
    payload.write_key(&mut out, 12345);
    assert_eq!(out, b"key:000000012345");
}

#[test]
fn operations_encode_as_the_expected_commands() {
    let payload = Payload::new("k:", 2);
    let op = |kind, key, sub| Op { kind, key, sub };
    let encoded = |o: Op| {
        let mut buf = Vec::new();
        payload.encode(&mut buf, &o);
        String::from_utf8(buf).expect("ascii")
    };
    let key = "$14\r\nk:000000000007\r\n";
    assert_eq!(
        encoded(op(OpKind::Get, 7, 0)),
        format!("*2\r\n$3\r\nGET\r\n{key}")
    );
    assert_eq!(
        encoded(op(OpKind::Set, 7, 0)),
        format!("*3\r\n$3\r\nSET\r\n{key}$2\r\nah\r\n")
    );
    assert_eq!(
        encoded(op(OpKind::Sismember, 7, 3)),
        format!("*3\r\n$9\r\nSISMEMBER\r\n{key}$9\r\nmember:03\r\n")
    );
    assert_eq!(
        encoded(op(OpKind::Hset, 7, 12)),
        format!("*4\r\n$4\r\nHSET\r\n{key}$8\r\nfield:12\r\n$2\r\nah\r\n")
    );
}
