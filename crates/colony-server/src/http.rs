//! The HTTP/JSON API: objects under `/buckets/{bucket}/keys/{key}`, key
//! listing, `/ping`, `/metrics` and `/api/v1/node` (bucket properties are in
//! `bucket_api`, the cluster in `cluster_api`). Errors are JSON with a stable
//! `code`.

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
use colony_kv::props::{Overrides, Quorum};
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
        .merge(crate::bucket_api::routes().with_state(node.clone()))
        .merge(crate::aae_api::routes().with_state(node.clone()))
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

pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

pub(crate) fn kv_error(e: &KvError) -> Response {
    let (status, code) = http_error(e);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = error(status, code, e.to_string());
    if e.is_retryable() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

pub(crate) fn bucket_name(b: &str) -> Result<Bytes, KvError> {
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

/// Per-request quorum overrides from the query string: `r`, `w`, `pr`,
/// `pw`, `dw`, each a number, `one`, `quorum`, `all` or `default`.
type QuorumQuery = Result<Query<std::collections::BTreeMap<String, String>>, QueryRejection>;

fn overrides(query: QuorumQuery) -> Result<Overrides, Box<Response>> {
    let bad = |msg: String| Box::new(error(StatusCode::BAD_REQUEST, "invalid_query", msg));
    let Query(q) = query.map_err(|r| bad(r.body_text()))?;
    let mut o = Overrides::default();
    for (k, v) in q {
        let parsed = v
            .parse::<Quorum>()
            .map_err(|e| bad(format!("{k}={v}: {e}")))?;
        match k.as_str() {
            "r" => o.r = Some(parsed),
            "w" => o.w = Some(parsed),
            "pr" => o.pr = Some(parsed),
            "pw" => o.pw = Some(parsed),
            "dw" => o.dw = Some(parsed),
            other => {
                return Err(bad(format!(
                    "unknown query parameter {other:?} (known: r, w, pr, pw, dw)"
                )))
            }
        }
    }
    Ok(o)
}

async fn get_object(State(app): State<App>, path: ObjectPath, query: QuorumQuery) -> Response {
    let (bucket, key) = match object_path(path) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let o = match overrides(query) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    let doc = match app.node.kv.doc_with(&bucket, key, o).await {
        Ok(d) => d,
        Err(e) => return kv_error(&e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let Some((doc, view)) = doc
        .and_then(|d| d.view().map(|v| (d, v)))
        .filter(|(_, v)| !v.is_expired(now))
    else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such key".into());
    };
    let context = HeaderValue::from_str(&hex(&doc.context_bytes())).ok();
    let mut resp = if doc.siblings().len() > 1 {
        siblings_response(&doc)
    } else {
        object_response(view)
    };
    if let Some(c) = context {
        resp.headers_mut().insert(CONTEXT_HEADER, c);
    }
    resp
}

/// The header carrying a key's causal context: returned by GET, sent back
/// with a PUT or DELETE so that it replaces only what the client saw.
const CONTEXT_HEADER: &str = "x-colony-context";

/// 300 Multiple Choices: the concurrent values of a key, as JSON.
fn siblings_response(doc: &colony_kv::crdt::Doc) -> Response {
    let siblings: Vec<serde_json::Value> = doc
        .siblings()
        .into_iter()
        .map(|(value, ct)| {
            json!({
                "value": String::from_utf8_lossy(&value),
                "value_hex": hex(&value),
                "content_type": ct.map(|c| String::from_utf8_lossy(&c).into_owned()),
            })
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "siblings": siblings })).unwrap_or_default();
    let mut resp = (StatusCode::MULTIPLE_CHOICES, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &[u8]) -> Option<Bytes> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    s.chunks(2)
        .map(|p| Some((digit(p[0])? * 16 + digit(p[1])?) as u8))
        .collect::<Option<Vec<u8>>>()
        .map(Bytes::from)
}

/// The causal context a request sent back, if any.
fn request_context(headers: &HeaderMap) -> Result<Option<Bytes>, Box<Response>> {
    match headers.get(CONTEXT_HEADER) {
        None => Ok(None),
        Some(v) => unhex(v.as_bytes()).map(Some).ok_or_else(|| {
            Box::new(error(
                StatusCode::BAD_REQUEST,
                "invalid_context",
                format!("{CONTEXT_HEADER} must be the hex string a GET returned"),
            ))
        }),
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
    query: QuorumQuery,
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
    let o = match overrides(query) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    match request_context(&headers) {
        Err(resp) => return *resp,
        Ok(Some(ctx)) => {
            let Value::Str(value) = object.value else {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "not a string".into(),
                );
            };
            let value = Some((value, object.content_type));
            return context_write(&app, &bucket, key, value, ctx, o).await;
        }
        Ok(None) => {}
    }
    let op = KeyOp::Put {
        object: Box::new(object),
        nx: false,
    };
    match app.node.kv.call_with(&bucket, key, op, o).await {
        Reply::Error(e) => kv_error(&e),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// A PUT (`value`) or DELETE (None) carrying a client's causal context:
/// it replaces only what that context covers.
async fn context_write(
    app: &App,
    bucket: &Bytes,
    key: Bytes,
    value: Option<(Bytes, Option<Bytes>)>,
    ctx: Bytes,
    o: Overrides,
) -> Response {
    match app
        .node
        .kv
        .write_with_context(bucket, key, value, Some(ctx), o)
        .await
    {
        Reply::Error(e) => kv_error(&e),
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

async fn delete_object(
    State(app): State<App>,
    path: ObjectPath,
    query: QuorumQuery,
    headers: HeaderMap,
) -> Response {
    let (bucket, key) = match object_path(path) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let o = match overrides(query) {
        Ok(o) => o,
        Err(resp) => return *resp,
    };
    match request_context(&headers) {
        Err(resp) => return *resp,
        Ok(Some(ctx)) => return context_write(&app, &bucket, key, None, ctx, o).await,
        Ok(None) => {}
    }
    match app.node.kv.call_with(&bucket, key, KeyOp::Del, o).await {
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
    metrics::counter!("colony_storage_memtables_freed_total").absolute(node.kv.memtables_freed());
    metrics::gauge!("colony_process_resident_memory_bytes").set(crate::info::rss_bytes() as f64);
    metrics::gauge!("colony_vnode_queued_requests").set(node.kv.queued_requests() as f64);
    metrics::gauge!("colony_kv_hints_pending").set(node.kv.hints_pending() as f64);
    let mut text = app.prometheus.render();
    node.command_metrics.render(&mut text);
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
