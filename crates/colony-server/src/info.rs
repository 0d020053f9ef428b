//! INFO's text, in Redis's section format.

use crate::cmd::server::REDIS_COMPAT_VERSION;
use crate::state::{NodeState, Stats};
use std::fmt::Write;
use std::sync::Arc;

const SECTIONS: [&str; 7] = [
    "server",
    "clients",
    "memory",
    "persistence",
    "stats",
    "keyspace",
    "colony",
];

pub async fn render(node: &Arc<NodeState>, wanted: &[String]) -> String {
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let mut out = String::new();
    for section in SECTIONS {
        if !all && !wanted.iter().any(|w| w == section) {
            continue;
        }
        if !out.is_empty() {
            out.push_str("\r\n");
        }
        let title = format!("{}{}", section[..1].to_uppercase(), &section[1..]);
        let _ = write!(out, "# {title}\r\n");
        let body = match section {
            "server" => server(node),
            "clients" => clients(node),
            "memory" => memory(),
            "persistence" => {
                "loading:0\r\nrdb_changes_since_last_save:0\r\naof_enabled:1\r\n".into()
            }
            "stats" => stats(&node.stats),
            "keyspace" => keyspace(node).await,
            _ => colony(node),
        };
        out.push_str(&body);
    }
    out
}

fn server(node: &NodeState) -> String {
    let c = &node.config;
    format!(
        "redis_version:{REDIS_COMPAT_VERSION}\r\ncolony_version:{}\r\nredis_mode:standalone\r\n\
         os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\n\
         uptime_in_days:{}\r\nexecutable:colony\r\n",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::process::id(),
        c.resp.port(),
        node.started.elapsed().as_secs(),
        node.started.elapsed().as_secs() / 86_400,
    )
}

fn clients(node: &NodeState) -> String {
    format!(
        "connected_clients:{}\r\nmaxclients:{}\r\nblocked_clients:0\r\n",
        Stats::get(&node.stats.connections_open),
        node.config.max_clients
    )
}

/// Resident set size of this process, from /proc (0 where unavailable).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn memory() -> String {
    let rss = rss_bytes();
    format!(
        "used_memory:{rss}\r\nused_memory_human:{:.2}M\r\nused_memory_rss:{rss}\r\nmaxmemory:0\r\n\
         maxmemory_policy:noeviction\r\n",
        rss as f64 / (1024.0 * 1024.0)
    )
}

fn stats(s: &Stats) -> String {
    format!(
        "total_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\n\
         total_error_replies:0\r\nprotocol_errors:{}\r\n",
        Stats::get(&s.connections_total),
        Stats::get(&s.commands_total),
        Stats::get(&s.rejected_connections_total),
        Stats::get(&s.protocol_errors_total),
    )
}

async fn keyspace(node: &NodeState) -> String {
    let Ok(counts) = node.kv.counts().await else {
        return String::new();
    };
    let mut rows: Vec<(u32, String)> = counts
        .iter()
        .filter_map(|(bucket, c)| {
            let db = match &bucket[..] {
                b"default" => 0,
                b => std::str::from_utf8(b.strip_prefix(b"db")?)
                    .ok()?
                    .parse()
                    .ok()?,
            };
            Some((
                db,
                format!("db{db}:keys={},expires={},avg_ttl=0\r\n", c.keys, c.expires),
            ))
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, r)| r).collect()
}

fn colony(node: &NodeState) -> String {
    let c = &node.config;
    format!(
        "node_name:{}\r\nring_size:{}\r\nring_version:{}\r\nfsync:{}\r\ndata_dir:{}\r\n\
         storage_disk_bytes:{}\r\nstorage_write_buffer_bytes:{}\r\nstorage_cache_bytes:{}\r\n",
        c.node_name,
        c.ring_size,
        node.kv.ring().version(),
        c.fsync_name(),
        c.data_dir.display(),
        node.kv.disk_bytes(),
        node.kv.memory_bytes().0,
        node.kv.memory_bytes().1,
    )
}
