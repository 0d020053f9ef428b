//! Starting and stopping a node: the data service, the listeners, and a
//! clean shutdown on SIGINT/SIGTERM.

use crate::config::NodeConfig;
use crate::state::NodeState;
use anyhow::{anyhow, Context};
use colony_core::cluster::{Cluster, ClusterConfig, HandoffConfig};
use colony_core::vnode::VnodeConfig;
use colony_core::{ClusterSecret, NodeId};
use colony_kv::{KvConfig, KvService, StoreConfig, SystemClock};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Run a node until it is told to stop.
pub async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let prometheus = crate::metrics::install();
    let kv_config = KvConfig {
        node: NodeId::new(config.node_name.clone()),
        store: StoreConfig {
            path: config.data_dir.clone(),
            fsync: config.fsync,
            cache_bytes: config.cache_bytes,
        },
        ring_size: config.ring_size,
        max_key_bytes: config.max_key_bytes,
        max_value_bytes: config.max_value_bytes,
        doc_cache_bytes: config.doc_cache_bytes,
        vnode: VnodeConfig::default(),
        aae: config.aae.clone(),
    };
    let started = std::time::Instant::now();
    let kv = KvService::start(kv_config, Arc::new(SystemClock)).map_err(|e| {
        anyhow!(
            "data directory {} is corrupt or unreadable: {e}",
            config.data_dir.display()
        )
    })?;
    tracing::info!(data_dir = %config.data_dir.display(), elapsed_ms = started.elapsed().as_millis() as u64, "store open");
    let resp = bind(config.resp, "Redis protocol (--resp)").await?;
    let http = bind(config.http, "HTTP (--http)").await?;
    let cluster = Arc::new(start_cluster(&config).await?);
    kv.attach(cluster.clone());
    let mut left = cluster.watch_left();
    let node = Arc::new(NodeState::new(Arc::new(kv), cluster.clone(), config));
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();

    tracker.spawn(accept_resp(
        node.clone(),
        resp,
        stop.clone(),
        tracker.clone(),
    ));
    let router = crate::http::router(node.clone(), prometheus);
    let http_stop = stop.clone();
    tracker.spawn(async move {
        let serve = axum::serve(http, router).with_graceful_shutdown(http_stop.cancelled_owned());
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    let c = &node.config;
    tracing::info!(node = %c.node_name, resp = %c.resp, http = %c.http, cluster = %c.cluster,
        fsync = c.fsync_name(), partitions = c.ring_size, "colony node ready");

    tokio::select! {
        () = wait_for_signal() => {}
        // Drop the watch guard at once: holding it blocks the sender.
        _ = async { left.wait_for(|l| *l).await.map(|_| ()) } => {
            tracing::info!("this node has left the cluster: every partition is handed off");
            // Let the last ring reach the others before going quiet.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    tracing::info!("shutting down: closing listeners and connections");
    stop.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(10), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 10 s");
    }
    let kv = node.kv.clone();
    drop(node);
    match Arc::try_unwrap(kv) {
        Ok(kv) => kv.shutdown().await,
        Err(kv) => kv.sync(),
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn accept_resp(
    node: Arc<NodeState>,
    listener: TcpListener,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = stop.cancelled() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let open = node.stats.connections_open.load(Ordering::Relaxed) as usize;
        if open >= node.config.max_clients {
            node.stats
                .rejected_connections_total
                .fetch_add(1, Ordering::Relaxed);
            tracker.spawn(async move {
                let _ = stream
                    .write_all(b"-ERR max number of clients reached\r\n")
                    .await;
            });
            continue;
        }
        tracker.spawn(crate::conn::serve(node.clone(), stream, peer, stop.clone()));
    }
}

async fn start_cluster(config: &NodeConfig) -> anyhow::Result<Cluster> {
    if config.cluster_secret.is_none() {
        tracing::warn!("no --cluster-secret: this node runs alone and no node can join it");
    }
    let mut info = BTreeMap::new();
    info.insert("resp".to_string(), config.resp.to_string());
    info.insert("http".to_string(), config.http.to_string());
    let cfg = ClusterConfig {
        node: NodeId::new(config.node_name.clone()),
        listen: config.cluster,
        advertise: config.advertise,
        join: config.join.clone(),
        secret: config
            .cluster_secret
            .as_deref()
            .map(ClusterSecret::from_passphrase),
        ring_path: config.data_dir.join("ring"),
        ring_size: config.ring_size,
        n_val: config.n_val,
        auto_commit: config.auto_commit,
        gossip_interval: config.gossip_interval,
        handoff: HandoffConfig {
            rate_bytes: config.handoff_rate_bytes,
            chunk_bytes: 256 * 1024,
            concurrency: config.handoff_concurrency,
        },
        info,
    };
    Cluster::start(cfg)
        .await
        .with_context(|| format!("cannot start the cluster service on {}", config.cluster))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
