//! `/api/v1/buckets/{bucket}/props`: a bucket's replication properties, as
//! JSON. `colony admin bucket …` is a client of these endpoints.
//!
//! The properties live in the ring's metadata (see `colony_kv::props`), so a
//! change made through any node reaches every node with the ring.

use crate::http::{bucket_name, error, kv_error};
use crate::state::NodeState;
use axum::body::Bytes as Body;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use colony_core::Ring;
use colony_kv::props::{self, BucketProps};
use colony_kv::KvError;
use serde_json::Value;
use std::sync::Arc;

pub fn routes() -> Router<Arc<NodeState>> {
    Router::new().route(
        "/api/v1/buckets/{bucket}/props",
        get(get_props).put(put_props),
    )
}

type BucketPath = Result<Path<String>, PathRejection>;

/// The bucket named in the path, or the error response (boxed: a
/// `Response` is large).
fn bucket(path: BucketPath) -> Result<Bytes, Box<Response>> {
    let Path(b) = path.map_err(|r| Box::new(error(r.status(), "invalid_path", r.body_text())))?;
    bucket_name(&b).map_err(|e| Box::new(kv_error(&e)))
}

fn ring(node: &NodeState) -> Result<Arc<Ring>, Box<Response>> {
    node.cluster.ring().ok_or_else(|| {
        let msg = "this node has not joined a cluster yet; retry shortly".into();
        Box::new(kv_error(&KvError::TryAgain(msg)))
    })
}

/// The effective properties: what is stored, the defaults for the rest, and
/// n_val as the cluster's when the bucket does not set its own.
fn effective(props: &BucketProps, ring: &Ring) -> Response {
    Json(props.effective(ring.n_val())).into_response()
}

async fn get_props(State(node): State<Arc<NodeState>>, path: BucketPath) -> Response {
    let (bucket, ring) = match (bucket(path), ring(&node)) {
        (Ok(b), Ok(r)) => (b, r),
        (Err(resp), _) | (_, Err(resp)) => return *resp,
    };
    effective(&BucketProps::lookup(&ring, &bucket), &ring)
}

/// The edits of a body like `{"n_val": 3, "w": "quorum", "r": 2}`, as text;
/// null stands for `default`.
fn edits(body: &[u8]) -> Result<Vec<(String, String)>, KvError> {
    let example = r#"a JSON object like {"n_val": 3, "w": "quorum", "r": 2}"#;
    let map = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if !m.is_empty() => m,
        Ok(Value::Object(_)) => {
            return Err(KvError::InvalidProps(format!(
                "no properties given; the properties are {}",
                props::NAMES.join(", ")
            )))
        }
        Ok(_) => return Err(KvError::InvalidProps(format!("expected {example}"))),
        Err(e) => return Err(KvError::InvalidProps(format!("expected {example}: {e}"))),
    };
    map.into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s,
                Value::Null => "default".into(),
                other => {
                    return Err(KvError::InvalidProps(format!(
                        "{k}={other}: expected a number, or one of one, quorum, all, default"
                    )))
                }
            };
            Ok((k, text))
        })
        .collect()
}

async fn put_props(
    State(node): State<Arc<NodeState>>,
    path: BucketPath,
    body: Result<Body, BytesRejection>,
) -> Response {
    let bucket = match bucket(path) {
        Ok(b) => b,
        Err(resp) => return *resp,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) => return error(r.status(), "invalid_body", r.body_text()),
    };
    let edits = match edits(&body) {
        Ok(e) => e,
        Err(e) => return kv_error(&e),
    };
    // Read, change and write under the ring's lock, checked against the very
    // ring the change lands in.
    let changed = node
        .cluster
        .update_meta(&props::meta_key(&bucket), |ring| {
            let mut p = BucketProps::lookup(ring, &bucket);
            p.edit(
                edits.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ring.n_val(),
            )?;
            Ok::<_, KvError>(p.encode())
        })
        .await;
    match (changed, ring(&node)) {
        (Ok(bytes), Ok(ring)) => {
            let p = BucketProps::decode(&bytes).unwrap_or_default();
            tracing::info!(bucket = %String::from_utf8_lossy(&bucket), props = ?p, "bucket properties set");
            effective(&p, &ring)
        }
        (Err(e), _) => kv_error(&e),
        (_, Err(resp)) => *resp,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_become_text_edits_and_bad_ones_say_what_is_expected() {
        let e = edits(br#"{"n_val":3,"w":"quorum","r":null}"#).unwrap();
        assert_eq!(
            e,
            [("n_val", "3"), ("r", "default"), ("w", "quorum")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        for (body, says) in [
            (&b"[1]"[..], "expected a JSON object"),
            (b"nope", "expected a JSON object"),
            (b"{}", "no properties given"),
            (br#"{"w":[2]}"#, "w=[2]: expected a number"),
        ] {
            let msg = edits(body).unwrap_err().to_string();
            assert!(msg.contains(says), "{msg}");
        }
    }
}
