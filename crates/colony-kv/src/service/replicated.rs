//! The production transport of the replication flows (which live in
//! `coordinator`): this node's vnodes directly, other nodes' over cluster
//! RPC.

use super::{KvRpc, Router, KV_SERVICE};
use crate::coordinator::{CallFailed, ReplicaTransport, REPLICA_TIMEOUT};
use crate::vnode::{KvRequest as Req, KvResponse};
use crate::KvError;
use colony_core::rpc::RpcError;
use colony_core::{NodeId, PartitionId};
use std::sync::Arc;
use tokio::sync::Semaphore;

impl ReplicaTransport for Router {
    fn me(&self) -> &NodeId {
        &self.0.me
    }

    async fn call(
        &self,
        node: &NodeId,
        partition: PartitionId,
        req: Req,
    ) -> Result<KvResponse, CallFailed> {
        self.call_node(node, partition, req).await
    }

    fn repair_budget(&self) -> &Arc<Semaphore> {
        &self.0.repairs
    }
}

impl Router {
    /// Send `req` to `node`'s vnode for `partition` (this node's directly).
    async fn call_node(
        &self,
        node: &NodeId,
        partition: PartitionId,
        req: Req,
    ) -> Result<KvResponse, CallFailed> {
        let failed = CallFailed::new;
        if *node == self.0.me {
            let h = self.local(partition).map_err(|e| failed(e, false))?;
            return match h.call(req).await {
                Ok(KvResponse::Failed(e)) => Err(failed(e, false)),
                Ok(r) => Ok(r),
                Err(e) => Err(failed(e.into(), true)),
            };
        }
        let cluster = self
            .0
            .cluster
            .get()
            .ok_or_else(|| failed(KvError::Unavailable("no cluster".into()), false))?;
        let body = colony_core::cluster::msg::encode(&KvRpc { partition, req });
        match cluster
            .call_within(node, KV_SERVICE, body, REPLICA_TIMEOUT)
            .await
        {
            Ok(reply) => match colony_core::cluster::msg::decode::<KvResponse>(&reply) {
                Ok(KvResponse::Failed(e)) => Err(failed(e, false)),
                Ok(r) => Ok(r),
                Err(e) => Err(failed(KvError::Storage(e), true)),
            },
            Err(RpcError::Timeout) => Err(failed(
                KvError::Unavailable(format!("{node} did not answer in time")),
                true,
            )),
            Err(e) => {
                let sent = !matches!(
                    e,
                    RpcError::Unreachable(_) | RpcError::Overloaded | RpcError::AuthFailed(_)
                );
                Err(failed(
                    KvError::Unavailable(format!("{node} is unreachable: {e}")),
                    sent,
                ))
            }
        }
    }

    /// Send `req` to `node`'s vnode for `partition`; errors as KvError.
    pub(super) async fn call_node_err(
        &self,
        node: &NodeId,
        partition: PartitionId,
        req: Req,
    ) -> Result<KvResponse, KvError> {
        self.call_node(node, partition, req)
            .await
            .map_err(|f| f.err)
    }
}
