//! The checker: reads a [`History`] and says whether what clients were told
//! holds in the state read back after healing.
//!
//! Rules, per key (a key is written by one kind of operation):
//! - **SET** (unique values, last writer wins): the final value was written
//!   by some SET; it is not older than an acknowledged SET (one that began
//!   after it completed); a key with an acknowledged SET exists.
//! - **INCR**: acknowledged increments <= final value <= acknowledged plus
//!   every increment whose outcome is unknown or an error.
//! - **SADD/SREM**: every member present was added by some SADD; every
//!   acknowledged SADD's member is present unless an SREM of it began after
//!   the SADD completed (add-wins: a concurrent SREM cannot remove it).
//! - **PUT** (HTTP, siblings allowed): every value present was written by
//!   some PUT; an acknowledged PUT's value is present unless another PUT
//!   did not strictly precede it (it could have replaced it).
//! - **Convergence**: every partition's replicas report one tree root.

use super::history::{History, Observed, Op, OpKind, Outcome};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub key: String,
    pub rule: &'static str,
    pub message: String,
    /// The operations involved (ids in the history).
    pub ops: Vec<u64>,
}

/// What the check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub seed: u64,
    pub ops: usize,
    pub acknowledged: usize,
    pub errors: usize,
    pub unknown: usize,
    pub keys: usize,
    pub partitions: usize,
    pub converged_after_ms: Option<u64>,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// A few lines for a terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "seed {}: {} operations ({} acknowledged, {} errors, {} unknown) on {} keys; {} partitions; converged {}; {}",
            self.seed,
            self.ops,
            self.acknowledged,
            self.errors,
            self.unknown,
            self.keys,
            self.partitions,
            match self.converged_after_ms {
                Some(ms) => format!("{:.1} s after healing", ms as f64 / 1000.0),
                None => "never".into(),
            },
            if self.ok() {
                "no violation".to_string()
            } else {
                format!("{} VIOLATIONS", self.violations.len())
            }
        );
        for v in self.violations.iter().take(20) {
            s.push_str(&format!(
                "\n  {} [{}]: {} (ops {:?})",
                v.key, v.rule, v.message, v.ops
            ));
        }
        s
    }
}

/// Check a history; `converge_within_ms` bounds how long after healing
/// the replicas may take to agree.
pub fn check(h: &History, converge_within_ms: u64) -> Report {
    let mut r = Report {
        seed: h.seed,
        ops: h.ops.len(),
        acknowledged: h.ops.iter().filter(|o| o.outcome == Outcome::Ok).count(),
        errors: h.ops.iter().filter(|o| o.outcome == Outcome::Error).count(),
        unknown: h
            .ops
            .iter()
            .filter(|o| o.outcome == Outcome::Unknown)
            .count(),
        partitions: h.roots.len(),
        converged_after_ms: h.converged_after_ms,
        ..Report::default()
    };
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &h.ops {
        by_key.entry(op.kind.key()).or_default().push(op);
    }
    r.keys = by_key.len();
    for (key, ops) in by_key {
        let observed = h.final_state.get(key);
        let v = &mut r.violations;
        match ops[0].kind {
            OpKind::Set { .. } => check_set(key, &ops, observed, v),
            OpKind::Incr { .. } => check_incr(key, &ops, observed, v),
            OpKind::Sadd { .. } | OpKind::Srem { .. } => check_members(key, &ops, observed, v),
            OpKind::Put { .. } => check_put(key, &ops, observed, v),
        }
    }
    match h.converged_after_ms {
        Some(ms) if ms <= converge_within_ms => {}
        other => r.violations.push(Violation {
            key: "-".into(),
            rule: "convergence",
            message: format!(
                "replicas did not agree within {converge_within_ms} ms of healing ({other:?})"
            ),
            ops: Vec::new(),
        }),
    }
    for (p, roots) in &h.roots {
        let distinct: BTreeSet<&String> = roots.iter().map(|(_, root)| root).collect();
        if distinct.len() > 1 {
            r.violations.push(Violation {
                key: format!("partition {p}"),
                rule: "convergence",
                message: format!("replicas report different tree roots: {roots:?}"),
                ops: Vec::new(),
            });
        }
    }
    r
}

fn violation(key: &str, rule: &'static str, message: String, ops: Vec<u64>) -> Violation {
    Violation {
        key: key.into(),
        rule,
        message,
        ops,
    }
}

fn mixed(key: &str, op: &Op, out: &mut Vec<Violation>) {
    out.push(violation(
        key,
        "workload",
        format!("operation {:?} mixed with another kind on one key", op.kind),
        vec![op.id],
    ));
}

fn check_set(key: &str, ops: &[&Op], observed: Option<&Observed>, out: &mut Vec<Violation>) {
    let mut writes: Vec<(&Op, &str)> = Vec::new();
    for op in ops {
        match &op.kind {
            OpKind::Set { value, .. } => writes.push((op, value)),
            _ => return mixed(key, op, out),
        }
    }
    let acked: Vec<&Op> = writes
        .iter()
        .filter(|(o, _)| o.outcome.acked())
        .map(|(o, _)| *o)
        .collect();
    let value = match observed {
        Some(Observed::Str(v)) => v.clone(),
        None => None,
        Some(other) => {
            return out.push(violation(
                key,
                "type",
                format!("read back as {other:?}"),
                vec![],
            ));
        }
    };
    let Some(value) = value else {
        if !acked.is_empty() {
            out.push(violation(
                key,
                "lost write",
                format!(
                    "the key is gone though {} SETs were acknowledged",
                    acked.len()
                ),
                acked.iter().map(|o| o.id).collect(),
            ));
        }
        return;
    };
    let Some((w, _)) = writes.iter().find(|(_, v)| *v == value) else {
        return out.push(violation(
            key,
            "phantom value",
            format!("read back {value:?}, which no SET wrote"),
            vec![],
        ));
    };
    for a in &acked {
        if a.id != w.id && a.invoked_ms > w.completed_ms {
            out.push(violation(
                key,
                "lost write",
                format!(
                    "read back op {}'s value, written before acknowledged op {} began",
                    w.id, a.id
                ),
                vec![w.id, a.id],
            ));
        }
    }
}

fn check_incr(key: &str, ops: &[&Op], observed: Option<&Observed>, out: &mut Vec<Violation>) {
    let (mut acked, mut maybe) = (0i64, 0i64);
    for op in ops {
        let OpKind::Incr { by, .. } = op.kind else {
            return mixed(key, op, out);
        };
        if op.outcome.acked() {
            acked += by;
        } else {
            maybe += by;
        }
    }
    let value = match observed {
        Some(Observed::Counter(c)) => *c,
        Some(Observed::Str(Some(s))) => match s.parse() {
            Ok(c) => c,
            Err(_) => {
                return out.push(violation(
                    key,
                    "type",
                    format!("counter read back as {s:?}"),
                    vec![],
                ));
            }
        },
        None | Some(Observed::Str(None)) => 0,
        Some(other) => {
            return out.push(violation(
                key,
                "type",
                format!("read back as {other:?}"),
                vec![],
            ));
        }
    };
    if value < acked || value > acked + maybe {
        out.push(violation(
            key,
            "counter",
            format!(
                "counter is {value}, but {acked} was acknowledged and at most {maybe} more may have applied"
            ),
            ops.iter().map(|o| o.id).collect(),
        ));
    }
}

fn check_members(key: &str, ops: &[&Op], observed: Option<&Observed>, out: &mut Vec<Violation>) {
    let mut adds: Vec<(&Op, &str)> = Vec::new();
    let mut rems: Vec<(&Op, &str)> = Vec::new();
    for op in ops {
        match &op.kind {
            OpKind::Sadd { member, .. } => adds.push((op, member)),
            OpKind::Srem { member, .. } => rems.push((op, member)),
            _ => return mixed(key, op, out),
        }
    }
    let members = match observed {
        Some(Observed::Set(s)) => s.clone(),
        None => BTreeSet::new(),
        Some(other) => {
            return out.push(violation(
                key,
                "type",
                format!("read back as {other:?}"),
                vec![],
            ));
        }
    };
    for m in &members {
        if !adds.iter().any(|(_, a)| a == m) {
            out.push(violation(
                key,
                "phantom member",
                format!("member {m:?} was never added"),
                vec![],
            ));
        }
    }
    for (add, m) in adds.iter().filter(|(o, _)| o.outcome.acked()) {
        if members.contains(*m) {
            continue;
        }
        let removed_after = rems
            .iter()
            .any(|(rem, rm)| rm == m && rem.invoked_ms > add.completed_ms);
        if !removed_after {
            out.push(violation(
                key,
                "lost write",
                format!("acknowledged SADD of {m:?} is missing and no SREM of it began after it"),
                vec![add.id],
            ));
        }
    }
}

fn check_put(key: &str, ops: &[&Op], observed: Option<&Observed>, out: &mut Vec<Violation>) {
    let mut puts: Vec<(&Op, &str)> = Vec::new();
    for op in ops {
        match &op.kind {
            OpKind::Put { value, .. } => puts.push((op, value)),
            _ => return mixed(key, op, out),
        }
    }
    let values = match observed {
        Some(Observed::Values(v)) => v.clone(),
        Some(Observed::Str(Some(s))) => BTreeSet::from([s.clone()]),
        None | Some(Observed::Str(None)) => BTreeSet::new(),
        Some(other) => {
            return out.push(violation(
                key,
                "type",
                format!("read back as {other:?}"),
                vec![],
            ));
        }
    };
    for v in &values {
        if !puts.iter().any(|(_, p)| p == v) {
            out.push(violation(
                key,
                "phantom value",
                format!("read back {v:?}, which no PUT wrote"),
                vec![],
            ));
        }
    }
    for (p, value) in puts.iter().filter(|(o, _)| o.outcome.acked()) {
        if values.contains(*value) {
            continue;
        }
        // Another PUT that did not end before this one began may have
        // replaced it (a later context covering it, or a later stamp).
        let replaceable = puts
            .iter()
            .any(|(q, _)| q.id != p.id && q.completed_ms >= p.invoked_ms);
        if !replaceable {
            out.push(violation(
                key,
                "lost write",
                format!("acknowledged PUT of {value:?} is missing and no other PUT could have replaced it"),
                vec![p.id],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, kind: OpKind, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            node: "n1".into(),
            kind,
            invoked_ms: t.0,
            completed_ms: t.1,
            outcome,
            reply: None,
        }
    }

    fn set(id: u64, v: &str, t: (u64, u64), o: Outcome) -> Op {
        op(
            id,
            OpKind::Set {
                key: "s".into(),
                value: v.into(),
            },
            t,
            o,
        )
    }

    fn incr(id: u64, t: (u64, u64), o: Outcome) -> Op {
        op(
            id,
            OpKind::Incr {
                key: "c".into(),
                by: 1,
            },
            t,
            o,
        )
    }

    fn sadd(id: u64, m: &str, t: (u64, u64), o: Outcome) -> Op {
        op(
            id,
            OpKind::Sadd {
                key: "m".into(),
                member: m.into(),
            },
            t,
            o,
        )
    }

    fn srem(id: u64, m: &str, t: (u64, u64), o: Outcome) -> Op {
        op(
            id,
            OpKind::Srem {
                key: "m".into(),
                member: m.into(),
            },
            t,
            o,
        )
    }

    fn put(id: u64, v: &str, t: (u64, u64), o: Outcome) -> Op {
        let kind = OpKind::Put {
            key: "p".into(),
            value: v.into(),
            context: true,
        };
        op(id, kind, t, o)
    }

    /// A history whose final state agrees with every rule.
    fn good() -> History {
        let ops = vec![
            set(1, "a", (0, 10), Outcome::Ok),
            set(2, "b", (20, 30), Outcome::Ok),
            set(3, "c", (25, 60), Outcome::Unknown),
            incr(4, (0, 5), Outcome::Ok),
            incr(5, (6, 9), Outcome::Ok),
            incr(6, (10, 50), Outcome::Unknown),
            sadd(7, "x", (0, 5), Outcome::Ok),
            sadd(8, "y", (0, 5), Outcome::Ok),
            srem(9, "y", (10, 15), Outcome::Ok),
            srem(10, "x", (1, 3), Outcome::Ok),
            put(11, "p1", (0, 5), Outcome::Ok),
            put(12, "p2", (3, 8), Outcome::Ok),
        ];
        History {
            seed: 9,
            ops,
            final_state: BTreeMap::from([
                ("s".into(), Observed::Str(Some("c".into()))),
                ("c".into(), Observed::Counter(3)),
                ("m".into(), Observed::Set(BTreeSet::from(["x".to_string()]))),
                (
                    "p".into(),
                    Observed::Values(BTreeSet::from(["p1".to_string(), "p2".to_string()])),
                ),
            ]),
            roots: BTreeMap::from([(
                0,
                vec![("n1".into(), "ab".into()), ("n2".into(), "ab".into())],
            )]),
            converged_after_ms: Some(1_000),
        }
    }

    fn rules(h: &History) -> Vec<&'static str> {
        check(h, 60_000).violations.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_consistent_history_passes() {
        let r = check(&good(), 60_000);
        assert!(r.ok(), "{}", r.summary());
        assert_eq!((r.acknowledged, r.unknown, r.keys), (10, 2, 4));
    }

    #[test]
    fn a_history_survives_json() {
        let h = good();
        let text = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn a_lost_acknowledged_set_is_caught() {
        let mut h = good();
        // The final value is op 1's, written before acknowledged op 2 began.
        h.final_state
            .insert("s".into(), Observed::Str(Some("a".into())));
        assert_eq!(rules(&h), vec!["lost write"]);
        h.final_state.insert("s".into(), Observed::Str(None));
        assert_eq!(rules(&h), vec!["lost write"]);
        h.final_state
            .insert("s".into(), Observed::Str(Some("zzz".into())));
        assert_eq!(rules(&h), vec!["phantom value"]);
    }

    #[test]
    fn a_wrong_counter_is_caught_both_ways() {
        let mut h = good();
        h.final_state.insert("c".into(), Observed::Counter(1));
        assert_eq!(rules(&h), vec!["counter"], "fewer than acknowledged");
        h.final_state.insert("c".into(), Observed::Counter(4));
        assert_eq!(rules(&h), vec!["counter"], "more than could have applied");
        h.final_state.insert("c".into(), Observed::Counter(2));
        assert!(rules(&h).is_empty(), "the unknown one did not apply");
    }

    #[test]
    fn a_lost_member_is_caught_but_an_observed_removal_is_not() {
        let mut h = good();
        // x's only SREM began before its SADD completed: add wins.
        h.final_state
            .insert("m".into(), Observed::Set(BTreeSet::new()));
        assert_eq!(rules(&h), vec!["lost write"]);
        h.final_state.insert(
            "m".into(),
            Observed::Set(BTreeSet::from(["x".to_string(), "q".to_string()])),
        );
        assert_eq!(rules(&h), vec!["phantom member"]);
    }

    #[test]
    fn a_lost_put_is_caught_unless_a_later_put_could_replace_it() {
        let mut h = good();
        // p1 may have been replaced by p2 (which did not end before p1 began).
        h.final_state.insert(
            "p".into(),
            Observed::Values(BTreeSet::from(["p2".to_string()])),
        );
        assert!(rules(&h).is_empty());
        h.ops.retain(|o| o.id != 12);
        assert_eq!(rules(&h), vec!["phantom value", "lost write"]);
    }

    #[test]
    fn divergent_replicas_and_late_convergence_are_caught() {
        let mut h = good();
        h.roots.insert(
            1,
            vec![("n1".into(), "aa".into()), ("n2".into(), "bb".into())],
        );
        assert_eq!(rules(&h), vec!["convergence"]);
        let mut h = good();
        h.converged_after_ms = None;
        assert_eq!(rules(&h), vec!["convergence"]);
    }
}
