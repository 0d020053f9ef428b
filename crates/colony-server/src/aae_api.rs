//! `/api/v1/aae`: active anti-entropy on this node, per partition (its
//! tree, its last exchange, what was repaired); `POST /api/v1/aae/rebuild`
//! rebuilds the trees from the store. `colony admin aae …` is a client of
//! these. With `--enable-test-hooks true`, `POST /api/v1/debug/damage/…`
//! damages one stored key on this node, for tests of the repair.

use crate::http::{bucket_name, error, kv_error};
use crate::state::NodeState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use colony_kv::vnode::Damage;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

pub fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route("/api/v1/aae", get(status))
        .route("/api/v1/aae/rebuild", post(rebuild))
        .route("/api/v1/debug/damage/{bucket}/{key}", post(damage))
}

async fn status(State(node): State<Arc<NodeState>>) -> Response {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let parts = node.kv.aae_status().await;
    let ring = node.cluster.ring();
    let me = colony_core::NodeId::new(node.config.node_name.clone());
    // The partitions this node holds keys of: those it replicates, and
    // every one while it keeps buckets with n_val=all.
    let shares = ring
        .as_ref()
        .is_some_and(|r| r.shares(&me) && !colony_kv::props::shared_buckets(r).is_empty());
    let partitions: Vec<_> = parts
        .into_iter()
        .filter(|p| {
            shares
                || ring
                    .as_ref()
                    .is_none_or(|r| r.replicates(colony_core::PartitionId(p.partition), &me))
        })
        .map(|p| {
            let tree_age_s = p
                .tree
                .as_ref()
                .and_then(|t| t.built_at_ms)
                .map(|at| now.saturating_sub(at) / 1000);
            let last_exchange_age_s = p.last_exchange_ms.map(|at| now.saturating_sub(at) / 1000);
            json!({
                "partition": p.partition,
                "tree": p.tree.as_ref().map(|t| json!({
                    "built": t.built_at_ms.is_some(),
                    "building": t.building,
                    "age_s": tree_age_s,
                    "root": format!("{:016x}", t.root),
                    "entries": t.entries,
                    "builds": t.rebuilds,
                })),
                "last_exchange_age_s": last_exchange_age_s,
                "last_peer": p.last_peer,
                "last_result": p.last_result,
                "exchanges": p.exchanges,
                "keys_repaired": p.keys_repaired,
                "bytes_repaired": p.bytes_repaired,
                "tombstones_reaped": p.tombstones_reaped,
            })
        })
        .collect();
    Json(json!({
        "node": node.config.node_name,
        "enabled": node.config.aae.enabled,
        "partitions": partitions,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct RebuildQuery {
    #[serde(default)]
    wait: bool,
}

async fn rebuild(State(node): State<Arc<NodeState>>, Query(q): Query<RebuildQuery>) -> Response {
    match node.kv.aae_rebuild(q.wait).await {
        Ok(()) => Json(json!({ "rebuilding": !q.wait, "rebuilt": q.wait })).into_response(),
        Err(e) => kv_error(&e),
    }
}

#[derive(Deserialize)]
struct DamageQuery {
    how: String,
}

async fn damage(
    State(node): State<Arc<NodeState>>,
    Path((bucket, key)): Path<(String, String)>,
    Query(q): Query<DamageQuery>,
) -> Response {
    if !node.config.test_hooks {
        return error(StatusCode::NOT_FOUND, "no_route", "no such endpoint".into());
    }
    let how = match q.how.as_str() {
        "lose" => Damage::Lose,
        "lose-silently" => Damage::LoseSilently,
        "corrupt" => Damage::Corrupt,
        other => {
            let msg = format!("how must be lose, lose-silently or corrupt, not {other:?}");
            return error(StatusCode::BAD_REQUEST, "invalid_argument", msg);
        }
    };
    let bucket = match bucket_name(&bucket) {
        Ok(b) => b,
        Err(e) => return kv_error(&e),
    };
    match node.kv.debug_damage(&bucket, key.as_bytes(), how).await {
        Ok(stored) => Json(json!({ "stored": stored })).into_response(),
        Err(e) => kv_error(&e),
    }
}
