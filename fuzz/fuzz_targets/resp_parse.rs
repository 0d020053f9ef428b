//! The RESP request parser on arbitrary bytes. Beyond "never panics", it checks
//! what a connection relies on:
//! - a parsed command removes bytes from the buffer, and its arguments hold no
//!   more bytes than were removed (no amplification), none longer than `max_bulk`;
//! - `Incomplete(n)` leaves the buffer alone and asks for more than it holds;
//! - feeding the same bytes in small chunks gives the same commands and the same
//!   ending (incomplete or error) as feeding them at once, and an `Incomplete(n)`
//!   never asks for more bytes than the command it was waiting for needed.
//!
//! The first input byte picks the chunk size (1 to 16); the rest is the stream.
#![no_main]

use bytes::{Bytes, BytesMut};
use colony_server::resp::{parse_command, Limits, Parsed};
use libfuzzer_sys::fuzz_target;

/// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits {
    max_multibulk: 1024,
    max_bulk: 1024 * 1024,
    max_inline: 4096,
};

#[derive(Debug, PartialEq, Eq)]
enum End {
    Incomplete,
    Error,
}

/// A parsed command and the number of bytes it took off the buffer.
type Framed = (Vec<Bytes>, usize);

/// Parse commands off the front of `buf` until it stops; returns how it stopped
/// and, if incomplete, the total length it asked for.
fn drain(buf: &mut BytesMut, commands: &mut Vec<Framed>) -> (End, Option<usize>) {
    loop {
        let before = buf.len();
        match parse_command(buf, &LIMITS) {
            Ok(Parsed::Command(args)) => {
                let consumed = before - buf.len();
                assert!(consumed > 0, "a command consumed nothing: {args:?}");
                let arg_bytes: usize = args.iter().map(Bytes::len).sum();
                assert!(
                    arg_bytes <= consumed,
                    "{arg_bytes} argument bytes from {consumed}"
                );
                assert!(args.iter().all(|a| a.len() <= LIMITS.max_bulk));
                commands.push((args, consumed));
            }
            Ok(Parsed::Incomplete(need)) => {
                assert_eq!(buf.len(), before, "Incomplete consumed input");
                assert!(need > before, "Incomplete({need}) with {before} bytes held");
                return (End::Incomplete, Some(need));
            }
            Err(_) => return (End::Error, None),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk_seed, input)) = data.split_first() else {
        return;
    };

    let mut whole = BytesMut::from(input);
    let mut at_once = Vec::new();
    let (end_at_once, _) = drain(&mut whole, &mut at_once);

    // The same bytes in chunks of 1 to 16, as a slow client would send them.
    let chunk = usize::from(chunk_seed % 16) + 1;
    let mut buf = BytesMut::new();
    let mut chunked = Vec::new();
    let mut end_chunked = End::Incomplete;
    let mut asked: Option<usize> = None;
    for piece in input.chunks(chunk) {
        buf.extend_from_slice(piece);
        let parsed_before = chunked.len();
        let (end, need) = drain(&mut buf, &mut chunked);
        // A caller may wait for the bytes Incomplete asked for: the command that
        // then completes must not have needed fewer.
        if let (Some(asked), Some((_, took))) = (asked, chunked.get(parsed_before)) {
            assert!(
                asked <= *took,
                "Incomplete asked for {asked}, command took {took}"
            );
        }
        asked = need;
        end_chunked = end;
        if end_chunked == End::Error {
            break;
        }
    }

    assert_eq!(chunked, at_once, "chunks of {chunk} parsed differently");
    assert_eq!(
        end_chunked, end_at_once,
        "chunks of {chunk} ended differently"
    );
});
