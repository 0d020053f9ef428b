//! Test support for Colony's end-to-end suites.
//!
//! Owns: spawning real server processes (`colony`, or `redis-server` as an oracle)
//! on free loopback ports with their own data and log directories, waiting for
//! readiness by polling, and the small clients the tests need beyond the `redis`
//! crate: a raw RESP socket ([`RawConn`]) for byte-exact and malformed traffic, and
//! a hand-written HTTP/1.1 request ([`http_request`]).
//!
//! Does not own: assertions about server behaviour (those live in the tests), the
//! deterministic simulator (`colony-sim`), or docker chaos.
//!
//! The same test runs against either target: `COLONY_TEST_TARGET=redis` selects
//! `redis-server`, anything else the `colony` binary (see [`target_from_env`]).

pub mod chaos;
mod cluster;
mod corruption;
mod http;
mod node;
mod noise;
mod poll;
mod port;
mod raw;
mod reply;
mod target;

pub use cluster::{cluster_status, get_json, metric, settled, wait_live, wait_settled};
pub use corruption::corrupt_files;
pub use http::{http_request, HttpResponse};
pub use node::{Node, NodeOptions, StartError};
pub use noise::seeded_bytes;
pub use poll::eventually;
pub use raw::{encode_command, RawConn};
pub use reply::{bulk, error_text, expect_error, unix_time};
pub use target::{colony_only, target_from_env, Target};
