//! Multi-process test of a bucket with `n_val=all` ("share everything") on
//! a cluster whose n_val is 3: every node that owns partitions keeps every
//! key of it, whatever partitions it replicates. Checked node by node from
//! each node's own store (its anti-entropy trees count the entries it
//! holds per partition) and by reading every key through each node alone
//! (`r=1&pr=1`), after the writes, after a fifth node joins while a client
//! writes (it must hold every key, those written meanwhile too, once the
//! ring settles; the others hand partitions to it, drop the rest of those
//! partitions, and must keep the shared keys), and after a node leaves. Anti-entropy is off there, so nothing but the writes,
//! the handoff and the drop rules put keys where they are.
//!
//! A second test changes a bucket holding keys from a number to `all`
//! (anti-entropy then copies its keys to every node) and back (the extra
//! copies are dropped).
#![allow(clippy::unwrap_used)]

use colony_core::Partitioner;
use colony_testkit::{eventually, get_json, http_request, wait_settled, Node, NodeOptions, Target};
use futures::stream::{self, StreamExt};
use redis::aio::MultiplexedConnection;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "test-bucket-all-secret";
/// Keys of the shared bucket (RESP database 1 is bucket `db1`).
const SHARED_KEYS: usize = 2_000;
/// Keys of the default bucket (n_val 3): partitions handed away hold some,
/// so the old owners drop them, and must drop only them.
const PLAIN_KEYS: usize = 1_000;
const SETTLE: Duration = Duration::from_secs(90);
const RING_SIZE: u32 = 64;

fn colony() -> Target {
    Target::Colony {
        bin: env!("CARGO_BIN_EXE_colony").into(),
    }
}

async fn start(name: &str, seed: Option<&Node>, extra: &[&str]) -> Node {
    let mut opts = NodeOptions::new(colony())
        .name(name)
        .fsync("periodic")
        .arg("--cluster-secret")
        .arg(SECRET)
        .arg("--gossip-interval-ms")
        .arg("100");
    for a in extra {
        opts = opts.arg(*a);
    }
    if let Some(seed) = seed {
        opts = opts.arg("--join").arg(seed.cluster_addr().to_string());
    }
    Node::start(opts).await.unwrap()
}

async fn conn(node: &Node, db: u8) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    let mut c = redis::Client::open(format!("redis://{}/", node.resp_addr()))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap();
    let _: () = redis::cmd("SELECT")
        .arg(db)
        .query_async(&mut c)
        .await
        .unwrap();
    c
}

async fn write(c: &mut MultiplexedConnection, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("{prefix}:{i}"))
                .arg(format!("v{i}"));
        }
        let _: redis::Value = pipe.query_async(c).await.unwrap();
    }
}

/// Keys per partition of `n` keys `prefix:i` in `bucket`.
fn per_partition(bucket: &str, prefix: &str, n: usize) -> BTreeMap<u16, u64> {
    let partitioner = Partitioner::new(RING_SIZE).unwrap();
    let mut out = BTreeMap::new();
    for i in 0..n {
        let key = format!("{prefix}:{i}");
        let (p, _) = partitioner.locate(bucket.as_bytes(), key.as_bytes());
        *out.entry(p.0).or_default() += 1;
    }
    out
}

/// What every node should hold, per partition, by `node`'s ring: every
/// shared key, and the plain keys of the partitions it replicates.
async fn expected(
    by: &Node,
    nodes: &[&Node],
    shared: &BTreeMap<u16, u64>,
    plain: &BTreeMap<u16, u64>,
) -> BTreeMap<String, BTreeMap<u16, u64>> {
    let ring = get_json(by, "/api/v1/cluster/ring").await;
    let mut out = BTreeMap::new();
    for node in nodes {
        let mut held = BTreeMap::new();
        for i in 0..RING_SIZE as u16 {
            let replicas = ring["partitions"][usize::from(i)]["replicas"]
                .as_array()
                .unwrap();
            let replica = replicas.iter().any(|r| r == node.name());
            let n = shared.get(&i).copied().unwrap_or(0)
                + if replica {
                    plain.get(&i).copied().unwrap_or(0)
                } else {
                    0
                };
            if n > 0 {
                held.insert(i, n);
            }
        }
        out.insert(node.name().to_string(), held);
    }
    out
}

/// Entries each node's own store holds, per partition (from its trees,
/// kept in step with every write and removal); None while a tree is
/// being built.
async fn held(nodes: &[&Node]) -> Option<BTreeMap<String, BTreeMap<u16, u64>>> {
    let mut out = BTreeMap::new();
    for node in nodes {
        let status = get_json(node, "/api/v1/aae").await;
        let mut per = BTreeMap::new();
        for p in status["partitions"].as_array()? {
            let tree = &p["tree"];
            if tree["built"] != true || tree["building"] == true {
                return None;
            }
            let n = tree["entries"].as_u64()?;
            if n > 0 {
                per.insert(p["partition"].as_u64()? as u16, n);
            }
        }
        out.insert(node.name().to_string(), per);
    }
    Some(out)
}

/// Wait until every node holds exactly what it should.
async fn wait_held(
    by: &Node,
    nodes: &[&Node],
    shared: &BTreeMap<u16, u64>,
    plain: &BTreeMap<u16, u64>,
    phase: &str,
) {
    let want = expected(by, nodes, shared, plain).await;
    let mut last = None;
    let ok = eventually(Duration::from_secs(60), async || {
        last = held(nodes).await;
        last.as_ref() == Some(&want)
    })
    .await;
    if !ok {
        let Some(got) = last else {
            panic!("{phase}: trees never built");
        };
        for (node, w) in &want {
            let g = &got[node];
            let wrong: Vec<_> = (0..RING_SIZE as u16)
                .filter(|p| w.get(p) != g.get(p))
                .map(|p| (p, w.get(&p), g.get(&p)))
                .collect();
            eprintln!("{phase}: {node} (partition, want, holds): {wrong:?}");
        }
        panic!("{phase}: the nodes do not hold what they should");
    }
}

/// Read every shared key through `node` alone: r=1 and pr=1, so its own
/// copy answers (every node is a primary of such a key, itself first).
async fn read_alone(node: &Node, phase: &str) {
    read_alone_n(node, "s", SHARED_KEYS, phase).await;
}

async fn read_alone_n(node: &Node, prefix: &str, keys: usize, phase: &str) {
    let addr = node.http_addr();
    let missing: Vec<String> = stream::iter(0..keys)
        .map(|i| async move {
            let path = format!("/buckets/db1/keys/{prefix}:{i}?r=1&pr=1");
            let r = http_request(addr, "GET", &path, b"", &[]).await.unwrap();
            (r.status != 200 || r.body != format!("v{i}").into_bytes()).then(|| {
                format!(
                    "{prefix}:{i} {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                )
            })
        })
        .buffer_unordered(32)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    assert!(
        missing.is_empty(),
        "{phase}: {} of {keys} keys not found through {} alone, e.g. {:?}",
        missing.len(),
        node.name(),
        &missing[..missing.len().min(5)]
    );
}

/// Write `j:0`, `j:1`, … to the shared bucket through `nodes` in turn
/// until `stop`; how many were acknowledged (each pipeline whole).
fn background_writer(
    nodes: Vec<MultiplexedConnection>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut nodes = nodes;
        let mut done = 0;
        let mut turn = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut pipe = redis::pipe();
            for i in done..done + 20 {
                pipe.cmd("SET").arg(format!("j:{i}")).arg(format!("v{i}"));
            }
            let c = &mut nodes[turn % 3];
            turn += 1;
            let _: redis::Value = pipe.query_async(c).await.unwrap();
            done += 20;
        }
        done
    })
}

fn merged(a: &BTreeMap<u16, u64>, b: &BTreeMap<u16, u64>) -> BTreeMap<u16, u64> {
    let mut out = a.clone();
    for (p, n) in b {
        *out.entry(*p).or_default() += n;
    }
    out
}

async fn put_props(node: &Node, body: &str) {
    let r = http_request(
        node.http_addr(),
        "PUT",
        "/api/v1/buckets/db1/props",
        body.as_bytes(),
        &[("Content-Type", "application/json")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}

async fn dbsize(node: &Node) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut conn(node, 1).await)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_holds_a_shared_bucket_through_a_join_and_a_leave() {
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let off = ["--aae", "false"];
    let n1 = start("n1", None, &off).await;
    let n2 = start("n2", Some(&n1), &off).await;
    let n3 = start("n3", Some(&n1), &off).await;
    let n4 = start("n4", Some(&n1), &off).await;
    wait_settled(&n1, 4, SETTLE).await.unwrap();
    step("four nodes settled");

    put_props(&n2, r#"{"n_val": "all"}"#).await;
    for node in [&n1, &n2, &n3, &n4] {
        let seen = eventually(Duration::from_secs(30), async || {
            get_json(node, "/api/v1/buckets/db1/props").await["n_val"] == "all"
        })
        .await;
        assert!(seen, "{} never saw n_val=all", node.name());
    }
    write(&mut conn(&n1, 1).await, "s", SHARED_KEYS).await;
    write(&mut conn(&n3, 0).await, "p", PLAIN_KEYS).await;
    step("written");
    let shared = per_partition("db1", "s", SHARED_KEYS);
    let plain = per_partition("default", "p", PLAIN_KEYS);
    let four = [&n1, &n2, &n3, &n4];
    wait_held(&n1, &four, &shared, &plain, "four nodes").await;
    for node in four {
        read_alone(node, "four nodes").await;
    }
    // Counted once, not once per copy.
    assert_eq!(dbsize(&n4).await, SHARED_KEYS as u64);
    step("every node of four holds every shared key");

    // A fifth node joins while a client writes to the shared bucket: it
    // takes partitions from the four, which drop the plain keys of those
    // and must keep the shared ones.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = background_writer(
        vec![conn(&n1, 1).await, conn(&n3, 1).await, conn(&n4, 1).await],
        stop.clone(),
    );
    let n5 = start("n5", Some(&n2), &off).await;
    wait_settled(&n1, 5, SETTLE).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await.unwrap();
    step(&format!(
        "five nodes settled; {during} keys written meanwhile"
    ));
    // The join brought every shared key along, and the writes made during
    // it reached the new node: all there as soon as the ring settles (with
    // anti-entropy off nothing else could bring them).
    read_alone(&n5, "as the join settles").await;
    read_alone_n(&n5, "j", during, "written during the join").await;
    let shared = merged(&shared, &per_partition("db1", "j", during));
    let total = (SHARED_KEYS + during) as u64;
    let five = [&n1, &n2, &n3, &n4, &n5];
    wait_held(&n1, &five, &shared, &plain, "after a join").await;
    read_alone(&n1, "after a join").await;
    assert_eq!(dbsize(&n5).await, total);
    step("the joined node holds every shared key; the others kept theirs");

    // Quorums count the nodes there are now: all five, not six.
    let r = http_request(
        n3.http_addr(),
        "GET",
        "/buckets/db1/keys/s:7?r=all&pr=5",
        b"",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = http_request(n3.http_addr(), "GET", "/buckets/db1/keys/s:7?r=6", b"", &[])
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&r.body);
    assert_eq!(r.status, 503, "{body}");
    assert!(body.contains("n_val=all and 5 nodes hold it"), "{body}");

    // A node leaves: what it held is on every other node already.
    let r = http_request(n1.http_addr(), "POST", "/api/v1/cluster/leave/n2", b"", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    wait_settled(&n1, 4, SETTLE).await.unwrap();
    step("n2 left");
    let mut n2 = n2;
    let exited = eventually(Duration::from_secs(30), async || !n2.is_running()).await;
    assert!(exited, "n2 should stop once it has left");
    let rest = [&n1, &n3, &n4, &n5];
    wait_held(&n1, &rest, &shared, &plain, "after a leave").await;
    for node in rest {
        read_alone(node, "after a leave").await;
    }
    step("nothing lost after the leave");

    // FLUSHDB empties the bucket on every node, not only on the replicas.
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut conn(&n4, 1).await)
        .await
        .unwrap();
    wait_held(&n1, &rest, &BTreeMap::new(), &plain, "after FLUSHDB").await;
    assert_eq!(dbsize(&n1).await, 0);
    step("flushed everywhere");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bucket_changed_to_all_spreads_its_keys_and_changed_back_drops_them() {
    const KEYS: usize = 1_000;
    let two = ["--n-val", "2", "--aae-exchange-interval-ms", "100"];
    let n1 = start("m1", None, &two).await;
    let n2 = start("m2", Some(&n1), &two).await;
    let n3 = start("m3", Some(&n1), &two).await;
    wait_settled(&n1, 3, SETTLE).await.unwrap();
    let nodes = [&n1, &n2, &n3];
    write(&mut conn(&n2, 1).await, "s", KEYS).await;
    let keys = per_partition("db1", "s", KEYS);
    let none = BTreeMap::new();
    // Two copies of each key, on its replicas.
    wait_held(&n1, &nodes, &none, &keys, "n_val 2").await;

    // Nothing is lost while the change spreads, and anti-entropy copies
    // every key to every node.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .args(["admin", "--http", &n3.http_addr().to_string()])
        .args(["bucket", "set", "db1", "n_val=all", "w=one"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("n_val  all"), "{text}");
    wait_held(&n1, &nodes, &keys, &none, "changed to all").await;
    for node in nodes {
        read_alone_n(node, "s", KEYS, "changed to all").await;
    }

    // Back to two: the copies off the replicas are dropped again.
    put_props(&n1, r#"{"n_val": 2}"#).await;
    wait_held(&n1, &nodes, &none, &keys, "changed back to 2").await;
    assert_eq!(dbsize(&n3).await, KEYS as u64);
}
