//! `colony admin …`: the operator's client of a node's HTTP API.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// HTTP address of any member
    #[arg(long, default_value = "127.0.0.1:8098", env = "COLONY_HTTP")]
    pub http: String,
    /// Print the raw JSON answer
    #[arg(long)]
    pub json: bool,
    #[command(subcommand)]
    pub what: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The cluster's membership, ring and handoffs
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// A bucket's replication properties (n_val, r, w, pr, pw, dw)
    #[command(subcommand)]
    Bucket(BucketCommand),
    /// Active anti-entropy on the node: trees, exchanges, repairs
    #[command(subcommand)]
    Aae(AaeCommand),
}

#[derive(Debug, Subcommand)]
pub enum AaeCommand {
    /// Per partition: tree age, last exchange, keys repaired
    Status,
    /// Rebuild every tree of the node from its store
    Rebuild {
        /// Answer once the trees are rebuilt
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// The bucket's effective properties (its own, and defaults for the rest)
    Get { bucket: String },
    /// Change properties, e.g. `set photos n_val=3 w=quorum r=2`; `n_val=all`
    /// keeps every key on every node
    Set {
        bucket: String,
        /// key=value pairs; values are numbers, one, quorum, all or default
        #[arg(required = true, value_name = "KEY=VALUE")]
        props: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, their state and the transfers under way
    Status,
    /// Which node owns each partition
    Ring,
    /// What a commit would move, and how much data
    Plan,
    /// Commit staged joins and leaves
    Commit {
        /// Show transfer progress until the ring is settled
        #[arg(long)]
        wait: bool,
    },
    /// Drop staged joins and leaves that are not committed
    Clear,
    /// Hand a node's partitions to the others, then stop it
    Leave {
        node: String,
        #[arg(long)]
        wait: bool,
    },
    /// Mark an unreachable node down: its partitions go to others without data
    Down { node: String },
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    match &args.what {
        AdminCommand::Cluster(cmd) => run_cluster(&args, cmd).await,
        AdminCommand::Bucket(cmd) => run_bucket(&args, cmd).await,
        AdminCommand::Aae(cmd) => run_aae(&args, cmd).await,
    }
}

async fn run_aae(args: &AdminArgs, cmd: &AaeCommand) -> anyhow::Result<()> {
    let (method, path) = match cmd {
        AaeCommand::Status => ("GET", "/api/v1/aae".to_string()),
        AaeCommand::Rebuild { wait } => ("POST", format!("/api/v1/aae/rebuild?wait={wait}")),
    };
    let answer = request(&args.http, method, &path).await?;
    if args.json || matches!(cmd, AaeCommand::Rebuild { .. }) {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    print_aae(&answer);
    Ok(())
}

fn print_aae(a: &Value) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    println!(
        "node {} (anti-entropy {})",
        text(&a["node"]),
        if a["enabled"] == Value::Bool(true) {
            "on"
        } else {
            "off"
        }
    );
    println!(
        "{:>9}  {:>8}  {:>8}  {:>16}  {:>9}  {:<12}  {:>9}  {:>8}  last result",
        "partition", "tree age", "entries", "root", "exchanged", "with", "exchanges", "repaired"
    );
    let empty = Vec::new();
    for p in a["partitions"].as_array().unwrap_or(&empty) {
        let tree = &p["tree"];
        let age = if tree["building"] == Value::Bool(true) && tree["built"] != Value::Bool(true) {
            "building".to_string()
        } else {
            match tree["age_s"].as_u64() {
                Some(s) => format!("{s}s"),
                None => "-".into(),
            }
        };
        let exchanged = match p["last_exchange_age_s"].as_u64() {
            Some(s) => format!("{s}s ago"),
            None => "never".into(),
        };
        println!(
            "{:>9}  {:>8}  {:>8}  {:>16}  {:>9}  {:<12}  {:>9}  {:>8}  {}",
            text(&p["partition"]),
            age,
            text(&tree["entries"]),
            text(&tree["root"]),
            exchanged,
            text(&p["last_peer"]),
            text(&p["exchanges"]),
            text(&p["keys_repaired"]),
            text(&p["last_result"]),
        );
    }
}

async fn run_bucket(args: &AdminArgs, cmd: &BucketCommand) -> anyhow::Result<()> {
    let (method, bucket, body) = match cmd {
        BucketCommand::Get { bucket } => ("GET", bucket, Vec::new()),
        BucketCommand::Set { bucket, props } => {
            let mut edits = serde_json::Map::new();
            for kv in props {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("expected KEY=VALUE (like w=quorum), got {kv:?}");
                };
                edits.insert(k.trim().to_string(), Value::String(v.trim().to_string()));
            }
            ("PUT", bucket, serde_json::to_vec(&edits)?)
        }
    };
    let path = format!("/api/v1/buckets/{}/props", encode(bucket));
    let answer = request_with(&args.http, method, &path, &body).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
        return Ok(());
    }
    println!("bucket {bucket}");
    for name in colony_kv::props::NAMES {
        let v = match &answer[name] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("  {name:<6} {v}");
    }
    Ok(())
}

async fn run_cluster(args: &AdminArgs, cmd: &ClusterCommand) -> anyhow::Result<()> {
    let (method, path, wait) = match cmd {
        ClusterCommand::Status => ("GET", "/api/v1/cluster/status".to_string(), false),
        ClusterCommand::Ring => ("GET", "/api/v1/cluster/ring".to_string(), false),
        ClusterCommand::Plan => ("GET", "/api/v1/cluster/plan".to_string(), false),
        ClusterCommand::Commit { wait } => ("POST", "/api/v1/cluster/commit".to_string(), *wait),
        ClusterCommand::Clear => ("POST", "/api/v1/cluster/clear".to_string(), false),
        ClusterCommand::Leave { node, wait } => (
            "POST",
            format!("/api/v1/cluster/leave/{}", encode(node)),
            *wait,
        ),
        ClusterCommand::Down { node } => (
            "POST",
            format!("/api/v1/cluster/down/{}", encode(node)),
            false,
        ),
    };
    let answer = request(&args.http, method, &path).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        match cmd {
            ClusterCommand::Status => print_status(&answer),
            ClusterCommand::Ring => print_ring(&answer),
            ClusterCommand::Plan => print_plan(&answer),
            ClusterCommand::Commit { .. } => {
                println!(
                    "{}",
                    if answer["committed"] == Value::Bool(true) {
                        "committed"
                    } else {
                        "nothing to commit"
                    }
                );
                print_plan(&answer["plan"]);
            }
            ClusterCommand::Clear => println!("cleared {} staged change(s)", answer["cleared"]),
            ClusterCommand::Leave { node, .. } | ClusterCommand::Down { node } => {
                println!(
                    "{node}: {}",
                    if answer["committed"] == Value::Bool(true) {
                        "committed"
                    } else {
                        "staged (run `colony admin cluster commit`)"
                    }
                );
                print_plan(&answer["plan"]);
            }
        }
    }
    if wait {
        watch_transfers(&args.http).await?;
    }
    Ok(())
}

/// Poll status and redraw one progress line until no transfer is left.
async fn watch_transfers(http: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout();
    let mut peak = 0usize;
    loop {
        let st = request(http, "GET", "/api/v1/cluster/status").await?;
        let left = st["transfers"].as_array().map_or(0, Vec::len);
        peak = peak.max(left);
        let sending = st["sending"].as_array().cloned().unwrap_or_default();
        let keys: u64 = sending.iter().filter_map(|t| t["keys_done"].as_u64()).sum();
        let bytes: u64 = sending
            .iter()
            .filter_map(|t| t["bytes_done"].as_u64())
            .sum();
        let eta = sending.iter().filter_map(|t| t["eta_ms"].as_u64()).max();
        let done = peak.saturating_sub(left);
        let bar = progress_bar(done, peak.max(1), 30);
        write!(
            out,
            "\r{bar} {done}/{peak} partitions moved; this node sending {} ({} keys, {}){}   ",
            sending.len(),
            keys,
            human_bytes(bytes),
            eta.map(|e| format!(", ~{:.0}s left", e as f64 / 1000.0))
                .unwrap_or_default(),
        )?;
        out.flush()?;
        if left == 0 {
            writeln!(out, "\nring settled: no transfers left")?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn progress_bar(done: usize, total: usize, width: usize) -> String {
    let filled = done * width / total.max(1);
    format!(
        "[{}{}]",
        "#".repeat(filled),
        "-".repeat(width - filled.min(width))
    )
}

fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn print_status(st: &Value) {
    println!(
        "node {}  cluster {}  ring v{} ({})  {} partitions, n_val {}{}",
        st["node"].as_str().unwrap_or("?"),
        st["cluster"].as_str().unwrap_or("?"),
        st["ring_version"],
        st["ring_digest"].as_str().unwrap_or(""),
        st["ring_size"],
        st["n_val"],
        if st["joined"] == Value::Bool(false) {
            "  (joining)"
        } else {
            ""
        },
    );
    println!(
        "{:<28} {:<8} {:<6} {:<5} {:>5}  {:<22} {:<22}",
        "MEMBER", "STATUS", "ALIVE", "RING", "PARTS", "CLUSTER", "RESP"
    );
    for m in st["members"].as_array().into_iter().flatten() {
        println!(
            "{:<28} {:<8} {:<6} {:<5} {:>5}  {:<22} {:<22}",
            m["node"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?").to_lowercase(),
            if m["live"] == Value::Bool(true) {
                "up"
            } else {
                "DOWN"
            },
            if m["ring_in_sync"] == Value::Bool(true) {
                "same"
            } else {
                "diff"
            },
            m["partitions"],
            m["addr"].as_str().unwrap_or(""),
            m["info"]["resp"].as_str().unwrap_or(""),
        );
    }
    let transfers = st["transfers"].as_array().map_or(0, Vec::len);
    println!("transfers under way: {transfers}");
    for t in st["sending"].as_array().into_iter().flatten() {
        println!(
            "  partition {:>4} -> {:<24} {:<12} {} / {} keys, {}{}",
            t["partition"],
            t["to"].as_str().unwrap_or("?"),
            t["phase"].as_str().unwrap_or("?"),
            t["keys_done"],
            t["keys_total"],
            human_bytes(t["bytes_done"].as_u64().unwrap_or(0)),
            t["eta_ms"]
                .as_u64()
                .map(|e| format!(", ~{:.1}s left", e as f64 / 1000.0))
                .unwrap_or_default(),
        );
    }
    let staged = &st["staged"];
    let staged_members = staged["members"].as_array().map_or(0, Vec::len);
    if staged_members > 0 {
        println!("staged, not committed: {staged_members} member change(s); see `colony admin cluster plan`");
    }
}

fn print_ring(r: &Value) {
    println!(
        "ring v{} ({}), {} partitions",
        r["version"],
        r["digest"].as_str().unwrap_or(""),
        r["ring_size"]
    );
    for m in r["members"].as_array().into_iter().flatten() {
        println!(
            "  {:<28} {:<8} {:>5} partitions",
            m["node"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
            m["partitions"]
        );
    }
    for p in r["partitions"].as_array().into_iter().flatten() {
        match p["next"].as_str() {
            Some(next) => println!(
                "{:>5} {} -> {}",
                p["partition"],
                p["owner"].as_str().unwrap_or("?"),
                next
            ),
            None => println!(
                "{:>5} {}",
                p["partition"],
                p["owner"].as_str().unwrap_or("?")
            ),
        }
    }
}

fn print_plan(p: &Value) {
    for m in p["members"].as_array().into_iter().flatten() {
        println!(
            "  {} {} -> {}",
            m["node"].as_str().unwrap_or("?"),
            m["from"].as_str().unwrap_or("?"),
            m["to"].as_str().unwrap_or("?")
        );
    }
    let moves = p["moves"].as_array().cloned().unwrap_or_default();
    for m in &moves {
        println!(
            "  partition {:>4}: {} -> {} ({}, {} keys, {})",
            m["partition"],
            m["from"].as_str().unwrap_or("?"),
            m["to"].as_str().unwrap_or("?"),
            m["kind"].as_str().unwrap_or("?"),
            m["keys"],
            human_bytes(m["bytes"].as_u64().unwrap_or(0)),
        );
    }
    println!(
        "{} partition move(s), {} keys, {}",
        moves.len(),
        p["keys"].as_u64().unwrap_or(0),
        human_bytes(p["bytes"].as_u64().unwrap_or(0))
    );
}

/// One HTTP/1.1 request without a body; see [`request_with`].
pub async fn request(addr: &str, method: &str, path: &str) -> anyhow::Result<Value> {
    request_with(addr, method, path, b"").await
}

/// One HTTP/1.1 request with a JSON `body`; the answer's JSON body, or an
/// error carrying the server's message.
pub async fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> anyhow::Result<Value> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr} (is a node's HTTP API there?)"))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(req.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut buf))
        .await
        .context("the node did not answer within 60 s")??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("malformed HTTP status line")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    if status >= 400 {
        let msg = value["error"]["message"].as_str().unwrap_or(&body);
        bail!("{msg} (HTTP {status})");
    }
    Ok(value)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}
