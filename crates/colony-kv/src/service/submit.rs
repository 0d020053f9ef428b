//! Submitted key operations: the future a connection awaits, and the
//! per-connection order of requests on one key.

use super::{unexpected, Router};
use crate::coordinator::KeyReq;
use crate::vnode::KvResponse;
use crate::vnode::KvVnode;
use crate::{KvError, Reply};
use bytes::Bytes;
use colony_core::vnode::{ReplyFuture, VnodeBatch, VnodeHandle};
use colony_core::NodeId;
use futures::future::Shared;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Orders one client's pipelined requests on the same key while requests
/// on different keys run at once. A connection keeps one and clears it
/// whenever everything submitted so far has been answered.
///
/// While *gathering*, requests for this node's own vnodes are not sent at
/// once but gathered per vnode, and [`send_gathered`](Self::send_gathered)
/// sends each vnode its share in one batch (one lock, one commit, one
/// barrier for a whole pipeline). Their replies come only after that: a
/// connection gathers while it parses a pipeline and sends before it awaits
/// any reply.
#[derive(Default)]
pub struct Pipeline {
    pub(super) last: HashMap<(Bytes, Bytes), Shared<futures::future::BoxFuture<'static, ()>>>,
    pub(super) gathering: bool,
    /// Requests gathered, per vnode, in the order they were submitted.
    pub(super) gathered: Vec<VnodeBatch<KvVnode>>,
}

impl Pipeline {
    /// Forget the order of requests answered (all must be) and stop
    /// gathering.
    pub fn clear(&mut self) {
        self.send_gathered();
        self.gathering = false;
        self.last.clear();
    }

    /// Gather local requests from now on, until [`clear`](Self::clear).
    pub fn gather(&mut self) {
        self.gathering = true;
    }

    /// Send every request gathered so far.
    pub fn send_gathered(&mut self) {
        for batch in self.gathered.drain(..) {
            batch.send();
        }
    }

    /// The batch gathering requests for `handle`'s vnode.
    pub(super) fn batch_for(&mut self, handle: &VnodeHandle<KvVnode>) -> &mut VnodeBatch<KvVnode> {
        let partition = handle.partition();
        // A pipeline touches few vnodes: a linear search beats a map.
        let i = match self
            .gathered
            .iter()
            .position(|b| b.partition() == partition)
        {
            Some(i) => i,
            None => {
                self.gathered.push(handle.batch());
                self.gathered.len() - 1
            }
        };
        &mut self.gathered[i]
    }
}

/// A submitted key operation's reply, to await.
// `Sent` is the common case and lives only until the reply is written:
// boxing it would cost an allocation per request to save a few bytes.
#[allow(clippy::large_enum_variant)]
pub enum Submitted {
    /// Answered by a local vnode (inline), or in its mailbox; the request
    /// is kept to re-route it if the partition turns out to have moved.
    /// (Boxed: the future is moved several times on its way to the
    /// caller, and the copy would cost more than the allocation.)
    Sent(ReplyFuture<KvResponse>, Option<Box<(Router, KeyReq)>>),
    /// Going to (or retrying at) another node.
    Routed(Pin<Box<dyn Future<Output = Result<KvResponse, KvError>> + Send>>),
    Failed(Option<KvError>),
}

impl Submitted {
    /// Whether the reply needs this future polled to make progress (it
    /// talks to other nodes). The others are answered by a local vnode
    /// whatever the caller does, so a caller may leave them unpolled until
    /// it wants their reply (a retry elsewhere, after the partition moved,
    /// starts when it polls).
    pub fn is_routed(&self) -> bool {
        matches!(self, Submitted::Routed(_))
    }

    pub(super) fn routed(
        f: impl Future<Output = Result<KvResponse, KvError>> + Send + 'static,
    ) -> Self {
        Self::Routed(Box::pin(f))
    }
}

fn to_reply(r: Result<KvResponse, KvError>) -> Reply {
    match r {
        Ok(KvResponse::Reply(reply)) => reply,
        Ok(KvResponse::Failed(e)) | Err(e) => Reply::Error(e),
        Ok(other) => Reply::Error(unexpected(&other)),
    }
}

impl Future for Submitted {
    type Output = Reply;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let this = self.get_mut();
        match this {
            Submitted::Failed(e) => Poll::Ready(Reply::Error(
                e.take()
                    .unwrap_or(KvError::Storage("reply polled twice".into())),
            )),
            Submitted::Sent(f, retry) => {
                let r = match Pin::new(f).poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
                let hint = match &r {
                    Ok(KvResponse::Failed(KvError::NotOwner(n))) => Some(NodeId::new(n.clone())),
                    Ok(KvResponse::Failed(KvError::TryAgain(_))) => None,
                    _ => return Poll::Ready(to_reply(r.map_err(KvError::from))),
                };
                let _ = hint;
                match retry.take().map(|b| *b) {
                    Some((router, kr)) => {
                        let mut routed = Box::pin(router.replicated(kr));
                        let polled = routed.as_mut().poll(cx);
                        *this = Submitted::Routed(routed);
                        polled.map(to_reply)
                    }
                    None => Poll::Ready(to_reply(r.map_err(KvError::from))),
                }
            }
            Submitted::Routed(f) => f.as_mut().poll(cx).map(to_reply),
        }
    }
}
