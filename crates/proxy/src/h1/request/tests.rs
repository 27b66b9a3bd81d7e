use super::*;

fn rewrite() -> Rewrite {
    Rewrite::new(b"192.0.2.7", true, b"443", b"ams")
}

fn parse_str(text: &str) -> (Parsed, String) {
    let mut out = Vec::new();
    let parsed = parse(text.as_bytes(), &rewrite(), b"abc-ams", &mut out);
    (parsed, String::from_utf8(out).expect("ascii head"))
}

#[test]
fn request_heads_are_rewritten() {
    let text = "POST /x?y=1 HTTP/1.1\r\nHost: hello.example.test\r\nConnection: keep-alive, x-secret\r\n\
        x-secret: 1\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nfly-client-ip: 6.6.6.6\r\n\
        via: 1.0 other\r\ncontent-length: 3\r\n\r\nabc";
    let (parsed, out) = parse_str(text);
    let Parsed::Ready(head) = parsed else {
        panic!("not ready: {parsed:?}")
    };
    assert_eq!(head.head_len, text.len() - 3);
    assert_eq!(&text[head.host.clone()], "hello.example.test");
    assert_eq!(head.body, RequestBody::Length(3));
    assert!(!head.close && !head.is_head);
    let want = "POST /x?y=1 HTTP/1.1\r\nHost: hello.example.test\r\nvia: 1.0 other\r\n\
        content-length: 3\r\nx-forwarded-port: 443\r\nx-forwarded-for: 10.0.0.1, 192.0.2.7\r\n\
        via: 1.1 godwit\r\nfly-client-ip: 192.0.2.7\r\nx-forwarded-proto: https\r\n\
        x-forwarded-ssl: on\r\nfly-forwarded-port: 443\r\nfly-region: ams\r\nfly-request-id: abc-ams\r\n";
    assert_eq!(out, want);
}

#[test]
fn chunked_close_and_partial_heads() {
    let (parsed, out) = parse_str(
        "GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: Chunked\r\nconnection: close\r\n\r\n",
    );
    let Parsed::Ready(head) = parsed else {
        panic!("not ready: {parsed:?}")
    };
    assert_eq!(head.body, RequestBody::Chunked);
    assert!(head.close);
    assert!(out.ends_with("transfer-encoding: chunked\r\n"), "{out}");
    assert!(matches!(
        parse_str("GET / HTTP/1.1\r\nhost: a\r\n").0,
        Parsed::Partial
    ));
}

#[test]
fn unusual_requests_fall_back_to_hyper() {
    for text in [
        "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\ncontent-length: 1\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +1\r\n\r\n",
        "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1, 1\r\n\r\n",
    ] {
        assert!(matches!(parse_str(text).0, Parsed::Fallback), "{text:?}");
    }
}
