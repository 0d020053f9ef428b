//! The HTTP/JSON API: objects under `/buckets/{bucket}/keys/{key}`, key
//! listing, `/ping`, `/metrics` and `/api/v1/node`. Errors are JSON with a
//! stable `code`.

use crate::error::http_error;
use crate::state::NodeState;
use axum::body::Bytes as Body;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use colony_kv::{KeyOp, KvError, Object, Reply, Value};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
struct App {
    node: Arc<NodeState>,
    prometheus: PrometheusHandle,
    /// Buckets whose `colony_kv_keys` gauge was last set above zero: when one
    /// empties it drops out of the counts, and its gauge must be zeroed.
    counted_buckets: Arc<Mutex<BTreeSet<String>>>,
}

pub fn router(node: Arc<NodeState>, prometheus: PrometheusHandle) -> Router {
    let limit = node.config.max_value_bytes;
    Router::new()
        .route("/ping", get(|| async { "pong\n" }))
        .route("/metrics", get(metrics))
        .route("/api/v1/node", get(node_info))
        .route("/buckets/{bucket}/keys", get(list_keys))
        .route(
            "/buckets/{bucket}/keys/{key}",
            get(get_object).put(put_object).delete(delete_object),
        )
        .merge(crate::cluster_api::routes().with_state(node.clone()))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no_route", "no such endpoint".into()) })
        .method_not_allowed_fallback(|| async {
            let msg = "method not allowed on this endpoint".into();
            error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", msg)
        })
        .layer(DefaultBodyLimit::max(limit))
        .with_state(App {
            node,
            prometheus,
            counted_buckets: Arc::default(),
        })
}

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

fn kv_error(e: &KvError) -> Response {
    let (status, code) = http_error(e);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, code, e.to_string());
    if e.is_retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

fn bucket_name(b: &str) -> Result<Bytes, KvError> {
    if b.is_empty() || b.len() > 255 {
        return Err(KvError::InvalidBucket(
            "a bucket name has 1 to 255 bytes".into(),
        ));
    }
    Ok(Bytes::copy_from_slice(b.as_bytes()))
}

/// Extractors are taken as `Result`s so that their rejections (a path that is
/// not UTF-8, a malformed query, a body over the limit) are JSON errors like
/// ours rather than axum's plain text.
type ObjectPath = Result<Path<(String, String)>, PathRejection>;

fn path_error(r: PathRejection) -> Response {
    error(r.status(), "invalid_path", r.body_text())
}

/// Bucket and key of an object route, or the error response (boxed: a
/// `Response` is large).
fn object_path(path: ObjectPath) -> Result<(Bytes, Bytes), Box<Response>> {
    let Path((bucket, key)) = path.map_err(|r| Box::new(path_error(r)))?;
    let bucket = bucket_name(&bucket).map_err(|e| Box::new(kv_error(&e)))?;
    Ok((bucket, Bytes::from(key)))
}

async fn get_object(State(app): State<App>, path: ObjectPath) -> Response {
    let (bucket, key) = match object_path(path) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    match app.node.kv.object(&bucket, key, KeyOp::Fetch).await {
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", "no such key".into()),
        Ok(Some(obj)) => object_response(obj),
        Err(e) => kv_error(&e),
    }
}

fn object_response(obj: Object) -> Response {
    let lossy = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (body, ctype, kind) = match obj.value {
        Value::Str(s) => {
            let ct = obj
                .content_type
                .as_ref()
                .and_then(|c| HeaderValue::from_bytes(c).ok())
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            (s, ct, "string")
        }
        Value::Hash(h) => {
            let map: serde_json::Map<_, _> =
                h.iter().map(|(f, v)| (lossy(f), json!(lossy(v)))).collect();
            let body = serde_json::to_vec(&map).unwrap_or_default();
            (
                Bytes::from(body),
                HeaderValue::from_static("application/json"),
                "hash",
            )
        }
        Value::Set(s) => {
            let members: Vec<String> = s.iter().map(lossy).collect();
            let body = serde_json::to_vec(&members).unwrap_or_default();
            (
                Bytes::from(body),
                HeaderValue::from_static("application/json"),
                "set",
            )
        }
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, ctype);
    resp.headers_mut()
        .insert("x-colony-type", HeaderValue::from_static(kind));
    if let Some(at) = obj.expire_at {
        if let Ok(v) = HeaderValue::from_str(&at.to_string()) {
            resp.headers_mut().insert("x-colony-expire-at-ms", v);
        }
    }
    resp
}

async fn put_object(
    State(app): State<App>,
    path: ObjectPath,
    headers: HeaderMap,
    body: Result<Body, BytesRejection>,
) -> Response {
    let (bucket, key) = match object_path(path) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let body = match body {
        Ok(b) => b,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(r.status(), "value_too_large", r.body_text())
        }
        Err(r) => return error(r.status(), "invalid_body", r.body_text()),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .map(|v| Bytes::copy_from_slice(v.as_bytes()));
    let object = Object {
        value: Value::Str(body),
        expire_at: None,
        content_type,
    };
    let op = KeyOp::Put { object, nx: false };
    match app.node.kv.call(&bucket, key, op).await {
        Reply::Error(e) => kv_error(&e),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn delete_object(State(app): State<App>, path: ObjectPath) -> Response {
    let (bucket, key) = match object_path(path) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    match app.node.kv.call(&bucket, key, KeyOp::Del).await {
        Reply::Error(e) => kv_error(&e),
        Reply::Int(1) => StatusCode::NO_CONTENT.into_response(),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such key".into()),
    }
}

#[derive(Deserialize)]
struct ListQuery {
    page: Option<String>,
    limit: Option<usize>,
}

async fn list_keys(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let bucket = match path.map(|Path(b)| bucket_name(&b)) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return kv_error(&e),
        Err(r) => return path_error(r),
    };
    let q = match query {
        Ok(Query(q)) => q,
        Err(r) => return error(r.status(), "invalid_query", r.body_text()),
    };
    let cursor = match q.page.as_deref().map(str::parse::<u64>) {
        None => 0,
        Some(Ok(c)) => c,
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_page",
                "page must be a cursor from next_page".into(),
            )
        }
    };
    let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
    match app.node.kv.scan(&bucket, cursor, limit, None, None).await {
        Ok(page) => {
            let keys: Vec<String> = page
                .keys
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            let next = (page.cursor != 0).then(|| page.cursor.to_string());
            Json(json!({ "keys": keys, "next_page": next })).into_response()
        }
        Err(e) => kv_error(&e),
    }
}

async fn node_info(State(app): State<App>) -> Response {
    let node = &app.node;
    let c = &node.config;
    let ring = node.kv.ring();
    let me = colony_core::NodeId::new(c.node_name.clone());
    let partitions: Vec<u16> = ring.owned_by(&me).map(|p| p.0).collect();
    let keys: u64 = node
        .kv
        .counts()
        .await
        .map(|m| m.values().map(|c| c.keys).sum())
        .unwrap_or(0);
    Json(json!({
        "node": c.node_name,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": node.started.elapsed().as_secs(),
        "resp": c.resp.to_string(),
        "http": c.http.to_string(),
        "cluster": c.cluster.to_string(),
        "data_dir": c.data_dir.display().to_string(),
        "fsync": c.fsync_name(),
        "ring": { "size": ring.ring_size(), "version": ring.version().0 },
        "partitions": partitions,
        "keys": keys,
        "storage_disk_bytes": node.kv.disk_bytes(),
        "connected_clients": crate::state::Stats::get(&node.stats.connections_open),
    }))
    .into_response()
}

/// Membership, liveness (failure detection's view, which never moves
/// ownership) and handoff progress, as gauges.
async fn cluster_gauges(node: &NodeState) {
    let st = node.cluster.status().await;
    metrics::gauge!("colony_cluster_ring_version").set(st.ring_version as f64);
    let mut by_status: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for m in &st.members {
        *by_status.entry(m.status.as_str()).or_default() += 1;
        let name = m.node.to_string();
        metrics::gauge!("colony_cluster_member_up", "node" => name.clone()).set(if m.live {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("colony_cluster_member_partitions", "node" => name.clone())
            .set(m.partitions as f64);
        metrics::gauge!("colony_cluster_member_ring_in_sync", "node" => name)
            .set(if m.ring_in_sync { 1.0 } else { 0.0 });
    }
    for status in ["joining", "valid", "leaving", "exiting", "left", "down"] {
        let n = by_status.get(status).copied().unwrap_or(0);
        metrics::gauge!("colony_cluster_members", "status" => status).set(n as f64);
    }
    metrics::gauge!("colony_handoff_transfers").set(st.transfers.len() as f64);
    metrics::gauge!("colony_handoff_sending").set(st.sending.len() as f64);
    let keys_done: u64 = st.sending.iter().map(|t| t.keys_done).sum();
    let keys_total: u64 = st.sending.iter().map(|t| t.keys_total).sum();
    let bytes_done: u64 = st.sending.iter().map(|t| t.bytes_done).sum();
    let eta = st
        .sending
        .iter()
        .filter_map(|t| t.eta_ms)
        .max()
        .unwrap_or(0);
    metrics::gauge!("colony_handoff_sending_keys_done").set(keys_done as f64);
    metrics::gauge!("colony_handoff_sending_keys_total").set(keys_total as f64);
    metrics::gauge!("colony_handoff_sending_bytes_done").set(bytes_done as f64);
    metrics::gauge!("colony_handoff_eta_seconds").set(eta as f64 / 1000.0);
}

async fn metrics(State(app): State<App>) -> Response {
    let node = &app.node;
    if let Ok(counts) = node.kv.counts().await {
        let mut live = BTreeSet::new();
        for (bucket, c) in counts {
            let b = String::from_utf8_lossy(&bucket).into_owned();
            metrics::gauge!("colony_kv_keys", "bucket" => b.clone()).set(c.keys as f64);
            metrics::gauge!("colony_kv_expiring_keys", "bucket" => b.clone()).set(c.expires as f64);
            live.insert(b);
        }
        // `counts` leaves out empty buckets; their gauges would otherwise keep
        // the last count forever.
        if let Ok(mut counted) = app.counted_buckets.lock() {
            for gone in counted.difference(&live) {
                metrics::gauge!("colony_kv_keys", "bucket" => gone.clone()).set(0.0);
                metrics::gauge!("colony_kv_expiring_keys", "bucket" => gone.clone()).set(0.0);
            }
            *counted = live;
        }
    }
    cluster_gauges(node).await;
    metrics::gauge!("colony_storage_disk_bytes").set(node.kv.disk_bytes() as f64);
    let (write_buffer, cache) = node.kv.memory_bytes();
    metrics::gauge!("colony_storage_write_buffer_bytes").set(write_buffer as f64);
    metrics::gauge!("colony_storage_cache_bytes").set(cache as f64);
    metrics::gauge!("colony_process_resident_memory_bytes").set(crate::info::rss_bytes() as f64);
    metrics::gauge!("colony_vnode_queued_requests").set(node.kv.queued_requests() as f64);
    let mut resp = app.prometheus.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
