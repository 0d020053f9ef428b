//! Multi-process anti-entropy tests: replicas converge on their own, with
//! no client reading anything. A node whose data directory was deleted gets
//! every key back; keys lost or corrupted in one replica's store behind the
//! tree's back are found by the scheduled rebuild and repaired.
#![allow(clippy::unwrap_used)]

use colony_testkit::{
    eventually, get_json, http_request, metric, wait_live, wait_settled, Node, NodeOptions, Target,
};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SECRET: &str = "test-aae-secret";

fn colony() -> Target {
    Target::Colony {
        bin: env!("CARGO_BIN_EXE_colony").into(),
    }
}

async fn start(name: &str, seed: Option<&Node>, extra: &[&str]) -> Node {
    let mut opts = NodeOptions::new(colony())
        .name(name)
        // Durability is not what these tests are about: write fast.
        .fsync("periodic")
        .arg("--cluster-secret")
        .arg(SECRET)
        .arg("--gossip-interval-ms")
        .arg("100")
        .arg("--aae-exchange-interval-ms")
        .arg("100")
        .arg("--enable-test-hooks")
        .arg("true");
    for a in extra {
        opts = opts.arg(*a);
    }
    if let Some(seed) = seed {
        opts = opts.arg("--join").arg(seed.cluster_addr().to_string());
    }
    Node::start(opts).await.unwrap()
}

async fn cluster(n: usize, extra: &[&str]) -> Vec<Node> {
    let mut nodes = vec![start("node1", None, extra).await];
    for i in 2..=n {
        let node = start(&format!("node{i}"), Some(&nodes[0]), extra).await;
        nodes.push(node);
    }
    wait_settled(&nodes[0], n, Duration::from_secs(90))
        .await
        .unwrap();
    nodes
}

async fn conn(node: &Node) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(format!("redis://{}/", node.resp_addr()))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

async fn set_many(c: &mut MultiplexedConnection, keys: std::ops::Range<usize>) {
    let all: Vec<usize> = keys.collect();
    for chunk in all.chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET").arg(format!("k:{i}")).arg(format!("v{i}"));
        }
        let _: redis::Value = pipe.query_async(c).await.unwrap();
    }
}

/// Each partition `node` replicates, with its tree's root (None while
/// the tree is being built).
async fn roots(node: &Node) -> BTreeMap<u64, Option<String>> {
    let a = get_json(node, "/api/v1/aae").await;
    let mut out = BTreeMap::new();
    for p in a["partitions"].as_array().cloned().unwrap_or_default() {
        let root = (p["tree"]["built"] == Value::Bool(true))
            .then(|| p["tree"]["root"].as_str().unwrap().to_string());
        out.insert(p["partition"].as_u64().unwrap(), root);
    }
    out
}

/// Whether every node has built the trees of the partitions it replicates
/// and, partition by partition, its replicas' roots are equal; else why not.
async fn trees_agree(nodes: &[Node]) -> (bool, String) {
    let mut by_partition: BTreeMap<u64, Vec<Option<String>>> = BTreeMap::new();
    for n in nodes {
        let r = roots(n).await;
        if r.is_empty() {
            return (false, format!("{} reports no partitions", n.name()));
        }
        for (p, root) in r {
            by_partition.entry(p).or_default().push(root);
        }
    }
    let unbuilt = by_partition
        .values()
        .flatten()
        .filter(|r| r.is_none())
        .count();
    let differing = by_partition
        .values()
        .filter(|rs| rs.len() < 2 || rs.iter().any(|r| r != &rs[0]))
        .count();
    (
        by_partition.len() == 64 && unbuilt == 0 && differing == 0,
        format!(
            "{} partitions listed, {unbuilt} trees unbuilt, {differing} partitions differ",
            by_partition.len()
        ),
    )
}

/// Read those of `keys` that `node` replicates through it alone (the
/// others are down): r=1, pr=1. Returns how many were read.
async fn read_alone(node: &Node, keys: impl Iterator<Item = usize>) -> usize {
    let ring = get_json(node, "/api/v1/cluster/ring").await;
    let placement: Vec<Vec<Value>> = ring["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["replicas"].as_array().unwrap().clone())
        .collect();
    let partitioner = colony_core::Partitioner::new(64).unwrap();
    let mut read = 0;
    for i in keys {
        let key = format!("k:{i}");
        let (p, _) = partitioner.locate(b"default", key.as_bytes());
        if !placement[p.index()].iter().any(|r| r == node.name()) {
            continue;
        }
        read += 1;
        let path = format!("/buckets/default/keys/k:{i}?r=1&pr=1");
        let r = http_request(node.http_addr(), "GET", &path, b"", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "k:{i}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.body, format!("v{i}").into_bytes(), "k:{i}");
    }
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_data_was_deleted_gets_every_key_back_without_reads() {
    const KEYS: usize = 100_000;
    let t0 = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", t0.elapsed().as_secs_f64());
    let mut nodes = cluster(3, &[]).await;
    let mut c = conn(&nodes[0]).await;
    set_many(&mut c, 0..KEYS).await;
    step("written");

    // Node 3 loses its disk: stopped, data directory deleted, started
    // again under the same name.
    nodes[2].stop().await.unwrap();
    let dir = nodes[2].data_dir().to_path_buf();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    nodes[2].restart().await.unwrap();
    assert!(wait_live(&nodes[0], "node3", true, Duration::from_secs(30)).await);
    step("node3 back with an empty store");

    // No client reads anything: only anti-entropy can bring the keys back.
    let mut why = String::new();
    let ok = eventually(Duration::from_secs(120), async || {
        let (ok, w) = trees_agree(&nodes).await;
        why = w;
        ok
    })
    .await;
    assert!(ok, "replicas did not converge within 120 s: {why}");
    step("every tree root agrees");
    let repaired = metric(&nodes[0], "colony_aae_keys_repaired_total")
        .await
        .unwrap_or(0)
        + metric(&nodes[1], "colony_aae_keys_repaired_total")
            .await
            .unwrap_or(0)
        + metric(&nodes[2], "colony_aae_keys_repaired_total")
            .await
            .unwrap_or(0);
    assert!(repaired >= KEYS as u64, "only {repaired} keys repaired");

    // The keys are on node 3 itself: it answers alone.
    nodes[0].kill9();
    nodes[1].kill9();
    let read = read_alone(&nodes[2], (0..KEYS).step_by(97)).await;
    assert!(
        read * 97 * 2 > KEYS,
        "node3 replicates too few keys: {read}"
    );
    step("node3 alone serves the keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_lost_or_corrupted_in_one_store_are_repaired_without_reads() {
    const KEYS: usize = 3_000;
    // Trees are rebuilt from the store every 3 s: a rebuild is what sees
    // damage that bypassed the tree.
    let mut nodes = cluster(3, &["--aae-rebuild-interval-secs", "3"]).await;
    let mut c = conn(&nodes[0]).await;
    set_many(&mut c, 0..KEYS).await;
    let ok = eventually(Duration::from_secs(60), async || {
        trees_agree(&nodes).await.0
    })
    .await;
    assert!(ok, "trees never agreed after the writes");

    // On node 2: keys lost as a missed write would be (the tree knows),
    // lost behind the tree's back, and overwritten with garbage.
    let damage = [
        (11, "lose"),
        (12, "lose"),
        (21, "lose-silently"),
        (22, "lose-silently"),
        (31, "corrupt"),
        (32, "corrupt"),
    ];
    for (i, how) in damage {
        let path = format!("/api/v1/debug/damage/default/k:{i}?how={how}");
        let r = http_request(nodes[1].http_addr(), "POST", &path, b"", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("true"));
    }
    let ok = eventually(Duration::from_secs(60), async || {
        metric(&nodes[1], "colony_aae_corrupt_entries_replaced_total")
            .await
            .unwrap_or(0)
            >= 2
            && trees_agree(&nodes).await.0
    })
    .await;
    assert!(
        ok,
        "the damage was not repaired: {}",
        trees_agree(&nodes).await.1
    );
    assert!(
        metric(&nodes[1], "colony_aae_tree_drift_total")
            .await
            .unwrap_or(0)
            >= 1,
        "a rebuild should have found the tree out of step with the store"
    );

    nodes[0].kill9();
    nodes[2].kill9();
    let read = read_alone(&nodes[1], damage.iter().map(|(i, _)| *i)).await;
    assert_eq!(read, damage.len(), "every damaged key was stored on node2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_damage_hook_is_off_unless_enabled() {
    let node = Node::start(NodeOptions::new(colony())).await.unwrap();
    let r = http_request(
        node.http_addr(),
        "POST",
        "/api/v1/debug/damage/default/k?how=lose",
        b"",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 404);
}
