//! One client connection over the Redis protocol: read, parse, run,
//! reply. Pipelined commands run concurrently (see `cmd`), replies go back
//! in order, and every batch of replies leaves in one write.

use crate::cmd::{self, CmdResult, Outcome, Session};
use crate::resp::{self, Limits, Parsed, Protocol};
use crate::state::{bucket_of_db, ClientInfo, NodeState};
use bytes::BytesMut;
use colony_kv::{Pipeline, Reply};
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Most commands taken from the read buffer before replies are sent: it
/// bounds what one connection may have in flight.
const MAX_BATCH: usize = 512;

struct InFlight {
    index: Option<usize>,
    started: Instant,
    proto: Protocol,
    work: Work,
}

/// Where a queued command's reply is.
enum Work {
    Done(CmdResult),
    /// A key op sent to a vnode: polled only when its turn to be written
    /// comes (see `drain`).
    Key(colony_kv::Submitted, fn(Reply) -> Reply),
    /// A future that must be polled to make progress.
    Running(BoxFuture<'static, CmdResult>),
    /// Running in `drain`'s set of futures; its result comes back as Done.
    Driven,
    /// Written out.
    Taken,
}

pub async fn serve(
    node: Arc<NodeState>,
    mut stream: TcpStream,
    peer: SocketAddr,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let id = node.next_client_id();
    let mut sess = Session {
        id,
        db: 0,
        bucket: bucket_of_db(0),
        proto: Protocol::Resp2,
        name: None,
        addr: peer.to_string(),
        created: Instant::now(),
        pipeline: Default::default(),
    };
    if let Ok(mut clients) = node.clients.lock() {
        clients.insert(
            id,
            ClientInfo {
                id,
                addr: sess.addr.clone(),
                name: None,
                db: 0,
                created: sess.created,
                last_cmd: "NULL",
                proto: 2,
            },
        );
    }
    node.stats.connections_total.fetch_add(1, Ordering::Relaxed);
    node.stats.connections_open.fetch_add(1, Ordering::Relaxed);
    metrics::gauge!("colony_resp_connections").increment(1.0);
    if let Err(e) = run(&node, &mut stream, &mut sess, &stop).await {
        tracing::debug!(client = id, error = %e, "connection ended with an error");
    }
    if let Ok(mut clients) = node.clients.lock() {
        clients.remove(&id);
    }
    node.stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    metrics::gauge!("colony_resp_connections").decrement(1.0);
}

async fn run(
    node: &Arc<NodeState>,
    stream: &mut TcpStream,
    sess: &mut Session,
    stop: &CancellationToken,
) -> std::io::Result<()> {
    let limits = Limits {
        max_multibulk: node.config.max_multibulk,
        max_bulk: node.config.max_bulk_bytes,
        max_inline: 64 * 1024,
    };
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut wbuf = BytesMut::with_capacity(16 * 1024);
    let mut need = 1usize;
    loop {
        if rbuf.len() >= need {
            let (closing, next_need) = run_batch(node, sess, &mut rbuf, &mut wbuf, &limits).await;
            need = next_need;
            if !wbuf.is_empty() {
                stream.write_all(&wbuf).await?;
                wbuf.clear();
            }
            if closing {
                return Ok(());
            }
            if rbuf.len() >= need {
                // More complete commands are waiting (batch limit reached).
                continue;
            }
        }
        rbuf.reserve(need.saturating_sub(rbuf.len()).clamp(4096, 1 << 20));
        let n = tokio::select! {
            r = stream.read_buf(&mut rbuf) => r?,
            () = stop.cancelled() => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
    }
}

/// Parse and run up to MAX_BATCH commands; encode their replies into
/// `wbuf`. Returns whether to close, and the buffer length needed before
/// parsing again is worthwhile.
async fn run_batch(
    node: &Arc<NodeState>,
    sess: &mut Session,
    rbuf: &mut BytesMut,
    wbuf: &mut BytesMut,
    limits: &Limits,
) -> (bool, usize) {
    let mut queue: Vec<InFlight> = Vec::new();
    let mut tally = Tally::new(node);
    let mut commands = 0u64;
    let mut result = (false, 1);
    let mut gathering = false;
    // One clock read for the batch: its commands arrived together, and a
    // command's latency counts from then (a barrier's wait included).
    let started = Instant::now();
    for _ in 0..MAX_BATCH {
        let args = match resp::parse_command(rbuf, limits) {
            Ok(Parsed::Command(args)) if args.is_empty() => continue,
            Ok(Parsed::Command(args)) => args,
            Ok(Parsed::Incomplete(need)) => {
                result = (false, need);
                break;
            }
            Err(e) => {
                drain(&mut tally, &sess.pipeline, &mut queue, wbuf).await;
                node.stats
                    .protocol_errors_total
                    .fetch_add(1, Ordering::Relaxed);
                resp::encode_error(wbuf, &format!("ERR {e}"));
                result = (true, 1);
                break;
            }
        };
        if !gathering && !rbuf.is_empty() {
            // More commands follow: requests for this node's vnodes are
            // gathered and sent per vnode when the batch is drained (see
            // `Pipeline`). A lone command is sent at once, as it is.
            lock(&sess.pipeline).gather();
            gathering = true;
        }
        commands += 1;
        let (index, outcome) = cmd::dispatch(node, sess, args);
        let proto = sess.proto;
        let (work, barrier) = match outcome {
            Outcome::Ready(r) => (Work::Done(r), false),
            Outcome::Key(sub, map) => (Work::Key(sub, map), false),
            Outcome::Pending(fut) => (Work::Running(fut), false),
            Outcome::Barrier(fut) => {
                // Everything before it completes first, and nothing after
                // it is sent until it completes.
                drain(&mut tally, &sess.pipeline, &mut queue, wbuf).await;
                (Work::Running(fut), true)
            }
            Outcome::Close(r) => {
                drain(&mut tally, &sess.pipeline, &mut queue, wbuf).await;
                finish(&mut tally, index, started.elapsed(), proto, r, wbuf);
                result = (true, 1);
                break;
            }
        };
        queue.push(InFlight {
            index,
            started,
            proto,
            work,
        });
        if barrier {
            drain(&mut tally, &sess.pipeline, &mut queue, wbuf).await;
        }
    }
    drain(&mut tally, &sess.pipeline, &mut queue, wbuf).await;
    // Everything submitted is answered: no request left to order after.
    lock(&sess.pipeline).clear();
    // One shared counter update per batch, not per command.
    node.stats
        .commands_total
        .fetch_add(commands, Ordering::Relaxed);
    result
}

fn lock(p: &Mutex<Pipeline>) -> std::sync::MutexGuard<'_, Pipeline> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// Send what the pipeline gathered, run every queued command at once
/// (requests on one key stay in order: see `Session::submit`) and encode
/// the replies in order.
///
/// Futures that must be polled to progress (replicated requests, barriers)
/// run together in one set. A key op sent to a local vnode is answered
/// whatever this task does, so it is polled only when its reply is next to
/// be written: no task per request, and only the first reply of a batch
/// waits for the group flush (the others find it done).
async fn drain(
    tally: &mut Tally<'_>,
    pipeline: &Mutex<Pipeline>,
    queue: &mut Vec<InFlight>,
    wbuf: &mut BytesMut,
) {
    use futures::{FutureExt, StreamExt};
    use std::future::Future;
    use std::task::Poll;
    lock(pipeline).send_gathered();
    let mut running = futures::stream::FuturesUnordered::new();
    for (i, f) in queue.iter_mut().enumerate() {
        match std::mem::replace(&mut f.work, Work::Driven) {
            Work::Running(fut) => running.push(async move { (i, fut.await) }.boxed()),
            Work::Key(sub, map) if sub.is_routed() => {
                running.push(async move { (i, cmd::from_reply(sub.await).map(map)) }.boxed())
            }
            other => f.work = other,
        }
    }
    let mut next = 0;
    // The clock is read once per wake-up, not per reply: the replies that
    // are ready together finished together.
    let mut now: Option<Instant> = None;
    std::future::poll_fn(|cx| {
        while let Poll::Ready(Some((i, r))) = running.poll_next_unpin(cx) {
            if let Some(f) = queue.get_mut(i) {
                f.work = Work::Done(r);
            }
        }
        while let Some(f) = queue.get_mut(next) {
            let result = match &mut f.work {
                Work::Done(_) => match std::mem::replace(&mut f.work, Work::Taken) {
                    Work::Done(r) => r,
                    _ => unreachable!("matched Done just above"),
                },
                Work::Key(sub, map) => match std::pin::Pin::new(sub).poll(cx) {
                    Poll::Ready(reply) => {
                        let r = cmd::from_reply(reply).map(*map);
                        f.work = Work::Taken;
                        r
                    }
                    Poll::Pending => {
                        now = None;
                        return Poll::Pending;
                    }
                },
                Work::Running(_) | Work::Driven => {
                    now = None;
                    return Poll::Pending;
                }
                Work::Taken => Err("ERR internal: reply taken twice".into()),
            };
            let at = *now.get_or_insert_with(Instant::now);
            finish(
                tally,
                f.index,
                at.saturating_duration_since(f.started),
                f.proto,
                result,
                wbuf,
            );
            next += 1;
        }
        Poll::Ready(())
    })
    .await;
    queue.clear();
}

fn finish(
    tally: &mut Tally,
    index: Option<usize>,
    took: Duration,
    proto: Protocol,
    result: CmdResult,
    wbuf: &mut BytesMut,
) {
    tally.add(index, took, result.is_err());
    match result {
        Ok(reply) => resp::encode(wbuf, &reply, proto),
        Err(msg) => resp::encode_error(wbuf, &msg),
    }
}

/// Commands answered, counted into the node's metrics a run at a time: a
/// pipeline's replies that were ready together share command and latency,
/// so they cost the shared counters one update, not one each.
struct Tally<'a> {
    node: &'a NodeState,
    run: Option<(Option<usize>, Duration)>,
    count: u64,
    failed: u64,
}

impl<'a> Tally<'a> {
    fn new(node: &'a NodeState) -> Self {
        Self {
            node,
            run: None,
            count: 0,
            failed: 0,
        }
    }

    fn add(&mut self, index: Option<usize>, took: Duration, failed: bool) {
        if self.run != Some((index, took)) {
            self.flush();
            self.run = Some((index, took));
        }
        self.count += 1;
        self.failed += u64::from(failed);
    }

    fn flush(&mut self) {
        if let Some((index, took)) = self.run.take() {
            self.node
                .command_metrics
                .record(index, took, self.count, self.failed);
        }
        self.count = 0;
        self.failed = 0;
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
