//! Multi-process cluster tests: real `colony` processes on loopback joining,
//! serving every key through any node, growing while a client writes and
//! reads, shrinking with `leave`, and refusing a node without the secret.
#![allow(clippy::unwrap_used)]

use colony_testkit::{eventually, http_request, Node, NodeOptions, Target};
use redis::aio::MultiplexedConnection;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "test-cluster-secret";
const SETTLE: Duration = Duration::from_secs(90);

fn colony() -> Target {
    Target::Colony {
        bin: env!("CARGO_BIN_EXE_colony").into(),
    }
}

async fn start(name: &str, join: Option<&Node>, secret: &str) -> Node {
    let mut opts = NodeOptions::new(colony())
        .name(name)
        .arg("--cluster-secret")
        .arg(secret)
        .arg("--gossip-interval-ms")
        .arg("100");
    if let Some(seed) = join {
        opts = opts.arg("--join").arg(seed.cluster_addr().to_string());
    }
    Node::start(opts).await.unwrap()
}

/// A connection that waits as long as a rebalance may hold a request.
async fn conn(addr: std::net::SocketAddr) -> MultiplexedConnection {
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

async fn status(node: &Node) -> Value {
    let r = http_request(node.http_addr(), "GET", "/api/v1/cluster/status", b"", &[])
        .await
        .unwrap();
    serde_json::from_slice(&r.body).unwrap()
}

/// The sum of a counter's series (every label set) on `node`'s /metrics.
async fn counter(node: &Node, name: &str) -> f64 {
    let r = http_request(node.http_addr(), "GET", "/metrics", b"", &[])
        .await
        .unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn post(node: &Node, path: &str) -> (u16, Value) {
    let r = http_request(node.http_addr(), "POST", path, b"", &[])
        .await
        .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

/// Wait until `node` sees exactly `members` valid members, no transfers,
/// and every member holding the same ring.
async fn settled(node: &Node, members: &[&str]) -> Value {
    let mut last = Value::Null;
    let ok = eventually(SETTLE, async || {
        last = status(node).await;
        let valid: Vec<&str> = last["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["status"] == "Valid")
            .map(|m| m["node"].as_str().unwrap())
            .collect();
        let in_sync = last["members"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["status"] == "Valid")
            .all(|m| m["ring_in_sync"] == true && m["live"] == true);
        let planned = last["staged"]["transfers"].as_array().unwrap().len()
            + last["staged"]["forced"].as_array().unwrap().len();
        valid == members
            && in_sync
            && planned == 0
            && last["transfers"].as_array().unwrap().is_empty()
    })
    .await;
    assert!(ok, "cluster did not settle on {members:?}: {last:#}");
    last
}

fn assert_balanced(st: &Value) {
    let valid: Vec<u64> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Valid")
        .map(|m| m["partitions"].as_u64().unwrap())
        .collect();
    let q = st["ring_size"].as_u64().unwrap();
    let n = valid.len() as u64;
    assert_eq!(valid.iter().sum::<u64>(), q, "{st:#}");
    for c in &valid {
        assert!(*c <= q.div_ceil(n) + 1, "unbalanced ownership {valid:?}");
    }
}

/// Write `n` keys of mixed types: strings, hashes, sets and counters.
async fn write_mixed(c: &mut MultiplexedConnection, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            match i % 4 {
                0 => pipe.cmd("SET").arg(format!("s:{i}")).arg(format!("v{i}")),
                1 => pipe
                    .cmd("HSET")
                    .arg(format!("h:{i}"))
                    .arg("f")
                    .arg(i)
                    .arg("g")
                    .arg("x"),
                2 => pipe.cmd("SADD").arg(format!("t:{i}")).arg("a").arg(i),
                _ => pipe.cmd("INCRBY").arg(format!("c:{i}")).arg(i),
            };
        }
        let _: redis::Value = pipe.query_async(c).await.unwrap();
    }
}

/// Read every key written by [`write_mixed`] and check its value.
async fn check_mixed(c: &mut MultiplexedConnection, n: usize, phase: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            match i % 4 {
                0 => pipe.cmd("GET").arg(format!("s:{i}")),
                1 => pipe.cmd("HGET").arg(format!("h:{i}")).arg("f"),
                2 => pipe.cmd("SISMEMBER").arg(format!("t:{i}")).arg(i),
                _ => pipe.cmd("GET").arg(format!("c:{i}")),
            };
        }
        let got: Vec<redis::Value> = pipe.query_async(c).await.unwrap();
        for (&i, v) in chunk.iter().zip(got) {
            let ok = match (i % 4, &v) {
                (0, redis::Value::BulkString(b)) => *b == format!("v{i}").into_bytes(),
                (1 | 3, redis::Value::BulkString(b)) => *b == i.to_string().into_bytes(),
                (2, redis::Value::Int(1)) => true,
                _ => false,
            };
            assert!(ok, "{phase}: key {i} (kind {}) read back {v:?}", i % 4);
        }
    }
}

/// A client that keeps writing fresh keys and reading back earlier ones
/// through every node, until told to stop. Returns what it wrote.
fn background_client(
    nodes: Vec<std::net::SocketAddr>,
    stop: Arc<AtomicBool>,
    written: Arc<Mutex<BTreeMap<String, String>>>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut conns = Vec::new();
        for a in &nodes {
            conns.push(conn(*a).await);
        }
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) && i < 200_000 {
            let c = &mut conns[i % nodes.len()];
            let key = format!("bg:{i}");
            let value = format!("w{i}");
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query_async(c)
                .await
                .unwrap_or_else(|e| panic!("write of {key} failed during a rebalance: {e}"));
            written.lock().unwrap().insert(key, value);
            if i >= 10 {
                let back = format!("bg:{}", i - 10);
                let got: Option<String> =
                    redis::cmd("GET").arg(&back).query_async(c).await.unwrap();
                if got != Some(format!("w{}", i - 10)) {
                    // Whether the key is lost or was only missed by that
                    // read (which replicas answered it) tells a quorum
                    // anomaly from lost data: read it again through every
                    // node, at once and a second later.
                    let mut later = Vec::new();
                    for pause in [0, 1000] {
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                        for (a, c) in nodes.iter().zip(conns.iter_mut()) {
                            let v: redis::RedisResult<Option<String>> =
                                redis::cmd("GET").arg(&back).query_async(c).await;
                            later.push(format!("+{pause}ms via {a}: {v:?}"));
                        }
                    }
                    panic!("read of {back} during a rebalance gave {got:?}; again: {later:?}");
                }
            }
            i += 1;
        }
        i
    })
}

async fn check_written(c: &mut MultiplexedConnection, written: &BTreeMap<String, String>) {
    for (k, v) in written {
        let got: Option<String> = redis::cmd("GET").arg(k).query_async(c).await.unwrap();
        assert_eq!(got.as_ref(), Some(v), "key {k} written during a rebalance");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_grows_and_shrinks_without_losing_a_key() {
    let n1 = start("n1", None, SECRET).await;
    let n2 = start("n2", Some(&n1), SECRET).await;
    let n3 = start("n3", Some(&n1), SECRET).await;
    let st = settled(&n1, &["n1", "n2", "n3"]).await;
    assert_balanced(&st);

    const KEYS: usize = 20_000;
    write_mixed(&mut conn(n1.resp_addr()).await, KEYS).await;
    check_mixed(&mut conn(n3.resp_addr()).await, KEYS, "before growing").await;
    let dbsize: u64 = redis::cmd("DBSIZE")
        .query_async(&mut conn(n2.resp_addr()).await)
        .await
        .unwrap();
    assert_eq!(
        dbsize, KEYS as u64,
        "DBSIZE through n2 counts every node's keys"
    );

    // Grow to five while a client writes and reads through every node.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(Mutex::new(BTreeMap::new()));
    let addrs = vec![n1.resp_addr(), n2.resp_addr(), n3.resp_addr()];
    let client = background_client(addrs, stop.clone(), written.clone());
    let n4 = start("n4", Some(&n2), SECRET).await;
    let n5 = start("n5", Some(&n3), SECRET).await;
    let st = settled(&n1, &["n1", "n2", "n3", "n4", "n5"]).await;
    stop.store(true, Ordering::Relaxed);
    let ops = client.await.unwrap();
    assert!(ops > 0);
    assert_balanced(&st);
    // While the moves were planned, the client's requests counted a quorum
    // in the replica sets their keys were about to have too.
    let mut joint = 0.0;
    for n in [&n1, &n2, &n3] {
        joint += counter(n, "colony_kv_joint_quorums_total").await;
    }
    assert!(joint > 0.0, "no request counted the sets after the moves");
    check_mixed(
        &mut conn(n5.resp_addr()).await,
        KEYS,
        "after growing to five",
    )
    .await;
    let snapshot = written.lock().unwrap().clone();
    check_written(&mut conn(n4.resp_addr()).await, &snapshot).await;

    // Two nodes leave: each hands every partition off, then stops.
    let stop = Arc::new(AtomicBool::new(false));
    let addrs = vec![n1.resp_addr(), n2.resp_addr(), n3.resp_addr()];
    let client = background_client(addrs, stop.clone(), written.clone());
    let (code, body) = post(&n1, "/api/v1/cluster/leave/n4").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(&n2, "/api/v1/cluster/leave/n5").await;
    assert_eq!(code, 200, "{body}");
    let st = settled(&n3, &["n1", "n2", "n3"]).await;
    stop.store(true, Ordering::Relaxed);
    client.await.unwrap();
    assert_balanced(&st);
    let left: Vec<&str> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["status"] == "Left")
        .map(|m| m["node"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["n4", "n5"]);
    check_mixed(&mut conn(n2.resp_addr()).await, KEYS, "after two left").await;
    let snapshot = written.lock().unwrap().clone();
    check_written(&mut conn(n1.resp_addr()).await, &snapshot).await;
    let mut n4 = n4;
    let mut n5 = n5;
    let exited = eventually(Duration::from_secs(30), async || {
        !n4.is_running() && !n5.is_running()
    })
    .await;
    assert!(exited, "nodes that left should stop by themselves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_secret_is_refused_and_a_restarted_member_comes_back() {
    let n1 = start("a1", None, SECRET).await;
    let mut n2 = start("a2", Some(&n1), SECRET).await;
    settled(&n1, &["a1", "a2"]).await;
    let mut c = conn(n1.resp_addr()).await;
    write_mixed(&mut c, 2000).await;

    let intruder = start("intruder", Some(&n1), "not-the-secret").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let st = status(&n1).await;
    let names: Vec<&str> = st["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1", "a2"], "the intruder must not be a member");
    let st = status(&intruder).await;
    assert_eq!(st["joined"], false);
    let err = redis::cmd("GET")
        .arg("s:0")
        .query_async::<Option<String>>(&mut conn(intruder.resp_addr()).await)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("joining"), "{err}");
    assert!(
        intruder.log().contains("authentication failed"),
        "the intruder's log says why it is not in: {}",
        intruder.log()
    );

    // Multi-key commands scatter over the owners and gather the answers.
    let mut c2 = conn(n2.resp_addr()).await;
    let pairs: Vec<(String, String)> = (0..200)
        .map(|i| (format!("m:{i}"), format!("mv{i}")))
        .collect();
    let _: () = redis::cmd("MSET")
        .arg(&pairs)
        .query_async(&mut c2)
        .await
        .unwrap();
    let keys: Vec<&String> = pairs.iter().map(|(k, _)| k).collect();
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(
        got,
        pairs
            .iter()
            .map(|(_, v)| Some(v.clone()))
            .collect::<Vec<_>>()
    );
    for (k, members) in [("x:a", &["1", "2", "3"][..]), ("x:b", &["2", "3", "4"][..])] {
        let _: () = redis::cmd("SADD")
            .arg(k)
            .arg(members)
            .query_async(&mut c2)
            .await
            .unwrap();
    }
    let mut inter: Vec<String> = redis::cmd("SINTER")
        .arg("x:a")
        .arg("x:b")
        .query_async(&mut c)
        .await
        .unwrap();
    inter.sort();
    assert_eq!(inter, ["2", "3"]);
    let removed: usize = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(removed, 200);
    let got: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut c2)
        .await
        .unwrap();
    assert!(got.iter().all(Option::is_none));

    // The admin CLI shows the same state, in text and JSON.
    let admin = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
            .arg("admin")
            .arg("--http")
            .arg(n1.http_addr().to_string())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = admin(&["cluster", "status"]);
    assert!(
        text.contains("a1") && text.contains("a2") && text.contains("valid"),
        "{text}"
    );
    let ring: Value = serde_json::from_str(&admin(&["--json", "cluster", "ring"])).unwrap();
    assert_eq!(ring["partitions"].as_array().unwrap().len(), 64);
    let plan = admin(&["cluster", "plan"]);
    assert!(plan.contains("0 partition move(s)"), "{plan}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .args([
            "admin",
            "--http",
            &n1.http_addr().to_string(),
            "cluster",
            "down",
            "a2",
        ])
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a live node cannot be marked down"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("alive"));

    // A member killed and restarted with its data comes back as itself.
    n2.kill9();
    n2.restart().await.unwrap();
    let st = settled(&n1, &["a1", "a2"]).await;
    assert_balanced(&st);
    check_mixed(&mut conn(n2.resp_addr()).await, 2000, "after a restart").await;
}

/// `colony admin` against the node whose HTTP API is `node`'s.
fn admin(node: &Node, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_colony"))
        .arg("admin")
        .arg("--http")
        .arg(node.http_addr().to_string())
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_props_set_on_one_node_are_seen_on_another() {
    let n1 = start("p1", None, SECRET).await;
    let n2 = start("p2", Some(&n1), SECRET).await;
    let joined = eventually(SETTLE, async || status(&n2).await["joined"] == true).await;
    assert!(joined, "p2 did not join: {}", n2.log());

    let out = admin(
        &n1,
        &["bucket", "set", "photos", "n_val=2", "w=1", "dw=one"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("w      1") && text.contains("n_val  2"),
        "{text}"
    );

    let path = "/api/v1/buckets/photos/props";
    let mut last = Value::Null;
    let seen = eventually(Duration::from_secs(30), async || {
        let r = http_request(n2.http_addr(), "GET", path, b"", &[])
            .await
            .unwrap();
        last = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        last["w"] == 1
    })
    .await;
    assert!(seen, "p2 never saw the change: {last:#}");
    assert_eq!(
        last,
        serde_json::json!({"n_val": 2, "r": "quorum", "w": 1, "pr": 0, "pw": 0, "dw": "one"})
    );
    let out = admin(&n2, &["--json", "bucket", "get", "photos"]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, last);

    // A refused change says why, and changes nothing.
    let out = admin(&n2, &["bucket", "set", "photos", "n_val=4"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeds the cluster's n_val of 3"), "{err}");
    let out = admin(&n2, &["bucket", "set", "photos", "w"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected KEY=VALUE"));
    let out = admin(&n1, &["--json", "bucket", "get", "photos"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), last);
}
