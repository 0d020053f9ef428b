//! Helpers for multi-node tests over a node's HTTP API: cluster status,
//! waiting for a cluster to settle, and reading /metrics.

use crate::http::http_request;
use crate::node::Node;
use crate::poll::eventually;
use serde_json::Value;
use std::time::Duration;

/// `GET /api/v1/cluster/status` of `node` (Null if it did not answer).
pub async fn cluster_status(node: &Node) -> Value {
    get_json(node, "/api/v1/cluster/status").await
}

/// A JSON document from `node`'s HTTP API (Null if it did not answer).
pub async fn get_json(node: &Node, path: &str) -> Value {
    match http_request(node.http_addr(), "GET", path, b"", &[]).await {
        Ok(r) => serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Whether `status` shows `n` valid, live members with the same ring and no
/// transfer under way or staged.
pub fn settled(status: &Value, n: usize) -> bool {
    let Some(members) = status["members"].as_array() else {
        return false;
    };
    members.iter().filter(|m| m["status"] == "Valid").count() == n
        && members
            .iter()
            .all(|m| m["ring_in_sync"] == true && m["live"] == true)
        && status["transfers"].as_array().is_some_and(|t| t.is_empty())
        && status["staged"]["transfers"]
            .as_array()
            .is_some_and(|t| t.is_empty())
}

/// Wait until `node` sees a settled cluster of `n`; the last status seen
/// is in the error.
pub async fn wait_settled(node: &Node, n: usize, within: Duration) -> Result<(), String> {
    let mut last = Value::Null;
    let ok = eventually(within, async || {
        last = cluster_status(node).await;
        settled(&last, n)
    })
    .await;
    if ok {
        Ok(())
    } else {
        Err(format!("cluster of {n} did not settle: {last:#}"))
    }
}

/// A metric's value from `node`'s /metrics, summed over its label sets
/// (None: not exported, or the node did not answer).
pub async fn metric(node: &Node, name: &str) -> Option<u64> {
    let r = http_request(node.http_addr(), "GET", "/metrics", b"", &[])
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&r.body).to_string();
    let mut found = None;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(v) = l
            .split_whitespace()
            .last()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0) += v as u64;
        }
    }
    found
}

/// Wait until `from` sees `node` live (or not).
pub async fn wait_live(from: &Node, node: &str, live: bool, within: Duration) -> bool {
    eventually(within, async || {
        let st = cluster_status(from).await;
        st["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["node"] == node && m["live"] == Value::Bool(live))
        })
    })
    .await
}
