//! Drives the clients: the load phase, closed-loop steps and open-loop
//! (fixed-rate) steps. Every phase ends at its operation limit or its
//! deadline, whichever comes first; every reply wait has a timeout.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::{Client, ClientConfig, Done, Outcome};
use crate::stats::Stats;
use crate::workload::{KeyChooser, Op, OpGenerator, Payload, Workload};

/// Settings shared by every phase of a run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// One entry per server; never empty. Clients are spread over them.
    pub servers: Vec<Arc<ClientConfig>>,
    pub payload: Arc<Payload>,
    pub workload: Workload,
    pub keys: KeyChooser,
    pub keyspace: u64,
    pub clients: usize,
    pub pipeline: usize,
    pub requests: u64,
    pub duration: Duration,
    pub seed: u64,
    pub progress: bool,
}

/// What one phase measured.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    /// Offered load for an open-loop step; `None` for closed loop and load.
    pub rate: Option<f64>,
    pub elapsed: Duration,
    pub stats: Stats,
    /// True when the deadline, not the operation limit, ended the phase.
    pub hit_deadline: bool,
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    Closed,
    /// `rate` ops/s in all, each op sent at its slot by a client the pacer
    /// hands it to; latency from the slot.
    Open {
        rate: f64,
    },
}

/// Where a client's operations come from.
enum Source {
    Mixed(OpGenerator),
    /// Key numbers handed out in order, so every key is written once.
    Load(crate::workload::OpKind),
}

struct Shared {
    claimed: AtomicU64,
    done: AtomicU64,
    limit: u64,
    start: Instant,
    deadline: Instant,
}

impl BenchConfig {
    /// The server of client `index`: round-robin over `servers`, so with
    /// `clients` clients each server gets `clients / servers` of them, give or
    /// take one.
    pub fn server_for(&self, index: usize) -> &Arc<ClientConfig> {
        &self.servers[index % self.servers.len()]
    }
}

impl Shared {
    /// Reserves up to `want` operations; returns the first index and the count.
    fn claim(&self, want: u64) -> (u64, u64) {
        let first = self.claimed.fetch_add(want, Ordering::Relaxed);
        (first, want.min(self.limit.saturating_sub(first)))
    }
}

/// Writes every key of the keyspace once with the workload's write command.
pub async fn run_load(cfg: &Arc<BenchConfig>) -> anyhow::Result<PhaseResult> {
    let op = cfg.workload.load_op();
    drive(cfg, cfg.keyspace, Pace::Closed, None, |_| Source::Load(op)).await
}

/// One measured step: closed loop, or open loop at `rate` ops/s in total.
pub async fn run_step(cfg: &Arc<BenchConfig>, rate: Option<f64>) -> anyhow::Result<PhaseResult> {
    let pace = match rate {
        Some(rate) => Pace::Open { rate },
        None => Pace::Closed,
    };
    let mix = cfg.workload.mix();
    let source = |i: usize| {
        let seed = cfg.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Source::Mixed(OpGenerator::new(mix, cfg.keys, seed))
    };
    drive(cfg, cfg.requests, pace, rate, source).await
}

async fn drive(
    cfg: &Arc<BenchConfig>,
    limit: u64,
    pace: Pace,
    rate: Option<f64>,
    source: impl Fn(usize) -> Source,
) -> anyhow::Result<PhaseResult> {
    let clients = connect_clients(cfg).await?;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        claimed: AtomicU64::new(0),
        done: AtomicU64::new(0),
        limit,
        start,
        deadline: start + cfg.duration,
    });
    let progress = cfg
        .progress
        .then(|| tokio::spawn(report_progress(shared.clone())));
    let (mut slots, pacer) = match pace {
        Pace::Open { rate } => {
            let (txs, rxs): (Vec<_>, Vec<_>) = (0..clients.len())
                .map(|_| tokio::sync::mpsc::unbounded_channel())
                .unzip();
            let pacer = start_pacer(shared.clone(), rate, txs)?;
            (rxs.into_iter().map(Some).collect(), Some(pacer))
        }
        Pace::Closed => (Vec::new(), None),
    };
    let tasks: Vec<JoinHandle<(Stats, Instant)>> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let ctx = ClientTask {
                shared: shared.clone(),
                cfg: cfg.clone(),
                source: source(i),
                slots: slots.get_mut(i).and_then(Option::take),
            };
            tokio::spawn(ctx.run(client))
        })
        .collect();
    let mut stats = Stats::default();
    let mut finished = start;
    for task in tasks {
        let (client_stats, client_finished) = task.await.context("client task panicked")?;
        stats.merge(&client_stats);
        finished = finished.max(client_finished);
    }
    if let Some(pacer) = pacer {
        // It has stopped: every client ends only once its slots end.
        let _ = pacer.join();
    }
    // Until the last client finished: merging histograms is not part of the run.
    let elapsed = finished - start;
    if let Some(p) = progress {
        p.abort();
        eprintln!();
    }
    Ok(PhaseResult {
        rate,
        elapsed,
        hit_deadline: stats.completed() < limit,
        stats,
    })
}

/// Opens every client's connections before the clock starts.
async fn connect_clients(cfg: &Arc<BenchConfig>) -> anyhow::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(cfg.clients);
    for i in 0..cfg.clients {
        let server = cfg.server_for(i);
        let mut client = Client::new(server.clone(), cfg.payload.clone())
            .await
            .with_context(|| format!("preparing a client for {}", server.seed_addr))?;
        client
            .connect_all()
            .await
            .with_context(|| format!("connecting to {}", server.seed_addr))?;
        clients.push(client);
    }
    Ok(clients)
}

/// Open loop: a thread of its own hands out the ops' slots, `1/rate`
/// apart, as they fall due, each to the next client in turn (so each client
/// has one slot every `clients/rate`). Tokio's timers fire on millisecond
/// ticks, up to a millisecond late, and all of that lateness would count as
/// latency; a thread sleeping until each slot is late by tens of
/// microseconds. Slots already due when it wakes go out together. It stops
/// at the phase's deadline or operation limit, which ends the clients.
fn start_pacer(
    shared: Arc<Shared>,
    rate: f64,
    slots: Vec<tokio::sync::mpsc::UnboundedSender<Instant>>,
) -> anyhow::Result<std::thread::JoinHandle<()>> {
    let start = shared.start.into_std();
    let deadline = shared.deadline.into_std();
    std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || {
            // Clients still taking slots (one that reached the operation
            // limit, or failed, has dropped its end).
            let mut open = slots.len();
            let mut gone = vec![false; slots.len()];
            for k in 0..shared.limit {
                let at = start + Duration::from_secs_f64(k as f64 / rate);
                if at >= deadline || open == 0 {
                    break;
                }
                let now = std::time::Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let i = (k % slots.len() as u64) as usize;
                if !gone[i] && slots[i].send(Instant::from_std(at)).is_err() {
                    gone[i] = true;
                    open -= 1;
                }
            }
        })
        .context("starting the pacer thread")
}

struct ClientTask {
    shared: Arc<Shared>,
    cfg: Arc<BenchConfig>,
    source: Source,
    /// Open loop: the slots of this client's ops, from the pacer.
    slots: Option<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
}

impl ClientTask {
    /// Runs until the limit or deadline; returns what it saw and when it stopped.
    async fn run(mut self, mut client: Client) -> (Stats, Instant) {
        let mut stats = Stats::default();
        let depth = self.cfg.pipeline.max(1);
        let mut ops: Vec<Op> = Vec::with_capacity(depth);
        let mut intended: Vec<Instant> = Vec::with_capacity(depth);
        let mut done: Vec<Done> = Vec::with_capacity(depth);
        loop {
            ops.clear();
            intended.clear();
            let filled = match self.slots.take() {
                None => self.fill_closed(&mut ops, &mut intended, depth),
                Some(mut slots) => {
                    let filled = self
                        .fill_open(&mut ops, &mut intended, depth, &mut slots)
                        .await;
                    self.slots = Some(slots);
                    filled
                }
            };
            if !filled {
                break;
            }
            client.execute(&ops, &mut done).await;
            record(&mut stats, &ops, &intended, &done);
            self.shared
                .done
                .fetch_add(ops.len() as u64, Ordering::Relaxed);
        }
        let finished = Instant::now();
        stats.redirects = client.redirects;
        (stats, finished)
    }

    /// Takes the next batch now; false once the limit or deadline is reached.
    fn fill_closed(
        &mut self,
        ops: &mut Vec<Op>,
        intended: &mut Vec<Instant>,
        depth: usize,
    ) -> bool {
        let now = Instant::now();
        if now >= self.shared.deadline {
            return false;
        }
        let (first, n) = self.shared.claim(depth as u64);
        for i in 0..n {
            ops.push(self.next_op(first + i));
            intended.push(now);
        }
        n > 0
    }

    /// Waits for the next slot, then takes every slot already due (up to the
    /// pipeline depth); false once the pacer has stopped. Latency will be
    /// measured from each op's slot.
    async fn fill_open(
        &mut self,
        ops: &mut Vec<Op>,
        intended: &mut Vec<Instant>,
        depth: usize,
        slots: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>,
    ) -> bool {
        let mut slot = slots.recv().await;
        while let Some(at) = slot {
            let (first, n) = self.shared.claim(1);
            if n == 0 {
                break;
            }
            ops.push(self.next_op(first));
            intended.push(at);
            if ops.len() >= depth {
                break;
            }
            slot = slots.try_recv().ok();
        }
        !ops.is_empty()
    }

    fn next_op(&mut self, index: u64) -> Op {
        match &mut self.source {
            Source::Mixed(gen) => gen.next_op(),
            Source::Load(kind) => Op {
                kind: *kind,
                key: index,
                sub: 0,
            },
        }
    }
}

fn record(stats: &mut Stats, ops: &[Op], intended: &[Instant], done: &[Done]) {
    for ((op, start), d) in ops.iter().zip(intended).zip(done) {
        match &d.outcome {
            Outcome::Ok => stats.record_ok(op.kind, d.at.saturating_duration_since(*start)),
            Outcome::Error(msg) => stats.record_error(op.kind, msg),
            Outcome::Failed(kind) => stats.record_error(op.kind, kind),
            Outcome::Pending => stats.record_error(op.kind, "io"),
        }
    }
}

/// Prints elapsed time, ops done and the last second's rate, about once a second.
async fn report_progress(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last_ops, mut last_at) = (0u64, shared.start);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let ops = shared.done.load(Ordering::Relaxed);
        let rate = ops.saturating_sub(last_ops) as f64 / (now - last_at).as_secs_f64().max(1e-6);
        let elapsed = (now - shared.start).as_secs_f64();
        eprint!("\r  {elapsed:6.1}s  {ops:>12} ops  {rate:>12.0} ops/s   ");
        let _ = std::io::stderr().flush();
        (last_ops, last_at) = (ops, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Distribution;

    fn config(addrs: &[&str], clients: usize) -> BenchConfig {
        BenchConfig {
            servers: addrs
                .iter()
                .map(|a| {
                    Arc::new(ClientConfig {
                        seed_addr: a.to_string(),
                        cluster: false,
                        connect_timeout: Duration::from_secs(1),
                        reply_timeout: Duration::from_secs(1),
                    })
                })
                .collect(),
            payload: Arc::new(Payload::new("k:", 4)),
            workload: Workload::A,
            keys: KeyChooser::new(Distribution::Uniform, 10),
            keyspace: 10,
            clients,
            pipeline: 1,
            requests: 0,
            duration: Duration::from_secs(1),
            seed: 1,
            progress: false,
        }
    }

    #[test]
    fn clients_are_spread_round_robin_over_the_servers() {
        let cfg = config(&["n1:1", "n2:2", "n3:3"], 50);
        let picked: Vec<&str> = (0..5)
            .map(|i| cfg.server_for(i).seed_addr.as_str())
            .collect();
        assert_eq!(picked, ["n1:1", "n2:2", "n3:3", "n1:1", "n2:2"]);
        let per_server: Vec<usize> = ["n1:1", "n2:2", "n3:3"]
            .iter()
            .map(|a| {
                (0..cfg.clients)
                    .filter(|&i| cfg.server_for(i).seed_addr == *a)
                    .count()
            })
            .collect();
        assert_eq!(per_server, [17, 17, 16]);
    }

    #[test]
    fn one_server_takes_every_client() {
        let cfg = config(&["only:1"], 4);
        assert!((0..cfg.clients).all(|i| cfg.server_for(i).seed_addr == "only:1"));
    }

    fn shared(limit: u64, duration: Duration) -> Arc<Shared> {
        let start = Instant::now();
        Arc::new(Shared {
            claimed: AtomicU64::new(0),
            done: AtomicU64::new(0),
            limit,
            start,
            deadline: start + duration,
        })
    }

    /// Slot k is `k/rate` after the start and goes to client `k mod
    /// clients`; the pacer hands out `limit` slots, then stops.
    #[test]
    fn the_pacer_hands_each_client_its_slots_in_turn_up_to_the_limit() {
        let shared = shared(12, Duration::from_secs(60));
        let (txs, mut rxs): (Vec<_>, Vec<_>) = (0..3)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let pacer = start_pacer(shared.clone(), 2_000.0, txs).unwrap();
        pacer.join().unwrap();
        for (c, rx) in rxs.iter_mut().enumerate() {
            let mut got = Vec::new();
            while let Ok(at) = rx.try_recv() {
                got.push(at - shared.start);
            }
            let want: Vec<Duration> = (0..4)
                .map(|j| Duration::from_micros(500 * (3 * j + c as u64)))
                .collect();
            assert_eq!(got, want, "client {c}");
        }
    }

    /// Clients that stop taking slots (they reached the operation limit)
    /// end the pacer long before its deadline.
    #[test]
    fn the_pacer_stops_once_every_client_is_gone() {
        let shared = shared(u64::MAX, Duration::from_secs(3600));
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2)
            .map(|_| tokio::sync::mpsc::unbounded_channel::<Instant>())
            .unzip();
        let pacer = start_pacer(shared, 10_000.0, txs).unwrap();
        drop(rxs);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(pacer.join().is_ok());
        });
        assert_eq!(
            done_rx.recv_timeout(Duration::from_secs(60)),
            Ok(true),
            "the pacer kept running with no client left"
        );
    }
}
