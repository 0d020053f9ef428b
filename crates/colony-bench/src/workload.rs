//! What to send: operation kinds, workload mixes, key choice (uniform or YCSB
//! zipfian) and the encoding of one operation as a RESP command.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Digits in a formatted key number; keyspaces must stay below 10^KEY_DIGITS.
pub const KEY_DIGITS: usize = 12;
/// Members (for sets) and fields (for hashes) per key.
const SUBKEYS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Get,
    Set,
    Incr,
    Sadd,
    Sismember,
    Hset,
    Hget,
}

impl OpKind {
    pub const ALL: [OpKind; 7] = [
        OpKind::Get,
        OpKind::Set,
        OpKind::Incr,
        OpKind::Sadd,
        OpKind::Sismember,
        OpKind::Hset,
        OpKind::Hget,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Get => "GET",
            OpKind::Set => "SET",
            OpKind::Incr => "INCR",
            OpKind::Sadd => "SADD",
            OpKind::Sismember => "SISMEMBER",
            OpKind::Hset => "HSET",
            OpKind::Hget => "HGET",
        }
    }

    /// Position in `ALL`, for per-kind arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// YCSB A: 50% GET, 50% SET.
    A,
    /// YCSB B: 95% GET, 5% SET.
    B,
    /// YCSB C: 100% GET.
    C,
    /// 100% INCR.
    Incr,
    /// 50% SADD, 50% SISMEMBER.
    Sets,
    /// 50% HSET, 50% HGET.
    Hashes,
    /// 100% SET.
    Set,
    /// 100% GET.
    Get,
}

/// A read op, a write op, and how often the read is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub read: OpKind,
    pub write: OpKind,
    pub read_fraction: f64,
}

impl Workload {
    pub fn mix(self) -> Mix {
        let (read, write, read_fraction) = match self {
            Workload::A => (OpKind::Get, OpKind::Set, 0.5),
            Workload::B => (OpKind::Get, OpKind::Set, 0.95),
            Workload::C | Workload::Get => (OpKind::Get, OpKind::Set, 1.0),
            Workload::Set => (OpKind::Get, OpKind::Set, 0.0),
            Workload::Incr => (OpKind::Incr, OpKind::Incr, 0.0),
            Workload::Sets => (OpKind::Sismember, OpKind::Sadd, 0.5),
            Workload::Hashes => (OpKind::Hget, OpKind::Hset, 0.5),
        };
        Mix {
            read,
            write,
            read_fraction,
        }
    }

    /// Key prefix unless one is given: one per data type, so running the
    /// workloads one after another never meets a key of the wrong type.
    pub fn default_prefix(self) -> &'static str {
        match self {
            Workload::Incr => "counter:",
            Workload::Sets => "set:",
            Workload::Hashes => "hash:",
            _ => "key:",
        }
    }

    /// The write used by the load phase to create every key once.
    pub fn load_op(self) -> OpKind {
        self.mix().write
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Uniform,
    Zipfian,
}

/// The YCSB zipfian generator over `0..items`: item 0 is the most popular.
#[derive(Debug, Clone, Copy)]
pub struct Zipfian {
    items: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    pub const YCSB_THETA: f64 = 0.99;

    /// Costs one `powf` per item, once: share the result between clients.
    pub fn new(items: u64, theta: f64) -> Self {
        let n = items.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2.min(n), theta);
        let items = n as f64;
        Zipfian {
            items,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: (1.0 - (2.0 / items).powf(1.0 - theta)) / (1.0 - zeta2 / zetan),
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    pub fn sample(&self, rng: &mut SmallRng) -> u64 {
        let u: f64 = rng.random();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta && self.items >= 2.0 {
            return 1;
        }
        let v = self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (v as u64).min(self.items as u64 - 1)
    }

    pub fn theta(&self) -> f64 {
        self.theta
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Spreads zipfian ranks over the keyspace (YCSB's "scrambled" zipfian), so the
/// hot keys are not all neighbours.
fn scramble(rank: u64, items: u64) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    for byte in rank.to_le_bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h % items.max(1)
}

#[derive(Debug, Clone, Copy)]
pub enum KeyChooser {
    Uniform { items: u64 },
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(dist: Distribution, items: u64) -> Self {
        match dist {
            Distribution::Uniform => KeyChooser::Uniform {
                items: items.max(1),
            },
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::new(items, Zipfian::YCSB_THETA)),
        }
    }

    fn next(&self, rng: &mut SmallRng) -> u64 {
        match self {
            KeyChooser::Uniform { items } => rng.random_range(0..*items),
            KeyChooser::Zipfian(z) => scramble(z.sample(rng), z.items as u64),
        }
    }
}

/// One operation to send: its kind, key number and member/field number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub key: u64,
    pub sub: u64,
}

/// Draws operations for one client from its own seeded RNG.
pub struct OpGenerator {
    mix: Mix,
    keys: KeyChooser,
    rng: SmallRng,
}

impl OpGenerator {
    pub fn new(mix: Mix, keys: KeyChooser, seed: u64) -> Self {
        OpGenerator {
            mix,
            keys,
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    pub fn next_op(&mut self) -> Op {
        let read = self.mix.read_fraction >= 1.0
            || (self.mix.read_fraction > 0.0 && self.rng.random::<f64>() < self.mix.read_fraction);
        Op {
            kind: if read { self.mix.read } else { self.mix.write },
            key: self.keys.next(&mut self.rng),
            sub: self.rng.random_range(0..SUBKEYS),
        }
    }
}

mod encode;
pub use encode::Payload;

#[cfg(test)]
mod tests;
