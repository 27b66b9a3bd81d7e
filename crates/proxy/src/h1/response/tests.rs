use http::StatusCode;

use super::*;
use crate::body::error_response;

fn parse_str(text: &str, to_head: bool, close: bool) -> (Parsed, String) {
    let mut out = Vec::new();
    let parsed = parse(text.as_bytes(), to_head, close, b"abc-ams", &mut out);
    (parsed, String::from_utf8(out).expect("ascii head"))
}

#[test]
fn response_heads_are_rewritten_and_framed() {
    let text = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-hop\r\nx-hop: 1\r\n\
        fly-request-id: theirs\r\nx-app: yes\r\n\r\nhello";
    let (parsed, out) = parse_str(text, false, false);
    let Parsed::Ready(head) = parsed else {
        panic!("not ready: {parsed:?}")
    };
    assert_eq!((head.head_len, head.status), (text.len() - 5, 200));
    assert_eq!(head.framing, Framing::Length(5));
    assert!(head.keep_alive && head.replay.is_none());
    let want = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nx-app: yes\r\nvia: 1.1 godwit\r\n\
        fly-request-id: abc-ams\r\n\r\n";
    assert_eq!(out, want);

    let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 9\r\n\
        fly-replay: region=iad\r\n\r\n";
    let (parsed, out) = parse_str(chunked, false, true);
    let Parsed::Ready(head) = parsed else {
        panic!("not ready: {parsed:?}")
    };
    assert_eq!(head.framing, Framing::Chunked(Chunked::default()));
    assert_eq!(
        &chunked[head.replay.expect("a replay header")],
        "region=iad"
    );
    assert!(
        out.contains("transfer-encoding: chunked\r\n")
            && out.ends_with("connection: close\r\n\r\n")
    );
    assert!(!out.contains("content-length"), "{out}");

    let (parsed, _) = parse_str("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true, false);
    assert!(matches!(
        parsed,
        Parsed::Ready(ResponseHead {
            framing: Framing::Empty,
            ..
        })
    ));
    let (parsed, out) = parse_str("HTTP/1.0 200 OK\r\n\r\n", false, false);
    assert!(matches!(
        parsed,
        Parsed::Ready(ResponseHead {
            framing: Framing::Close,
            keep_alive: false,
            ..
        })
    ));
    assert!(out.ends_with("connection: close\r\n\r\n"));
    assert!(matches!(
        parse_str("HTTP/1.1 103 Early Hints\r\n\r\n", false, false).0,
        Parsed::Informational(_)
    ));
    assert!(matches!(
        parse_str("HTTP/1.1 200 OK\r\n", false, false).0,
        Parsed::Partial
    ));
    assert!(matches!(
        parse_str("HTTP/1.1 101 Switching\r\n\r\n", false, false).0,
        Parsed::Invalid
    ));
}

#[test]
fn own_answers_are_whole_responses() {
    let response = error_response(
        StatusCode::BAD_GATEWAY,
        Some("PU01"),
        "machine m failed to answer",
    );
    let mut out = Vec::new();
    write_own(&response, false, false, b"abc-ams", &mut out);
    let text = String::from_utf8(out).expect("ascii");
    assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{text}");
    assert!(
        text.contains("fly-proxy-error: PU01\r\n") && text.contains("content-length: 33\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\nPU01: machine m failed to answer\n"),
        "{text}"
    );
}
