//! Latency histograms and error counts, kept per client and merged at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::OpKind;

/// Highest latency recorded exactly, in microseconds; larger values saturate.
const MAX_MICROS: u64 = 3_600_000_000;

/// Counts and latencies of one operation kind.
#[derive(Debug, Clone)]
pub struct OpStats {
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl OpStats {
    fn new() -> Self {
        OpStats {
            latency: new_histogram(),
            errors: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: &OpStats) {
        // Both sides share bounds, so adding cannot fail; saturate defensively.
        if self.latency.add(&other.latency).is_err() {
            for v in other.latency.iter_recorded() {
                self.latency
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        for (kind, n) in &other.errors {
            *self.errors.entry(kind.clone()).or_insert(0) += n;
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: failure here would be a bug, so it stays an assertion.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("histogram bounds are valid")
}

/// Everything one client (or, merged, the whole run) observed.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Created on first use: a histogram is ~180 KB, and most runs use one or two kinds.
    per_op: Vec<Option<OpStats>>,
    /// MOVED/ASK redirections that were followed (not counted as errors).
    pub redirects: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            per_op: OpKind::ALL.iter().map(|_| None).collect(),
            redirects: 0,
        }
    }
}

impl Stats {
    pub fn record_ok(&mut self, kind: OpKind, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.op_mut(kind).latency.saturating_record(micros.max(1));
    }

    /// Counts an error under `label`: a RESP error's first word, or a client-side
    /// kind such as `timeout` or `io`.
    pub fn record_error(&mut self, kind: OpKind, label: &str) {
        let label = label.split_ascii_whitespace().next().unwrap_or("ERR");
        let errors = &mut self.op_mut(kind).errors;
        match errors.get_mut(label) {
            Some(n) => *n += 1,
            None => {
                errors.insert(label.to_string(), 1);
            }
        }
    }

    fn op_mut(&mut self, kind: OpKind) -> &mut OpStats {
        self.per_op[kind.index()].get_or_insert_with(OpStats::new)
    }

    pub fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.per_op.iter_mut().zip(&other.per_op) {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(OpStats::new).merge(theirs);
            }
        }
        self.redirects += other.redirects;
    }

    /// Operations completed, successful or not.
    pub fn completed(&self) -> u64 {
        self.per_op
            .iter()
            .flatten()
            .map(|s| s.latency.len() + s.error_count())
            .sum()
    }

    /// One summary per operation kind that was used, then the total.
    pub fn summarize(&self, elapsed: Duration) -> (Vec<OpSummary>, OpSummary) {
        let mut total = OpStats::new();
        let mut per_op = Vec::new();
        for (kind, s) in OpKind::ALL.iter().zip(&self.per_op) {
            let Some(s) = s else { continue };
            if s.latency.is_empty() && s.errors.is_empty() {
                continue;
            }
            total.merge(s);
            per_op.push(OpSummary::new(kind.name(), s, elapsed));
        }
        (per_op, OpSummary::new("TOTAL", &total, elapsed))
    }
}

/// The reported figures for one operation kind (or the total).
#[derive(Debug, Clone, Serialize)]
pub struct OpSummary {
    pub op: String,
    pub ok: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Successful operations per second of elapsed time.
    pub ops_per_sec: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl OpSummary {
    fn new(op: &str, s: &OpStats, elapsed: Duration) -> Self {
        let h = &s.latency;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        let secs = elapsed.as_secs_f64().max(1e-9);
        OpSummary {
            op: op.to_string(),
            ok: h.len(),
            errors: s.error_count(),
            error_kinds: s.errors.clone(),
            ops_per_sec: h.len() as f64 / secs,
            latency_us: Percentiles {
                mean: if h.is_empty() { 0.0 } else { h.mean() },
                p50: q(0.5),
                p90: q(0.9),
                p99: q(0.99),
                p999: q(0.999),
                max: if h.is_empty() { 0 } else { h.max() },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_stats_add_up_counts_and_errors() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for i in 1..=100u64 {
            a.record_ok(OpKind::Get, Duration::from_micros(i));
        }
        b.record_ok(OpKind::Set, Duration::from_micros(500));
        b.record_error(OpKind::Set, "WRONGTYPE Operation against a key");
        b.record_error(OpKind::Set, "timeout");
        b.record_error(OpKind::Set, "WRONGTYPE again");
        a.merge(&b);
        assert_eq!(a.completed(), 104);
        let (per_op, total) = a.summarize(Duration::from_secs(1));
        assert_eq!(per_op.len(), 2);
        assert_eq!(per_op[0].op, "GET");
        assert_eq!(per_op[0].latency_us.p50, 50);
        assert_eq!(per_op[1].error_kinds.get("WRONGTYPE"), Some(&2));
        assert_eq!(per_op[1].error_kinds.get("timeout"), Some(&1));
        assert_eq!(total.ok, 101);
        assert_eq!(total.errors, 3);
        assert_eq!(total.latency_us.max, 500);
    }
}
