//! Free loopback ports.
//!
//! The OS picks a free port when we bind port 0; we release it and hand the number
//! to the server. Ports handed out in this process are remembered so that two nodes
//! started by parallel tests never get the same one.

use std::collections::HashSet;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};

fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback address on a port that was free a moment ago and that this process
/// has not handed out before.
pub(crate) fn free_loopback_addr() -> io::Result<SocketAddr> {
    for _ in 0..64 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let addr = listener.local_addr()?;
        let mut ports = handed_out()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ports.insert(addr.port()) {
            return Ok(addr);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no fresh loopback port after 64 tries",
    ))
}
