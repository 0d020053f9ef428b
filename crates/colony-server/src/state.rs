//! What the node shares between connections: the data service, settings,
//! counters, and the registry of connected clients.

use crate::config::NodeConfig;
use bytes::Bytes;
use colony_core::cluster::Cluster;
use colony_kv::KvService;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Default)]
pub struct Stats {
    pub connections_total: AtomicU64,
    pub connections_open: AtomicU64,
    pub commands_total: AtomicU64,
    pub protocol_errors_total: AtomicU64,
    pub rejected_connections_total: AtomicU64,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What CLIENT LIST shows of a connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: String,
    pub name: Option<Bytes>,
    pub db: u32,
    pub created: Instant,
    pub last_cmd: &'static str,
    pub proto: u8,
}

pub struct NodeState {
    pub kv: Arc<KvService>,
    pub cluster: Arc<Cluster>,
    pub config: NodeConfig,
    pub stats: Stats,
    pub started: Instant,
    pub clients: Mutex<BTreeMap<u64, ClientInfo>>,
    /// CONFIG SET values of harmless Redis knobs, echoed by CONFIG GET.
    pub knobs: Mutex<BTreeMap<String, String>>,
    pub command_metrics: crate::metrics::CommandMetrics,
    next_client_id: AtomicU64,
}

impl NodeState {
    pub fn new(kv: Arc<KvService>, cluster: Arc<Cluster>, config: NodeConfig) -> Self {
        Self {
            kv,
            cluster,
            config,
            stats: Stats::default(),
            started: Instant::now(),
            clients: Mutex::new(BTreeMap::new()),
            knobs: Mutex::new(crate::cmd::server::default_knobs()),
            command_metrics: crate::metrics::CommandMetrics::new(),
            next_client_id: AtomicU64::new(1),
        }
    }

    pub fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Run `f` on the registry entry of client `id`, if present.
    pub fn with_client(&self, id: u64, f: impl FnOnce(&mut ClientInfo)) {
        if let Ok(mut clients) = self.clients.lock() {
            if let Some(c) = clients.get_mut(&id) {
                f(c);
            }
        }
    }
}

/// The bucket that Redis database `db` maps to.
pub fn bucket_of_db(db: u32) -> Bytes {
    if db == 0 {
        Bytes::from_static(b"default")
    } else {
        Bytes::from(format!("db{db}"))
    }
}
