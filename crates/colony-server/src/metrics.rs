//! Prometheus metrics: the recorder, per-command handles, and `/metrics`.

use crate::cmd::table::COMMANDS;
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

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

/// Counter and latency histogram of each command, built once so the hot
/// path does no label lookups.
pub struct CommandMetrics {
    per_command: Vec<(Counter, Histogram)>,
    unknown: Counter,
    errors: Vec<Counter>,
}

impl CommandMetrics {
    pub fn new() -> Self {
        let per_command = COMMANDS
            .iter()
            .map(|s| {
                (
                    metrics::counter!("colony_resp_commands_total", "cmd" => s.name),
                    metrics::histogram!("colony_resp_command_duration_seconds", "cmd" => s.name),
                )
            })
            .collect();
        let errors = COMMANDS
            .iter()
            .map(|s| metrics::counter!("colony_resp_errors_total", "cmd" => s.name))
            .collect();
        Self {
            per_command,
            unknown: metrics::counter!("colony_resp_commands_total", "cmd" => "unknown"),
            errors,
        }
    }

    pub fn record(&self, index: Option<usize>, seconds: f64, failed: bool) {
        match index.and_then(|i| self.per_command.get(i).map(|m| (i, m))) {
            Some((i, (count, latency))) => {
                count.increment(1);
                latency.record(seconds);
                if failed {
                    self.errors[i].increment(1);
                }
            }
            None => self.unknown.increment(1),
        }
    }
}

impl Default for CommandMetrics {
    fn default() -> Self {
        Self::new()
    }
}
