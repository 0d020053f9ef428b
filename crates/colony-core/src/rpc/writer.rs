//! The writing half of a connection: one task per connection, fed by a
//! bounded queue. It takes every frame waiting and writes them together, so
//! that many small frames share one system call.

use super::frame::Frame;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Frames smaller than this are gathered in the buffer; larger payloads go to
/// the socket directly after what was gathered before them.
const GATHER_BYTES: usize = 64 * 1024;

/// How the writer ended.
#[derive(Debug)]
pub(crate) enum WriterEnd {
    /// Every sender was dropped; all queued frames were written and our side
    /// of the connection was shut down.
    Drained,
    /// `stop` was cancelled; queued frames may be lost.
    Stopped,
    /// The socket failed.
    Failed(std::io::Error),
}

/// Write frames from `rx` to `socket` until the queue closes, `stop` is
/// cancelled or a write fails.
pub(crate) async fn run_writer<W: AsyncWrite + Unpin>(
    socket: W,
    mut rx: mpsc::Receiver<Frame>,
    stop: CancellationToken,
    batch_limit: usize,
) -> WriterEnd {
    let mut out = BufWriter::with_capacity(GATHER_BYTES, socket);
    let mut batch = Vec::with_capacity(batch_limit.min(256));
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return WriterEnd::Stopped,
            n = rx.recv_many(&mut batch, batch_limit.max(1)) => n,
        };
        if n == 0 {
            return match out.shutdown().await {
                Ok(()) => WriterEnd::Drained,
                Err(e) => WriterEnd::Failed(e),
            };
        }
        // Under load, the tasks that will queue the next frames are
        // usually ready to run: let them run once before writing, and
        // take what they queued, so those frames share this system call.
        // An idle connection pays one trip through the run queue.
        if batch.len() < batch_limit {
            tokio::task::yield_now().await;
            while batch.len() < batch_limit {
                match rx.try_recv() {
                    Ok(frame) => batch.push(frame),
                    Err(_) => break,
                }
            }
        }
        let written = tokio::select! {
            _ = stop.cancelled() => return WriterEnd::Stopped,
            r = write_batch(&mut out, &mut batch) => r,
        };
        if let Err(e) = written {
            return WriterEnd::Failed(e);
        }
    }
}

async fn write_batch<W: AsyncWrite + Unpin>(
    out: &mut BufWriter<W>,
    batch: &mut Vec<Frame>,
) -> std::io::Result<()> {
    metrics::histogram!("colony_rpc_write_batch_frames").record(batch.len() as f64);
    for frame in batch.drain(..) {
        // Callers never queue a frame whose length does not fit the prefix
        // (they check `max_frame_bytes`, at most `u32::MAX`).
        let header = frame
            .header()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        out.write_all(&header).await?;
        out.write_all(&frame.payload).await?;
    }
    out.flush().await
}
