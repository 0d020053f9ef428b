//! Presenting results: a table on stdout, a JSON report, an SVG plot.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::runner::PhaseResult;
use crate::stats::OpSummary;
use crate::workload::{Distribution, Workload};

mod plot;

/// The run's settings as recorded in the JSON report.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigReport {
    pub target: String,
    pub cluster: bool,
    pub workload: Workload,
    pub distribution: Distribution,
    pub zipfian_theta: Option<f64>,
    pub keyspace: u64,
    pub prefix: String,
    pub value_size: usize,
    pub clients: usize,
    pub pipeline: usize,
    pub requests: u64,
    pub duration_secs: f64,
    pub rates: Vec<f64>,
    pub seed: u64,
    pub load: bool,
    pub threads: usize,
    pub connect_timeout_ms: u64,
    pub timeout_ms: u64,
}

/// The results of one phase (the load, or one measured step).
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    /// Offered ops/s in open-loop mode; absent for closed loop.
    pub offered_rate: Option<f64>,
    pub elapsed_secs: f64,
    /// True when the duration cap, not the request count, ended the phase.
    pub hit_duration_cap: bool,
    /// MOVED/ASK redirections followed.
    pub redirects: u64,
    pub ops: Vec<OpSummary>,
    pub total: OpSummary,
}

impl PhaseReport {
    pub fn new(result: &PhaseResult) -> Self {
        let (ops, total) = result.stats.summarize(result.elapsed);
        PhaseReport {
            offered_rate: result.rate,
            elapsed_secs: result.elapsed.as_secs_f64(),
            hit_duration_cap: result.hit_deadline,
            redirects: result.stats.redirects,
            ops,
            total,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: ConfigReport,
    pub load: Option<PhaseReport>,
    pub steps: Vec<PhaseReport>,
}

impl Report {
    /// The human-readable table, one block per phase.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let c = &self.config;
        out.push_str(&format!(
            "target {}{}  workload {:?}  dist {:?}  keyspace {}  value {} B  clients {}  pipeline {}\n",
            c.target,
            if c.cluster { " (cluster)" } else { "" },
            c.workload,
            c.distribution,
            c.keyspace,
            c.value_size,
            c.clients,
            c.pipeline,
        ));
        if let Some(load) = &self.load {
            push_phase(&mut out, "load", load);
        }
        for step in &self.steps {
            let title = match step.offered_rate {
                Some(r) => format!("open loop at {r:.0} ops/s"),
                None => "closed loop".to_string(),
            };
            push_phase(&mut out, &title, step);
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Latency percentiles against offered load, one point per open-loop step.
    pub fn write_plot(&self, path: &Path) -> anyhow::Result<()> {
        let points: Vec<plot::Point> = self
            .steps
            .iter()
            .filter_map(|s| {
                s.offered_rate.map(|rate| plot::Point {
                    offered: rate,
                    achieved: s.total.ops_per_sec,
                    latency_us: [
                        s.total.latency_us.p50,
                        s.total.latency_us.p90,
                        s.total.latency_us.p99,
                        s.total.latency_us.p999,
                    ],
                })
            })
            .collect();
        let title = format!(
            "{:?} workload, {} clients, pipeline {}",
            self.config.workload, self.config.clients, self.config.pipeline
        );
        let svg = plot::render(&title, &points);
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))
    }
}

fn push_phase(out: &mut String, title: &str, phase: &PhaseReport) {
    let cap = if phase.hit_duration_cap {
        "  [stopped by --duration]"
    } else {
        ""
    };
    out.push_str(&format!("\n== {title}: {:.2} s{cap}\n", phase.elapsed_secs));
    out.push_str(&format!(
        "{:<10} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
        "op",
        "ok",
        "ops/s",
        "mean us",
        "p50 us",
        "p90 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors"
    ));
    for s in phase.ops.iter().chain(std::iter::once(&phase.total)) {
        let l = &s.latency_us;
        out.push_str(&format!(
            "{:<10} {:>10} {:>12.0} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9}  {}\n",
            s.op,
            s.ok,
            s.ops_per_sec,
            l.mean,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            format_errors(s)
        ));
    }
    if phase.redirects > 0 {
        out.push_str(&format!("redirects followed: {}\n", phase.redirects));
    }
}

fn format_errors(s: &OpSummary) -> String {
    if s.errors == 0 {
        return "0".to_string();
    }
    let kinds: Vec<String> = s
        .error_kinds
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    format!("{} ({})", s.errors, kinds.join(", "))
}
