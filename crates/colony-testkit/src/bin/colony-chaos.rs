//! `colony-chaos`: attack a Colony cluster running in containers and check
//! what its clients were told. See `colony_testkit::chaos` and
//! docs/reliability.md.

use clap::Parser;
use colony_testkit::chaos::run::{run, RunConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    about = "Run a chaos scenario against a containerised Colony cluster and check the history"
)]
struct Args {
    /// The compose file of the cluster (deploy/docker/compose-3.yml, compose-5.yml)
    #[arg(long)]
    compose: PathBuf,
    /// Compose project name
    #[arg(long, default_value = "colonychaos")]
    project: String,
    /// Nodes in the compose file (node1..nodeN)
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Host port of node 1's Redis protocol; node i uses this + i - 1
    #[arg(long, default_value_t = 16379)]
    resp_base: u16,
    /// Host port of node 1's HTTP API; node i uses this + i - 1
    #[arg(long, default_value_t = 18098)]
    http_base: u16,
    /// Seed of the workload and the fault schedule [default: from the clock]
    #[arg(long)]
    seed: Option<u64>,
    /// Seconds the clients run
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Clients per node
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Keys per operation kind
    #[arg(long, default_value_t = 20)]
    keys: usize,
    /// Most operations per client
    #[arg(long, default_value_t = 200_000)]
    max_ops: usize,
    /// Mean seconds between faults
    #[arg(long, default_value_t = 10)]
    fault_every: u64,
    /// Seconds the replicas may take to agree after healing
    #[arg(long, default_value_t = 120)]
    converge_within: u64,
    /// Where the JSON report (with the whole history) goes
    #[arg(long, default_value = "chaos-report.json")]
    out: PathBuf,
    /// Leave the containers running afterwards
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let cfg = RunConfig {
        compose: a.compose,
        project: a.project,
        nodes: a.nodes,
        resp_base: a.resp_base,
        http_base: a.http_base,
        seed,
        duration: Duration::from_secs(a.duration),
        clients_per_node: a.clients,
        keys: a.keys,
        max_ops_per_client: a.max_ops,
        fault_every: Duration::from_secs(a.fault_every),
        converge_within: Duration::from_secs(a.converge_within),
        keep: a.keep,
    };
    let report = run(cfg).await?;
    std::fs::write(&a.out, serde_json::to_vec_pretty(&report)?)?;
    println!("{}", report.check.summary());
    println!(
        "faults: {}; operations during faults: {}, acknowledged {:.1}%; otherwise {:.1}%",
        report.faults.len(),
        report.ops_during_faults,
        report.availability_during_faults * 100.0,
        report.availability_otherwise * 100.0
    );
    println!("report: {} (replay: --seed {seed})", a.out.display());
    if !report.check.ok() {
        std::process::exit(1);
    }
    Ok(())
}
