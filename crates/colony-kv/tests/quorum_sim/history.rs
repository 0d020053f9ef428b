//! What clients were told, and the checks against it: reads during the run
//! (nothing read was never written) and the final state (nothing
//! acknowledged is lost).

use bytes::Bytes;
use colony_kv::Reply;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Str,
    Counter,
    Set,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Str, Kind::Counter, Kind::Set];

    pub fn prefix(self) -> &'static str {
        match self {
            Kind::Str => "s",
            Kind::Counter => "c",
            Kind::Set => "m",
        }
    }
}

/// What a write's answer says about whether it took effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// No answer yet.
    Pending,
    /// Succeeded with w >= quorum: must never be lost.
    Acked,
    /// Succeeded with w below a quorum: applied by one replica at least.
    Applied,
    /// Failed, but a replica may have applied it.
    Unknown,
    /// Failed before any replica applied it.
    NotApplied,
}

#[derive(Debug, Clone)]
pub struct Write {
    pub key: Bytes,
    /// The SET value or SADD member (unique per write); unused for INCR.
    pub value: Bytes,
    /// The INCR amount.
    pub amount: i64,
    pub invoked: u64,
    pub completed: u64,
    pub outcome: Outcome,
}

#[derive(Debug, Default)]
pub struct History {
    pub writes: Vec<Write>,
}

/// The members of a set reply.
pub fn members(r: &Reply) -> Vec<Bytes> {
    match r {
        Reply::Set(v) | Reply::Array(v) => v
            .iter()
            .filter_map(|m| match m {
                Reply::Bulk(b) => Some(b.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A counter's value in a GET reply (absent is 0).
pub fn counter(r: &Reply) -> i64 {
    match r {
        Reply::Bulk(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a counter reads as {b:?}")),
        Reply::Nil => 0,
        other => panic!("a counter reads as {other:?}"),
    }
}

impl History {
    pub fn invoke(&mut self, key: Bytes, value: Bytes, amount: i64, at: u64) -> usize {
        self.writes.push(Write {
            key,
            value,
            amount,
            invoked: at,
            completed: u64::MAX,
            outcome: Outcome::Pending,
        });
        self.writes.len() - 1
    }

    pub fn complete(&mut self, id: usize, outcome: Outcome, at: u64) {
        let w = &mut self.writes[id];
        w.outcome = outcome;
        w.completed = at;
    }

    fn of<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Write> + 'a {
        self.writes.iter().filter(move |w| w.key == key)
    }

    /// Writes of `key` that may have taken effect.
    fn possible<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a Write> + 'a {
        self.of(key).filter(|w| w.outcome != Outcome::NotApplied)
    }

    /// A read during the run shows only what may have been written.
    pub fn check_read(&self, kind: Kind, key: &[u8], r: &Reply) {
        let k = String::from_utf8_lossy(key);
        match kind {
            Kind::Str => {
                if let Reply::Bulk(v) = r {
                    assert!(
                        self.possible(key).any(|w| w.value == *v),
                        "{k} read {v:?}, which no SET that may have taken effect wrote"
                    );
                }
            }
            Kind::Counter => {
                let most: i64 = self.possible(key).map(|w| w.amount).sum();
                let v = counter(r);
                assert!((0..=most).contains(&v), "{k} counts {v}, beyond 0..={most}");
            }
            Kind::Set => {
                for m in members(r) {
                    assert!(
                        self.possible(key).any(|w| w.value == m),
                        "{k} holds {m:?}, which no SADD that may have taken effect added"
                    );
                }
            }
        }
    }

    /// The final quorum read of `key` keeps every acknowledged write.
    pub fn check_final(&self, kind: Kind, key: &[u8], r: &Reply) {
        self.check_read(kind, key, r);
        let k = String::from_utf8_lossy(key);
        let acked = || self.of(key).filter(|w| w.outcome == Outcome::Acked);
        match kind {
            Kind::Str => {
                if acked().next().is_none() {
                    return;
                }
                let Reply::Bulk(v) = r else {
                    panic!("{k} lost its acknowledged SETs: it reads {r:?}");
                };
                // The value must come from a write that no acknowledged
                // SET followed strictly later (last writer wins by time).
                let w = self.possible(key).find(|w| w.value == *v);
                let w = w.unwrap_or_else(|| panic!("{k} reads {v:?}, never written"));
                // A write whose outcome is unknown may land any time later.
                let applied_by = match w.outcome {
                    Outcome::Acked | Outcome::Applied => w.completed,
                    _ => u64::MAX,
                };
                let overwrote = acked().find(|y| applied_by < y.invoked);
                assert!(
                    overwrote.is_none(),
                    "{k} reads {v:?} (written {}..{}), but the SET of {:?} acknowledged after it began later: lost",
                    w.invoked,
                    w.completed,
                    overwrote.map(|y| (&y.value, y.invoked, y.completed)),
                );
            }
            Kind::Counter => {
                let least: i64 = acked().map(|w| w.amount).sum();
                let v = counter(r);
                assert!(v >= least, "{k} counts {v}, below the {least} acknowledged");
            }
            Kind::Set => {
                let have = members(r);
                for w in acked() {
                    assert!(
                        have.contains(&w.value),
                        "{k} lost the acknowledged member {:?}",
                        w.value
                    );
                }
            }
        }
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.writes.iter().filter(|w| w.outcome == outcome).count()
    }
}
