//! Prometheus metrics: the recorder, per-command handles, and `/metrics`.

use crate::cmd::table::COMMANDS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets, in seconds: 10 µs to 1 s.
const BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0,
];

/// Install the process-wide recorder (once; later calls reuse it).
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours just
            // renders nothing, which is not worth stopping the node for.
            let _ = metrics::set_global_recorder(recorder);
            // Histograms keep every sample until drained; without a scrape
            // they would grow without bound. Upkeep folds them in.
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("colony-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

/// Count, errors and latency histogram of each command, in plain atomics
/// indexed by the command table, rendered into `/metrics` beside the
/// recorder's. The hot path adds a run of like commands (same command, same
/// latency: a pipeline's replies that were ready together) in one step, and
/// records no sample it would have to keep until a scrape.
pub struct CommandMetrics {
    per_command: Vec<CommandStats>,
    unknown: AtomicU64,
}

#[derive(Default)]
struct CommandStats {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Per bucket of `BUCKETS` (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl CommandMetrics {
    pub fn new() -> Self {
        Self {
            per_command: COMMANDS.iter().map(|_| CommandStats::default()).collect(),
            unknown: AtomicU64::new(0),
        }
    }

    /// `count` runs of command `index` (None: unknown), each taking
    /// `took`, `failed` of them with an error.
    pub fn record(&self, index: Option<usize>, took: Duration, count: u64, failed: u64) {
        let Some(stats) = index.and_then(|i| self.per_command.get(i)) else {
            self.unknown.fetch_add(count, Ordering::Relaxed);
            return;
        };
        stats.calls.fetch_add(count, Ordering::Relaxed);
        if failed > 0 {
            stats.errors.fetch_add(failed, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|le| secs <= *le)
            .unwrap_or(BUCKETS.len());
        stats.buckets[bucket].fetch_add(count, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        stats
            .sum_nanos
            .fetch_add(nanos.saturating_mul(count), Ordering::Relaxed);
    }

    /// The Prometheus text of every command run at least once.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ran: Vec<_> = COMMANDS
            .iter()
            .zip(&self.per_command)
            .filter(|(_, s)| load(&s.calls) > 0)
            .collect();
        let counter = |out: &mut String, name: &str, pick: fn(&CommandStats) -> &AtomicU64| {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (spec, s) in &ran {
                let _ = writeln!(out, "{name}{{cmd=\"{}\"}} {}", spec.name, load(pick(s)));
            }
        };
        counter(out, "colony_resp_commands_total", |s| &s.calls);
        let unknown = load(&self.unknown);
        let _ = writeln!(
            out,
            "colony_resp_commands_total{{cmd=\"unknown\"}} {unknown}"
        );
        counter(out, "colony_resp_errors_total", |s| &s.errors);
        let name = "colony_resp_command_duration_seconds";
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (spec, s) in &ran {
            let cmd = spec.name;
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(&s.buckets) {
                cumulative += load(n);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{cmd=\"{cmd}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += load(&s.buckets[BUCKETS.len()]);
            let _ = writeln!(
                out,
                "{name}_bucket{{cmd=\"{cmd}\",le=\"+Inf\"}} {cumulative}"
            );
            let sum = load(&s.sum_nanos) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{cmd=\"{cmd}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{cmd=\"{cmd}\"}} {cumulative}");
        }
    }
}

impl Default for CommandMetrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_render_as_cumulative_buckets_and_counts() {
        let m = CommandMetrics::new();
        let get = COMMANDS.iter().position(|s| s.name == "get");
        m.record(get, Duration::from_micros(20), 3, 0);
        m.record(get, Duration::from_millis(2), 1, 1);
        m.record(get, Duration::from_secs(3), 1, 0);
        m.record(None, Duration::from_micros(1), 2, 2);
        let mut text = String::new();
        m.render(&mut text);
        for line in [
            "colony_resp_commands_total{cmd=\"get\"} 5",
            "colony_resp_commands_total{cmd=\"unknown\"} 2",
            "colony_resp_errors_total{cmd=\"get\"} 1",
            "colony_resp_command_duration_seconds_bucket{cmd=\"get\",le=\"0.00001\"} 0",
            "colony_resp_command_duration_seconds_bucket{cmd=\"get\",le=\"0.000025\"} 3",
            "colony_resp_command_duration_seconds_bucket{cmd=\"get\",le=\"0.0025\"} 4",
            "colony_resp_command_duration_seconds_bucket{cmd=\"get\",le=\"1\"} 4",
            "colony_resp_command_duration_seconds_bucket{cmd=\"get\",le=\"+Inf\"} 5",
            "colony_resp_command_duration_seconds_count{cmd=\"get\"} 5",
            "colony_resp_command_duration_seconds_sum{cmd=\"get\"} 3.00206",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("cmd=\"set\""),
            "commands never run are left out"
        );
    }
}
