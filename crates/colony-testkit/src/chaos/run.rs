//! The chaos runner: start a cluster in containers (docker compose), run
//! bounded client workloads against every node while faults are applied on
//! a schedule drawn from a seed, heal, wait for the replicas to agree, read
//! every key back and check the history.
//!
//! Faults: `kill -9` then restart, `docker pause` / `unpause` (a slow node
//! is a dead node), network partitions between nodes (a minority from the
//! majority, or one node from the others, by iptables rules entered into
//! the containers' network namespaces: clients still reach every node),
//! disconnecting a node from the network altogether (clients lose it too),
//! and a rolling restart. Every load is
//! bounded by a count and a time; only our own containers are targeted.

use super::check::{check, Report};
use super::history::{History, Observed, Op, OpKind, Outcome};
use crate::cluster::settled;
use crate::http::http_request;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a run is set up.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The compose file of the cluster.
    pub compose: PathBuf,
    /// The compose project name.
    pub project: String,
    pub nodes: usize,
    /// Host ports: node `i` (from 1) serves RESP on `resp_base + i - 1` and
    /// HTTP on `http_base + i - 1`, on 127.0.0.1.
    pub resp_base: u16,
    pub http_base: u16,
    pub seed: u64,
    /// How long clients run (faults stop a few seconds before).
    pub duration: Duration,
    pub clients_per_node: usize,
    /// Keys per operation kind.
    pub keys: usize,
    /// Most operations per client.
    pub max_ops_per_client: usize,
    /// Mean pause between faults.
    pub fault_every: Duration,
    /// How long the replicas may take to agree after healing.
    pub converge_within: Duration,
    /// Leave the containers running after the run.
    pub keep: bool,
}

/// One fault as applied.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub what: String,
    pub nodes: Vec<usize>,
    pub from_ms: u64,
    pub to_ms: u64,
}

/// The whole result of a run.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub check: Report,
    pub faults: Vec<Fault>,
    /// Operations whose time overlapped a fault, and the fraction of them
    /// acknowledged.
    pub ops_during_faults: usize,
    pub availability_during_faults: f64,
    pub availability_otherwise: f64,
    pub history: History,
}

impl RunConfig {
    fn resp(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.resp_base + i as u16 - 1))
    }

    fn http(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.http_base + i as u16 - 1))
    }
}

/// Run `program` with `args`; its stdout, or an error with its stderr.
async fn exec(program: &'static str, args: Vec<String>) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(program).args(&args).output()?;
        if !out.status.success() {
            anyhow::bail!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    })
    .await?
}

async fn docker(args: Vec<String>) -> anyhow::Result<String> {
    exec("docker", args).await
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Run compose (the `docker compose` plugin, or the older standalone
/// `docker-compose`) on the run's file and project.
async fn compose(cfg: &RunConfig, rest: &[&str]) -> anyhow::Result<String> {
    let mut v = vec![
        "-f".to_string(),
        cfg.compose.display().to_string(),
        "-p".into(),
        cfg.project.clone(),
    ];
    v.extend(rest.iter().map(|s| s.to_string()));
    let plugin = exec("docker", args(&["compose", "version"])).await.is_ok();
    if plugin {
        let mut w = vec!["compose".to_string()];
        w.extend(v);
        exec("docker", w).await
    } else {
        exec("docker-compose", v).await
    }
}

/// The container id of node `i` (the naming differs between compose
/// versions, so ask compose).
async fn container(cfg: &RunConfig, i: usize) -> anyhow::Result<String> {
    let service = format!("node{i}");
    let id = compose(cfg, &["ps", "-q", &service]).await?;
    let id = id.trim().to_string();
    anyhow::ensure!(!id.is_empty(), "no container for {service}");
    Ok(id)
}

async fn status(cfg: &RunConfig, i: usize) -> Value {
    match tokio::time::timeout(
        Duration::from_secs(3),
        http_request(cfg.http(i), "GET", "/api/v1/cluster/status", b"", &[]),
    )
    .await
    {
        Ok(Ok(r)) => serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Whether a node's status shows `n` members, all live.
fn all_live(status: &Value, n: usize) -> bool {
    status["members"]
        .as_array()
        .is_some_and(|m| m.len() == n && m.iter().all(|m| m["live"] == Value::Bool(true)))
}

/// Each partition's (node, root) on every node, and whether every
/// partition's replicas agree (all trees built).
async fn roots(cfg: &RunConfig) -> (BTreeMap<u16, Vec<(String, String)>>, bool) {
    let mut out: BTreeMap<u16, Vec<(String, String)>> = BTreeMap::new();
    let mut complete = true;
    for i in 1..=cfg.nodes {
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            http_request(cfg.http(i), "GET", "/api/v1/aae", b"", &[]),
        )
        .await;
        let Ok(Ok(r)) = r else {
            complete = false;
            continue;
        };
        let a: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let node = a["node"].as_str().unwrap_or("?").to_string();
        let Some(parts) = a["partitions"].as_array() else {
            complete = false;
            continue;
        };
        for p in parts {
            let built = p["tree"]["built"] == Value::Bool(true);
            complete &= built;
            let root = p["tree"]["root"].as_str().unwrap_or("-").to_string();
            let pid = p["partition"].as_u64().unwrap_or(0) as u16;
            out.entry(pid).or_default().push((node.clone(), root));
        }
    }
    let agree = complete
        && !out.is_empty()
        && out
            .values()
            .all(|rs| rs.len() >= 2 && rs.iter().all(|(_, r)| *r == rs[0].1));
    (out, agree)
}

struct Recorder {
    t0: Instant,
    next: AtomicU64,
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    fn record(
        &self,
        client: u32,
        node: usize,
        kind: OpKind,
        invoked: u64,
        outcome: Outcome,
        reply: String,
    ) {
        let op = Op {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            client,
            node: format!("node{node}"),
            kind,
            invoked_ms: invoked,
            completed_ms: self.now(),
            outcome,
            reply: Some(reply.chars().take(200).collect()),
        };
        if let Ok(mut ops) = self.ops.lock() {
            ops.push(op);
        }
    }
}

const OP_TIMEOUT: Duration = Duration::from_secs(3);

/// A redis error's outcome: a reply the server sent is an error (the
/// write may still have applied somewhere); anything else is unknown.
fn outcome_of(e: &redis::RedisError) -> Outcome {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        Outcome::Unknown
    } else {
        Outcome::Error
    }
}

async fn connect(addr: SocketAddr) -> Option<redis::aio::MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(OP_TIMEOUT))
        .set_connection_timeout(Some(OP_TIMEOUT));
    let client = redis::Client::open(format!("redis://{addr}/")).ok()?;
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .ok()
}

/// One client: random operations on `node` until `until` or its budget.
async fn client(cfg: Arc<RunConfig>, rec: Arc<Recorder>, id: u32, node: usize, until: Instant) {
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ (u64::from(id) << 32) ^ 0x5eed);
    let mut conn = None;
    for n in 0..cfg.max_ops_per_client {
        if Instant::now() >= until {
            break;
        }
        if conn.is_none() {
            conn = connect(cfg.resp(node)).await;
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        }
        let k = rng.random_range(0..cfg.keys);
        let unique = format!("c{id}-{n}");
        let invoked = rec.now();
        let choice = rng.random_range(0..10);
        let (kind, cmd) = match choice {
            0..=2 => {
                let kind = OpKind::Set {
                    key: format!("s{k}"),
                    value: unique.clone(),
                };
                (
                    kind,
                    redis::cmd("SET").arg(format!("s{k}")).arg(&unique).clone(),
                )
            }
            3..=4 => {
                let kind = OpKind::Incr {
                    key: format!("c{k}"),
                    by: 1,
                };
                (
                    kind,
                    redis::cmd("INCRBY").arg(format!("c{k}")).arg(1).clone(),
                )
            }
            5..=6 => {
                let kind = OpKind::Sadd {
                    key: format!("m{k}"),
                    member: unique.clone(),
                };
                (
                    kind,
                    redis::cmd("SADD").arg(format!("m{k}")).arg(&unique).clone(),
                )
            }
            7 => {
                // Remove a member this client added earlier (or may have).
                let earlier = format!("c{id}-{}", rng.random_range(0..=n));
                let kind = OpKind::Srem {
                    key: format!("m{k}"),
                    member: earlier.clone(),
                };
                (
                    kind,
                    redis::cmd("SREM")
                        .arg(format!("m{k}"))
                        .arg(&earlier)
                        .clone(),
                )
            }
            _ => {
                put(&cfg, &rec, id, node, format!("p{k}"), unique).await;
                continue;
            }
        };
        let Some(c) = conn.as_mut() else { continue };
        let r: redis::RedisResult<redis::Value> = cmd.query_async(c).await;
        match r {
            Ok(v) => rec.record(id, node, kind, invoked, Outcome::Ok, format!("{v:?}")),
            Err(e) => {
                let outcome = outcome_of(&e);
                if outcome == Outcome::Unknown {
                    conn = None;
                }
                rec.record(id, node, kind, invoked, outcome, e.to_string());
            }
        }
    }
}

/// An HTTP PUT of a unique value with the context of a GET just before.
async fn put(cfg: &RunConfig, rec: &Recorder, id: u32, node: usize, key: String, value: String) {
    let path = format!("/buckets/chaos/keys/{key}");
    let context = match tokio::time::timeout(
        OP_TIMEOUT,
        http_request(cfg.http(node), "GET", &path, b"", &[]),
    )
    .await
    {
        Ok(Ok(r)) => r.header("x-colony-context").map(str::to_string),
        _ => None,
    };
    let kind = OpKind::Put {
        key,
        value: value.clone(),
        context: context.is_some(),
    };
    let invoked = rec.now();
    let headers: Vec<(&str, &str)> = context
        .iter()
        .map(|c| ("x-colony-context", c.as_str()))
        .collect();
    let r = tokio::time::timeout(
        OP_TIMEOUT,
        http_request(cfg.http(node), "PUT", &path, value.as_bytes(), &headers),
    )
    .await;
    match r {
        Ok(Ok(resp)) if resp.status == 204 || resp.status == 200 => rec.record(
            id,
            node,
            kind,
            invoked,
            Outcome::Ok,
            resp.status.to_string(),
        ),
        Ok(Ok(resp)) => {
            let why = format!("{} {}", resp.status, String::from_utf8_lossy(&resp.body));
            rec.record(id, node, kind, invoked, Outcome::Error, why)
        }
        Ok(Err(e)) => rec.record(id, node, kind, invoked, Outcome::Unknown, e.to_string()),
        Err(_) => rec.record(id, node, kind, invoked, Outcome::Unknown, "timeout".into()),
    }
}

/// The network of a container and its address there (to reconnect it).
async fn network_of(container: &str) -> anyhow::Result<(String, String)> {
    let out = docker(args(&[
        "inspect",
        "-f",
        "{{json .NetworkSettings.Networks}}",
        container,
    ]))
    .await?;
    let nets: Value = serde_json::from_str(out.trim())?;
    let (name, v) = nets
        .as_object()
        .and_then(|m| m.iter().next())
        .ok_or_else(|| anyhow::anyhow!("{container} is on no network"))?;
    Ok((
        name.clone(),
        v["IPAddress"].as_str().unwrap_or("").to_string(),
    ))
}

async fn isolate(
    cfg: &RunConfig,
    nodes: &[usize],
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut cut = Vec::new();
    for i in nodes {
        let c = container(cfg, *i).await?;
        let (net, ip) = network_of(&c).await?;
        docker(args(&["network", "disconnect", &net, &c])).await?;
        cut.push((c, net, ip));
    }
    Ok(cut)
}

async fn reconnect(cut: &[(String, String, String)]) {
    for (c, net, ip) in cut {
        let with_ip = docker(args(&["network", "connect", "--ip", ip, net, c])).await;
        if with_ip.is_err() {
            let _ = docker(args(&["network", "connect", net, c])).await;
        }
    }
}

/// A container's process id on the host (to enter its network namespace).
async fn pid_of(container: &str) -> anyhow::Result<String> {
    let pid = docker(args(&["inspect", "-f", "{{.State.Pid}}", container])).await?;
    Ok(pid.trim().to_string())
}

/// Run iptables inside a container's network namespace (from the host:
/// the image has no iptables of its own).
async fn iptables(pid: &str, rule: &[&str]) -> anyhow::Result<String> {
    let mut a = args(&["-t", pid, "-n", "iptables"]);
    a.extend(rule.iter().map(|s| s.to_string()));
    exec("nsenter", a).await
}

const CHAIN: &str = "COLONY_CHAOS";

/// Cut `side` off from every other node, both ways, inside the nodes'
/// network namespaces: the nodes of `side` still reach each other, and
/// clients still reach every node (through the published ports), as in a
/// real network partition between racks.
async fn split(cfg: &RunConfig, side: &[usize]) -> anyhow::Result<()> {
    let mut nodes = Vec::new();
    for i in 1..=cfg.nodes {
        let c = container(cfg, i).await?;
        let (_, ip) = network_of(&c).await?;
        let pid = pid_of(&c).await?;
        // A chain of our own, hooked once per network namespace.
        if iptables(&pid, &["-N", CHAIN]).await.is_ok() {
            iptables(&pid, &["-I", "INPUT", "-j", CHAIN]).await?;
            iptables(&pid, &["-I", "OUTPUT", "-j", CHAIN]).await?;
        }
        nodes.push((i, ip, pid));
    }
    for (i, _, pid) in &nodes {
        let mine = side.contains(i);
        for (j, ip, _) in &nodes {
            if side.contains(j) != mine {
                iptables(pid, &["-A", CHAIN, "-s", ip, "-j", "DROP"]).await?;
                iptables(pid, &["-A", CHAIN, "-d", ip, "-j", "DROP"]).await?;
            }
        }
    }
    Ok(())
}

/// Undo [`split`] on every node (a restarted container has a fresh
/// namespace: nothing to undo there).
async fn unsplit(cfg: &RunConfig) {
    for i in 1..=cfg.nodes {
        let Ok(c) = container(cfg, i).await else {
            continue;
        };
        if let Ok(pid) = pid_of(&c).await {
            let _ = iptables(&pid, &["-F", CHAIN]).await;
        }
    }
}

/// Apply faults until `until`; returns what was done.
async fn nemesis(cfg: Arc<RunConfig>, rec: Arc<Recorder>, until: Instant) -> Vec<Fault> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed ^ 0xfa17);
    let mut faults = Vec::new();
    let n = cfg.nodes;
    let minority = (n - 1) / 2;
    loop {
        let gap = cfg.fault_every.mul_f64(rng.random_range(0.5..1.5));
        let hold = Duration::from_millis(rng.random_range(3_000..8_000));
        if Instant::now() + gap + hold >= until {
            break;
        }
        tokio::time::sleep(gap).await;
        let from_ms = rec.now();
        let pick = |rng: &mut SmallRng, k: usize| -> Vec<usize> {
            let mut all: Vec<usize> = (1..=n).collect();
            let mut out = Vec::new();
            for _ in 0..k {
                out.push(all.remove(rng.random_range(0..all.len())));
            }
            out.sort();
            out
        };
        let (what, nodes, result) = match rng.random_range(0..6) {
            0 => {
                let nodes = pick(&mut rng, 1);
                let c = container(&cfg, nodes[0]).await.unwrap_or_default();
                let r = docker(args(&["kill", "-s", "KILL", &c])).await;
                tokio::time::sleep(hold).await;
                let r2 = docker(args(&["start", &c])).await;
                ("kill -9, restart", nodes, r.and(r2))
            }
            1 => {
                let nodes = pick(&mut rng, 1);
                let c = container(&cfg, nodes[0]).await.unwrap_or_default();
                let r = docker(args(&["pause", &c])).await;
                tokio::time::sleep(hold).await;
                let r2 = docker(args(&["unpause", &c])).await;
                ("pause", nodes, r.and(r2))
            }
            2 => {
                let nodes = pick(&mut rng, 1);
                let r = isolate(&cfg, &nodes).await;
                tokio::time::sleep(hold).await;
                if let Ok(cut) = &r {
                    reconnect(cut).await;
                }
                (
                    "disconnect one node from the network",
                    nodes,
                    r.map(|_| String::new()),
                )
            }
            3 if minority >= 1 => {
                let nodes = pick(&mut rng, minority);
                let r = split(&cfg, &nodes).await;
                tokio::time::sleep(hold).await;
                unsplit(&cfg).await;
                (
                    "partition: a minority from the majority",
                    nodes,
                    r.map(|_| String::new()),
                )
            }
            4 => {
                let nodes = pick(&mut rng, 1);
                let r = split(&cfg, &nodes).await;
                tokio::time::sleep(hold).await;
                unsplit(&cfg).await;
                (
                    "partition: one node from the others",
                    nodes,
                    r.map(|_| String::new()),
                )
            }
            _ => {
                let nodes: Vec<usize> = (1..=n).collect();
                let mut r = Ok(String::new());
                for i in &nodes {
                    let c = container(&cfg, *i).await.unwrap_or_default();
                    r = r.and(docker(args(&["restart", "-t", "10", &c])).await);
                    // As an operator would: the next node only once this
                    // one is back and sees every member live (at most 30 s).
                    let back = Instant::now() + Duration::from_secs(30);
                    while Instant::now() < back && !all_live(&status(&cfg, *i).await, cfg.nodes) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                ("rolling restart", nodes, r)
            }
        };
        let to_ms = rec.now();
        match result {
            Ok(_) => eprintln!(
                "[{:>6.1}s] fault: {what} {nodes:?}",
                from_ms as f64 / 1000.0
            ),
            Err(e) => eprintln!(
                "[{:>6.1}s] fault {what} {nodes:?} failed: {e}",
                from_ms as f64 / 1000.0
            ),
        }
        faults.push(Fault {
            what: what.into(),
            nodes,
            from_ms,
            to_ms,
        });
    }
    faults
}

/// Undo anything a fault may have left: unpause, reconnect, start.
async fn heal(cfg: &RunConfig) {
    unsplit(cfg).await;
    for i in 1..=cfg.nodes {
        let Ok(c) = container(cfg, i).await else {
            continue;
        };
        let _ = docker(args(&["unpause", &c])).await;
        let _ = docker(args(&["start", &c])).await;
    }
    let _ = compose(cfg, &["up", "-d"]).await;
}

/// The state of every key the run touched, read through the first node
/// that answers.
async fn read_back(cfg: &RunConfig, ops: &[Op]) -> anyhow::Result<BTreeMap<String, Observed>> {
    let mut kinds: BTreeMap<String, &OpKind> = BTreeMap::new();
    for op in ops {
        kinds.entry(op.kind.key().to_string()).or_insert(&op.kind);
    }
    let mut out = BTreeMap::new();
    let mut conn = None;
    for i in 1..=cfg.nodes {
        conn = connect(cfg.resp(i)).await;
        if conn.is_some() {
            break;
        }
    }
    let mut conn = conn.ok_or_else(|| anyhow::anyhow!("no node answers to read back"))?;
    for (key, kind) in kinds {
        let observed = match kind {
            OpKind::Set { .. } => {
                let v: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                Observed::Str(v)
            }
            OpKind::Incr { .. } => {
                let v: Option<i64> = redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
                Observed::Counter(v.unwrap_or(0))
            }
            OpKind::Sadd { .. } | OpKind::Srem { .. } => {
                let v: BTreeSet<String> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await?;
                Observed::Set(v)
            }
            OpKind::Put { .. } => {
                let path = format!("/buckets/chaos/keys/{key}");
                let r = http_request(cfg.http(1), "GET", &path, b"", &[]).await?;
                let values = match r.status {
                    200 => BTreeSet::from([String::from_utf8_lossy(&r.body).to_string()]),
                    300 => {
                        let v: Value = serde_json::from_slice(&r.body)?;
                        v["siblings"]
                            .as_array()
                            .map(|s| {
                                s.iter()
                                    .filter_map(|x| {
                                        x["value"].as_str().or(x.as_str()).map(str::to_string)
                                    })
                                    .collect()
                            })
                            .unwrap_or_default()
                    }
                    404 => BTreeSet::new(),
                    other => anyhow::bail!("reading {key} back: HTTP {other}"),
                };
                Observed::Values(values)
            }
        };
        out.insert(key, observed);
    }
    Ok(out)
}

fn availability(ops: &[Op], faults: &[Fault]) -> (usize, f64, f64) {
    let during = |o: &Op| {
        faults
            .iter()
            .any(|f| o.invoked_ms <= f.to_ms && o.completed_ms >= f.from_ms)
    };
    let (mut d, mut d_ok, mut e, mut e_ok) = (0usize, 0usize, 0usize, 0usize);
    for o in ops {
        if during(o) {
            d += 1;
            d_ok += usize::from(o.outcome.acked());
        } else {
            e += 1;
            e_ok += usize::from(o.outcome.acked());
        }
    }
    let frac = |ok: usize, all: usize| match all {
        0 => 1.0,
        _ => ok as f64 / all as f64,
    };
    (d, frac(d_ok, d), frac(e_ok, e))
}

/// A whole run. Its cluster is taken down at the end (unless `keep`),
/// also when the run fails: a failed run leaves no containers behind.
pub async fn run(cfg: RunConfig) -> anyhow::Result<RunReport> {
    let cfg = Arc::new(cfg);
    eprintln!(
        "chaos run: seed {} ({} nodes, {:?})",
        cfg.seed, cfg.nodes, cfg.duration
    );
    // Whatever an earlier run left is removed first.
    let _ = compose(&cfg, &["down", "-v"]).await;
    let report = run_cluster(&cfg).await;
    if !cfg.keep {
        let _ = compose(&cfg, &["down", "-v"]).await;
    }
    report
}

async fn run_cluster(cfg: &Arc<RunConfig>) -> anyhow::Result<RunReport> {
    compose(cfg, &["up", "-d"]).await?;
    let start = Instant::now();
    loop {
        if settled(&status(cfg, 1).await, cfg.nodes) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(180),
            "the cluster did not form within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "cluster of {} formed in {:.1} s",
        cfg.nodes,
        start.elapsed().as_secs_f64()
    );
    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        next: AtomicU64::new(1),
        ops: Mutex::new(Vec::new()),
    });
    let until = Instant::now() + cfg.duration;
    let mut clients = Vec::new();
    for node in 1..=cfg.nodes {
        for c in 0..cfg.clients_per_node {
            let id = (node * 100 + c) as u32;
            clients.push(tokio::spawn(client(
                cfg.clone(),
                rec.clone(),
                id,
                node,
                until,
            )));
        }
    }
    let faults = tokio::spawn(nemesis(
        cfg.clone(),
        rec.clone(),
        until - Duration::from_secs(3),
    ));
    for c in clients {
        c.await?;
    }
    let faults = faults.await?;
    heal(cfg).await;
    let healed = rec.now();
    eprintln!(
        "[{:>6.1}s] healed; waiting for the replicas to agree",
        healed as f64 / 1000.0
    );
    let mut converged_after_ms = None;
    let mut last = BTreeMap::new();
    let limit = Instant::now() + cfg.converge_within + Duration::from_secs(30);
    while Instant::now() < limit {
        let (r, agree) = roots(cfg).await;
        last = r;
        if agree {
            converged_after_ms = Some(rec.now() - healed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ops = rec.ops.lock().map(|o| o.clone()).unwrap_or_default();
    let final_state = read_back(cfg, &ops).await?;
    let history = History {
        seed: cfg.seed,
        ops,
        final_state,
        roots: last,
        converged_after_ms,
    };
    let report = check(&history, cfg.converge_within.as_millis() as u64);
    let (during, avail_during, avail_otherwise) = availability(&history.ops, &faults);
    Ok(RunReport {
        check: report,
        faults,
        ops_during_faults: during,
        availability_during_faults: avail_during,
        availability_otherwise: avail_otherwise,
        history,
    })
}
