//! colony-server: the `colony` binary's library.
//!
//! Owns configuration and the CLI, the Redis protocol listener (parsing,
//! command mapping, reply encoding), the HTTP/JSON API, `/metrics` and logs.
//! It knows nothing of storage internals: every data request goes through
//! colony-kv's coordinator to the vnode that owns the key.

pub mod aae_api;
pub mod admin;
pub mod bucket_api;
pub mod cluster_api;
pub mod cmd;
pub mod config;
pub mod conn;
pub mod error;
pub mod http;
pub mod info;
pub mod metrics;
pub mod node;
pub mod resp;
pub mod state;
