//! Small helpers for asserting on replies.

use std::time::{SystemTime, UNIX_EPOCH};

use redis::aio::ConnectionLike;
use redis::{Cmd, RedisError, Value};

/// The error line as the server sent it, without the leading `-`:
/// `"ERR wrong number of arguments for 'get' command"`.
pub fn error_text(err: &RedisError) -> String {
    match (err.code(), err.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_string(),
        _ => format!("<not a server error: {err}>"),
    }
}

/// Run `cmd` and return the server's error line; a success comes back as a string
/// that will not equal any error line, so `assert_eq!` shows what was received.
pub async fn expect_error(con: &mut impl ConnectionLike, cmd: &Cmd) -> String {
    match cmd.query_async::<Value>(con).await {
        Ok(value) => format!("<unexpected success: {value:?}>"),
        Err(err) => error_text(&err),
    }
}

/// A bulk string value, for comparing reply shapes.
pub fn bulk(s: impl AsRef<[u8]>) -> Value {
    Value::BulkString(s.as_ref().to_vec())
}

/// Seconds since the Unix epoch, for EXPIREAT-style arguments.
pub fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
