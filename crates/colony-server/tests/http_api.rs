//! The HTTP/JSON API end to end against a real `colony` process: objects under
//! `/buckets/{bucket}/keys/{key}`, key listing, errors as JSON with a stable code,
//! the bucket `default` shared with RESP database 0, `/metrics` and `/api/v1/node`.
//! Colony-only: every test skips when the target is Redis.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use colony_testkit::{colony_only, http_request, target_from_env, HttpResponse, Node, NodeOptions};
use redis::aio::MultiplexedConnection;
use serde_json::Value as Json;

/// Not valid UTF-8, with the bytes a text path would mangle: NUL, CR LF, 0xFF.
const PNG_ISH: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe\x80\xc3\x28 end";

/// A node with `args` appended, or None (skip) when the target is Redis.
async fn start(args: &[&str]) -> Option<Node> {
    let target = target_from_env(env!("CARGO_BIN_EXE_colony"));
    if colony_only(&target, "the HTTP API") {
        return None;
    }
    let opts = args
        .iter()
        .fold(NodeOptions::new(target), |opts, a| opts.arg(*a));
    Some(Node::start(opts).await.unwrap())
}

async fn call(node: &Node, method: &str, path: &str, body: &[u8]) -> HttpResponse {
    http_with(node, method, path, body, &[]).await
}

async fn http_with(
    node: &Node,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> HttpResponse {
    http_request(node.http_addr(), method, path, body, headers)
        .await
        .unwrap()
}

fn json(resp: &HttpResponse) -> Json {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", resp.text()))
}

/// The response is `status` with `{"error":{"code":code,"message":…}}`.
fn assert_json_error(resp: &HttpResponse, status: u16, code: &str) {
    assert_eq!(resp.status, status, "body: {:?}", resp.text());
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "error without a JSON content type: {:?}",
        resp.headers
    );
    let body = json(resp);
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

async fn put(node: &Node, bucket: &str, key: &str, value: &[u8]) {
    let resp = call(node, "PUT", &format!("/buckets/{bucket}/keys/{key}"), value).await;
    assert_eq!(resp.status, 204, "PUT {bucket}/{key}: {:?}", resp.text());
}

async fn resp_cmd<T: redis::FromRedisValue>(c: &mut MultiplexedConnection, args: &[&str]) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(c)
        .await
        .unwrap()
}

#[tokio::test]
async fn ping_answers_200() {
    let Some(node) = start(&[]).await else { return };
    let resp = call(&node, "GET", "/ping", b"").await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text().trim(), "pong");
}

#[tokio::test]
async fn binary_value_comes_back_byte_for_byte_with_its_content_type() {
    let Some(node) = start(&[]).await else { return };
    let path = "/buckets/photos/keys/cat.png";
    let put = http_with(
        &node,
        "PUT",
        path,
        PNG_ISH,
        &[("Content-Type", "image/png")],
    )
    .await;
    assert_eq!(put.status, 204, "{:?}", put.text());
    assert!(put.body.is_empty());

    let got = call(&node, "GET", path, b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, PNG_ISH);
    assert_eq!(got.header("content-type"), Some("image/png"));
    assert_eq!(got.header("x-colony-type"), Some("string"));
}

#[tokio::test]
async fn value_without_content_type_is_served_as_octet_stream() {
    let Some(node) = start(&[]).await else { return };
    put(&node, "b", "k", b"v").await;
    let got = call(&node, "GET", "/buckets/b/keys/k", b"").await;
    assert_eq!(got.body, b"v");
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
}

#[tokio::test]
async fn deleted_key_answers_404_with_a_json_error() {
    let Some(node) = start(&[]).await else { return };
    put(&node, "b", "gone", b"soon").await;
    let del = call(&node, "DELETE", "/buckets/b/keys/gone", b"").await;
    assert_eq!(del.status, 204, "{:?}", del.text());
    let got = call(&node, "GET", "/buckets/b/keys/gone", b"").await;
    assert_json_error(&got, 404, "not_found");
    let again = call(&node, "DELETE", "/buckets/b/keys/gone", b"").await;
    assert_json_error(&again, 404, "not_found");
}

#[tokio::test]
async fn bucket_default_is_resp_database_0_both_ways() {
    let Some(node) = start(&[]).await else { return };
    let mut c = node.conn().await.unwrap();

    put(&node, "default", "from-http", PNG_ISH).await;
    let seen: Option<Vec<u8>> = resp_cmd(&mut c, &["GET", "from-http"]).await;
    assert_eq!(seen.as_deref(), Some(PNG_ISH));

    let () = resp_cmd(&mut c, &["SET", "from-resp", "hello over RESP"]).await;
    let got = call(&node, "GET", "/buckets/default/keys/from-resp", b"").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, b"hello over RESP");

    // Another bucket is another namespace, invisible from database 0.
    put(&node, "elsewhere", "private", b"x").await;
    let absent: Option<Vec<u8>> = resp_cmd(&mut c, &["GET", "private"]).await;
    assert_eq!(absent, None);
}

#[tokio::test]
async fn hash_written_over_resp_reads_as_a_json_object() {
    let Some(node) = start(&[]).await else { return };
    let mut c = node.conn().await.unwrap();
    let added: i64 = resp_cmd(&mut c, &["HSET", "user:1", "name", "ada", "lang", "rust"]).await;
    assert_eq!(added, 2);

    let got = call(&node, "GET", "/buckets/default/keys/user:1", b"").await;
    assert_eq!(got.status, 200, "{:?}", got.text());
    assert_eq!(got.header("x-colony-type"), Some("hash"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    let fields: BTreeMap<String, String> = serde_json::from_slice(&got.body).unwrap();
    let expected = [("lang", "rust"), ("name", "ada")]
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .into();
    assert_eq!(fields, expected);
}

#[tokio::test]
async fn key_listing_pages_through_every_key_exactly_once() {
    let Some(node) = start(&[]).await else { return };
    let expected: BTreeSet<String> = (0..250).map(|i| format!("key-{i:03}")).collect();
    for key in &expected {
        put(&node, "paged", key, key.as_bytes()).await;
    }
    put(&node, "other-bucket", "not-listed", b"x").await;

    for limit in [7, 100, 1000] {
        let mut seen = Vec::new();
        let mut path = format!("/buckets/paged/keys?limit={limit}");
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= 250, "paging does not end (limit {limit})");
            let resp = call(&node, "GET", &path, b"").await;
            assert_eq!(resp.status, 200, "{path}: {:?}", resp.text());
            let body = json(&resp);
            let keys = body["keys"].as_array().unwrap();
            assert!(
                keys.len() <= limit,
                "{} keys on a page of {limit}",
                keys.len()
            );
            seen.extend(keys.iter().map(|k| k.as_str().unwrap().to_string()));
            match &body["next_page"] {
                Json::Null => break,
                Json::String(page) => {
                    path = format!("/buckets/paged/keys?limit={limit}&page={page}")
                }
                other => panic!("next_page is neither null nor a string: {other}"),
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "duplicates with limit {limit}");
        assert_eq!(unique, expected, "limit {limit}");
    }
}

#[tokio::test]
async fn invalid_page_or_limit_answers_400_with_a_json_error() {
    let Some(node) = start(&[]).await else { return };
    let bad_page = call(&node, "GET", "/buckets/b/keys?page=not-a-cursor", b"").await;
    assert_json_error(&bad_page, 400, "invalid_page");
    let bad_limit = call(&node, "GET", "/buckets/b/keys?limit=many", b"").await;
    assert_json_error(&bad_limit, 400, "invalid_query");
}

#[tokio::test]
async fn body_over_max_value_bytes_answers_413_with_a_json_error() {
    let Some(node) = start(&["--max-value-bytes", "1024"]).await else {
        return;
    };
    put(&node, "b", "at-limit", &[b'a'; 1024]).await;
    let over = call(&node, "PUT", "/buckets/b/keys/over", &[b'a'; 1025]).await;
    assert_json_error(&over, 413, "value_too_large");
    let far_over = call(&node, "PUT", "/buckets/b/keys/over", &[b'a'; 64 * 1024]).await;
    assert_json_error(&far_over, 413, "value_too_large");
    let absent = call(&node, "GET", "/buckets/b/keys/over", b"").await;
    assert_json_error(&absent, 404, "not_found");
}

#[tokio::test]
async fn unknown_route_answers_404_with_a_json_error() {
    let Some(node) = start(&[]).await else { return };
    let resp = call(&node, "GET", "/no/such/endpoint", b"").await;
    assert_json_error(&resp, 404, "no_route");
}

#[tokio::test]
async fn wrong_method_answers_405_with_a_json_error() {
    let Some(node) = start(&[]).await else { return };
    let resp = call(&node, "POST", "/buckets/b/keys/k", b"v").await;
    assert_json_error(&resp, 405, "method_not_allowed");
    let allow = resp.header("allow").unwrap_or_default();
    assert!(allow.contains("PUT"), "Allow: {allow:?}");
}

#[tokio::test]
async fn key_that_is_not_utf8_answers_400_with_a_json_error() {
    let Some(node) = start(&[]).await else { return };
    let resp = call(&node, "PUT", "/buckets/b/keys/%FF%FE", b"v").await;
    assert_json_error(&resp, 400, "invalid_path");
}

#[tokio::test]
async fn percent_encoded_key_is_the_decoded_key_over_resp() {
    let Some(node) = start(&[]).await else { return };
    put(&node, "default", "a%20b%2Fc%3F", b"v").await;
    let mut c = node.conn().await.unwrap();
    let seen: Option<String> = resp_cmd(&mut c, &["GET", "a b/c?"]).await;
    assert_eq!(seen.as_deref(), Some("v"));
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_resp_and_storage_series() {
    let Some(node) = start(&[]).await else { return };
    // The open connection keeps colony_resp_connections above zero.
    let mut c = node.conn().await.unwrap();
    for i in 0..5 {
        let () = resp_cmd(&mut c, &["SET", &format!("m{i}"), "v"]).await;
    }
    let _: Option<String> = resp_cmd(&mut c, &["GET", "m0"]).await;

    let resp = call(&node, "GET", "/metrics", b"").await;
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{:?}",
        resp.headers
    );
    let text = resp.text();
    for name in [
        "colony_resp_commands_total",
        "colony_resp_command_duration_seconds_bucket",
        "colony_kv_keys",
        "colony_storage_disk_bytes",
        "colony_storage_memtables_freed_total",
        "colony_resp_connections",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} missing from /metrics:\n{text}"
        );
    }
    assert!(
        text.contains("# TYPE colony_resp_commands_total counter"),
        "{text}"
    );
    let sets = sample(&text, "colony_resp_commands_total{", "cmd=\"set\"");
    assert!(sets >= 5.0, "SET counted {sets} times:\n{text}");
    let keys = sample(&text, "colony_kv_keys{", "bucket=\"default\"");
    assert_eq!(keys, 5.0, "{text}");
    let connections = sample(&text, "colony_resp_connections", "");
    assert!(connections >= 1.0, "{text}");
}

#[tokio::test]
async fn key_count_metric_drops_to_zero_when_a_bucket_empties() {
    let Some(node) = start(&[]).await else { return };
    put(&node, "brief", "only", b"v").await;
    let text = call(&node, "GET", "/metrics", b"").await.text();
    assert_eq!(sample(&text, "colony_kv_keys{", "bucket=\"brief\""), 1.0);
    let del = call(&node, "DELETE", "/buckets/brief/keys/only", b"").await;
    assert_eq!(del.status, 204);
    let text = call(&node, "GET", "/metrics", b"").await.text();
    assert_eq!(sample(&text, "colony_kv_keys{", "bucket=\"brief\""), 0.0);
}

#[tokio::test]
async fn store_reads_count_the_state_cache_misses_only() {
    let Some(node) = start(&[]).await else { return };
    let mut c = node.conn().await.unwrap();
    // A new key's first write reads the store (to find nothing there), and
    // so does each read of a key that does not exist: 21 reads in all.
    let () = resp_cmd(&mut c, &["SET", "hot", "v"]).await;
    for i in 0..20 {
        let none: Option<String> = resp_cmd(&mut c, &["GET", &format!("absent{i}")]).await;
        assert_eq!(none, None);
    }
    // Published at the vnodes' next tick (every 100 ms).
    let reads = || async {
        let text = call(&node, "GET", "/metrics", b"").await.text();
        text.lines()
            .filter(|l| l.starts_with("colony_kv_store_reads_total"))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut before = 0.0;
    for _ in 0..50 {
        before = reads().await;
        if before >= 21.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(before >= 21.0, "{before} store reads counted, 21 made");
    // A key the cache holds is read without the store.
    for _ in 0..50 {
        let v: Option<String> = resp_cmd(&mut c, &["GET", "hot"]).await;
        assert_eq!(v.as_deref(), Some("v"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = reads().await;
    assert!(
        after - before < 10.0,
        "50 cached reads counted as {} store reads",
        after - before
    );
}

/// The value of the first sample line starting with `prefix` and containing `label`.
fn sample(text: &str, prefix: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix}…{label} in:\n{text}"))
}

#[tokio::test]
async fn node_endpoint_describes_the_node_its_ring_and_its_keys() {
    let Some(node) = start(&[]).await else { return };
    for key in ["a", "b", "c"] {
        put(&node, "default", key, b"v").await;
    }
    let resp = call(&node, "GET", "/api/v1/node", b"").await;
    assert_eq!(resp.status, 200);
    let body = json(&resp);
    assert_eq!(body["node"], node.name(), "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    assert!(body["uptime_seconds"].is_u64(), "{body}");
    assert_eq!(body["ring"]["size"], 64, "{body}");
    let partitions: BTreeSet<u64> = body["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    assert_eq!(partitions, (0..64).collect(), "{body}");
    assert_eq!(body["keys"], 3, "{body}");
}

#[tokio::test]
async fn bucket_props_set_by_put_are_read_back_with_the_defaults_and_survive_a_restart() {
    let Some(mut node) = start(&["--n-val", "3"]).await else {
        return;
    };
    let path = "/api/v1/buckets/photos/props";
    let defaults = call(&node, "GET", path, b"").await;
    assert_eq!(defaults.status, 200, "{:?}", defaults.text());
    let want =
        serde_json::json!({"n_val": 3, "r": "quorum", "w": "quorum", "pr": 0, "pw": 0, "dw": 0});
    assert_eq!(json(&defaults), want);

    let put = call(&node, "PUT", path, br#"{"n_val":2,"w":"all","r":1}"#).await;
    assert_eq!(put.status, 200, "{:?}", put.text());
    let want = serde_json::json!({"n_val": 2, "r": 1, "w": "all", "pr": 0, "pw": 0, "dw": 0});
    assert_eq!(json(&put), want);
    assert_eq!(json(&call(&node, "GET", path, b"").await), want);
    // Only the bucket named changed.
    let other = call(&node, "GET", "/api/v1/buckets/default/props", b"").await;
    assert_eq!(json(&other)["w"], "quorum");
    // `default` (or null) gives a property back to the defaults.
    let put = call(&node, "PUT", path, br#"{"n_val":"default","w":null}"#).await;
    assert_eq!(json(&put)["n_val"], 3);
    assert_eq!(json(&put)["w"], "quorum");
    assert_eq!(json(&put)["r"], 1);

    node.restart().await.unwrap();
    assert_eq!(json(&call(&node, "GET", path, b"").await)["r"], 1);
}

#[tokio::test]
async fn bad_bucket_props_answer_400_saying_what_is_wrong() {
    let Some(node) = start(&["--n-val", "3"]).await else {
        return;
    };
    let path = "/api/v1/buckets/b/props";
    for (body, says) in [
        (
            &br#"{"n_val":5}"#[..],
            "exceeds the cluster's n_val of 3 (its --n-val",
        ),
        (br#"{"n_val":2,"w":3}"#, "w=3 exceeds n_val=2"),
        (
            br#"{"w":"most"}"#,
            "w=\"most\" is not one, quorum, all, default",
        ),
        (br#"{"colour":"red"}"#, "unknown property \"colour\""),
        (br#"{"r":0}"#, "at least one replica"),
        (b"{}", "no properties given"),
        (b"n_val=3", "expected a JSON object"),
    ] {
        let resp = call(&node, "PUT", path, body).await;
        assert_json_error(&resp, 400, "invalid_props");
        let msg = json(&resp)["error"]["message"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.contains(says),
            "{}: {msg}",
            String::from_utf8_lossy(body)
        );
    }
    // Nothing refused was kept.
    let got = json(&call(&node, "GET", path, b"").await);
    assert_eq!(
        (got["n_val"].as_u64(), got["w"].as_str()),
        (Some(3), Some("quorum"))
    );
}

#[tokio::test]
async fn puts_from_a_stale_context_become_siblings_and_the_merged_context_resolves_them() {
    let Some(node) = start(&[]).await else { return };
    put(&node, "docs", "k", b"v0").await;
    let first = call(&node, "GET", "/buckets/docs/keys/k", b"").await;
    assert_eq!(first.status, 200);
    let ctx0 = first.header("x-colony-context").unwrap().to_string();
    // Two writers both start from v0.
    for v in ["from-a", "from-b"] {
        let r = http_with(
            &node,
            "PUT",
            "/buckets/docs/keys/k",
            v.as_bytes(),
            &[("x-colony-context", &ctx0)],
        )
        .await;
        assert_eq!(r.status, 204, "{:?}", r.text());
    }
    let both = call(&node, "GET", "/buckets/docs/keys/k", b"").await;
    assert_eq!(both.status, 300, "{:?}", both.text());
    let body = json(&both);
    let mut values: Vec<&str> = body["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["from-a", "from-b"]);
    // A write carrying the merged context resolves them.
    let ctx1 = both.header("x-colony-context").unwrap().to_string();
    let r = http_with(
        &node,
        "PUT",
        "/buckets/docs/keys/k",
        b"merged",
        &[("x-colony-context", &ctx1)],
    )
    .await;
    assert_eq!(r.status, 204);
    let one = call(&node, "GET", "/buckets/docs/keys/k", b"").await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body, b"merged".to_vec());
    // A context that is not one we issued is refused, and nothing changes.
    let bad = http_with(
        &node,
        "PUT",
        "/buckets/docs/keys/k",
        b"x",
        &[("x-colony-context", "zz")],
    )
    .await;
    assert_json_error(&bad, 400, "invalid_context");
    let del = http_with(
        &node,
        "DELETE",
        "/buckets/docs/keys/k",
        b"",
        &[("x-colony-context", &ctx0)],
    )
    .await;
    assert_eq!(del.status, 204);
    // The delete saw only v0, which is gone already: "merged" survives.
    let still = call(&node, "GET", "/buckets/docs/keys/k", b"").await;
    assert_eq!(still.body, b"merged".to_vec());
}
