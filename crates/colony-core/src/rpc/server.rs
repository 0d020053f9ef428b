//! The serving side: accept peers, authenticate them, and handle their
//! requests, at most `max_inflight_per_conn` per connection (beyond that a
//! request is answered `Overloaded` at once). The requests that arrived
//! together (every whole frame already read when one is taken) go to the
//! handler as one batch and run on one task: a peer that pipelines many
//! small requests costs one task and one hand-over per batch, not per
//! request.

use super::error::{count_error, encode_error};
use super::frame::{Frame, FrameKind, FrameReader, ReadEnd, HEADER_LEN};
use super::writer::{run_writer, WriterEnd};
use super::{handshake, ConnectionGauge, Rpc, RpcError, RpcHandler, ServiceId};
use crate::NodeId;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// Pause after a failed `accept` (out of file descriptors, say), so that the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accept and serve until `shutdown`; then close every connection and return
/// once they are all closed (and the listener with them).
pub(crate) async fn accept_loop(rpc: Arc<Rpc>, listener: TcpListener, shutdown: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = conns.join_next() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    conns.spawn(serve_connection(rpc.clone(), stream, remote, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "rpc accept failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                    }
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn serve_connection(
    rpc: Arc<Rpc>,
    stream: TcpStream,
    remote: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let config = &rpc.config;
    let (read, mut write) = stream.into_split();
    let handshake = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = tokio::time::timeout(
            config.connect_timeout,
            handshake::server(config, remote, read, &mut write),
        ) => r,
    };
    let established = match handshake {
        Ok(Ok(established)) => established,
        Ok(Err(e)) => {
            count_error(&e);
            tracing::warn!(%remote, error = %e, "rpc handshake refused; closing the connection");
            return;
        }
        Err(_) => {
            count_error(&RpcError::Timeout);
            tracing::warn!(%remote, timeout = ?config.connect_timeout, "rpc handshake timed out; closing the connection");
            return;
        }
    };
    let _gauge = ConnectionGauge::open();
    tracing::debug!(%remote, node = %established.peer, "rpc peer connected");

    let stop = shutdown.child_token();
    let (tx, rx) = mpsc::channel(config.queue_depth.max(1));
    let writer_stop = stop.clone();
    let batch = config.queue_depth;
    let writer = tokio::spawn(async move {
        let end = run_writer(write, rx, writer_stop.clone(), batch).await;
        if let WriterEnd::Failed(e) = &end {
            tracing::debug!(%remote, error = %e, "rpc connection failed while writing");
        }
        writer_stop.cancel();
    });
    let mut conn = ServerConn {
        rpc: rpc.clone(),
        peer: established.peer,
        remote,
        tx,
        handlers: JoinSet::new(),
        running: HashMap::new(),
        in_flight: Arc::new(AtomicUsize::new(0)),
    };
    if let Some(reason) = conn.serve(established.reader, &stop).await {
        conn.close_with(reason, writer, &shutdown, config.connect_timeout)
            .await;
    }
    // Stops the writer if it is still running; dropping both halves closes
    // the socket, and dropping the handler set aborts handlers still running.
    stop.cancel();
}

/// One authenticated connection being served.
struct ServerConn {
    rpc: Arc<Rpc>,
    peer: NodeId,
    remote: SocketAddr,
    tx: mpsc::Sender<Frame>,
    /// Batches running for this connection; aborted when it closes.
    handlers: JoinSet<()>,
    /// The requests (id, service) each running batch answers.
    running: HashMap<Id, Vec<(u64, u8)>>,
    /// Requests taken and not answered yet, over all batches.
    in_flight: Arc<AtomicUsize>,
}

/// Why a connection is being closed on purpose, and its reading half, which
/// must drain until the peer hangs up.
struct Closing {
    error: RpcError,
    reader: FrameReader<OwnedReadHalf>,
}

impl ServerConn {
    /// Serve requests until the connection ends. Returns `Some` when the peer
    /// broke the protocol and should be told why before we close.
    async fn serve(
        &mut self,
        mut reader: FrameReader<OwnedReadHalf>,
        stop: &CancellationToken,
    ) -> Option<Closing> {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return None,
                Some(joined) = self.handlers.join_next_with_id() => self.on_joined(joined).await,
                frame = reader.next() => match frame {
                    Ok(frame) if frame.kind == FrameKind::Request => {
                        if let Some(error) = self.on_requests(frame, &mut reader).await {
                            return Some(Closing { error, reader });
                        }
                    }
                    Ok(frame) => {
                        let error = RpcError::Protocol(format!("unexpected {:?} frame", frame.kind));
                        return Some(Closing { error, reader });
                    }
                    Err(ReadEnd::Eof) => return None,
                    Err(ReadEnd::Io(e)) => {
                        tracing::debug!(remote = %self.remote, node = %self.peer, error = %e, "rpc connection failed");
                        return None;
                    }
                    Err(ReadEnd::Bad(error)) => return Some(Closing { error, reader }),
                },
            }
        }
    }

    /// Take `first` and every request already buffered behind it, refuse
    /// those beyond the in-flight limit, and run the rest as one batch.
    /// Returns why the connection must close if a buffered frame broke
    /// the protocol (the requests before it are still served).
    async fn on_requests(
        &mut self,
        first: Frame,
        reader: &mut FrameReader<OwnedReadHalf>,
    ) -> Option<RpcError> {
        while let Some(joined) = self.handlers.try_join_next_with_id() {
            self.on_joined(joined).await;
        }
        let mut frames = vec![first];
        let broken = loop {
            match reader.buffered() {
                Ok(Some(frame)) if frame.kind == FrameKind::Request => frames.push(frame),
                Ok(Some(frame)) => {
                    break Some(RpcError::Protocol(format!(
                        "unexpected {:?} frame",
                        frame.kind
                    )))
                }
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        let room = self
            .rpc
            .config
            .max_inflight_per_conn
            .saturating_sub(self.in_flight.load(Ordering::Relaxed));
        if frames.len() > room {
            for frame in frames.drain(room..) {
                count_error(&RpcError::Overloaded);
                metrics::counter!("colony_rpc_overload_refusals_total", "where" => "in_flight")
                    .increment(1);
                let refusal =
                    error_frame(frame.request_id, frame.service, &RpcError::Overloaded, 0);
                let _ = self.tx.send(refusal).await;
            }
        }
        if !frames.is_empty() {
            self.spawn_batch(frames);
        }
        broken
    }

    fn spawn_batch(&mut self, frames: Vec<Frame>) {
        let ids: Vec<(u64, u8)> = frames.iter().map(|f| (f.request_id, f.service)).collect();
        let requests: Vec<(ServiceId, Bytes)> =
            frames.into_iter().map(|f| (f.service, f.payload)).collect();
        self.in_flight.fetch_add(ids.len(), Ordering::Relaxed);
        let batch = Batch {
            handler: self.rpc.handler.clone(),
            from: self.peer.clone(),
            tx: self.tx.clone(),
            max: self.rpc.config.max_frame_bytes,
            ids: ids.clone(),
            left: InFlight {
                count: self.in_flight.clone(),
                left: ids.len(),
            },
        };
        let task = self.handlers.spawn(batch.run(requests));
        self.running.insert(task.id(), ids);
    }

    /// A batch ended. One that panicked outside its handlers (they are
    /// caught one by one) may not have answered: answer each of its
    /// requests (the caller ignores an answer to a call already answered).
    async fn on_joined(&mut self, joined: Result<(Id, ()), JoinError>) {
        let (id, failure) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let requests = self.running.remove(&id);
        if let (Some(requests), Some(failure)) = (requests, failure) {
            tracing::error!(remote = %self.remote, node = %self.peer, error = %failure, "rpc handler panicked");
            for (request_id, service) in requests {
                let error = RpcError::Remote("the handler panicked".into());
                let _ = self
                    .tx
                    .send(error_frame(request_id, service, &error, 0))
                    .await;
            }
        }
    }

    /// Let the requests already taken finish, tell the peer why we are
    /// closing, let the writer flush that, and wait
    /// (at most `linger`) for the peer to hang up, so that our close does not
    /// reset the connection before the peer has read the reason.
    async fn close_with(
        self,
        closing: Closing,
        writer: tokio::task::JoinHandle<()>,
        shutdown: &CancellationToken,
        linger: Duration,
    ) {
        let Closing { error, mut reader } = closing;
        count_error(&error);
        tracing::warn!(remote = %self.remote, node = %self.peer, %error, "rpc peer broke the protocol; closing its connection");
        let Self {
            tx, mut handlers, ..
        } = self;
        let close = async move {
            // The requests taken before the bad frame are answered first
            // (within `linger`, like the rest of the close).
            while handlers.join_next().await.is_some() {}
            let _ = tx.send(error_frame(0, 0, &error, 0)).await;
            // The writer drains the queue, then shuts our side down.
            drop(tx);
            let _ = writer.await;
            reader.discard_to_end().await;
        };
        let _ = tokio::time::timeout(linger, async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = close => {}
            }
        })
        .await;
    }
}

/// Requests that arrived together, on their way through the handler.
struct Batch {
    handler: Arc<dyn RpcHandler>,
    from: NodeId,
    tx: mpsc::Sender<Frame>,
    max: usize,
    ids: Vec<(u64, u8)>,
    left: InFlight,
}

impl Batch {
    /// Hand the requests to the handler, then answer each as soon as its
    /// future is done. A handler that panics answers its request (or, if
    /// `handle_many` itself panicked, every request) with an error.
    async fn run(self, requests: Vec<(ServiceId, Bytes)>) {
        let Batch {
            handler,
            from,
            tx,
            max,
            ids,
            mut left,
        } = self;
        let futures = catch_unwind(AssertUnwindSafe(|| handler.handle_many(&from, requests)))
            .unwrap_or_default();
        let mut answers: FuturesUnordered<_> = futures
            .into_iter()
            .zip(&ids)
            .map(|(future, &(request_id, service))| async move {
                let result = AssertUnwindSafe(future).catch_unwind().await;
                (request_id, service, result)
            })
            .collect();
        let unanswered = ids.len() - answers.len();
        while let Some((request_id, service, result)) = answers.next().await {
            let frame = match result {
                Ok(result) => answer(request_id, service, result, max),
                Err(_) => {
                    tracing::error!(node = %from, service, "rpc handler panicked");
                    panicked(request_id, service)
                }
            };
            left.done();
            let _ = tx.send(frame).await;
        }
        // `handle_many` panicked, or gave fewer futures than requests.
        for &(request_id, service) in &ids[ids.len() - unanswered..] {
            tracing::error!(node = %from, service, "rpc handler gave no answer");
            left.done();
            let _ = tx.send(panicked(request_id, service)).await;
        }
    }
}

fn panicked(request_id: u64, service: u8) -> Frame {
    let error = RpcError::Remote("the handler panicked".into());
    error_frame(request_id, service, &error, 0)
}

/// A batch's share of its connection's in-flight count, given back as its
/// requests are answered, and all of it if the batch ends early.
struct InFlight {
    count: Arc<AtomicUsize>,
    left: usize,
}

impl InFlight {
    fn done(&mut self) {
        if self.left > 0 {
            self.left -= 1;
            self.count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.count.fetch_sub(self.left, Ordering::Relaxed);
    }
}

fn answer(request_id: u64, service: u8, result: Result<Bytes, RpcError>, max: usize) -> Frame {
    match result {
        Ok(body) if HEADER_LEN + body.len() <= max => Frame {
            kind: FrameKind::Response,
            request_id,
            service,
            payload: body,
        },
        Ok(body) => {
            let error = RpcError::Remote(format!(
                "the answer of {} bytes exceeds the frame limit of {max} bytes",
                body.len()
            ));
            error_frame(request_id, service, &error, max)
        }
        Err(error) => error_frame(request_id, service, &as_answer(error), max),
    }
}

/// What a handler's error tells the caller: `Overloaded` and `Timeout` keep
/// their meaning (the caller may retry); anything else is the handler's
/// business and travels as text.
fn as_answer(error: RpcError) -> RpcError {
    match error {
        RpcError::Overloaded | RpcError::Timeout | RpcError::Remote(_) => error,
        other => RpcError::Remote(other.to_string()),
    }
}

/// An error frame for `error`, its text cut to fit `max` (0: no cut).
fn error_frame(request_id: u64, service: u8, error: &RpcError, max: usize) -> Frame {
    let mut payload = encode_error(error);
    if max > HEADER_LEN && HEADER_LEN + payload.len() > max {
        payload.truncate(max - HEADER_LEN);
    }
    Frame {
        kind: FrameKind::Error,
        request_id,
        service,
        payload,
    }
}
