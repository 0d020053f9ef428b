//! Reply encoding, RESP2 or RESP3 per connection.

use super::Protocol;
use crate::error::resp_error;
use bytes::{BufMut, BytesMut};
use colony_kv::Reply;

/// Append `reply` to `out`.
pub fn encode(out: &mut BytesMut, reply: &Reply, proto: Protocol) {
    match reply {
        Reply::Ok => out.put_slice(b"+OK\r\n"),
        Reply::Status(s) => line(out, b'+', s.as_bytes()),
        Reply::Nil => match proto {
            Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
            Protocol::Resp3 => out.put_slice(b"_\r\n"),
        },
        Reply::Int(i) => {
            out.put_u8(b':');
            out.put_slice(itoa(*i).as_bytes());
            out.put_slice(b"\r\n");
        }
        Reply::Bulk(b) => bulk(out, b),
        Reply::Double(d) => match proto {
            Protocol::Resp2 => bulk(out, format_double(*d).as_bytes()),
            Protocol::Resp3 => line(out, b',', format_double(*d).as_bytes()),
        },
        Reply::Array(items) => {
            header(out, b'*', items.len());
            for item in items {
                encode(out, item, proto);
            }
        }
        Reply::Set(items) => {
            header(
                out,
                if proto == Protocol::Resp3 { b'~' } else { b'*' },
                items.len(),
            );
            for item in items {
                encode(out, item, proto);
            }
        }
        Reply::Map(pairs) => {
            match proto {
                Protocol::Resp2 => header(out, b'*', pairs.len() * 2),
                Protocol::Resp3 => header(out, b'%', pairs.len()),
            }
            for (k, v) in pairs {
                encode(out, k, proto);
                encode(out, v, proto);
            }
        }
        Reply::Pairs(pairs) => {
            match proto {
                Protocol::Resp2 => header(out, b'*', pairs.len() * 2),
                Protocol::Resp3 => header(out, b'*', pairs.len()),
            }
            for (k, v) in pairs {
                if proto == Protocol::Resp3 {
                    header(out, b'*', 2);
                }
                encode(out, k, proto);
                encode(out, v, proto);
            }
        }
        Reply::Error(e) => encode_error(out, &resp_error(e)),
    }
}

/// Append an error reply; `msg` starts with its code (`ERR`, `WRONGTYPE`…).
pub fn encode_error(out: &mut BytesMut, msg: &str) {
    // An error line cannot hold CR or LF.
    let clean: String = msg
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    line(out, b'-', clean.as_bytes());
}

fn line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(tag);
    out.put_slice(text);
    out.put_slice(b"\r\n");
}

fn header(out: &mut BytesMut, tag: u8, n: usize) {
    out.put_u8(tag);
    out.put_slice(itoa(n as i64).as_bytes());
    out.put_slice(b"\r\n");
}

fn bulk(out: &mut BytesMut, b: &[u8]) {
    out.reserve(b.len() + 16);
    header(out, b'$', b.len());
    out.put_slice(b);
    out.put_slice(b"\r\n");
}

fn itoa(i: i64) -> String {
    i.to_string()
}

fn format_double(d: f64) -> String {
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    format!("{d}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn enc(r: &Reply, p: Protocol) -> String {
        let mut out = BytesMut::new();
        encode(&mut out, r, p);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn maps_are_flat_arrays_in_resp2_and_maps_in_resp3() {
        let m = Reply::Map(vec![(Reply::bulk("f"), Reply::Int(1))]);
        assert_eq!(enc(&m, Protocol::Resp2), "*2\r\n$1\r\nf\r\n:1\r\n");
        assert_eq!(enc(&m, Protocol::Resp3), "%1\r\n$1\r\nf\r\n:1\r\n");
    }

    #[test]
    fn nil_differs_by_protocol() {
        assert_eq!(enc(&Reply::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(enc(&Reply::Nil, Protocol::Resp3), "_\r\n");
        assert_eq!(
            enc(&Reply::Bulk(Bytes::new()), Protocol::Resp2),
            "$0\r\n\r\n"
        );
    }

    #[test]
    fn error_lines_cannot_be_split() {
        let mut out = BytesMut::new();
        encode_error(&mut out, "ERR bad\r\ninjected");
        assert_eq!(&out[..], b"-ERR bad  injected\r\n");
    }
}
