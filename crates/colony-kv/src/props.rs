//! Bucket properties: how many copies of a bucket's keys the cluster keeps
//! (`n_val`) and how many replicas a request waits for (`r`, `w`, `pr`, `pw`,
//! `dw`), Riak's names and meanings.
//!
//! `n_val` is a number of copies, or `all` ("share everything"): every
//! node that owns partitions keeps a copy of every key of the bucket, and
//! the quorums count against the number of such nodes at the time of the
//! request (see [`NVal::All`]).
//!
//! Stored cluster-wide in the ring's metadata under `bucket/<name>`
//! (postcard), so a change made on any node reaches every node by ring
//! gossip. A bucket nobody configured has the defaults: `n_val` of the ring,
//! `r = w = quorum`, `pr = pw = dw = 0`.
//!
//! What a request uses is [`BucketProps::resolve`]: the bucket's values,
//! overridden per request, turned into counts of replicas.

use crate::KvError;
use colony_core::Ring;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// How many replicas to wait for, relative to `n` (the copies kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Quorum {
    One,
    /// A majority: `n / 2 + 1`.
    Quorum,
    All,
    /// The bucket's value (in a request); the built-in default (in a bucket).
    Default,
    /// A number of replicas, capped at `n`.
    Num(u8),
}

impl FromStr for Quorum {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "one" => Ok(Self::One),
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            "default" => Ok(Self::Default),
            n => n.parse::<u8>().map(Self::Num).map_err(|_| {
                format!("{n:?} is not one, quorum, all, default or a number from 0 to 255")
            }),
        }
    }
}

impl fmt::Display for Quorum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::One => f.write_str("one"),
            Self::Quorum => f.write_str("quorum"),
            Self::All => f.write_str("all"),
            Self::Default => f.write_str("default"),
            Self::Num(n) => write!(f, "{n}"),
        }
    }
}

impl Quorum {
    /// The count of replicas this stands for when `n` copies are kept;
    /// `Default` stands for `builtin`. A number is capped at `n` when
    /// `cap` (a bucket with a numeric n_val), kept as asked otherwise.
    fn count(self, n: usize, builtin: Quorum, cap: bool) -> usize {
        let q = if self == Self::Default { builtin } else { self };
        match q {
            Self::One => 1,
            Self::Quorum | Self::Default => n / 2 + 1,
            Self::All => n,
            Self::Num(k) if cap => usize::from(k).min(n),
            Self::Num(k) => usize::from(k),
        }
    }
}

/// In JSON a number is a number and a name a string (`{"w": 2, "r":
/// "quorum"}`); in binary encodings always the text, which stays readable
/// whatever variants are added later.
impl Serialize for Quorum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Num(n) if s.is_human_readable() => s.serialize_u8(*n),
            q => s.collect_str(q),
        }
    }
}

impl<'de> Deserialize<'de> for Quorum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Quorum;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one, quorum, all, default or a number from 0 to 255")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quorum, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quorum, E> {
                u8::try_from(v)
                    .map(Quorum::Num)
                    .map_err(|_| E::custom(format!("{v} is more than 255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quorum, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("{v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_str(V)
        }
    }
}

/// How many copies of a bucket's keys the cluster keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NVal {
    /// On the first `n` distinct nodes of the key's walk (at most the
    /// ring's n_val).
    Num(u8),
    /// On every node that owns partitions (or is about to receive its
    /// first): the key's walk as a whole. The count changes with the
    /// membership. Names (`one`, `quorum`, `all`) resolve against it per
    /// request; a number larger than it is not capped but refused with
    /// `QuorumUnmet` (asked for 5 copies, 5 are not there).
    All,
}

impl fmt::Display for NVal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Num(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}

/// In JSON a number or `"all"`. In binary encodings a `u8` with 0 for
/// `all` (no bucket ever had `n_val=0`), so properties stored before `all`
/// existed (a plain `Option<u8>`) decode unchanged.
impl Serialize for NVal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self, s.is_human_readable()) {
            (Self::All, true) => s.serialize_str("all"),
            (Self::All, false) => s.serialize_u8(0),
            (Self::Num(n), _) => s.serialize_u8(*n),
        }
    }
}

impl<'de> Deserialize<'de> for NVal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NVal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number from 1 to 255, or all")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NVal, E> {
                match v {
                    "all" => Ok(NVal::All),
                    n => match n.parse::<u8>() {
                        Ok(k) if k >= 1 => Ok(NVal::Num(k)),
                        _ => Err(E::custom(format!("n_val {n:?}: expected 1 to 255, or all"))),
                    },
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NVal, E> {
                match u8::try_from(v) {
                    Ok(0) => Ok(NVal::All),
                    Ok(k) => Ok(NVal::Num(k)),
                    Err(_) => Err(E::custom(format!("n_val {v} is more than 255"))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NVal, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("n_val {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_any(V)
        } else {
            d.deserialize_u8(V)
        }
    }
}

/// A bucket's replication properties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Copies kept of each key; None follows the cluster's (the ring's) n_val.
    pub n_val: Option<NVal>,
    /// Replicas a read waits for.
    pub r: Quorum,
    /// Replicas a write waits for.
    pub w: Quorum,
    /// Primary (not fallback) replicas a read waits for.
    pub pr: Quorum,
    /// Primary replicas a write waits for.
    pub pw: Quorum,
    /// Replicas a write waits for to have it on disk.
    pub dw: Quorum,
}

impl Default for BucketProps {
    fn default() -> Self {
        Self {
            n_val: None,
            r: Quorum::Quorum,
            w: Quorum::Quorum,
            pr: Quorum::Num(0),
            pw: Quorum::Num(0),
            dw: Quorum::Num(0),
        }
    }
}

/// Per-request choices that replace the bucket's (None: the bucket's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub r: Option<Quorum>,
    pub w: Option<Quorum>,
    pub pr: Option<Quorum>,
    pub pw: Option<Quorum>,
    pub dw: Option<Quorum>,
}

/// Counts of replicas for one request: `n` copies, and how many of them
/// each phase waits for. Always `r, w >= 1`; for a bucket with a numeric
/// n_val also `r, w <= n` and `pr, pw, dw <= n`. For `n_val=all` a number
/// may exceed `n` (the nodes there are now): see [`Resolved::excess`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub pr: usize,
    pub pw: usize,
    pub dw: usize,
}

impl Resolved {
    /// The first count (by name) that asks for more replicas than the `n`
    /// that exist, with that count: such a request cannot be met, and is
    /// refused before any replica is asked. Only `n_val=all` resolves so.
    pub fn excess(&self, read: bool) -> Option<(&'static str, usize)> {
        // Checked on every request: no allocation.
        let reads = [("r", self.r), ("pr", self.pr)];
        let writes = [("w", self.w), ("pw", self.pw), ("dw", self.dw)];
        let counts: &[(&'static str, usize)] = if read { &reads } else { &writes };
        counts.iter().copied().find(|(_, c)| *c > self.n)
    }
}

/// The property names, in display order.
pub const NAMES: [&str; 6] = ["n_val", "r", "w", "pr", "pw", "dw"];

/// The ring metadata key of `bucket`'s properties: `bucket/<name>` for a
/// UTF-8 name without `%`, else `bucket/%<hex>`, so no two buckets share one.
pub fn meta_key(bucket: &[u8]) -> String {
    match std::str::from_utf8(bucket) {
        Ok(name) if !name.contains('%') => format!("bucket/{name}"),
        _ => {
            let hex: String = bucket.iter().map(|b| format!("{b:02x}")).collect();
            format!("bucket/%{hex}")
        }
    }
}

/// The bucket a metadata key of [`meta_key`] names; None for other keys.
fn bucket_of(key: &str) -> Option<Vec<u8>> {
    let name = key.strip_prefix("bucket/")?;
    match name.strip_prefix('%') {
        Some(hex) if hex.len() % 2 == 0 => (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect(),
        Some(_) => None,
        None => Some(name.as_bytes().to_vec()),
    }
}

/// The buckets of `ring` with `n_val=all`, in storage order (by length,
/// then bytes, as their keys sort within a partition).
pub fn shared_buckets(ring: &Ring) -> Vec<bytes::Bytes> {
    let mut out: Vec<bytes::Bytes> = ring
        .meta_prefix("bucket/")
        .filter(|(_, v)| BucketProps::decode(v).is_ok_and(|p| p.is_shared()))
        .filter_map(|(k, _)| bucket_of(k).map(bytes::Bytes::from))
        .collect();
    out.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
    out
}

fn bad(msg: String) -> KvError {
    KvError::InvalidProps(msg)
}

impl BucketProps {
    /// `bucket`'s properties as stored in `ring`, or the defaults. A stored
    /// value that does not decode (written by a newer version) counts as
    /// absent: the defaults are safe for any bucket.
    pub fn lookup(ring: &Ring, bucket: &[u8]) -> BucketProps {
        ring.meta(&meta_key(bucket))
            .and_then(|b| Self::decode(b).ok())
            .unwrap_or_default()
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain fields into a Vec: cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<BucketProps, KvError> {
        postcard::from_bytes(bytes).map_err(|e| bad(format!("stored properties: {e}")))
    }

    /// A property by name, as text (`n_val` is `default` while it follows the
    /// ring's).
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "n_val" => self
                .n_val
                .map_or_else(|| "default".into(), |n| n.to_string()),
            "r" => self.r.to_string(),
            "w" => self.w.to_string(),
            "pr" => self.pr.to_string(),
            "pw" => self.pw.to_string(),
            "dw" => self.dw.to_string(),
            _ => return None,
        })
    }

    /// Set one property from text, as in `w=2`, and check the whole against
    /// its own n_val; on error nothing is changed. `default` restores the
    /// built-in default.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), KvError> {
        let mut next = self.clone();
        next.assign(key, value)?;
        next.check(None)?;
        *self = next;
        Ok(())
    }

    /// Apply several `key=value` edits as one change and check the result
    /// against the cluster's n_val. On error nothing is changed.
    pub fn edit<'a>(
        &mut self,
        edits: impl IntoIterator<Item = (&'a str, &'a str)>,
        ring_n_val: u8,
    ) -> Result<(), KvError> {
        let mut next = self.clone();
        for (k, v) in edits {
            next.assign(k, v)?;
        }
        next.check(Some(ring_n_val))?;
        *self = next;
        Ok(())
    }

    fn assign(&mut self, key: &str, value: &str) -> Result<(), KvError> {
        let value = value.trim();
        let defaults = Self::default();
        if key == "n_val" {
            self.n_val = match value {
                "default" => None,
                "all" => Some(NVal::All),
                v => match v.parse::<u8>() {
                    Ok(n) if n >= 1 => Some(NVal::Num(n)),
                    _ => {
                        return Err(bad(format!(
                            "n_val={v:?}: expected a number from 1 to 255, all, or default"
                        )))
                    }
                },
            };
            return Ok(());
        }
        let (slot, default) = match key {
            "r" => (&mut self.r, defaults.r),
            "w" => (&mut self.w, defaults.w),
            "pr" => (&mut self.pr, defaults.pr),
            "pw" => (&mut self.pw, defaults.pw),
            "dw" => (&mut self.dw, defaults.dw),
            other => {
                return Err(bad(format!(
                    "unknown property {other:?}: the properties are {}",
                    NAMES.join(", ")
                )))
            }
        };
        let q: Quorum = value.parse().map_err(|e| bad(format!("{key}={e}")))?;
        *slot = if q == Quorum::Default { default } else { q };
        Ok(())
    }

    /// Whether the bucket is shared by every node (`n_val=all`).
    pub fn is_shared(&self) -> bool {
        self.n_val == Some(NVal::All)
    }

    /// Whether the properties make sense: r and w at least 1, no count above
    /// n_val, and (given the cluster's) n_val no more than the cluster's.
    /// With `n_val=all` the copies follow the membership, so any count is
    /// accepted here; a request asking for more than the nodes there are is
    /// refused when it is made.
    fn check(&self, ring_n_val: Option<u8>) -> Result<(), KvError> {
        let own = match self.n_val {
            Some(NVal::Num(n)) => Some(n),
            Some(NVal::All) => None,
            None => ring_n_val,
        };
        if let (Some(NVal::Num(n)), Some(ring)) = (self.n_val, ring_n_val) {
            if n > ring {
                return Err(bad(format!(
                    "n_val={n} exceeds the cluster's n_val of {ring} (its --n-val, \
                     set when the cluster was created)"
                )));
            }
        }
        for (name, q) in [("r", self.r), ("w", self.w)] {
            if q == Quorum::Num(0) {
                return Err(bad(format!(
                    "{name}=0: a request waits for at least one replica"
                )));
            }
        }
        if self.is_shared() {
            return Ok(());
        }
        let Some(n) = own else {
            return Ok(());
        };
        let counts = [
            ("r", self.r),
            ("w", self.w),
            ("pr", self.pr),
            ("pw", self.pw),
            ("dw", self.dw),
        ];
        for (name, q) in counts {
            if let Quorum::Num(k) = q {
                if k > n {
                    return Err(bad(format!(
                        "{name}={k} exceeds n_val={n}: no request could gather {k} replicas"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The effective properties: n_val filled in from the cluster's.
    pub fn effective(&self, ring_n_val: u8) -> BucketProps {
        BucketProps {
            n_val: Some(self.n_val.unwrap_or(NVal::Num(ring_n_val))),
            ..self.clone()
        }
    }

    /// The replica counts for one request.
    ///
    /// `replicas_available` is the distinct nodes the bucket's keys of the
    /// partition can live on (liveness plays no part): the partition's
    /// preference list, or for `n_val=all` its whole walk (every node
    /// owning partitions). `n` is at least 1 (this node).
    ///
    /// With a numeric n_val, `n` is the bucket's n_val (or the ring's),
    /// never more than the ring's n_val nor than `replicas_available`. A
    /// cluster of fewer nodes than n_val therefore keeps fewer copies, and
    /// every count, numbers included, is capped at that smaller `n`: `w=3`
    /// on a two-node cluster waits for 2.
    ///
    /// With `n_val=all`, `n` is `replicas_available`; names resolve against
    /// it, numbers are kept as asked even above it ([`Resolved::excess`]):
    /// membership changes under such a bucket, and a client asking for 5
    /// copies is told there are 4 rather than silently given 4.
    ///
    /// r and w are at least 1 even if a request asks for 0.
    pub fn resolve(
        &self,
        ring_n_val: u8,
        replicas_available: usize,
        overrides: &Overrides,
    ) -> Resolved {
        let ring = usize::from(ring_n_val);
        let (n, cap) = match self.n_val {
            Some(NVal::All) => (replicas_available.max(1), false),
            own => {
                let n = match own {
                    Some(NVal::Num(k)) => usize::from(k),
                    _ => ring,
                };
                (n.min(ring).min(replicas_available).max(1), true)
            }
        };
        let pick = |o: Option<Quorum>, bucket: Quorum, builtin: Quorum| {
            let q = match o {
                None | Some(Quorum::Default) => bucket,
                Some(q) => q,
            };
            q.count(n, builtin, cap)
        };
        let d = Self::default();
        Resolved {
            n,
            r: pick(overrides.r, self.r, d.r).max(1),
            w: pick(overrides.w, self.w, d.w).max(1),
            pr: pick(overrides.pr, self.pr, d.pr),
            pw: pick(overrides.pw, self.pw, d.pw),
            dw: pick(overrides.dw, self.dw, d.dw),
        }
    }
}

#[cfg(test)]
mod tests;
