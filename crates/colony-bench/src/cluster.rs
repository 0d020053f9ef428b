//! Redis Cluster routing: key slots, the slot map from CLUSTER SLOTS, and
//! MOVED/ASK redirections.

use crate::resp::Reply;

pub const SLOTS: usize = 16384;

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key, hashing only the `{tag}` when the key has a non-empty one.
pub fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// Which master serves each slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// Master addresses, `host:port`.
    pub nodes: Vec<String>,
    /// Index into `nodes` per slot; `None` for an unserved slot.
    owner: Vec<Option<u16>>,
}

impl SlotMap {
    /// Builds the map from a CLUSTER SLOTS reply. `seed_host` stands in for a
    /// node that reports an empty host ("the one you are talking to").
    pub fn from_reply(reply: &Reply, seed_host: &str) -> Result<Self, String> {
        let Reply::Array(Some(ranges)) = reply else {
            return Err(format!("CLUSTER SLOTS: expected an array, got {reply:?}"));
        };
        let mut map = SlotMap {
            nodes: Vec::new(),
            owner: vec![None; SLOTS],
        };
        for range in ranges {
            let (start, end, addr) = parse_range(range, seed_host)?;
            let idx = match map.nodes.iter().position(|n| *n == addr) {
                Some(i) => i,
                None => {
                    map.nodes.push(addr);
                    map.nodes.len() - 1
                }
            };
            for slot in &mut map.owner[start..=end] {
                *slot = Some(idx as u16);
            }
        }
        if map.nodes.is_empty() {
            return Err("CLUSTER SLOTS: no slot is served".into());
        }
        Ok(map)
    }

    /// Index of the master for `slot`, if the slot is served.
    pub fn owner(&self, slot: u16) -> Option<usize> {
        self.owner
            .get(usize::from(slot))
            .copied()
            .flatten()
            .map(usize::from)
    }
}

fn parse_range(range: &Reply, seed_host: &str) -> Result<(usize, usize, String), String> {
    let bad = || format!("CLUSTER SLOTS: malformed range {range:?}");
    let Reply::Array(Some(fields)) = range else {
        return Err(bad());
    };
    let slot = |i: usize| {
        fields
            .get(i)
            .and_then(Reply::as_integer)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < SLOTS)
    };
    let (start, end) = (slot(0).ok_or_else(bad)?, slot(1).ok_or_else(bad)?);
    let Some(Reply::Array(Some(master))) = fields.get(2) else {
        return Err(bad());
    };
    let host = master.first().and_then(Reply::as_text).ok_or_else(bad)?;
    let port = master.get(1).and_then(Reply::as_integer).ok_or_else(bad)?;
    let host = if host.is_empty() || host == "?" {
        seed_host.to_string()
    } else {
        host
    };
    if start > end {
        return Err(bad());
    }
    Ok((start, end, format!("{host}:{port}")))
}

/// A redirection error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// The slot moved for good: refresh the map.
    Moved(String),
    /// The slot is migrating: ask the target once, preceded by ASKING.
    Ask(String),
}

/// Recognises `MOVED <slot> <addr>` and `ASK <slot> <addr>`.
pub fn parse_redirect(msg: &str) -> Option<Redirect> {
    let mut words = msg.split_ascii_whitespace();
    let kind = words.next()?;
    let _slot = words.next()?;
    let addr = words.next()?.to_string();
    match kind {
        "MOVED" => Some(Redirect::Moved(addr)),
        "ASK" => Some(Redirect::Ask(addr)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn slots_match_values_redis_computes() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn keys_sharing_a_hash_tag_share_a_slot() {
        let a = key_slot(b"{user1000}.following");
        assert_eq!(a, key_slot(b"{user1000}.followers"));
        assert_eq!(a, key_slot(b"user1000"));
    }

    #[test]
    fn an_empty_or_unclosed_tag_hashes_the_whole_key() {
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Reply {
        let node = Reply::Array(Some(vec![
            Reply::Bulk(Some(host.as_bytes().to_vec())),
            Reply::Integer(port),
            Reply::Bulk(Some(b"id".to_vec())),
        ]));
        Reply::Array(Some(vec![Reply::Integer(start), Reply::Integer(end), node]))
    }

    #[test]
    fn slot_map_assigns_each_range_to_its_master() {
        let reply = Reply::Array(Some(vec![
            range(0, 5460, "127.0.0.1", 7400),
            range(5461, 10922, "", 7401),
            range(10923, 16383, "127.0.0.1", 7400),
        ]));
        let map = SlotMap::from_reply(&reply, "10.9.9.9").expect("valid reply");
        assert_eq!(map.nodes, vec!["127.0.0.1:7400", "10.9.9.9:7401"]);
        assert_eq!(map.owner(0), Some(0));
        assert_eq!(map.owner(5461), Some(1));
        assert_eq!(map.owner(16383), Some(0));
    }

    #[test]
    fn unserved_slots_have_no_owner_and_junk_is_rejected() {
        let reply = Reply::Array(Some(vec![range(0, 10, "127.0.0.1", 7400)]));
        let map = SlotMap::from_reply(&reply, "h").expect("valid reply");
        assert_eq!(map.owner(11), None);
        assert!(SlotMap::from_reply(&Reply::Integer(1), "h").is_err());
        let inverted = Reply::Array(Some(vec![range(10, 0, "h", 1)]));
        assert!(SlotMap::from_reply(&inverted, "h").is_err());
    }

    #[test]
    fn redirects_are_recognised() {
        assert_eq!(
            parse_redirect("MOVED 3999 127.0.0.1:6381"),
            Some(Redirect::Moved("127.0.0.1:6381".into()))
        );
        assert_eq!(
            parse_redirect("ASK 3999 127.0.0.1:6381"),
            Some(Redirect::Ask("127.0.0.1:6381".into()))
        );
        assert_eq!(parse_redirect("ERR wrong"), None);
    }
}
