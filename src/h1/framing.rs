//! Where an upstream HTTP/1.1 response ends (RFC 9112 §6): the head parsed once by httparse, the
//! body's framing decided from it, and the chunked decoder — functions over bytes, so every rule
//! is a table test.
//!
//! Strict wherever a lenient reading could put the end of a response somewhere else than the
//! upstream meant: conflicting `Content-Length`s, `Transfer-Encoding` next to `Content-Length`,
//! `chunked` that is not the final coding, `Transfer-Encoding` in an HTTP/1.0 response, a `101`
//! nobody asked for, a chunk line with a bare LF. Each is refused (502) and its connection
//! closed, so bytes the gateway did not frame can never be read as the response to another
//! caller's request. httparse itself refuses obs-fold, NUL and stray CR in the head (its defaults,
//! which are hyper's).

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version, response};
use smallvec::SmallVec;
use std::{mem::MaybeUninit, ops::Range};

/// Longest response head accepted (status line and header fields).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one response head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (size and extensions) or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;
/// Header fields a response gets in the gateway after it is parsed.
const RESPONSE_EXTRA: usize = 4;

/// Why an upstream response could not be framed: the request fails (502) and the connection is
/// closed. The text names the rule, never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream response: {0}")]
pub struct Malformed(pub &'static str);

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a response to `HEAD`, 1xx, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection (no length given, or a final coding other than
    /// chunked): the connection cannot be reused.
    UntilClose,
}

/// A response head found complete at the start of a buffer, as offsets into that buffer.
#[derive(Debug)]
pub struct Head {
    /// Bytes of the head, final empty line included.
    pub len: usize,
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// A 1xx interim response (to skip; `101` is refused instead).
    pub interim: bool,
    /// How the body is delimited.
    pub framing: Framing,
    /// The upstream lets the connection carry another request after this response.
    pub keep_alive: bool,
    fields: SmallVec<[(Range<usize>, Range<usize>); 16]>,
}

/// Parses the response head at the start of `buf`: `None` while it is incomplete. `head_request`:
/// the request was `HEAD` (a response to it has no body whatever its headers say).
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<Head>, Malformed> {
    // Uninitialised: filling 128 empty fields (4 KiB) on every parse would cost more than the parse.
    let mut storage = [const { MaybeUninit::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut resp, buf, &mut storage) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Malformed("head too large")),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many header fields")),
        Err(_) => return Err(Malformed("head")),
    };
    if len > MAX_HEAD {
        return Err(Malformed("head too large"));
    }
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| Malformed("status code"))?;
    let version = if resp.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 };

    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let mut fields = SmallVec::new();
    let mut length: Option<u64> = None;
    let (mut chunked, mut last_chunked, mut transfer_encoding) = (0, false, false);
    let (mut close, mut keep_alive_token) = (false, false);
    for h in resp.headers.iter() {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in h.value.split(|&b| b == b',') {
                let n = content_length(trim(part)).ok_or(Malformed("content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Malformed("conflicting content-length"));
                }
                length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            transfer_encoding = true;
            for coding in h.value.split(|&b| b == b',').map(trim).filter(|c| !c.is_empty()) {
                last_chunked = coding.eq_ignore_ascii_case(b"chunked");
                chunked += usize::from(last_chunked);
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        fields.push((offset(name), offset(h.value)));
    }

    if code == 101 {
        return Err(Malformed("101 without an upgrade request"));
    }
    let interim = status.is_informational();
    let bodiless = interim || head_request || code == 204 || code == 304;
    let framing = if bodiless {
        Framing::Empty
    } else if transfer_encoding {
        if length.is_some() {
            return Err(Malformed("both transfer-encoding and content-length"));
        }
        if version == Version::HTTP_10 {
            return Err(Malformed("transfer-encoding in an HTTP/1.0 response"));
        }
        match (chunked, last_chunked) {
            (0, _) => Framing::UntilClose,
            (1, true) => Framing::Chunked,
            _ => return Err(Malformed("chunked is not the final coding, once")),
        }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let persistent = if version == Version::HTTP_10 { keep_alive_token && !close } else { !close };
    let keep_alive = persistent && framing != Framing::UntilClose;
    Ok(Some(Head { len, status, version, interim, framing, keep_alive, fields }))
}

impl Head {
    /// The response head, its header values sliced out of `head` (the bytes [`parse_head`] saw,
    /// split off the read buffer) without copying.
    pub fn into_parts(self, head: &Bytes) -> Result<response::Parts, Malformed> {
        // Room for what the gateway adds (`X-Request-Id`, the two rate-limit headers) without
        // growing the map, which rehashes every field.
        let mut headers = HeaderMap::with_capacity(self.fields.len() + RESPONSE_EXTRA);
        for (name, value) in self.fields {
            let name = HeaderName::from_bytes(&head[name]).map_err(|_| Malformed("header name"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value)).map_err(|_| Malformed("header value"))?;
            headers.append(name, value);
        }
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = self.status;
        parts.version = self.version;
        parts.headers = headers;
        Ok(parts)
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &s[start..end]
}

/// `1*DIGIT` (no sign, no spaces inside, at most 19 digits so it fits a `u64`).
fn content_length(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
}

/// What the chunked decoder made of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// More bytes must be read first.
    NeedMore,
    /// The last chunk and the trailer section are done (trailers are dropped).
    End,
}

/// The chunked transfer coding, decoded in place from a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunked {
    /// Before a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// After chunk data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// Done.
    Done,
}

impl Chunked {
    /// Decodes from the front of `buf`, consuming what it uses.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, Malformed> {
        loop {
            match *self {
                Chunked::Done => return Ok(Decoded::End),
                Chunked::Size => {
                    // httparse reads an empty size as 0, the last chunk.
                    if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                        return Err(Malformed("chunk size"));
                    }
                    let (used, size) = match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete(found)) => found,
                        Ok(httparse::Status::Partial) if buf.len() > MAX_LINE + 2 => {
                            return Err(Malformed("chunk-size line too long"));
                        }
                        Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                        Err(_) => return Err(Malformed("chunk size")),
                    };
                    // The same limit whether the line arrived in one read or in many.
                    if used > MAX_LINE + 2 {
                        return Err(Malformed("chunk-size line too long"));
                    }
                    // httparse skips any byte inside a chunk extension, LF included: a bare LF
                    // there ends the line for other parsers.
                    if buf[..used - 2].iter().any(|&b| b == b'\n' || b == b'\r') {
                        return Err(Malformed("bare LF or CR in a chunk-size line"));
                    }
                    buf.advance(used);
                    *self = if size == 0 { Chunked::Trailers } else { Chunked::Data(size) };
                }
                Chunked::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                    let left = left - take as u64;
                    *self = if left == 0 { Chunked::DataEnd } else { Chunked::Data(left) };
                    return Ok(Decoded::Data(buf.split_to(take).freeze()));
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed("chunk data longer than its size"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers => {
                    let Some(lf) = buf.iter().position(|&b| b == b'\n') else {
                        if buf.len() > MAX_LINE + 1 {
                            return Err(Malformed("trailer line too long"));
                        }
                        return Ok(Decoded::NeedMore);
                    };
                    if lf > MAX_LINE + 1 {
                        return Err(Malformed("trailer line too long"));
                    }
                    if lf == 0 || buf[lf - 1] != b'\r' || buf[..lf - 1].contains(&b'\r') {
                        return Err(Malformed("bare LF or CR in the trailer section"));
                    }
                    let empty = lf == 1;
                    buf.advance(lf + 1);
                    if empty {
                        *self = Chunked::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "framing_tests.rs"]
mod tests;
