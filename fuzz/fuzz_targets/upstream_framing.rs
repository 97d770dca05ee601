//! The upstream leg's response framing (`src/h1/framing.rs`) on arbitrary bytes, where the
//! question is always whether airgate and the upstream could disagree about where a response
//! ends (response splitting, a poisoned keep-alive connection):
//!
//! 1. a head is found the same however the bytes arrive: the head of the whole input is the head
//!    of its own bytes, and no shorter prefix of it is complete;
//! 2. a head is framed as RFC 9112 §6.3 says, and never two ways: `Length(n)` only with no
//!    `Transfer-Encoding` and every `Content-Length` value `n`; `Chunked` only on HTTP/1.1 with
//!    `chunked` the final coding and no `Content-Length`; a connection kept only when the body
//!    has an end other than the close;
//! 3. the chunked decoder gives the same bytes and the same verdict whether the body arrives at
//!    once or in pieces of any size, and never more bytes than it was given.
//!
//! The first input byte chooses `HEAD` (bit 0), the next two the piece sizes; the body is what
//! follows a head when the input starts with one.
#![no_main]

use airgate::h1::framing::{Chunked, Decoded, Framing, parse_head};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Version, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ctl, stream) = data.split_at(data.len().min(3));
    let head_request = ctl.first().is_some_and(|b| b & 1 == 1);
    let steps = [ctl.get(1).map_or(1, |&b| usize::from(b % 31) + 1), ctl.get(2).map_or(7, |&b| usize::from(b) + 1)];

    // The body: what follows a head when there is one, else the whole input.
    let mut body = stream;
    if let Ok(Some(head)) = parse_head(stream, head_request) {
        body = &stream[head.len..];
        assert!(head.len <= stream.len());
        let own = parse_head(&stream[..head.len], head_request).expect("a head's own bytes parse").expect("complete");
        assert_eq!((own.len, own.status, own.framing, own.keep_alive), (head.len, head.status, head.framing, head.keep_alive));
        for cut in [head.len - 1, head.len / 2] {
            assert!(matches!(parse_head(&stream[..cut], head_request), Ok(None)), "a prefix of {cut} bytes is complete");
        }
        let (framing, keep_alive, version) = (head.framing, head.keep_alive, head.version);
        let bytes = Bytes::copy_from_slice(&stream[..head.len]);
        if let Ok(parts) = head.into_parts(&bytes) {
            check_framing(&parts.headers, framing, keep_alive, version);
        }
    }

    let whole = decode(body, &[body.len().max(1)]);
    let pieces = decode(body, &steps);
    assert_eq!(whole, pieces, "the chunked body depends on how it arrived");
    assert!(whole.0.len() <= body.len());
});

fn check_framing(headers: &HeaderMap, framing: Framing, keep_alive: bool, version: Version) {
    let te = headers.get_all(header::TRANSFER_ENCODING).iter().count() > 0;
    let lengths: Vec<&[u8]> = headers
        .get_all(header::CONTENT_LENGTH)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|v| v.trim_ascii())
        .collect();
    match framing {
        Framing::Length(n) => {
            assert!(!te, "Length with a transfer-encoding");
            // 1*DIGIT, leading zeros allowed (RFC 9110 §8.6): `04` is 4 to every reader.
            let is_n = |v: &[u8]| {
                !v.is_empty() && v.iter().all(u8::is_ascii_digit) && std::str::from_utf8(v).ok().and_then(|v| v.parse::<u64>().ok()) == Some(n)
            };
            assert!(lengths.iter().all(|v| is_n(v)), "Length({n}) but {lengths:?}");
        }
        Framing::Chunked => {
            assert!(lengths.is_empty(), "chunked with a content-length");
            assert_eq!(version, Version::HTTP_11);
            let codings: Vec<Vec<u8>> = headers
                .get_all(header::TRANSFER_ENCODING)
                .iter()
                .flat_map(|v| v.as_bytes().split(|&b| b == b','))
                .map(|c| c.trim_ascii().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect();
            assert_eq!(codings.iter().filter(|c| c.as_slice() == b"chunked").count(), 1);
            assert_eq!(codings.last().map(Vec::as_slice), Some(&b"chunked"[..]));
        }
        Framing::UntilClose => assert!(!keep_alive, "a body ended by the close on a kept connection"),
        Framing::Empty => {}
    }
}

/// The chunked body of `stream` fed `steps` bytes at a time (cycling): the data, and whether it
/// ended (`Some(true)`), failed (`Some(false)`) or wants more (`None`).
fn decode(stream: &[u8], steps: &[usize]) -> (Vec<u8>, Option<bool>) {
    let (mut chunked, mut buf, mut out, mut fed) = (Chunked::Size, BytesMut::new(), Vec::new(), 0);
    for &step in steps.iter().cycle() {
        let end = (fed + step).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            match chunked.decode(&mut buf) {
                Ok(Decoded::Data(data)) => out.extend_from_slice(&data),
                Ok(Decoded::NeedMore) => break,
                Ok(Decoded::End) => return (out, Some(true)),
                Err(_) => return (out, Some(false)),
            }
        }
        if fed == stream.len() {
            return (out, None);
        }
    }
    unreachable!("steps is not empty")
}
