//! Multi-process replication tests: every key on three nodes, quorum reads
//! and writes, a node killed with SIGKILL losing nothing, hints handed back
//! when it returns, and concurrent increments and set adds on different
//! nodes that all survive; and a cache too small to hold the states
//! serving the latest of each.
#![allow(clippy::unwrap_used)]

use colony_testkit::{
    eventually, http_request, metric, wait_live, wait_settled, Node, NodeOptions, Target,
};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SECRET: &str = "test-replication-secret";
const SETTLE: Duration = Duration::from_secs(90);

fn colony() -> Target {
    Target::Colony {
        bin: env!("CARGO_BIN_EXE_colony").into(),
    }
}

async fn start(name: &str, join: Option<&Node>, extra: &[&str]) -> Node {
    let mut opts = NodeOptions::new(colony())
        .name(name)
        .arg("--cluster-secret")
        .arg(SECRET)
        .arg("--gossip-interval-ms")
        .arg("100")
        // Tombstones are reaped by anti-entropy sweeps: keep them frequent.
        .arg("--aae-exchange-interval-ms")
        .arg("100");
    if let Some(seed) = join {
        opts = opts.arg("--join").arg(seed.cluster_addr().to_string());
    }
    for a in extra {
        opts = opts.arg(*a);
    }
    Node::start(opts).await.unwrap()
}

async fn conn(addr: std::net::SocketAddr) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

/// Start `n` nodes and wait until they form one settled cluster.
async fn cluster(n: usize) -> Vec<Node> {
    cluster_with(n, &[]).await
}

/// [`cluster`], with `extra` flags for every node.
async fn cluster_with(n: usize, extra: &[&str]) -> Vec<Node> {
    let mut nodes = vec![start("node1", None, extra).await];
    for i in 2..=n {
        let node = start(&format!("node{i}"), Some(&nodes[0]), extra).await;
        nodes.push(node);
    }
    wait_settled(&nodes[0], n, SETTLE).await.unwrap();
    nodes
}

/// Wait until `from` sees `node` as live (or not).
async fn seen_live(from: &Node, node: &str, live: bool) {
    let ok = wait_live(from, node, live, Duration::from_secs(30)).await;
    assert!(ok, "{} never saw {node} live={live}", from.name());
}

/// Hints kept by `node`, from its /metrics.
async fn hints_pending(node: &Node) -> Option<u64> {
    metric(node, "colony_kv_hints_pending").await
}

async fn set_many(c: &mut MultiplexedConnection, keys: std::ops::Range<usize>, tag: &str) {
    let all: Vec<usize> = keys.collect();
    for chunk in all.chunks(500) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("k:{i}"))
                .arg(format!("{tag}{i}"));
        }
        let _: redis::Value = pipe.query_async(c).await.unwrap();
    }
}

async fn check_many(c: &mut MultiplexedConnection, expect: &BTreeMap<usize, String>) {
    let all: Vec<(&usize, &String)> = expect.iter().collect();
    for chunk in all.chunks(500) {
        let mut pipe = redis::pipe();
        for (i, _) in chunk {
            pipe.cmd("GET").arg(format!("k:{i}"));
        }
        let got: Vec<Option<String>> = pipe.query_async(c).await.unwrap();
        for ((i, want), got) in chunk.iter().zip(got) {
            assert_eq!(got.as_deref(), Some(want.as_str()), "key k:{i}");
        }
    }
}

/// The nodes holding each partition's replicas, from `node`'s ring.
async fn replicas(node: &Node) -> Vec<Vec<String>> {
    let r = http_request(node.http_addr(), "GET", "/api/v1/cluster/ring", b"", &[])
        .await
        .unwrap();
    let ring: Value = serde_json::from_slice(&r.body).unwrap();
    ring["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// Write `keys` keys through node 1, kill -9 node 3, check every key reads
/// back and writes continue (before and after the failure detector notices),
/// restart node 3, wait for the hints to drain, then stop every other node
/// and read each key node 3 replicates through node 3 alone (r=1, pr=1).
async fn a_killed_node_loses_nothing(n: usize, keys: usize) {
    let t0 = std::time::Instant::now();
    // Progress, shown when the test fails: which step it was on, and when.
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut nodes = cluster(n).await;
    step("cluster settled; writing");
    let mut c1 = conn(nodes[0].resp_addr()).await;
    let mut expect = BTreeMap::new();
    set_many(&mut c1, 0..keys, "a").await;
    expect.extend((0..keys).map(|i| (i, format!("a{i}"))));

    step("written; killing node3");
    nodes[2].kill9();
    let mut c2 = conn(nodes[1].resp_addr()).await;
    check_many(&mut c2, &expect).await;
    // Partition-wide requests go to another replica when the owner is
    // down: the count is whole.
    let size: usize = redis::cmd("DBSIZE").query_async(&mut c2).await.unwrap();
    assert_eq!(size, expect.len(), "DBSIZE with node3 dead");
    step("read back with node3 dead; writing more");
    let (b, c, end) = (keys * 3 / 4, keys, keys + keys / 4);
    set_many(&mut c1, b..c, "b").await;
    expect.extend((b..c).map(|i| (i, format!("b{i}"))));
    step("waiting for node3 to be seen down");
    seen_live(&nodes[0], "node3", false).await;
    step("node3 seen down; writing through node2");
    set_many(&mut c2, c..end, "c").await;
    expect.extend((c..end).map(|i| (i, format!("c{i}"))));
    step("written through node2; reading every key back through node1");
    check_many(&mut c1, &expect).await;
    let size: usize = redis::cmd("DBSIZE").query_async(&mut c1).await.unwrap();
    assert_eq!(size, expect.len(), "DBSIZE with node3 seen down");
    let mut held = 0;
    for (i, node) in nodes.iter().enumerate() {
        if i != 2 {
            held += hints_pending(node).await.unwrap_or(0);
        }
    }
    assert!(held > 0, "no hints kept for the dead node");
    step(&format!("{held} hints kept; restarting node3"));

    nodes[2].restart().await.unwrap();
    let mut pending = Vec::new();
    let ok = eventually(Duration::from_secs(90), async || {
        pending.clear();
        for (i, node) in nodes.iter().enumerate() {
            if i != 2 {
                pending.push(hints_pending(node).await);
            }
        }
        pending.iter().all(|p| *p == Some(0))
    })
    .await;
    assert!(ok, "hints never drained: {pending:?}");
    step("hints drained; killing the others");

    let partitioner = colony_core::Partitioner::new(64).unwrap();
    let placement = replicas(&nodes[2]).await;
    // Every range has three copies, the wrap of 64 partitions over three
    // nodes included: the walk goes on until it has met three nodes.
    for (p, reps) in placement.iter().enumerate() {
        assert_eq!(reps.len(), 3, "partition {p}: {reps:?}");
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != 2 {
            node.kill9();
        }
    }
    let mut checked = 0;
    for (i, want) in expect.iter().step_by(5) {
        let key = format!("k:{i}");
        let (p, _) = partitioner.locate(b"default", key.as_bytes());
        if !placement[p.index()].iter().any(|r| r == "node3") {
            continue;
        }
        let path = format!("/buckets/default/keys/{key}?r=1&pr=1");
        let r = http_request(nodes[2].http_addr(), "GET", &path, b"", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{key}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, want.as_bytes(), "{key}");
        checked += 1;
    }
    assert!(
        checked * 5 * n >= expect.len() * 2,
        "too few keys on node3: {checked}"
    );

    // Alone, node 3 cannot meet w=2: the error says how many answered, how
    // many were needed and why the others did not.
    let r = http_request(
        nodes[2].http_addr(),
        "PUT",
        "/buckets/default/keys/lonely?w=2",
        b"x",
        &[],
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert_eq!(r.status, 503, "{body}");
    assert!(
        body.contains("quorum_unmet") && body.contains("of 2 replicas answered"),
        "{body}"
    );
    assert!(body.contains("unreachable"), "the error says why: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_a_killed_node_loses_nothing_and_its_hints_come_back_to_it() {
    a_killed_node_loses_nothing(3, 20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_fallbacks_take_the_writes_and_hand_them_back() {
    a_killed_node_loses_nothing(5, 8_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_increments_and_adds_on_three_nodes_are_never_lost() {
    let mut nodes = cluster(3).await;
    const KEYS: usize = 8;
    const PER_CLIENT: usize = 400;
    let addrs: Vec<_> = nodes.iter().map(|n| n.resp_addr()).collect();
    let mut clients = Vec::new();
    for (ci, addr) in addrs.iter().enumerate() {
        let addr = *addr;
        clients.push(tokio::spawn(async move {
            // (acknowledged, unknown) increments per key; added members.
            let mut acked = [0i64; KEYS];
            let mut unknown = [0i64; KEYS];
            let mut added = Vec::new();
            let mut c = None;
            for i in 0..PER_CLIENT {
                if c.is_none() {
                    c = redis::Client::open(format!("redis://{addr}/"))
                        .unwrap()
                        .get_multiplexed_async_connection()
                        .await
                        .ok();
                }
                let Some(conn) = c.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let k = (i * 7 + ci) % KEYS;
                let r: redis::RedisResult<i64> = redis::cmd("INCR")
                    .arg(format!("n:{k}"))
                    .query_async(conn)
                    .await;
                match r {
                    Ok(_) => acked[k] += 1,
                    Err(_) => {
                        unknown[k] += 1;
                        c = None;
                        continue;
                    }
                }
                let m = format!("c{ci}-{i}");
                let r: redis::RedisResult<i64> = redis::cmd("SADD")
                    .arg("members")
                    .arg(&m)
                    .query_async(conn)
                    .await;
                if r.is_ok() {
                    added.push(m);
                } else {
                    c = None;
                }
            }
            (acked, unknown, added)
        }));
    }
    // Kill and restart the third node while the clients run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[2].kill9();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nodes[2].restart().await.unwrap();
    let mut acked = [0i64; KEYS];
    let mut unknown = [0i64; KEYS];
    let mut added = Vec::new();
    for c in clients {
        let (a, u, m) = c.await.unwrap();
        for k in 0..KEYS {
            acked[k] += a[k];
            unknown[k] += u[k];
        }
        added.extend(m);
    }
    let ok = eventually(Duration::from_secs(60), async || {
        let mut sum = 0;
        for n in &nodes {
            sum += hints_pending(n).await.unwrap_or(1);
        }
        sum == 0
    })
    .await;
    assert!(ok, "hints never drained");
    for node in &nodes {
        let mut c = conn(node.resp_addr()).await;
        for k in 0..KEYS {
            let v: i64 = redis::cmd("GET")
                .arg(format!("n:{k}"))
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(
                v >= acked[k] && v <= acked[k] + unknown[k],
                "n:{k} = {v} read via {}, acknowledged {} (+{} unknown)",
                node.name(),
                acked[k],
                unknown[k]
            );
        }
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg("members")
            .query_async(&mut c)
            .await
            .unwrap();
        for m in &added {
            assert!(members.contains(m), "acknowledged member {m} lost");
        }
    }

    // Stale HTTP contexts on different nodes make siblings; the merged
    // context resolves them, whichever node it goes through.
    let path = "/buckets/docs/keys/shared";
    let r = http_request(nodes[0].http_addr(), "PUT", path, b"v0", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 204);
    let first = http_request(nodes[1].http_addr(), "GET", path, b"", &[])
        .await
        .unwrap();
    let ctx0 = first.header("x-colony-context").unwrap().to_string();
    for (i, v) in ["a", "b"].iter().enumerate() {
        let r = http_request(
            nodes[i].http_addr(),
            "PUT",
            path,
            v.as_bytes(),
            &[("x-colony-context", &ctx0)],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 204);
    }
    let both = http_request(nodes[2].http_addr(), "GET", path, b"", &[])
        .await
        .unwrap();
    assert_eq!(both.status, 300, "{}", String::from_utf8_lossy(&both.body));
    let ctx1 = both.header("x-colony-context").unwrap().to_string();
    let r = http_request(
        nodes[2].http_addr(),
        "PUT",
        path,
        b"c",
        &[("x-colony-context", &ctx1)],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 204);
    let one = http_request(nodes[0].http_addr(), "GET", path, b"", &[])
        .await
        .unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.body, b"c".to_vec());

    // Deleted keys leave tombstones; once anti-entropy finds every replica
    // holding one (and it is older than the grace period) it is removed
    // everywhere, and the keys stay deleted.
    let mut c = conn(nodes[0].resp_addr()).await;
    for k in 0..KEYS {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("n:{k}"))
            .query_async(&mut c)
            .await
            .unwrap();
    }
    let ok = eventually(Duration::from_secs(60), async || {
        let mut reaped = 0;
        for n in &nodes {
            reaped += metric(n, "colony_kv_tombstones_reaped_total")
                .await
                .unwrap_or(0);
        }
        reaped >= (KEYS * 3) as u64
    })
    .await;
    assert!(ok, "tombstones were never reaped");
    for node in &nodes {
        let mut c = conn(node.resp_addr()).await;
        for k in 0..KEYS {
            let v: Option<i64> = redis::cmd("GET")
                .arg(format!("n:{k}"))
                .query_async(&mut c)
                .await
                .unwrap();
            assert_eq!(v, None, "n:{k} came back on {}", node.name());
        }
    }
}

/// With a state cache of 1 MiB (16 KiB a vnode, room for about ten decoded
/// states), nearly every state lives in the cache's encoded tier or only in
/// the store: what is written, overwritten and incremented through one
/// node still reads back as the latest on every node, by quorum and from
/// each node's own replica alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tiny_state_cache_still_serves_the_latest_state_on_every_node() {
    let nodes = cluster_with(3, &["--doc-cache-mib", "1"]).await;
    const KEYS: usize = 6000;
    let mut first = conn(nodes[0].resp_addr()).await;
    set_many(&mut first, 0..KEYS, "one-").await;
    let mut expect: BTreeMap<usize, String> = (0..KEYS).map(|i| (i, format!("one-{i}"))).collect();
    for node in &nodes {
        check_many(&mut conn(node.resp_addr()).await, &expect).await;
    }
    // Overwrite half through another node: no tier may serve the old state.
    let mut third = conn(nodes[2].resp_addr()).await;
    set_many(&mut third, 0..KEYS / 2, "two-").await;
    for i in 0..KEYS / 2 {
        expect.insert(i, format!("two-{i}"));
    }
    for node in &nodes {
        check_many(&mut conn(node.resp_addr()).await, &expect).await;
    }
    // Each node alone (r=1: its own replica answers; a quorum read would
    // merge a stale answer away): every key it holds, every key here.
    for node in &nodes {
        for (i, want) in expect.iter().step_by(3) {
            let path = format!("/buckets/default/keys/k:{i}?r=1&pr=1");
            let r = http_request(node.http_addr(), "GET", &path, b"", &[])
                .await
                .unwrap();
            assert_eq!(r.status, 200, "k:{i} on {}", node.name());
            assert_eq!(r.body, want.as_bytes(), "k:{i} on {}", node.name());
        }
    }
    // Increments spread over the nodes add up everywhere.
    const COUNTERS: usize = 300;
    for (round, node) in nodes.iter().enumerate() {
        let mut c = conn(node.resp_addr()).await;
        let mut pipe = redis::pipe();
        for k in 0..COUNTERS {
            pipe.cmd("INCRBY").arg(format!("n:{k}")).arg(round + 1);
        }
        let _: redis::Value = pipe.query_async(&mut c).await.unwrap();
    }
    for node in &nodes {
        let mut c = conn(node.resp_addr()).await;
        let mut pipe = redis::pipe();
        for k in 0..COUNTERS {
            pipe.cmd("GET").arg(format!("n:{k}"));
        }
        let got: Vec<Option<i64>> = pipe.query_async(&mut c).await.unwrap();
        assert!(
            got.iter().all(|v| *v == Some(6)),
            "counters on {}: {got:?}",
            node.name()
        );
    }
}
