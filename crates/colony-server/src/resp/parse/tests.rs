use super::*;
use proptest::prelude::*;

fn parse(input: &[u8]) -> (Result<Parsed, ProtocolError>, usize) {
    let mut buf = BytesMut::from(input);
    let r = parse_command(&mut buf, &Limits::default());
    (r, buf.len())
}

fn cmd(args: &[&str]) -> Parsed {
    Parsed::Command(
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect(),
    )
}

#[test]
fn multibulk_commands_parse_and_are_consumed() {
    let (r, left) = parse(b"*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n*1\r\n");
    assert_eq!(r.unwrap(), cmd(&["GET", "foo"]));
    assert_eq!(left, 4);
}

#[test]
fn partial_frames_ask_for_more() {
    let full = b"*2\r\n$3\r\nSET\r\n$5\r\nhello\r\n";
    for cut in 0..full.len() {
        let (r, left) = parse(&full[..cut]);
        assert!(
            matches!(r, Ok(Parsed::Incomplete(_))),
            "cut at {cut}: {r:?}"
        );
        assert_eq!(left, cut, "nothing consumed on a partial frame");
    }
}

#[test]
fn inline_commands_split_on_spaces_and_quotes() {
    assert_eq!(parse(b"PING\r\n").0.unwrap(), cmd(&["PING"]));
    assert_eq!(
        parse(b"SET k \"a b\\n\" 'c d'\n").0.unwrap(),
        cmd(&["SET", "k", "a b\n", "c d"])
    );
    assert!(parse(b"SET \"k\r\n").0.is_err());
}

#[test]
fn malformed_lengths_are_protocol_errors() {
    assert_eq!(
        parse(b"*1\r\n$abc\r\n").0,
        Err(ProtocolError("invalid bulk length".into()))
    );
    assert_eq!(
        parse(b"*x\r\n").0,
        Err(ProtocolError("invalid multibulk length".into()))
    );
    assert_eq!(
        parse(b"*1\r\n+OK\r\n").0,
        Err(ProtocolError("expected '$', got '+'".into()))
    );
    assert!(parse(b"*99999999999\r\n").0.is_err());
    assert!(parse(b"*1\r\n$600000000\r\n").0.is_err());
    assert!(parse(b"*1\r\n$3\r\nabcXY").0.is_err());
}

#[test]
fn oversized_inline_lines_are_refused() {
    let line = vec![b'a'; 70 * 1024];
    assert!(parse(&line).0.is_err());
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut buf = BytesMut::from(&input[..]);
        for _ in 0..64 {
            match parse_command(&mut buf, &Limits::default()) {
                Ok(Parsed::Command(_)) if !buf.is_empty() => continue,
                _ => break,
            }
        }
    }

    #[test]
    fn encoded_commands_round_trip(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8)) {
        let mut wire = format!("*{}\r\n", args.len()).into_bytes();
        for a in &args {
            wire.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            wire.extend_from_slice(a);
            wire.extend_from_slice(b"\r\n");
        }
        let mut buf = BytesMut::from(&wire[..]);
        let parsed = parse_command(&mut buf, &Limits::default()).unwrap();
        let want: Vec<Bytes> = args.into_iter().map(Bytes::from).collect();
        prop_assert_eq!(parsed, Parsed::Command(want));
        prop_assert!(buf.is_empty());
    }
}
