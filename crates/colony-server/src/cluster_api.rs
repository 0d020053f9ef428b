//! `/api/v1/cluster/…`: the cluster's state and the operator's changes to
//! it, as JSON. `colony admin cluster …` is a client of these endpoints.

use crate::state::NodeState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use colony_core::{NodeId, PartitionId, Plan};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<NodeState>> {
    Router::new()
        .route("/api/v1/cluster/status", get(status))
        .route("/api/v1/cluster/ring", get(ring))
        .route("/api/v1/cluster/plan", get(plan))
        .route("/api/v1/cluster/commit", post(commit))
        .route("/api/v1/cluster/clear", post(clear))
        .route("/api/v1/cluster/leave/{node}", post(leave))
        .route("/api/v1/cluster/down/{node}", post(down))
}

fn refused(status: StatusCode, message: String) -> Response {
    let code = if status == StatusCode::CONFLICT {
        "cluster_refused"
    } else {
        "cluster_unavailable"
    };
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

async fn status(State(node): State<Arc<NodeState>>) -> Response {
    Json(node.cluster.status().await).into_response()
}

async fn ring(State(node): State<Arc<NodeState>>) -> Response {
    let Some(ring) = node.cluster.ring() else {
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "this node has not joined a cluster yet".into(),
        );
    };
    let partitions: Vec<Value> = (0..ring.ring_size())
        .map(|i| {
            let p = PartitionId(i);
            json!({
                "partition": i,
                "owner": ring.owner(p),
                "next": ring.next(p),
                "replicas": ring.replicas(p),
            })
        })
        .collect();
    let members: Vec<Value> = ring
        .members()
        .iter()
        .map(|(n, m)| {
            json!({
                "node": n,
                "status": m.status.as_str(),
                "addr": m.addr,
                "partitions": ring.owned_by(n).count(),
            })
        })
        .collect();
    Json(json!({
        "version": ring.version().0,
        "digest": format!("{:016x}", ring.digest()),
        "ring_size": ring.ring_size(),
        "n_val": ring.n_val(),
        "members": members,
        "partitions": partitions,
    }))
    .into_response()
}

/// A plan with the size of every partition it moves.
async fn describe(node: &NodeState, plan: &Plan) -> Value {
    let mut moves = Vec::new();
    let mut total_keys = 0u64;
    let mut total_bytes = 0u64;
    for (kind, list) in [("transfer", &plan.transfers), ("forced", &plan.forced)] {
        for m in list {
            let (keys, bytes) = node.kv.partition_size(m.partition).await.unwrap_or((0, 0));
            total_keys += keys;
            total_bytes += bytes;
            moves.push(json!({
                "partition": m.partition.0,
                "from": m.from,
                "to": m.to,
                "kind": kind,
                "keys": keys,
                "bytes": bytes,
            }));
        }
    }
    let members: Vec<Value> = plan
        .members
        .iter()
        .map(|(n, from, to)| json!({"node": n, "from": from.as_str(), "to": to.as_str()}))
        .collect();
    json!({
        "members": members,
        "moves": moves,
        "cancelled": plan.cancelled.iter().map(|p| p.0).collect::<Vec<_>>(),
        "keys": total_keys,
        "bytes": total_bytes,
    })
}

async fn plan(State(node): State<Arc<NodeState>>) -> Response {
    match node.cluster.plan() {
        Ok(plan) => Json(describe(&node, &plan).await).into_response(),
        Err(e) => refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn commit(State(node): State<Arc<NodeState>>) -> Response {
    // Describe before committing: sizes are of the data about to move.
    let planned = match node.cluster.plan() {
        Ok(p) => describe(&node, &p).await,
        Err(e) => return refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    match node.cluster.commit().await {
        Ok(plan) if plan.is_empty() => {
            Json(json!({"committed": false, "plan": planned})).into_response()
        }
        Ok(_) => Json(json!({"committed": true, "plan": planned})).into_response(),
        Err(e) => refused(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn clear(State(node): State<Arc<NodeState>>) -> Response {
    match node.cluster.clear().await {
        Ok(n) => Json(json!({ "cleared": n })).into_response(),
        Err(e) => refused(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn leave(State(node): State<Arc<NodeState>>, Path(who): Path<String>) -> Response {
    let who = NodeId::new(who);
    match node.cluster.leave(&who).await {
        Ok(plan) => Json(json!({ "node": who, "committed": !plan.is_empty(), "plan": describe(&node, &plan).await })).into_response(),
        Err(e) => refused(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn down(State(node): State<Arc<NodeState>>, Path(who): Path<String>) -> Response {
    let who = NodeId::new(who);
    match node.cluster.down(&who).await {
        Ok(plan) => Json(json!({ "node": who, "committed": !plan.is_empty(), "plan": describe(&node, &plan).await })).into_response(),
        Err(e) => refused(StatusCode::CONFLICT, e.to_string()),
    }
}
