//! Settings: command-line flags, an optional TOML file with the same keys
//! (`--config`), and defaults, in that order of precedence.

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use colony_kv::aae::AaeConfig;
use colony_kv::FsyncPolicy;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "colony",
    version,
    about = "Colony: a masterless, self-healing key/value cluster that speaks Redis and HTTP"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a node (with no flags: one node on ./colony-data, Redis on 6379, HTTP on 8098).
    Start(Box<StartArgs>),
    /// Operate a running cluster through any member's HTTP API.
    Admin(crate::admin::AdminArgs),
}

/// Flags of `colony start`; each may also be set in the `--config` file,
/// under the same name.
#[derive(Debug, Default, Args, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StartArgs {
    /// TOML file with any of these settings; flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Where the node keeps its data [default: ./colony-data]
    #[arg(long, env = "COLONY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Redis protocol listener [default: 127.0.0.1:6379]
    #[arg(long)]
    pub resp: Option<SocketAddr>,
    /// HTTP API listener [default: 127.0.0.1:8098]
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Inter-node listener [default: 127.0.0.1:8099]
    #[arg(long)]
    pub cluster: Option<SocketAddr>,
    /// This node's stable name [default: colony@<cluster address>]
    #[arg(long, env = "COLONY_NODE_NAME")]
    pub node_name: Option<String>,
    /// When writes reach the disk: always | periodic | never [default: periodic]
    #[arg(long)]
    pub fsync: Option<String>,
    /// Interval of `--fsync periodic`, in milliseconds [default: 1000]
    #[arg(long)]
    pub fsync_interval_ms: Option<u64>,
    /// Partitions of the ring, a power of two, fixed at creation [default: 64]
    #[arg(long)]
    pub ring_size: Option<u32>,
    /// Largest stored value, in bytes [default: 67108864]
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Largest key, in bytes [default: 32768]
    #[arg(long)]
    pub max_key_bytes: Option<usize>,
    /// Largest bulk string a client may send, in bytes [default: 536870912]
    #[arg(long)]
    pub max_bulk_bytes: Option<usize>,
    /// Most elements in one request [default: 1048576]
    #[arg(long)]
    pub max_multibulk: Option<usize>,
    /// Most concurrent client connections [default: 10000]
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Worker threads serving clients [default: the number of CPU cores]
    #[arg(long)]
    pub threads: Option<usize>,
    /// Block cache of the store, in MiB [default: 64]
    #[arg(long)]
    pub cache_mib: Option<u64>,
    /// Cache of key states (decoded, or as stored bytes), in MiB, shared out among the vnodes
    /// [default: 32]
    #[arg(long)]
    pub doc_cache_mib: Option<u64>,
    /// Join the cluster of the member at this cluster address (repeatable)
    #[arg(long, value_name = "HOST:PORT")]
    #[serde(default)]
    pub join: Vec<String>,
    /// Shared secret of the cluster's members; without it a node runs alone
    #[arg(long, env = "COLONY_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Address other members reach this node's cluster port at [default: --cluster]
    #[arg(long)]
    pub advertise: Option<SocketAddr>,
    /// Commit joins and leaves at once, without `colony admin cluster commit` [default: true]
    #[arg(long)]
    pub auto_commit: Option<bool>,
    /// Replicas each key should have, which the claim spreads for [default: 3]
    #[arg(long)]
    pub n_val: Option<u8>,
    /// Handoff rate per transfer, in MiB/s [default: 64]
    #[arg(long)]
    pub handoff_rate_mib: Option<u64>,
    /// Transfers a node sends at once [default: 2]
    #[arg(long)]
    pub handoff_concurrency: Option<usize>,
    /// Gossip round interval, in milliseconds [default: 200]
    #[arg(long)]
    pub gossip_interval_ms: Option<u64>,
    /// Run active anti-entropy exchanges [default: true]
    #[arg(long)]
    pub aae: Option<bool>,
    /// Pause between anti-entropy exchanges that found nothing, in milliseconds [default: 500]
    #[arg(long)]
    pub aae_exchange_interval_ms: Option<u64>,
    /// Rebuild every anti-entropy tree from the store this often, in seconds [default: 86400]
    #[arg(long)]
    pub aae_rebuild_interval_secs: Option<u64>,
    /// Keys per second anti-entropy may repair [default: 10000]
    #[arg(long)]
    pub aae_repair_rate: Option<u64>,
    /// Entries per second tree builds may read [default: 200000]
    #[arg(long)]
    pub aae_build_rate: Option<u64>,
    /// Tombstones are kept at least this long, in seconds [default: 10]
    #[arg(long)]
    pub tombstone_grace_secs: Option<u64>,
    /// Serve test-only hooks that damage stored data (never in production)
    #[arg(long, hide = true)]
    pub enable_test_hooks: Option<bool>,
}

/// The resolved settings of a node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    pub resp: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub node_name: String,
    pub fsync: FsyncPolicy,
    pub ring_size: u32,
    pub max_value_bytes: usize,
    pub max_key_bytes: usize,
    pub max_bulk_bytes: usize,
    pub max_multibulk: usize,
    pub max_clients: usize,
    pub cache_bytes: u64,
    pub doc_cache_bytes: u64,
    pub threads: usize,
    pub join: Vec<String>,
    pub cluster_secret: Option<String>,
    pub advertise: SocketAddr,
    pub auto_commit: bool,
    pub n_val: u8,
    pub handoff_rate_bytes: u64,
    pub handoff_concurrency: usize,
    pub gossip_interval: Duration,
    pub aae: AaeConfig,
    pub test_hooks: bool,
}

impl NodeConfig {
    pub fn resolve(flags: StartArgs) -> anyhow::Result<Self> {
        let file = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<StartArgs>(&text)
                    .with_context(|| format!("parsing config file {}", path.display()))?
            }
            None => StartArgs::default(),
        };
        macro_rules! pick {
            ($f:ident, $default:expr) => {
                flags.$f.or(file.$f).unwrap_or_else(|| $default)
            };
        }
        let cluster = pick!(cluster, addr("127.0.0.1:8099"));
        let interval = Duration::from_millis(pick!(fsync_interval_ms, 1000).max(1));
        let fsync = match pick!(fsync, "periodic".into()).as_str() {
            "always" => FsyncPolicy::Always,
            "periodic" => FsyncPolicy::Periodic(interval),
            "never" => FsyncPolicy::Never,
            other => bail!("--fsync must be always, periodic or never, not {other:?}"),
        };
        let max_key_bytes = pick!(max_key_bytes, 32 * 1024);
        if max_key_bytes > 60 * 1024 {
            bail!("--max-key-bytes may be at most 61440 (the store's key limit)");
        }
        let join = if flags.join.is_empty() {
            file.join.clone()
        } else {
            flags.join.clone()
        };
        let cluster_secret = flags.cluster_secret.clone().or(file.cluster_secret.clone());
        if !join.is_empty() && cluster_secret.is_none() {
            bail!(
                "--join needs the cluster's secret: set --cluster-secret or COLONY_CLUSTER_SECRET"
            );
        }
        Ok(Self {
            join,
            cluster_secret,
            advertise: pick!(advertise, cluster),
            auto_commit: pick!(auto_commit, true),
            n_val: pick!(n_val, 3).max(1),
            handoff_rate_bytes: pick!(handoff_rate_mib, 64).max(1) * 1024 * 1024,
            handoff_concurrency: pick!(handoff_concurrency, 2).max(1),
            gossip_interval: Duration::from_millis(pick!(gossip_interval_ms, 200).max(10)),
            aae: AaeConfig {
                enabled: pick!(aae, true),
                exchange_interval: Duration::from_millis(
                    pick!(aae_exchange_interval_ms, 500).max(1),
                ),
                rebuild_interval: Duration::from_secs(
                    pick!(aae_rebuild_interval_secs, 24 * 3600).max(1),
                ),
                repair_rate: pick!(aae_repair_rate, 10_000).max(1),
                build_rate: pick!(aae_build_rate, 200_000).max(1),
                tombstone_grace: Duration::from_secs(pick!(tombstone_grace_secs, 10)),
            },
            test_hooks: pick!(enable_test_hooks, false),
            data_dir: pick!(data_dir, PathBuf::from("colony-data")),
            resp: pick!(resp, addr("127.0.0.1:6379")),
            http: pick!(http, addr("127.0.0.1:8098")),
            node_name: pick!(node_name, format!("colony@{cluster}")),
            cluster,
            fsync,
            ring_size: pick!(ring_size, 64),
            max_value_bytes: pick!(max_value_bytes, 64 * 1024 * 1024),
            max_key_bytes,
            max_bulk_bytes: pick!(max_bulk_bytes, 512 * 1024 * 1024),
            max_multibulk: pick!(max_multibulk, 1024 * 1024),
            max_clients: pick!(max_clients, 10_000),
            cache_bytes: pick!(cache_mib, 64) * 1024 * 1024,
            doc_cache_bytes: pick!(doc_cache_mib, 32) * 1024 * 1024,
            threads: pick!(
                threads,
                std::thread::available_parallelism().map_or(2, |n| n.get())
            )
            .max(1),
        })
    }

    pub fn fsync_name(&self) -> &'static str {
        match self.fsync {
            FsyncPolicy::Always => "always",
            FsyncPolicy::Periodic(_) => "periodic",
            FsyncPolicy::Never => "never",
        }
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("colony.toml");
        std::fs::write(
            &path,
            "fsync = \"always\"\nresp = \"127.0.0.1:7000\"\nring-size = 128\n",
        )
        .unwrap();
        let flags = StartArgs {
            config: Some(path),
            resp: Some(addr("127.0.0.1:7001")),
            ..StartArgs::default()
        };
        let c = NodeConfig::resolve(flags).unwrap();
        assert_eq!(c.resp, addr("127.0.0.1:7001"));
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert_eq!(c.ring_size, 128);
        assert_eq!(c.http, addr("127.0.0.1:8098"));
    }

    #[test]
    fn unknown_file_keys_and_bad_fsync_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("colony.toml");
        std::fs::write(&path, "fsink = \"always\"\n").unwrap();
        let flags = StartArgs {
            config: Some(path),
            ..StartArgs::default()
        };
        assert!(NodeConfig::resolve(flags).is_err());
        let flags = StartArgs {
            fsync: Some("sometimes".into()),
            ..StartArgs::default()
        };
        assert!(NodeConfig::resolve(flags).is_err());
    }
}
