//! Which server binary a test drives.

use std::path::PathBuf;

/// Environment variable that selects the server under test.
pub const TARGET_ENV: &str = "COLONY_TEST_TARGET";

/// Environment variable that overrides the `redis-server` program to run.
pub const REDIS_BIN_ENV: &str = "REDIS_SERVER_BIN";

/// The server a [`crate::Node`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `BIN start --data-dir … --resp … --http … --cluster … --node-name … --fsync always`.
    Colony { bin: PathBuf },
    /// `redis-server` with an append-only file fsynced on every write: the oracle.
    Redis,
}

impl Target {
    pub fn is_redis(&self) -> bool {
        matches!(self, Target::Redis)
    }

    pub fn is_colony(&self) -> bool {
        matches!(self, Target::Colony { .. })
    }

    /// Short name for log lines.
    pub fn label(&self) -> &'static str {
        match self {
            Target::Colony { .. } => "colony",
            Target::Redis => "redis",
        }
    }

    pub(crate) fn redis_program() -> PathBuf {
        std::env::var_os(REDIS_BIN_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("redis-server"))
    }
}

/// `COLONY_TEST_TARGET=redis` selects Redis; anything else, `colony` at `colony_bin`.
///
/// Tests call it as `target_from_env(env!("CARGO_BIN_EXE_colony"))`, which compiles
/// whether or not the binary is finished, and is never run when the target is Redis.
pub fn target_from_env(colony_bin: &str) -> Target {
    match std::env::var(TARGET_ENV) {
        Ok(value) if value.eq_ignore_ascii_case("redis") => Target::Redis,
        _ => Target::Colony {
            bin: PathBuf::from(colony_bin),
        },
    }
}

/// Whether a Colony-only test should skip: true (after saying so on stderr) when the
/// target is not Colony. Use as `if colony_only(&target, "why") { return; }`.
pub fn colony_only(target: &Target, behaviour: &str) -> bool {
    if target.is_colony() {
        return false;
    }
    eprintln!(
        "skipped against {}: Colony-only behaviour: {behaviour}",
        target.label()
    );
    true
}
