//! The KV service's RPC endpoint: requests other nodes' coordinators send
//! to this node's vnodes.

use super::{Router, Target};
use crate::coordinator;
use crate::vnode::KvRequest as Req;
use crate::vnode::{KvRequest, KvResponse, KvVnode};
use crate::KvError;
use bytes::Bytes;
use colony_core::rpc::{HandlerFuture, RpcError, RpcHandler, ServiceId};
use colony_core::vnode::VnodeBatch;
use colony_core::{NodeId, PartitionId};
use std::future::Future;
use std::pin::Pin;

/// A request forwarded to the node owning its partition.
#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct KvRpc {
    pub(super) partition: PartitionId,
    pub(super) req: KvRequest,
}

/// Serves requests other nodes forward to this one.
pub(super) struct KvRpcHandler(pub(super) Router);

impl RpcHandler for KvRpcHandler {
    /// Replica-level writes that arrived together go to each vnode in one
    /// batch (one lock, one commit, one flush wait for its share), as a
    /// pipelined client's do; reads and the rest are served one by one.
    fn handle_many(&self, from: &NodeId, requests: Vec<(ServiceId, Bytes)>) -> Vec<HandlerFuture> {
        let router = &self.0;
        let ring = router.ring();
        let shared = router.0.shared.all();
        let mut batches: Vec<VnodeBatch<KvVnode>> = Vec::new();
        let mut futures = Vec::with_capacity(requests.len());
        for (service, body) in requests {
            let decoded = colony_core::cluster::msg::decode::<KvRpc>(&body);
            let Ok(KvRpc { partition, req }) = decoded else {
                futures.push(self.handle(from.clone(), service, body));
                continue;
            };
            if !coordinator::is_replica_request(&req) {
                futures.push(self.handle(from.clone(), service, body));
                continue;
            }
            // A read is served on its own: it stores nothing, so a batch
            // saves it no commit, and a batch of reads held the vnode long
            // enough to send this node's own clients to its mailbox
            // (BENCHMARKS.md, session 17).
            if matches!(req, Req::Fetch { .. }) {
                let router = router.clone();
                futures.push(Box::pin(async move {
                    Ok(encode_response(
                        &router.replica_request(partition, req).await,
                    ))
                }));
                continue;
            }
            let refused = match &ring {
                Some(ring) => coordinator::refusal(ring, &router.0.me, partition, &req, &shared),
                None if req.is_aae() => Some(KvError::TryAgain(
                    "this node has not joined the cluster yet".into(),
                )),
                None => None,
            };
            let handle = match (refused, router.local(partition)) {
                (Some(e), _) | (None, Err(e)) => {
                    futures.push(Box::pin(std::future::ready(Ok(encode_response(
                        &KvResponse::Failed(e),
                    )))));
                    continue;
                }
                (None, Ok(handle)) => handle,
            };
            // A batch touches few vnodes: a linear search beats a map.
            let i = match batches.iter().position(|b| b.partition() == partition) {
                Some(i) => i,
                None => {
                    batches.push(handle.batch());
                    batches.len() - 1
                }
            };
            let reply = batches[i].push(req);
            futures.push(Box::pin(async move {
                let resp = match reply.await {
                    Ok(r) => r,
                    Err(e) => KvResponse::Failed(e.into()),
                };
                Ok(encode_response(&resp))
            }));
        }
        for batch in batches {
            batch.send();
        }
        futures
    }

    fn handle(
        &self,
        _from: NodeId,
        _service: ServiceId,
        body: Bytes,
    ) -> Pin<Box<dyn Future<Output = Result<Bytes, RpcError>> + Send>> {
        let router = self.0.clone();
        Box::pin(async move {
            let KvRpc { partition, req } =
                colony_core::cluster::msg::decode(&body).map_err(RpcError::Protocol)?;
            if !req_is_client(&req) {
                return Err(RpcError::Protocol("not a client request".into()));
            }
            if coordinator::is_replica_request(&req) {
                let resp = router.replica_request(partition, req).await;
                return Ok(colony_core::cluster::msg::encode(&resp));
            }
            // Partition-wide requests are served by any replica of the
            // range; others are pointed at its owner.
            let resp = match router.holders(partition) {
                Ok(holders) if holders.iter().any(|h| matches!(h, Target::Local)) => {
                    match router.local(partition) {
                        Ok(h) => match h.call(req).await {
                            Ok(r) => r,
                            Err(e) => KvResponse::Failed(e.into()),
                        },
                        Err(e) => KvResponse::Failed(e),
                    }
                }
                Ok(holders) => match holders.first() {
                    Some(Target::Remote(owner)) => {
                        KvResponse::Failed(KvError::NotOwner(owner.to_string()))
                    }
                    _ => KvResponse::Failed(KvError::TryAgain(format!(
                        "no replica of partition {partition} is known here"
                    ))),
                },
                Err(e) => KvResponse::Failed(e),
            };
            Ok(colony_core::cluster::msg::encode(&resp))
        })
    }
}

impl Router {
    /// Serve a replica-level request (one [`coordinator::is_replica_request`]
    /// accepts, from another node's coordinator) here. A write is refused
    /// for a partition this node neither replicates nor stands in for.
    async fn replica_request(&self, partition: PartitionId, req: KvRequest) -> KvResponse {
        match self.ring() {
            Some(ring) => {
                let shared = self.0.shared.all();
                if let Some(e) = coordinator::refusal(&ring, &self.0.me, partition, &req, &shared) {
                    return KvResponse::Failed(e);
                }
            }
            // Not a member yet: no replica of anything.
            None if req.is_aae() => {
                let e = KvError::TryAgain("this node has not joined the cluster yet".into());
                return KvResponse::Failed(e);
            }
            None => {}
        }
        match self.local(partition) {
            Ok(h) => match h.call(req).await {
                Ok(r) => r,
                Err(e) => KvResponse::Failed(e.into()),
            },
            Err(e) => KvResponse::Failed(e),
        }
    }
}

fn encode_response(resp: &KvResponse) -> Bytes {
    colony_core::cluster::msg::encode(resp)
}

fn req_is_client(req: &KvRequest) -> bool {
    matches!(
        req,
        Req::Key { .. }
            | Req::Lead { .. }
            | Req::Fetch { .. }
            | Req::Merge { .. }
            | Req::Reap { .. }
            | Req::Scan { .. }
            | Req::Count
            | Req::Flush { .. }
            | Req::RandomKey { .. }
            | Req::Size
    ) || req.is_aae()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crdt::Doc;
    use crate::object::Value;
    use crate::{KeyOp, KvConfig, KvService, SetCond, SetExpire};
    use colony_core::cluster::msg;
    use std::sync::Arc;

    fn set(value: &'static str) -> KeyOp {
        KeyOp::Set {
            value: Bytes::from_static(value.as_bytes()),
            expire: SetExpire::Clear,
            cond: SetCond::Always,
            get: false,
        }
    }

    /// A node alone: its RPC handler given requests that arrived together.
    #[tokio::test]
    async fn a_batch_of_replica_requests_is_served_in_order_per_key_and_bad_ones_alone() {
        let dir = tempfile::tempdir().unwrap();
        let config = KvConfig::small(NodeId::new("test"), dir.path().to_path_buf());
        let kv = KvService::start(config, Arc::new(crate::SystemClock)).unwrap();
        let handler = KvRpcHandler(kv.router.clone());
        let bucket = Bytes::from_static(b"default");
        // Two keys in different partitions.
        let keys: Vec<(Bytes, PartitionId, u64)> = (0..100)
            .map(|i| Bytes::from(format!("k{i}")))
            .map(|k| {
                let (p, h) = kv.partitioner.locate(&bucket, &k);
                (k, p, h)
            })
            .fold(Vec::new(), |mut found, (k, p, h)| {
                if found.len() < 2 && found.iter().all(|(_, q, _)| *q != p) {
                    found.push((k, p, h));
                }
                found
            });
        let lead = |(key, partition, hash): &(Bytes, PartitionId, u64), v| KvRpc {
            partition: *partition,
            req: Req::Lead {
                bucket: bucket.clone(),
                key: key.clone(),
                hash: *hash,
                op: set(v),
                hints: Vec::new(),
            },
        };
        let fetch = |(key, partition, hash): &(Bytes, PartitionId, u64)| KvRpc {
            partition: *partition,
            req: Req::Fetch {
                bucket: bucket.clone(),
                key: key.clone(),
                hash: *hash,
            },
        };
        let (a, b) = (&keys[0], &keys[1]);
        let count = KvRpc {
            partition: a.1,
            req: Req::Count,
        };
        let requests: Vec<(ServiceId, Bytes)> = vec![
            msg::encode(&lead(a, "one")),
            msg::encode(&lead(b, "other")),
            msg::encode(&lead(a, "two")),
            Bytes::from_static(b"\xff\xff not a request"),
            msg::encode(&fetch(a)),
            msg::encode(&count),
            msg::encode(&fetch(b)),
        ]
        .into_iter()
        .map(|body| (1, body))
        .collect();
        let futures = handler.handle_many(&NodeId::new("peer"), requests);
        assert_eq!(futures.len(), 7);
        // The replica writes were handed to their vnodes by handle_many
        // itself, in one go, before any answer is awaited.
        assert_eq!(
            kv.call(&bucket, a.0.clone(), KeyOp::Get).await,
            crate::Reply::Bulk(Bytes::from_static(b"two"))
        );
        let mut answers = Vec::new();
        for f in futures {
            answers.push(
                f.await
                    .map(|body| msg::decode::<KvResponse>(&body).unwrap()),
            );
        }
        let value = |answer: &Result<KvResponse, RpcError>| match answer {
            Ok(KvResponse::Doc(Some(doc))) => match Doc::decode(doc).unwrap().view() {
                Some(o) => match o.value {
                    Value::Str(s) => s,
                    other => panic!("{other:?}"),
                },
                None => panic!("no value"),
            },
            other => panic!("{other:?}"),
        };
        for i in [0, 1, 2] {
            assert!(
                matches!(answers[i], Ok(KvResponse::Led { .. })),
                "{:?}",
                answers[i]
            );
        }
        assert!(
            matches!(&answers[3], Err(RpcError::Protocol(_))),
            "{:?}",
            answers[3]
        );
        // The fetch after both writes of its key, in the same batch, sees
        // the later one.
        assert_eq!(value(&answers[4]), Bytes::from_static(b"two"));
        assert!(
            matches!(&answers[5], Ok(KvResponse::Counts(_))),
            "{:?}",
            answers[5]
        );
        assert_eq!(value(&answers[6]), Bytes::from_static(b"other"));
        kv.shutdown().await;
    }
}
