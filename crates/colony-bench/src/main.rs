//! colony-bench: a load generator over the Redis protocol (RESP2), for Colony
//! and Redis alike. It owns its own minimal client; it does not depend on any
//! Colony crate, so it measures Colony from the outside exactly as Redis.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;

mod client;
mod cluster;
mod connection;
mod report;
mod resp;
mod runner;
mod stats;
mod workload;

use client::ClientConfig;
use report::{ConfigReport, PhaseReport, Report};
use runner::BenchConfig;
use workload::{Distribution, KeyChooser, Payload, Workload, KEY_DIGITS};

/// Load generator over RESP. Every run ends at --requests or --duration,
/// whichever comes first.
#[derive(Debug, Parser)]
#[command(name = "colony-bench", version, about)]
struct Args {
    /// Server host (or a cluster seed node with --cluster).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(short, long, default_value_t = 6379)]
    port: u16,
    /// Servers as HOST:PORT, repeated or comma-separated, instead of --host
    /// and --port: clients are spread over them round-robin (client i talks
    /// to address i mod count), e.g. the nodes of a Colony cluster.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["host", "port", "cluster"])]
    addr: Vec<String>,
    /// Target is a Redis Cluster: route by key slot, follow MOVED/ASK.
    #[arg(long)]
    cluster: bool,
    #[arg(short, long, value_enum, default_value = "a")]
    workload: Workload,
    #[arg(long, value_enum, default_value = "uniform")]
    dist: Distribution,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 100_000)]
    keyspace: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Key prefix; keys look like `<prefix>000000012345`. Default: `key:`, or
    /// `counter:`, `set:`, `hash:` for incr, sets, hashes (so workloads run one
    /// after another don't collide with WRONGTYPE).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(short = 'd', long, default_value_t = 100)]
    value_size: usize,
    /// First write every key of the keyspace once (SET, INCR, SADD or HSET).
    #[arg(long)]
    load: bool,
    /// Concurrent connections (per master with --cluster).
    #[arg(short, long, default_value_t = 50)]
    clients: usize,
    /// Commands sent per round trip on each connection.
    #[arg(short = 'P', long, default_value_t = 1)]
    pipeline: usize,
    /// Open-loop total rate(s) in ops/s, comma-separated: one step each.
    /// Latency counts from each op's scheduled send time (no coordinated
    /// omission); a pacer thread hands out the send times as they fall due,
    /// tens of microseconds late at most on an idle machine.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Operations per step (0: only the load phase).
    #[arg(short = 'n', long, default_value_t = 100_000)]
    requests: u64,
    /// Hard cap per phase, in seconds.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    #[arg(long, default_value_t = 2_000)]
    connect_timeout_ms: u64,
    /// Time allowed for all replies of one pipelined batch.
    #[arg(long, default_value_t = 5_000)]
    timeout_ms: u64,
    /// Runtime worker threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Write a JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG of latency percentiles against offered load here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    validate(&args)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    runtime.block_on(run(args, threads))
}

fn validate(a: &Args) -> anyhow::Result<()> {
    if a.clients == 0 || a.pipeline == 0 {
        bail!("--clients and --pipeline must be at least 1");
    }
    if a.keyspace == 0 || a.keyspace >= 10u64.pow(KEY_DIGITS as u32) {
        bail!("--keyspace must be between 1 and 10^{KEY_DIGITS} - 1");
    }
    if !(a.duration > 0.0 && a.duration.is_finite()) {
        bail!("--duration must be a positive number of seconds");
    }
    if a.rate.iter().any(|r| !(*r > 0.0 && r.is_finite())) {
        bail!("every --rate must be a positive number of ops/s");
    }
    if let Some(bad) = a.addr.iter().find(|addr| !is_host_port(addr)) {
        bail!("--addr takes HOST:PORT, got {bad:?}");
    }
    Ok(())
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The servers clients connect to: every --addr, or --host:--port.
fn addresses(a: &Args) -> Vec<String> {
    if a.addr.is_empty() {
        vec![format!("{}:{}", a.host, a.port)]
    } else {
        a.addr.clone()
    }
}

async fn run(args: Args, threads: usize) -> anyhow::Result<()> {
    let cfg = Arc::new(bench_config(&args));
    let mut report = Report {
        config: config_report(&args, threads, &cfg),
        load: None,
        steps: Vec::new(),
    };
    if args.load {
        report.load = Some(PhaseReport::new(&runner::run_load(&cfg).await?));
    }
    if args.requests > 0 {
        let rates: Vec<Option<f64>> = if args.rate.is_empty() {
            vec![None]
        } else {
            args.rate.iter().copied().map(Some).collect()
        };
        for rate in rates {
            report
                .steps
                .push(PhaseReport::new(&runner::run_step(&cfg, rate).await?));
        }
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        report.write_json(path)?;
    }
    if let Some(path) = &args.plot {
        if args.rate.len() < 2 {
            eprintln!("note: --plot is most useful with several --rate values");
        }
        report.write_plot(path)?;
    }
    Ok(())
}

fn prefix(a: &Args) -> String {
    a.prefix
        .clone()
        .unwrap_or_else(|| a.workload.default_prefix().to_string())
}

fn bench_config(a: &Args) -> BenchConfig {
    BenchConfig {
        servers: addresses(a)
            .into_iter()
            .map(|seed_addr| {
                Arc::new(ClientConfig {
                    seed_addr,
                    cluster: a.cluster,
                    connect_timeout: Duration::from_millis(a.connect_timeout_ms),
                    reply_timeout: Duration::from_millis(a.timeout_ms),
                })
            })
            .collect(),
        payload: Arc::new(Payload::new(&prefix(a), a.value_size)),
        workload: a.workload,
        keys: KeyChooser::new(a.dist, a.keyspace),
        keyspace: a.keyspace,
        clients: a.clients,
        pipeline: a.pipeline,
        requests: a.requests,
        duration: Duration::from_secs_f64(a.duration),
        seed: a.seed,
        progress: !a.quiet && std::io::stderr().is_terminal(),
    }
}

fn config_report(a: &Args, threads: usize, cfg: &BenchConfig) -> ConfigReport {
    ConfigReport {
        target: addresses(a).join(","),
        cluster: a.cluster,
        workload: a.workload,
        distribution: a.dist,
        zipfian_theta: match cfg.keys {
            KeyChooser::Zipfian(z) => Some(z.theta()),
            KeyChooser::Uniform { .. } => None,
        },
        keyspace: a.keyspace,
        prefix: prefix(a),
        value_size: a.value_size,
        clients: a.clients,
        pipeline: a.pipeline,
        requests: a.requests,
        duration_secs: a.duration,
        rates: a.rate.clone(),
        seed: a.seed,
        load: a.load,
        threads,
        connect_timeout_ms: a.connect_timeout_ms,
        timeout_ms: a.timeout_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_host_and_port() {
        let a = Args::parse_from(["colony-bench", "--host", "10.0.0.1", "-p", "7000"]);
        assert_eq!(addresses(&a), ["10.0.0.1:7000"]);
    }

    #[test]
    fn addr_takes_repeats_and_comma_lists_in_order() {
        let a = Args::parse_from([
            "colony-bench",
            "--addr",
            "127.0.0.1:6001,127.0.0.1:6002",
            "--addr",
            "127.0.0.1:6003",
        ]);
        assert!(validate(&a).is_ok());
        assert_eq!(
            addresses(&a),
            ["127.0.0.1:6001", "127.0.0.1:6002", "127.0.0.1:6003"]
        );
    }

    #[test]
    fn addr_without_a_port_is_refused() {
        let a = Args::parse_from(["colony-bench", "--addr", "127.0.0.1"]);
        assert!(validate(&a).is_err());
    }

    #[test]
    fn addr_conflicts_with_cluster_and_port() {
        let addr = ["colony-bench", "--addr", "127.0.0.1:6001"];
        let with_cluster = addr.iter().chain(&["--cluster"]);
        assert!(Args::try_parse_from(with_cluster).is_err());
        let with_port = addr.iter().chain(&["-p", "7000"]);
        assert!(Args::try_parse_from(with_port).is_err());
    }
}
