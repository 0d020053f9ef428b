//! The Redis protocol: request parsing and reply encoding (RESP2 and RESP3).

mod encode;
mod parse;

pub use encode::{encode, encode_error};
pub use parse::{parse_command, Limits, Parsed, ProtocolError};

/// The protocol version a connection speaks (switched by HELLO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}
