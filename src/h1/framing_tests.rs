//! The framing rules as tables: every row a response head (or chunked body) and what the gateway
//! makes of it. A row that is refused names the rule; a row that is accepted names the framing.

use super::{Chunked, Decoded, Framing, MAX_LINE, Malformed, parse_head};
use bytes::BytesMut;

/// What a head is framed as (and whether its connection is kept), or the rule that refused it.
type Framed = Result<(Framing, bool), &'static str>;
/// A chunked body, or the rule that refused it.
type Dechunked = Result<&'static [u8], &'static str>;

fn framing(head: &str) -> Framed {
    let raw = head.replace('|', "\r\n");
    match parse_head(raw.as_bytes(), false) {
        Ok(Some(h)) => Ok((h.framing, h.keep_alive)),
        Ok(None) => Err("incomplete"),
        Err(Malformed(why)) => Err(why),
    }
}

#[test]
fn response_heads_are_framed_or_refused() {
    use Framing::*;
    let rows: &[(&str, &str, Framed)] = &[
        ("plain length", "HTTP/1.1 200 OK|content-length: 5||", Ok((Length(5), true))),
        ("zero length", "HTTP/1.1 200 OK|content-length: 0||", Ok((Empty, true))),
        ("repeated equal lengths", "HTTP/1.1 200 OK|content-length: 5|content-length: 5||", Ok((Length(5), true))),
        ("a list of equal lengths", "HTTP/1.1 200 OK|content-length: 5, 5||", Ok((Length(5), true))),
        (
            "conflicting lengths",
            "HTTP/1.1 200 OK|content-length: 5|content-length: 6||",
            Err("conflicting content-length"),
        ),
        ("conflicting list", "HTTP/1.1 200 OK|content-length: 5,6||", Err("conflicting content-length")),
        ("signed length", "HTTP/1.1 200 OK|content-length: +5||", Err("content-length")),
        ("hex length", "HTTP/1.1 200 OK|content-length: 0x5||", Err("content-length")),
        ("empty length", "HTTP/1.1 200 OK|content-length: ||", Err("content-length")),
        ("length with inner space", "HTTP/1.1 200 OK|content-length: 1 2||", Err("content-length")),
        ("length past u64", "HTTP/1.1 200 OK|content-length: 99999999999999999999||", Err("content-length")),
        ("chunked", "HTTP/1.1 200 OK|transfer-encoding: chunked||", Ok((Chunked, true))),
        ("chunked, any case", "HTTP/1.1 200 OK|Transfer-Encoding: ChUnKeD||", Ok((Chunked, true))),
        ("gzip then chunked", "HTTP/1.1 200 OK|transfer-encoding: gzip, chunked||", Ok((Chunked, true))),
        (
            "split over two fields",
            "HTTP/1.1 200 OK|transfer-encoding: gzip|transfer-encoding: chunked||",
            Ok((Chunked, true)),
        ),
        (
            "CL and TE (smuggling)",
            "HTTP/1.1 200 OK|content-length: 5|transfer-encoding: chunked||",
            Err("both transfer-encoding and content-length"),
        ),
        (
            "TE and CL (smuggling)",
            "HTTP/1.1 200 OK|transfer-encoding: chunked|content-length: 5||",
            Err("both transfer-encoding and content-length"),
        ),
        (
            "chunked twice",
            "HTTP/1.1 200 OK|transfer-encoding: chunked, chunked||",
            Err("chunked is not the final coding, once"),
        ),
        (
            "chunked not last",
            "HTTP/1.1 200 OK|transfer-encoding: chunked, gzip||",
            Err("chunked is not the final coding, once"),
        ),
        ("only another coding", "HTTP/1.1 200 OK|transfer-encoding: gzip||", Ok((UntilClose, false))),
        (
            "TE in HTTP/1.0",
            "HTTP/1.0 200 OK|transfer-encoding: chunked||",
            Err("transfer-encoding in an HTTP/1.0 response"),
        ),
        ("no length: until close", "HTTP/1.1 200 OK|x: y||", Ok((UntilClose, false))),
        ("connection close", "HTTP/1.1 200 OK|connection: close|content-length: 1||", Ok((Length(1), false))),
        ("close among tokens", "HTTP/1.1 200 OK|connection: foo, Close|content-length: 1||", Ok((Length(1), false))),
        ("HTTP/1.0 closes", "HTTP/1.0 200 OK|content-length: 1||", Ok((Length(1), false))),
        ("HTTP/1.0 keep-alive", "HTTP/1.0 200 OK|connection: keep-alive|content-length: 1||", Ok((Length(1), true))),
        ("204 has no body", "HTTP/1.1 204 No Content|content-length: 7||", Ok((Empty, true))),
        ("304 has no body", "HTTP/1.1 304 Not Modified|transfer-encoding: chunked||", Ok((Empty, true))),
        ("100 is interim", "HTTP/1.1 100 Continue||", Ok((Empty, true))),
        ("101 unasked", "HTTP/1.1 101 Switching Protocols|upgrade: h2c||", Err("101 without an upgrade request")),
        ("obs-fold", "HTTP/1.1 200 OK|x: a| b|content-length: 1||", Err("head")),
        ("NUL in a value", "HTTP/1.1 200 OK|x: a\0b|content-length: 1||", Err("head")),
        ("CR inside a value", "HTTP/1.1 200 OK|x: a\rb|content-length: 1||", Err("head")),
        ("space before colon", "HTTP/1.1 200 OK|content-length : 1||", Err("head")),
        ("status not three digits", "HTTP/1.1 20 OK|content-length: 1||", Err("head")),
        ("HTTP/2 status line", "HTTP/2 200 OK|content-length: 1||", Err("head")),
        ("incomplete", "HTTP/1.1 200 OK|content-length: 1|", Err("incomplete")),
    ];
    for (name, head, want) in rows {
        assert_eq!(framing(head), *want, "{name}");
    }
}

#[test]
fn a_head_response_has_no_body_whatever_its_headers_say() {
    let head = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n", true).unwrap().unwrap();
    assert_eq!(head.framing, Framing::Empty);
    assert!(head.keep_alive);
}

#[test]
fn bare_lf_line_ends_frame_the_head_as_hyper_reads_them() {
    // httparse (and so hyper's client before this module) accepts LF alone as a line end in a
    // response; the head ends where both agree, so nothing is left over to be misread.
    let raw = b"HTTP/1.1 200 OK\ncontent-length: 2\n\nokNEXT";
    let head = parse_head(raw, false).unwrap().unwrap();
    assert_eq!((head.framing, head.len), (Framing::Length(2), raw.len() - 6));
}

#[test]
fn limits_on_the_head() {
    let mut many = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..=super::MAX_HEADERS {
        many.push_str(&format!("x-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(parse_head(many.as_bytes(), false).unwrap_err(), Malformed("too many header fields"));
    let endless = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(super::MAX_HEAD));
    assert_eq!(parse_head(endless.as_bytes(), false).unwrap_err(), Malformed("head too large"));
}

#[test]
fn header_values_are_kept_byte_for_byte() {
    let raw = bytes::Bytes::from_static(b"HTTP/1.1 201 Created\r\nX-A: one\r\nx-a: two\r\nx-b: \xe9t\xe9\r\n\r\n");
    let head = parse_head(&raw, false).unwrap().unwrap();
    let parts = head.into_parts(&raw).unwrap();
    assert_eq!(parts.status, 201);
    let a: Vec<_> = parts.headers.get_all("x-a").iter().map(|v| v.as_bytes().to_vec()).collect();
    assert_eq!(a, [b"one".to_vec(), b"two".to_vec()]);
    assert_eq!(parts.headers["x-b"].as_bytes(), b"\xe9t\xe9");
}

/// Decodes `wire` fed in pieces of `step` bytes; the body, or the refusal.
fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, usize), &'static str> {
    let mut state = Chunked::Size;
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut fed = 0;
    loop {
        match state.decode(&mut buf).map_err(|Malformed(why)| why)? {
            Decoded::Data(d) => body.extend_from_slice(&d),
            Decoded::End => return Ok((body, buf.len() + wire.len() - fed)),
            Decoded::NeedMore if fed == wire.len() => return Err("incomplete"),
            Decoded::NeedMore => {
                let n = step.min(wire.len() - fed);
                buf.extend_from_slice(&wire[fed..fed + n]);
                fed += n;
            }
        }
    }
}

#[test]
fn chunked_bodies_are_decoded_or_refused() {
    let rows: &[(&str, &[u8], Dechunked)] = &[
        ("two chunks", b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", Ok(b"abcde")),
        ("upper-case hex", b"A\r\n0123456789\r\n0\r\n\r\n", Ok(b"0123456789")),
        ("extensions are ignored", b"3;name=\"v\"\r\nabc\r\n0;x\r\n\r\n", Ok(b"abc")),
        ("trailers are dropped", b"1\r\na\r\n0\r\nx-t: 1\r\ny: 2\r\n\r\n", Ok(b"a")),
        ("bare LF after the size", b"3\nabc\r\n0\r\n\r\n", Err("chunk size")),
        ("bare LF inside an extension", b"3;a\nb\r\nabc\r\n0\r\n\r\n", Err("bare LF or CR in a chunk-size line")),
        ("data longer than its size", b"3\r\nabcd\r\n0\r\n\r\n", Err("chunk data longer than its size")),
        ("negative size", b"-3\r\nabc\r\n0\r\n\r\n", Err("chunk size")),
        ("size past u64", b"10000000000000000\r\n", Err("chunk size")),
        ("no size", b"\r\nabc\r\n0\r\n\r\n", Err("chunk size")),
        ("bare LF in the trailers", b"0\r\nx: 1\n\r\n", Err("bare LF or CR in the trailer section")),
        ("bare LF ends the trailers", b"0\r\n\n", Err("bare LF or CR in the trailer section")),
        ("cut short", b"5\r\nab", Err("incomplete")),
    ];
    for (name, wire, want) in rows {
        for step in [1, 3, wire.len()] {
            let got = dechunk(wire, step).map(|(body, _)| body);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{name}, fed {step} bytes at a time");
        }
    }
}

#[test]
fn the_decoder_stops_at_the_end_of_the_body() {
    // Bytes after the last chunk are not body: they stay in the buffer (and the connection, with
    // bytes nobody asked for, is not reused).
    let (body, left) = dechunk(b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", 64).unwrap();
    assert_eq!((body.as_slice(), left), (&b"ok"[..], 17));
}

#[test]
fn line_limits_hold_however_the_line_arrives() {
    // A chunk-size line (size and extension) or a trailer line of MAX_LINE bytes before its CRLF
    // is taken, one byte more is refused: the same in one read as in many.
    let ext = |len: usize| format!("1;{}", "x".repeat(len - 2));
    let trailer = |len: usize| format!("x:{}", "y".repeat(len - 2));
    for (len, ok) in [(MAX_LINE, true), (MAX_LINE + 1, false)] {
        let size_line = format!("{}\r\na\r\n0\r\n\r\n", ext(len));
        let trailer_line = format!("1\r\na\r\n0\r\n{}\r\n\r\n", trailer(len));
        for (what, wire, why) in [
            ("chunk-size line", size_line, "chunk-size line too long"),
            ("trailer line", trailer_line, "trailer line too long"),
        ] {
            for step in [1, 1000, wire.len()] {
                let got = dechunk(wire.as_bytes(), step).map(|(body, _)| body);
                let want = if ok { Ok(b"a".to_vec()) } else { Err(why) };
                assert_eq!(got, want, "{what} of {len} bytes, fed {step} at a time");
            }
        }
    }
}
