//! Membership and failure detection: who is in the cluster, what each member
//! says about itself, and which members answer.
//!
//! Built on chitchat (scuttlebutt anti-entropy and a phi-accrual failure
//! detector). Each node gossips a small key/value state of its own ("rpc",
//! "resp", "http", "ring" …); every node eventually sees every other's latest
//! state. Gossip datagrams are authenticated with the cluster secret
//! ([`AuthUdpTransport`]).
//!
//! Liveness here is an observation for status and metrics. It never moves
//! ownership of a partition: that is the ring's business, changed only by
//! explicit, versioned ring updates.
//!
//! A node's chitchat identity is `(NodeId, generation, gossip address)`, the
//! generation being its start time in milliseconds. A restarted node is thus
//! a new incarnation; [`Membership::peers`] shows only the newest
//! incarnation of each node.

mod codec;
mod transport;

pub use transport::{AuthUdpTransport, TAG_LEN};

use crate::{ClusterSecret, CoreError, NodeId};
use chitchat::{
    spawn_chitchat, Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig,
    ProtocolVersion,
};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// Chitchat refuses gossip from another cluster id; ours is fixed, the
/// cluster secret is what separates clusters.
const CLUSTER_ID: &str = "colony";
/// Heartbeat intervals longer than this are left out of the failure
/// detector's samples (a paused process should not teach it patience).
const MIN_MAX_INTERVAL: Duration = Duration::from_secs(10);
/// Heartbeat samples kept per node.
const SAMPLING_WINDOW: usize = 1_000;

/// Settings of membership.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    pub node: NodeId,
    /// UDP address to bind for gossip; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address other nodes gossip to; port 0 means the bound port.
    pub advertise: SocketAddr,
    /// `host:port` of nodes to contact first; host names are re-resolved
    /// every minute.
    pub seeds: Vec<String>,
    pub secret: ClusterSecret,
    /// Time between gossip rounds; also the failure detector's prior
    /// heartbeat interval.
    pub gossip_interval: Duration,
    /// Suspicion level above which a node is shown as not live; the time to
    /// notice a silent node is about `phi_threshold` mean heartbeat intervals.
    pub phi_threshold: f64,
    /// How long a dead node stays listed before it is forgotten.
    pub dead_grace: Duration,
}

impl MembershipConfig {
    /// Defaults: advertise the listen address, no seeds, gossip every
    /// 200 ms, phi threshold 8, dead nodes listed for an hour.
    pub fn new(node: NodeId, listen: SocketAddr, secret: ClusterSecret) -> Self {
        Self {
            node,
            listen,
            advertise: listen,
            seeds: Vec::new(),
            secret,
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 8.0,
            dead_grace: Duration::from_secs(3600),
        }
    }

    fn validate(&self) -> Result<(), CoreError> {
        if self.gossip_interval.is_zero() {
            return Err(CoreError::InvalidMembershipConfig(
                "gossip_interval must be positive".into(),
            ));
        }
        if !(self.phi_threshold.is_finite() && self.phi_threshold > 0.0) {
            return Err(CoreError::InvalidMembershipConfig(format!(
                "phi_threshold must be a positive number, not {}",
                self.phi_threshold
            )));
        }
        Ok(())
    }

    fn failure_detector(&self) -> FailureDetectorConfig {
        FailureDetectorConfig {
            phi_threshold: self.phi_threshold,
            sampling_window_size: SAMPLING_WINDOW,
            max_interval: MIN_MAX_INTERVAL.max(self.gossip_interval * 20),
            initial_interval: self.gossip_interval,
            dead_node_grace_period: self.dead_grace,
        }
    }
}

/// Another node as this node last heard of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub node: NodeId,
    /// Start time of this incarnation (ms since the epoch): it changes when
    /// the node restarts.
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    /// Whether the failure detector currently hears from it.
    pub live: bool,
    pub state: BTreeMap<String, String>,
}

/// This node's membership: gossip runs on background tasks until
/// [`Membership::shutdown`] (or drop).
pub struct Membership {
    node: NodeId,
    gossip_addr: SocketAddr,
    handle: ChitchatHandle,
    chitchat: Arc<Mutex<Chitchat>>,
    changes: watch::Receiver<u64>,
    watcher: AbortOnDrop,
    rejected: Arc<AtomicU64>,
    transport_tasks: TaskTracker,
}

impl Membership {
    /// Bind the gossip socket and start gossiping with the seeds.
    pub async fn start(config: MembershipConfig) -> Result<Self, CoreError> {
        config.validate()?;
        let unavailable = |reason: String| CoreError::GossipUnavailable {
            addr: config.listen,
            reason,
        };
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let bound = socket
            .local_addr()
            .map_err(|e| unavailable(e.to_string()))?;
        let mut gossip_addr = config.advertise;
        if gossip_addr.port() == 0 {
            gossip_addr.set_port(bound.port());
        }
        let chitchat_id = ChitchatId::new(config.node.as_str(), generation_now(), gossip_addr);
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: CLUSTER_ID.to_string(),
            gossip_interval: config.gossip_interval,
            listen_addr: bound,
            seed_nodes: config.seeds.clone(),
            failure_detector_config: config.failure_detector(),
            marked_for_deletion_grace_period: config.dead_grace,
            catchup_callback: None,
            extra_liveness_predicate: None,
            // Every Colony node decodes V1 (compressed digests).
            protocol_version: ProtocolVersion::V1,
        };
        let transport =
            AuthUdpTransport::new(config.secret.clone(), config.node.clone()).with_socket(socket);
        let handle = spawn_chitchat(chitchat_config, Vec::new(), &transport)
            .await
            .map_err(|e| unavailable(format!("{e:#}")))?;
        let chitchat = handle.chitchat();
        let (changes_tx, changes) = watch::channel(0);
        let watcher = AbortOnDrop(tokio::spawn(watch_changes(
            chitchat.clone(),
            changes_tx,
            config.gossip_interval,
        )));
        tracing::info!(node = %config.node, %bound, %gossip_addr, "membership started");
        Ok(Self {
            node: config.node,
            gossip_addr,
            handle,
            chitchat,
            changes,
            watcher,
            rejected: transport.rejected_counter(),
            transport_tasks: transport.tasks(),
        })
    }

    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// The address this node gossips on, as other nodes see it.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.gossip_addr
    }

    /// Set a key in this node's gossiped state (e.g. "rpc", "resp", "http",
    /// "ring").
    pub async fn set(&self, key: &str, value: impl Into<String>) {
        let value = value.into();
        self.chitchat.lock().await.self_node_state().set(key, value);
    }

    /// Every other node ever seen (live and dead, until `dead_grace`), with
    /// its latest state, in node order; one entry per node, its newest
    /// incarnation.
    pub async fn peers(&self) -> Vec<Peer> {
        let chitchat = self.chitchat.lock().await;
        collect_peers(&chitchat, &self.node)
    }

    /// Bumped whenever a node appears, disappears, changes liveness or
    /// changes its state (noticed within one gossip interval).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Gossip datagrams dropped so far for a missing or wrong tag, or for
    /// being undecodable.
    pub fn rejected_datagrams(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Stop gossiping and release the socket. Other nodes will see this one
    /// go silent and mark it not live.
    pub async fn shutdown(self) {
        drop(self.watcher);
        if let Err(err) = self.handle.shutdown().await {
            tracing::warn!(error = %err, "gossip server ended with an error");
        }
        // The socket is dropped with chitchat's server; wait for its reader
        // so that the port is free when this returns.
        self.transport_tasks.close();
        self.transport_tasks.wait().await;
    }
}

fn collect_peers(chitchat: &Chitchat, me: &NodeId) -> Vec<Peer> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut newest: BTreeMap<&str, &ChitchatId> = BTreeMap::new();
    for id in chitchat.node_states().keys() {
        if &*id.node_id == me.as_str() {
            continue; // ourselves, or an earlier incarnation of ourselves
        }
        match newest.entry(&id.node_id) {
            Entry::Vacant(entry) => {
                entry.insert(id);
            }
            Entry::Occupied(mut entry) => {
                if entry.get().generation_id < id.generation_id {
                    entry.insert(id);
                }
            }
        }
    }
    newest
        .into_values()
        .filter_map(|id| {
            let state = chitchat.node_state(id)?;
            Some(Peer {
                node: NodeId::new(&*id.node_id),
                generation: id.generation_id,
                gossip_addr: id.gossip_advertise_addr,
                live: live.contains(id),
                state: state
                    .key_values()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
        })
        .collect()
}

/// What `changes` watches: every incarnation, its liveness and state version.
fn fingerprint(chitchat: &Chitchat) -> Vec<(ChitchatId, bool, u64)> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    chitchat
        .node_states()
        .iter()
        .map(|(id, state)| (id.clone(), live.contains(id), state.max_version()))
        .collect()
}

/// Compares the fingerprint once per gossip interval (chitchat itself
/// updates liveness once per round) and bumps the counter on a difference.
async fn watch_changes(
    chitchat: Arc<Mutex<Chitchat>>,
    changes: watch::Sender<u64>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Vec::new();
    loop {
        ticks.tick().await;
        let now = fingerprint(&*chitchat.lock().await);
        if now != last {
            last = now;
            changes.send_modify(|n| *n += 1);
        }
    }
}

/// The generation of an incarnation started now. A clock stepped back
/// between two starts would make the newer one look older; the old one then
/// shows until it is forgotten after `dead_grace`.
fn generation_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Aborts a background task when its owner goes away.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests;
