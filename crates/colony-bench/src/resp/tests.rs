use super::*;

fn parsed(input: &[u8]) -> Reply {
    match parse_reply(input) {
        Ok(Some((r, n))) => {
            assert_eq!(n, input.len(), "whole input consumed");
            r
        }
        other => panic!("expected a complete reply, got {other:?}"),
    }
}

#[test]
fn every_reply_type_parses() {
    assert_eq!(parsed(b"+OK\r\n"), Reply::Simple("OK".into()));
    assert_eq!(
        parsed(b"-ERR unknown command\r\n"),
        Reply::Error("ERR unknown command".into())
    );
    assert_eq!(parsed(b":-42\r\n"), Reply::Integer(-42));
    assert_eq!(
        parsed(b"$5\r\nhello\r\n"),
        Reply::Bulk(Some(b"hello".to_vec()))
    );
    assert_eq!(parsed(b"$-1\r\n"), Reply::Bulk(None));
    assert_eq!(parsed(b"$0\r\n\r\n"), Reply::Bulk(Some(Vec::new())));
    assert_eq!(parsed(b"*-1\r\n"), Reply::Array(None));
    assert_eq!(
        parsed(b"*2\r\n:1\r\n*1\r\n$1\r\na\r\n"),
        Reply::Array(Some(vec![
            Reply::Integer(1),
            Reply::Array(Some(vec![Reply::Bulk(Some(b"a".to_vec()))])),
        ]))
    );
}

#[test]
fn bulk_payload_may_contain_crlf() {
    assert_eq!(
        parsed(b"$4\r\na\r\nb\r\n"),
        Reply::Bulk(Some(b"a\r\nb".to_vec()))
    );
}

#[test]
fn every_proper_prefix_of_a_frame_is_incomplete() {
    let frames: [&[u8]; 4] = [
        b"+OK\r\n",
        b"$5\r\nhello\r\n",
        b"*3\r\n:1\r\n$2\r\nab\r\n-ERR x\r\n",
        b":12345\r\n",
    ];
    for frame in frames {
        for cut in 0..frame.len() {
            assert_eq!(parse_reply(&frame[..cut]), Ok(None), "cut at {cut}");
            assert_eq!(scan_reply(&frame[..cut]), Ok(None), "cut at {cut}");
        }
        assert_eq!(scan_reply(frame), Ok(Some(frame.len())));
    }
}

#[test]
fn only_the_first_of_several_frames_is_consumed() {
    let input = b"+OK\r\n$3\r\nabc\r\n";
    assert_eq!(
        parse_reply(input),
        Ok(Some((Reply::Simple("OK".into()), 5)))
    );
    assert_eq!(scan_reply(&input[5..]), Ok(Some(9)));
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    assert_eq!(
        parse_reply(b"?x\r\n"),
        Err(ProtocolError::UnknownType(b'?'))
    );
    assert_eq!(parse_reply(b":12a\r\n"), Err(ProtocolError::BadInteger));
    assert_eq!(parse_reply(b":\r\n"), Err(ProtocolError::BadInteger));
    assert_eq!(
        parse_reply(b":99999999999999999999\r\n"),
        Err(ProtocolError::BadInteger)
    );
    assert_eq!(
        parse_reply(b"$3\r\nabcXY"),
        Err(ProtocolError::BadTerminator)
    );
    assert_eq!(parse_reply(b"$-2\r\n"), Err(ProtocolError::BadLength(-2)));
    assert_eq!(parse_reply(b"+OK\rX"), Err(ProtocolError::BadTerminator));
    let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
    assert_eq!(parse_reply(deep.as_bytes()), Err(ProtocolError::TooDeep));
    assert_eq!(scan_reply(deep.as_bytes()), Err(ProtocolError::TooDeep));
}

#[test]
fn commands_are_arrays_of_bulk_strings() {
    let mut buf = Vec::new();
    encode_command(&mut buf, &[b"SET", b"k", b"value"]);
    assert_eq!(buf, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n");
}

#[test]
fn decimals_are_written_without_padding() {
    for n in [0u64, 7, 10, 12345, u64::MAX] {
        let mut buf = Vec::new();
        push_decimal(&mut buf, n);
        assert_eq!(buf, n.to_string().into_bytes());
    }
}
