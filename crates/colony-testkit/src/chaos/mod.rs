//! Chaos runs: the history clients record and the checker that reads it.
//! The runner that attacks a containerised cluster builds on these.

pub mod check;
pub mod history;
pub mod run;

pub use check::{check, Report, Violation};
pub use history::{History, Observed, Op, OpKind, Outcome};
