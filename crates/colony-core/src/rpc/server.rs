//! The serving side: accept peers, authenticate them, and handle each request
//! on its own task, at most `max_inflight_per_conn` per connection (beyond
//! that the request is answered `Overloaded` at once).

use super::error::{count_error, encode_error};
use super::frame::{Frame, FrameKind, FrameReader, ReadEnd, HEADER_LEN};
use super::writer::{run_writer, WriterEnd};
use super::{handshake, ConnectionGauge, Rpc, RpcError};
use crate::NodeId;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::SocketAddr;
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
    /// Handlers running for this connection; aborted when it closes.
    handlers: JoinSet<()>,
    /// Which request (id, service) each running handler answers.
    running: HashMap<Id, (u64, u8)>,
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
                    Ok(frame) if frame.kind == FrameKind::Request => self.on_request(frame).await,
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

    async fn on_request(&mut self, frame: Frame) {
        while let Some(joined) = self.handlers.try_join_next_with_id() {
            self.on_joined(joined).await;
        }
        if self.handlers.len() >= self.rpc.config.max_inflight_per_conn {
            count_error(&RpcError::Overloaded);
            metrics::counter!("colony_rpc_overload_refusals_total", "where" => "in_flight")
                .increment(1);
            let refusal = error_frame(frame.request_id, frame.service, &RpcError::Overloaded, 0);
            let _ = self.tx.send(refusal).await;
            return;
        }
        let handler = self.rpc.handler.clone();
        let from = self.peer.clone();
        let tx = self.tx.clone();
        let max = self.rpc.config.max_frame_bytes;
        let Frame {
            request_id,
            service,
            payload,
            ..
        } = frame;
        let task = self.handlers.spawn(async move {
            let result = handler.handle(from, service, payload).await;
            let _ = tx.send(answer(request_id, service, result, max)).await;
        });
        self.running.insert(task.id(), (request_id, service));
    }

    /// A handler task ended. One that panicked never answered: answer for it.
    async fn on_joined(&mut self, joined: Result<(Id, ()), JoinError>) {
        let (id, failure) = match joined {
            Ok((id, ())) => (id, None),
            Err(e) => (e.id(), Some(e)),
        };
        let request = self.running.remove(&id);
        if let (Some((request_id, service)), Some(failure)) = (request, failure) {
            tracing::error!(remote = %self.remote, node = %self.peer, service, error = %failure, "rpc handler panicked");
            let error = RpcError::Remote("the handler panicked".into());
            let _ = self
                .tx
                .send(error_frame(request_id, service, &error, 0))
                .await;
        }
    }

    /// Tell the peer why we are closing, let the writer flush that, and wait
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
            handlers.shutdown().await;
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
