//! The node's one RPC handler: cluster control and handoff itself, every
//! other service to the handler registered for it.

use super::msg::{self, Control, Handoff, SVC_CONTROL, SVC_HANDOFF};
use super::{handoff, Inner};
use crate::rpc::{HandlerFuture, RpcError, RpcHandler, ServiceId};
use crate::NodeId;
use bytes::Bytes;
use std::sync::{Arc, Weak};

pub(super) struct Dispatch(pub(super) Weak<Inner>);

impl RpcHandler for Dispatch {
    /// Each registered service gets its share of a batch as one batch (in
    /// arrival order); cluster control and handoff go one by one.
    fn handle_many(&self, from: &NodeId, requests: Vec<(ServiceId, Bytes)>) -> Vec<HandlerFuture> {
        let services = self.0.upgrade().map(|inner| {
            inner
                .services
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        });
        let registered = |service: ServiceId| match service {
            SVC_CONTROL | SVC_HANDOFF => None,
            other => services.as_ref()?.get(&other).cloned(),
        };
        share_out(from, requests, registered, |service, body| {
            self.handle(from.clone(), service, body)
        })
    }

    fn handle(&self, from: NodeId, service: ServiceId, body: Bytes) -> HandlerFuture {
        let inner = self.0.upgrade();
        Box::pin(async move {
            let inner = inner.ok_or(RpcError::Closed)?;
            match service {
                SVC_CONTROL => {
                    let m: Control = msg::decode(&body).map_err(RpcError::Protocol)?;
                    Ok(msg::encode(&inner.control(from, m).await))
                }
                SVC_HANDOFF => {
                    let m: Handoff = msg::decode(&body).map_err(RpcError::Protocol)?;
                    Ok(msg::encode(&handoff::receive(&*inner, m).await))
                }
                other => {
                    let handler = inner
                        .services
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&other)
                        .cloned();
                    match handler {
                        Some(h) => h.handle(from, other, body).await,
                        None => Err(RpcError::Remote(format!("no service {other} here"))),
                    }
                }
            }
        })
    }
}

/// Hand each handler `registered` names its share of `requests` as one
/// batch (in arrival order), and the others to `single` one by one; the
/// futures come back in the order of `requests`.
fn share_out(
    from: &NodeId,
    requests: Vec<(ServiceId, Bytes)>,
    registered: impl Fn(ServiceId) -> Option<Arc<dyn RpcHandler>>,
    single: impl Fn(ServiceId, Bytes) -> HandlerFuture,
) -> Vec<HandlerFuture> {
    let mut futures: Vec<Option<HandlerFuture>> = Vec::with_capacity(requests.len());
    // Per handler: the places of its requests, and the requests.
    type Share = (Arc<dyn RpcHandler>, Vec<usize>, Vec<(ServiceId, Bytes)>);
    let mut shares: Vec<Share> = Vec::new();
    for (service, body) in requests {
        let Some(handler) = registered(service) else {
            futures.push(Some(single(service, body)));
            continue;
        };
        // A batch names few services: a linear search beats a map.
        let i = match shares.iter().position(|(h, ..)| Arc::ptr_eq(h, &handler)) {
            Some(i) => i,
            None => {
                shares.push((handler, Vec::new(), Vec::new()));
                shares.len() - 1
            }
        };
        shares[i].1.push(futures.len());
        shares[i].2.push((service, body));
        futures.push(None);
    }
    for (handler, places, share) in shares {
        for (place, future) in places.into_iter().zip(handler.handle_many(from, share)) {
            futures[place] = Some(future);
        }
    }
    futures
        .into_iter()
        .map(|f| {
            f.unwrap_or_else(|| {
                Box::pin(std::future::ready(Err(RpcError::Remote(
                    "the service gave no answer".into(),
                ))))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Answers with its name and the body; records each batch's bodies.
    struct Named {
        name: &'static str,
        batches: Mutex<Vec<Vec<Bytes>>>,
    }

    impl RpcHandler for Named {
        fn handle_many(&self, _: &NodeId, requests: Vec<(ServiceId, Bytes)>) -> Vec<HandlerFuture> {
            let bodies: Vec<Bytes> = requests.iter().map(|(_, b)| b.clone()).collect();
            self.batches.lock().unwrap().push(bodies);
            requests
                .into_iter()
                .map(|(s, b)| self.handle(NodeId::new("x"), s, b))
                .collect()
        }

        fn handle(&self, _: NodeId, _: ServiceId, body: Bytes) -> HandlerFuture {
            let answer = format!("{}:{}", self.name, String::from_utf8_lossy(&body));
            Box::pin(std::future::ready(Ok(Bytes::from(answer))))
        }
    }

    #[tokio::test]
    async fn each_service_gets_its_share_as_one_batch_and_answers_keep_their_order() {
        let kv = Arc::new(Named {
            name: "kv",
            batches: Mutex::default(),
        });
        let aae = Arc::new(Named {
            name: "aae",
            batches: Mutex::default(),
        });
        let (kv_h, aae_h): (Arc<dyn RpcHandler>, Arc<dyn RpcHandler>) = (kv.clone(), aae.clone());
        let registered = |s: ServiceId| match s {
            10 => Some(kv_h.clone()),
            11 => Some(aae_h.clone()),
            _ => None,
        };
        let single = |s: ServiceId, b: Bytes| -> HandlerFuture {
            let answer = format!("single{s}:{}", String::from_utf8_lossy(&b));
            Box::pin(std::future::ready(Ok(Bytes::from(answer))))
        };
        let requests: Vec<(ServiceId, Bytes)> = [
            (10, "a"),
            (1, "b"),
            (11, "c"),
            (10, "d"),
            (10, "e"),
            (11, "f"),
        ]
        .into_iter()
        .map(|(s, b)| (s, Bytes::from_static(b.as_bytes())))
        .collect();
        let futures = share_out(&NodeId::new("peer"), requests, registered, single);
        let mut answers = Vec::new();
        for f in futures {
            answers.push(String::from_utf8(f.await.unwrap().to_vec()).unwrap());
        }
        assert_eq!(
            answers,
            ["kv:a", "single1:b", "aae:c", "kv:d", "kv:e", "aae:f"]
        );
        let bodies = |h: &Named| h.batches.lock().unwrap().clone();
        assert_eq!(bodies(&kv), vec![vec!["a", "d", "e"]]);
        assert_eq!(bodies(&aae), vec![vec!["c", "f"]]);
    }
}
