//! The cluster: this node's view of the ring, kept in step with every other
//! member's, and the work that follows from it (joins, handoffs, leaving).
//!
//! There is no master. Every node holds the ring document, persists it in
//! its data directory, gossips its digest, and exchanges the document with
//! peers whose digest differs; the merge rule (see `ring`) makes them all
//! converge on one ring. Any node can stage and commit a change.

mod dispatch;
pub mod handoff;
mod maintain;
pub mod msg;

use crate::membership::{Membership, MembershipConfig, Peer};
use crate::rpc::{Rpc, RpcConfig, RpcError, RpcHandler, ServiceId};
use crate::{ClusterSecret, CoreError, MemberStatus, NodeId, PartitionId, Plan, Ring};
use bytes::Bytes;
pub use handoff::{
    BoxFut, Chunk, DropStep, HandoffBook, HandoffConfig, HandoffHost, PartitionStore,
    TransferProgress,
};
pub use msg::HandoffItem;
use msg::{Control, ControlReply, FIRST_APP, SVC_CONTROL};
use rand::Rng as _;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node: NodeId,
    /// Where to listen: RPC over TCP and gossip over UDP share the port.
    pub listen: SocketAddr,
    /// The address other members reach this node at.
    pub advertise: SocketAddr,
    /// Cluster addresses of members to join through (empty: a new cluster,
    /// unless the data directory already holds a ring).
    pub join: Vec<String>,
    /// None: this node runs alone, and nobody can join it.
    pub secret: Option<ClusterSecret>,
    /// Where the ring document is kept.
    pub ring_path: PathBuf,
    pub ring_size: u32,
    pub n_val: u8,
    /// Commit staged joins at once, so `--join` alone is enough.
    pub auto_commit: bool,
    pub gossip_interval: Duration,
    pub handoff: HandoffConfig,
    /// Extra state to gossip (client addresses, for status).
    pub info: BTreeMap<String, String>,
}

/// A member as `cluster status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub node: NodeId,
    pub status: MemberStatus,
    pub addr: String,
    /// Seen alive by failure detection (always true for this node).
    pub live: bool,
    /// Holds the same ring as this node.
    pub ring_in_sync: bool,
    pub partitions: usize,
    pub info: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub node: NodeId,
    pub cluster: String,
    pub ring_version: u64,
    pub ring_digest: String,
    pub ring_size: u16,
    pub n_val: u8,
    /// False while this node waits to be let into a cluster.
    pub joined: bool,
    pub members: Vec<MemberView>,
    /// Partition moves under way, cluster-wide, from the ring.
    pub transfers: Vec<crate::Move>,
    /// Progress of the transfers this node is sending.
    pub sending: Vec<TransferProgress>,
    pub staged: Plan,
}

pub struct Cluster {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    me: NodeId,
    config: ClusterConfig,
    ring: watch::Sender<Option<Arc<Ring>>>,
    /// Bumped after every ring installed: a reader that remembers what it
    /// derived from a ring checks this one atomic instead of the ring.
    ring_generation: std::sync::atomic::AtomicU64,
    /// Serialises local ring changes (merges stay commutative anyway).
    ring_write: tokio::sync::Mutex<()>,
    rpc: Arc<Rpc>,
    membership: Membership,
    services: RwLock<HashMap<ServiceId, Arc<dyn RpcHandler>>>,
    store: OnceLock<Arc<dyn PartitionStore>>,
    /// Transfers sent (progress) and received (resume cursors).
    handoff: HandoffBook,
    running: Mutex<HashSet<PartitionId>>,
    /// A pass dropping partitions handed away is under way (one at a time).
    dropping: std::sync::atomic::AtomicBool,
    left: watch::Sender<bool>,
    shutdown: CancellationToken,
    /// Random per process start; part of every transfer id this node sends.
    session: u64,
    /// Members gossip reports as not live (failure detector), refreshed by
    /// the maintenance loop. Never moves ownership: coordinators use it to
    /// pick fallbacks.
    down: RwLock<Arc<HashSet<NodeId>>>,
}

impl Cluster {
    /// Load or create the ring, open the cluster port and start gossip.
    /// With `join` and no ring on disk, the node asks the listed members to
    /// let it in, retrying until one does.
    pub async fn start(config: ClusterConfig) -> Result<Self, CoreError> {
        let me = config.node.clone();
        let ring = load_ring(&config)?;
        let joining = ring.is_none();
        let secret = config.secret.clone().unwrap_or_else(|| {
            // Nobody else knows a random secret: this node stays alone.
            ClusterSecret::from_passphrase(&format!("{:032x}", rand::rng().random::<u128>()))
        });
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| CoreError::Cluster(format!("cluster port {}: {e}", config.listen)))?;
        let mut mcfg = MembershipConfig::new(me.clone(), config.listen, secret.clone());
        mcfg.advertise = config.advertise;
        mcfg.seeds = config.join.clone();
        mcfg.gossip_interval = config.gossip_interval;
        let membership = Membership::start(mcfg).await?;
        membership.set("rpc", config.advertise.to_string()).await;
        for (k, v) in &config.info {
            membership.set(k, v.clone()).await;
        }
        let (ring_tx, _) = watch::channel(ring.map(Arc::new));
        let (left, _) = watch::channel(false);
        let shutdown = CancellationToken::new();
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let rpc = Rpc::new(
                RpcConfig::new(me.clone(), secret),
                Arc::new(dispatch::Dispatch(weak.clone())),
            );
            Inner {
                me,
                config,
                ring: ring_tx,
                ring_generation: std::sync::atomic::AtomicU64::new(0),
                ring_write: tokio::sync::Mutex::new(()),
                rpc,
                membership,
                services: RwLock::new(HashMap::new()),
                store: OnceLock::new(),
                handoff: HandoffBook::default(),
                running: Mutex::new(HashSet::new()),
                dropping: std::sync::atomic::AtomicBool::new(false),
                left,
                shutdown,
                session: rand::rng().random(),
                down: RwLock::new(Arc::new(HashSet::new())),
            }
        });
        inner.rpc.serve(listener, inner.shutdown.clone());
        if joining {
            tokio::spawn(maintain::join_loop(inner.clone()));
        }
        tokio::spawn(maintain::maintain(inner.clone()));
        Ok(Self { inner })
    }

    pub fn me(&self) -> &NodeId {
        &self.inner.me
    }

    /// This node's ring; None while it waits to join a cluster.
    pub fn ring(&self) -> Option<Arc<Ring>> {
        self.inner.ring()
    }

    /// Changes whenever a new ring is installed (after it is visible to
    /// [`ring`](Self::ring)): what was derived from the ring under one
    /// generation holds while it stays the same.
    pub fn ring_generation(&self) -> u64 {
        self.inner
            .ring_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn watch_ring(&self) -> watch::Receiver<Option<Arc<Ring>>> {
        self.inner.ring.subscribe()
    }

    /// Whether the failure detector believes `node` is up (this node always
    /// is; a member gossip has not reported on yet counts as up).
    pub fn is_live(&self, node: &NodeId) -> bool {
        *node == self.inner.me || !self.down_nodes().contains(node)
    }

    /// Members the failure detector currently reports as down.
    pub fn down_nodes(&self) -> Arc<HashSet<NodeId>> {
        self.inner
            .down
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves to true once this node has left the cluster.
    pub fn watch_left(&self) -> watch::Receiver<bool> {
        self.inner.left.subscribe()
    }

    /// Give core the service's partitions, so it can hand them off.
    pub fn set_store(&self, store: Arc<dyn PartitionStore>) {
        let _ = self.inner.store.set(store);
    }

    /// Serve RPCs for `service` (from `msg::FIRST_APP` on) with `handler`.
    pub fn register(&self, service: ServiceId, handler: Arc<dyn RpcHandler>) {
        debug_assert!(service >= FIRST_APP);
        self.inner
            .services
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(service, handler);
    }

    /// Call `service` on member `node`.
    pub async fn call(
        &self,
        node: &NodeId,
        service: ServiceId,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        self.inner.call(node, service, body).await
    }

    /// [`call`](Self::call), failing with [`RpcError::Timeout`] after
    /// `timeout` instead of the RPC layer's own limit (one timer, not two).
    pub async fn call_within(
        &self,
        node: &NodeId,
        service: ServiceId,
        body: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, RpcError> {
        let addr = self
            .inner
            .addr_of(node)
            .ok_or_else(|| RpcError::Unreachable(format!("{node} has no known address")))?;
        self.inner
            .rpc
            .call_timeout(addr, service, body, timeout)
            .await
    }

    pub async fn status(&self) -> ClusterStatus {
        self.inner.status().await
    }

    pub fn plan(&self) -> Result<Plan, CoreError> {
        Ok(self.inner.ring_or_err()?.plan())
    }

    pub async fn commit(&self) -> Result<Plan, CoreError> {
        let mut plan = Plan::default();
        self.inner
            .update_ring(|r| {
                plan = r.commit();
                Ok(())
            })
            .await?;
        Ok(plan)
    }

    pub async fn clear(&self) -> Result<usize, CoreError> {
        let mut n = 0;
        self.inner
            .update_ring(|r| {
                n = r.clear();
                Ok(())
            })
            .await?;
        Ok(n)
    }

    /// Set cluster-wide setting `key` (see [`Ring::set_meta`]): persisted,
    /// then pushed to every member; gossip carries it to any the push missed.
    pub async fn set_meta(&self, key: &str, value: Vec<u8>) -> Result<(), CoreError> {
        self.inner
            .update_ring(|r| {
                r.set_meta(key, value);
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Read, change and set setting `key` as one step on this node: `edit`
    /// sees the ring about to change and returns the new value, or an error
    /// that leaves the ring as it was. Two edits on one node never lose each
    /// other's change; edits on different nodes at once still merge by last
    /// writer, as every setting does.
    pub async fn update_meta<E: From<CoreError>>(
        &self,
        key: &str,
        edit: impl FnOnce(&Ring) -> Result<Vec<u8>, E>,
    ) -> Result<Vec<u8>, E> {
        let mut refused = None;
        let mut set = Vec::new();
        let updated = self
            .inner
            .update_ring(|r| match edit(r) {
                Ok(value) => {
                    set.clone_from(&value);
                    r.set_meta(key, value);
                    Ok(())
                }
                Err(e) => {
                    refused = Some(e);
                    Err(CoreError::BadRing(format!("setting {key} refused")))
                }
            })
            .await;
        match (refused, updated) {
            (Some(e), _) => Err(e),
            (None, Err(e)) => Err(e.into()),
            (None, Ok(_)) => Ok(set),
        }
    }

    /// Stage `node` to leave (and commit, when joins auto-commit).
    pub async fn leave(&self, node: &NodeId) -> Result<Plan, CoreError> {
        self.stage_and_commit(|r| r.stage_leave(node)).await
    }

    /// Apply a staging change, then commit it at once with auto-commit.
    /// Returns what was committed (empty when only staged).
    async fn stage_and_commit(
        &self,
        stage: impl FnOnce(&mut Ring) -> Result<(), CoreError>,
    ) -> Result<Plan, CoreError> {
        let auto = self.inner.config.auto_commit;
        let mut plan = Plan::default();
        self.inner
            .update_ring(|r| {
                stage(r)?;
                if auto {
                    plan = r.commit();
                }
                Ok(())
            })
            .await?;
        Ok(plan)
    }

    /// Mark `node` down (and commit, when joins auto-commit).
    pub async fn down(&self, node: &NodeId) -> Result<Plan, CoreError> {
        if node == &self.inner.me {
            return Err(CoreError::BadRing(
                "a node cannot mark itself down; use leave".into(),
            ));
        }
        if self.inner.is_live(node).await {
            return Err(CoreError::BadRing(format!(
                "{node} is alive; use leave to take it out with its data"
            )));
        }
        self.stage_and_commit(|r| r.mark_down(node)).await
    }

    /// Stop gossip and RPC.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
    }
}

fn load_ring(config: &ClusterConfig) -> Result<Option<Ring>, CoreError> {
    match std::fs::read(&config.ring_path) {
        Ok(bytes) => {
            let ring = Ring::decode(&bytes)
                .map_err(|e| CoreError::Cluster(format!("{}: {e}", config.ring_path.display())))?;
            match ring.member(&config.node) {
                Some(_) => Ok(Some(ring)),
                None => Err(CoreError::Cluster(format!(
                    "{} holds a ring that {} is not a member of (was the node renamed?)",
                    config.ring_path.display(),
                    config.node
                ))),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !config.join.is_empty() {
                return Ok(None);
            }
            let cluster = rand::rng().random::<u64>();
            let ring = Ring::new(
                cluster,
                config.node.clone(),
                config.advertise.to_string(),
                config.ring_size,
                config.n_val,
            )?;
            save_ring(&config.ring_path, &ring)?;
            Ok(Some(ring))
        }
        Err(e) => Err(CoreError::Cluster(format!(
            "{}: {e}",
            config.ring_path.display()
        ))),
    }
}

fn save_ring(path: &std::path::Path, ring: &Ring) -> Result<(), CoreError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&ring.encode())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| CoreError::Cluster(format!("saving the ring to {}: {e}", path.display())))
}

impl Inner {
    fn ring(&self) -> Option<Arc<Ring>> {
        self.ring.borrow().clone()
    }

    fn ring_or_err(&self) -> Result<Arc<Ring>, CoreError> {
        self.ring()
            .ok_or_else(|| CoreError::Cluster("this node has not joined a cluster yet".into()))
    }

    fn addr_of(&self, node: &NodeId) -> Option<SocketAddr> {
        self.ring()?.member(node)?.addr.parse().ok()
    }

    async fn call(
        &self,
        node: &NodeId,
        service: ServiceId,
        body: Bytes,
    ) -> Result<Bytes, RpcError> {
        let addr = self
            .addr_of(node)
            .ok_or_else(|| RpcError::Unreachable(format!("{node} has no known address")))?;
        self.rpc.call(addr, service, body).await
    }

    async fn is_live(&self, node: &NodeId) -> bool {
        node == &self.me
            || self
                .membership
                .peers()
                .await
                .iter()
                .any(|p| &p.node == node && p.live)
    }

    /// Change the ring with `f`, persist it, publish it and push it to
    /// every member. Returns the new ring.
    async fn update_ring<F>(&self, f: F) -> Result<Arc<Ring>, CoreError>
    where
        F: FnOnce(&mut Ring) -> Result<(), CoreError>,
    {
        let ring = self.update_ring_local(f).await?;
        self.push(&ring).await;
        Ok(ring)
    }

    /// Change and persist the ring without pushing it (the caller does).
    async fn update_ring_local<F>(&self, f: F) -> Result<Arc<Ring>, CoreError>
    where
        F: FnOnce(&mut Ring) -> Result<(), CoreError>,
    {
        let _guard = self.ring_write.lock().await;
        let mut ring = (*self.ring_or_err()?).clone();
        f(&mut ring)?;
        self.install(ring)
    }

    /// Merge a ring received from a peer.
    async fn merge_ring(&self, theirs: &Ring) -> Result<Arc<Ring>, CoreError> {
        let _guard = self.ring_write.lock().await;
        match self.ring() {
            Some(ours) => {
                let mut merged = (*ours).clone();
                if merged.merge(theirs)? {
                    self.install(merged)
                } else {
                    Ok(ours)
                }
            }
            None => {
                if theirs.member(&self.me).is_none() {
                    return Err(CoreError::Cluster(format!(
                        "the ring offered does not list {}",
                        self.me
                    )));
                }
                self.install(theirs.clone())
            }
        }
    }

    fn install(&self, ring: Ring) -> Result<Arc<Ring>, CoreError> {
        save_ring(&self.config.ring_path, &ring)?;
        let ring = Arc::new(ring);
        self.ring.send_replace(Some(ring.clone()));
        self.ring_generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        metrics::gauge!("colony_ring_version").set(ring.version().0 as f64);
        Ok(ring)
    }

    /// Send our ring to every other member, best effort.
    async fn push(&self, ring: &Arc<Ring>) {
        let body = msg::encode(&Control::Exchange {
            ring: Bytes::from(ring.encode()),
        });
        let peers: Vec<(NodeId, SocketAddr)> = ring
            .members()
            .iter()
            .filter(|(n, m)| **n != self.me && m.status != MemberStatus::Left)
            .filter_map(|(n, m)| Some((n.clone(), m.addr.parse().ok()?)))
            .collect();
        let calls = peers.into_iter().map(|(n, addr)| {
            let body = body.clone();
            async move {
                let r = self
                    .rpc
                    .call_timeout(addr, SVC_CONTROL, body, Duration::from_secs(2))
                    .await;
                if let Ok(reply) = r {
                    self.absorb(&reply).await;
                } else if let Err(e) = r {
                    tracing::debug!(peer = %n, error = %e, "ring push failed");
                }
            }
        });
        futures_join_all(calls).await;
    }

    /// Merge the ring in a control reply.
    async fn absorb(&self, reply: &[u8]) {
        if let Ok(ControlReply::Ring(bytes)) = msg::decode::<ControlReply>(reply) {
            match Ring::decode(&bytes) {
                Ok(r) => {
                    if let Err(e) = self.merge_ring(&r).await {
                        tracing::warn!(error = %e, "a peer's ring could not be merged");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a peer sent a bad ring"),
            }
        }
    }

    async fn control(&self, from: NodeId, m: Control) -> ControlReply {
        match m {
            Control::Join { node, addr } => {
                if node != from {
                    return ControlReply::Refused(format!(
                        "{from} cannot join on behalf of {node}"
                    ));
                }
                if let Some(ring) = self.ring() {
                    if let Some(member) = ring.member(&node) {
                        let owned = ring.owned_by(&node).count();
                        if owned > 0 && member.status != MemberStatus::Down {
                            // A member back without its ring: its data
                            // directory was lost or replaced. With replicas
                            // elsewhere it takes its place again (anti-entropy
                            // refills its store); with a single copy its
                            // data is gone, and the operator must decide.
                            if ring.n_val() < 2 {
                                return ControlReply::Refused(format!(
                                    "{node} is already a member owning {owned} partitions \
                                     and keys have a single copy; restart it with its \
                                     data directory, or mark it down first"
                                ));
                            }
                            tracing::warn!(%node, owned,
                                "a member rejoined without its ring (its store was lost?): \
                                 anti-entropy will refill its replicas");
                            return ControlReply::Ring(Bytes::from(ring.encode()));
                        }
                    }
                }
                let auto = self.config.auto_commit;
                let r = self
                    .update_ring(|r| {
                        r.stage_join(&node, addr);
                        if auto {
                            r.commit();
                        }
                        Ok(())
                    })
                    .await;
                match r {
                    Ok(ring) => {
                        tracing::info!(%node, "member joined");
                        ControlReply::Ring(Bytes::from(ring.encode()))
                    }
                    Err(e) => ControlReply::Refused(e.to_string()),
                }
            }
            Control::Exchange { ring } => {
                let theirs = match Ring::decode(&ring) {
                    Ok(r) => r,
                    Err(e) => return ControlReply::Refused(e.to_string()),
                };
                if self.ring().is_none() {
                    return ControlReply::Refused("this node has not joined yet".into());
                }
                match self.merge_ring(&theirs).await {
                    Ok(merged) => ControlReply::Ring(Bytes::from(merged.encode())),
                    Err(e) => ControlReply::Refused(e.to_string()),
                }
            }
        }
    }

    async fn status(&self) -> ClusterStatus {
        let ring = self.ring();
        let peers: HashMap<NodeId, Peer> = self
            .membership
            .peers()
            .await
            .into_iter()
            .map(|p| (p.node.clone(), p))
            .collect();
        let digest = ring.as_ref().map(|r| format!("{:016x}", r.digest()));
        let mut members = Vec::new();
        if let Some(r) = &ring {
            for (node, m) in r.members() {
                let peer = peers.get(node);
                let me = *node == self.me;
                let info = match peer {
                    Some(p) => p.state.clone(),
                    None if me => self.config.info.clone(),
                    None => BTreeMap::new(),
                };
                members.push(MemberView {
                    node: node.clone(),
                    status: m.status,
                    addr: m.addr.clone(),
                    live: me || peer.is_some_and(|p| p.live),
                    ring_in_sync: me || peer.and_then(|p| p.state.get("ring")) == digest.as_ref(),
                    partitions: r.owned_by(node).count(),
                    info,
                });
            }
        }
        let sending = self.handoff.sending();
        ClusterStatus {
            node: self.me.clone(),
            cluster: ring
                .as_ref()
                .map(|r| format!("{:016x}", r.cluster()))
                .unwrap_or_default(),
            ring_version: ring.as_ref().map_or(0, |r| r.version().0),
            ring_digest: digest.unwrap_or_default(),
            ring_size: ring.as_ref().map_or(0, |r| r.ring_size()),
            n_val: ring.as_ref().map_or(0, |r| r.n_val()),
            joined: ring.is_some(),
            members,
            transfers: ring.as_ref().map(|r| r.transfers()).unwrap_or_default(),
            sending,
            staged: ring.as_ref().map(|r| r.plan()).unwrap_or_default(),
        }
    }
}

fn digest_of(ring: &Ring) -> String {
    format!("{:016x}", ring.digest())
}

fn handoff_lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run the futures concurrently and wait for all of them.
async fn futures_join_all<F: std::future::Future<Output = ()>>(calls: impl Iterator<Item = F>) {
    let mut pending: Vec<std::pin::Pin<Box<F>>> = calls.map(Box::pin).collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if pending.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
