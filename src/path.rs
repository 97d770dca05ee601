//! Request path forms airgate refuses (contract §3, the 400 row): every spelling that the route
//! table and some upstream stack could read as two different paths. The route table matches the
//! raw path; a path that passes [`check`] means the same thing to every common normaliser, so the
//! route it is authorised by is the route it reaches. `docs/configuration.md` ("Path forms airgate
//! refuses") says which upstream normalisation each rule defends against.
//!
//! Pure and allocation-free: it runs on every request before anything else.

/// Why a path is refused. [`PathError::reason`] is the audit `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not starting with `/` (`*`, a relative reference).
    #[error("the path is not absolute")]
    NotAbsolute,
    /// `.` or `..` as a whole segment.
    #[error("a `.` or `..` segment")]
    DotSegment,
    /// `//`: an empty segment between two slashes.
    #[error("an empty segment (`//`)")]
    EmptySegment,
    /// A segment ending in `.` (Windows drops it: `admin.` is `admin`).
    #[error("a segment ending in `.`")]
    TrailingDot,
    /// A segment ending in an encoded space (Windows drops it too).
    #[error("a segment ending in a space")]
    TrailingSpace,
    /// `;` anywhere (path parameters: `..;`, `/admin;x`).
    #[error("`;` in the path")]
    Semicolon,
    /// A raw `\` (a separator on Windows stacks).
    #[error("`\\` in the path")]
    Backslash,
    /// NUL, raw or `%00`.
    #[error("NUL in the path")]
    Nul,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-encoding")]
    BadPercentEncoding,
    /// `%2F` or `%5C`: a separator the route table does not see.
    #[error("a percent-encoded `/` or `\\`")]
    EncodedSeparator,
    /// `%61` and the like: an unreserved character never needs encoding.
    #[error("a percent-encoded unreserved character")]
    EncodedUnreserved,
    /// `%25` followed by two hex digits: a second decoding would produce another path.
    #[error("double percent-encoding")]
    DoubleEncoding,
    /// Percent-encoded bytes that are not UTF-8 (overlong `%C0%AF` is `/` to old decoders).
    #[error("percent-encoded bytes that are not UTF-8")]
    InvalidUtf8,
    /// A raw byte outside visible ASCII: RFC 9112 wants it percent-encoded, and stacks disagree
    /// on what it means (best-fit mappings turn `／` into `/`).
    #[error("a raw byte outside visible ASCII")]
    RawNonAscii,
}

impl PathError {
    /// The audit reason naming the class, e.g. `empty_segment`.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "path_not_absolute",
            PathError::DotSegment => "dot_segment",
            PathError::EmptySegment => "empty_segment",
            PathError::TrailingDot => "trailing_dot",
            PathError::TrailingSpace => "trailing_space",
            PathError::Semicolon => "semicolon_in_path",
            PathError::Backslash => "backslash_in_path",
            PathError::Nul => "nul_in_path",
            PathError::BadPercentEncoding => "bad_percent_encoding",
            PathError::EncodedSeparator => "encoded_separator",
            PathError::EncodedUnreserved => "encoded_unreserved",
            PathError::DoubleEncoding => "double_encoding",
            PathError::InvalidUtf8 => "invalid_utf8",
            PathError::RawNonAscii => "raw_non_ascii",
        }
    }
}

/// Accepts `path` (the raw, still-encoded path of the request target) only when no upstream
/// normalisation could turn it into another path. A trailing `/` is not an empty segment.
pub fn check(path: &str) -> Result<(), PathError> {
    let Some(rest) = path.strip_prefix('/') else { return Err(PathError::NotAbsolute) };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        check_segment(segment.as_bytes(), last)?;
    }
    Ok(())
}

fn check_segment(s: &[u8], last: bool) -> Result<(), PathError> {
    match s {
        b"" if last => return Ok(()),
        b"" => return Err(PathError::EmptySegment),
        b"." | b".." => return Err(PathError::DotSegment),
        _ => {}
    }
    let mut utf8 = Utf8::default();
    let mut i = 0;
    while i < s.len() {
        let byte = match s[i] {
            b';' => return Err(PathError::Semicolon),
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            raw if !(0x21..=0x7E).contains(&raw) => return Err(PathError::RawNonAscii),
            b'%' => {
                let (Some(hi), Some(lo)) = (s.get(i + 1).and_then(|b| hex(*b)), s.get(i + 2).and_then(|b| hex(*b)))
                else {
                    return Err(PathError::BadPercentEncoding);
                };
                let decoded = hi << 4 | lo;
                match decoded {
                    0 => return Err(PathError::Nul),
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    b'%' if s.get(i + 3).is_some_and(|b| hex(*b).is_some())
                        && s.get(i + 4).is_some_and(|b| hex(*b).is_some()) =>
                    {
                        return Err(PathError::DoubleEncoding);
                    }
                    b if is_unreserved(b) => return Err(PathError::EncodedUnreserved),
                    _ => {}
                }
                i += 3;
                utf8.push(decoded)?;
                continue;
            }
            raw => raw,
        };
        // Raw bytes are visible ASCII here: they end any multi-byte sequence.
        utf8.push(byte)?;
        i += 1;
    }
    utf8.finish()?;
    match s {
        [.., b'.'] => Err(PathError::TrailingDot),
        [.., b'%', b'2', b'0'] => Err(PathError::TrailingSpace),
        _ => Ok(()),
    }
}

/// RFC 3986 §2.3 unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A streaming UTF-8 validator over the decoded bytes of one segment (no buffer): refuses
/// overlong forms, surrogates, values past U+10FFFF and truncated sequences, as `str` does.
#[derive(Default)]
struct Utf8 {
    /// Continuation bytes still expected.
    need: u8,
    /// Allowed range of the next continuation byte (narrowed after some lead bytes).
    lo: u8,
    hi: u8,
}

impl Utf8 {
    fn push(&mut self, b: u8) -> Result<(), PathError> {
        if self.need > 0 {
            if b < self.lo || b > self.hi {
                return Err(PathError::InvalidUtf8);
            }
            self.need -= 1;
            (self.lo, self.hi) = (0x80, 0xBF);
            return Ok(());
        }
        (self.need, self.lo, self.hi) = match b {
            0x00..=0x7F => return Ok(()),
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            0xED => (2, 0x80, 0x9F),
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return Err(PathError::InvalidUtf8),
        };
        Ok(())
    }

    fn finish(&self) -> Result<(), PathError> {
        if self.need == 0 { Ok(()) } else { Err(PathError::InvalidUtf8) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refused_form_names_its_class() {
        let cases = [
            ("relative", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("/a/../b", PathError::DotSegment),
            ("/a/./b", PathError::DotSegment),
            ("/a/..", PathError::DotSegment),
            ("/sales//admin/users", PathError::EmptySegment),
            ("//sales/", PathError::EmptySegment),
            ("/sales/admin//", PathError::EmptySegment),
            ("/sales/admin./users", PathError::TrailingDot),
            ("/sales/admin...", PathError::TrailingDot),
            ("/sales/admin%20/users", PathError::TrailingSpace),
            ("/sales;x/admin", PathError::Semicolon),
            ("/sales/..;/admin", PathError::Semicolon),
            ("/sales/admin;jsessionid=1", PathError::Semicolon),
            ("/sales\\admin", PathError::Backslash),
            ("/a/%00", PathError::Nul),
            ("/a/%zz", PathError::BadPercentEncoding),
            ("/a/%4", PathError::BadPercentEncoding),
            ("/a/%", PathError::BadPercentEncoding),
            ("/a/%u002e", PathError::BadPercentEncoding),
            ("/a/%2fetc", PathError::EncodedSeparator),
            ("/a/%2F", PathError::EncodedSeparator),
            ("/a/%5c", PathError::EncodedSeparator),
            ("/%61dmin", PathError::EncodedUnreserved),
            ("/a/%2e%2E/b", PathError::EncodedUnreserved),
            ("/a/%2e", PathError::EncodedUnreserved),
            ("/a/%41", PathError::EncodedUnreserved),
            ("/a/%39", PathError::EncodedUnreserved),
            ("/a/%2D", PathError::EncodedUnreserved),
            ("/a/%5f", PathError::EncodedUnreserved),
            ("/a/%7E", PathError::EncodedUnreserved),
            ("/a/%252e%252e/b", PathError::DoubleEncoding),
            ("/a/%252F", PathError::DoubleEncoding),
            ("/a/%C0%AF", PathError::InvalidUtf8),
            ("/a/%E0%80%AF", PathError::InvalidUtf8),
            ("/a/%C3", PathError::InvalidUtf8),
            ("/a/%C3x", PathError::InvalidUtf8),
            ("/a/%ED%A0%80", PathError::InvalidUtf8),
            ("/a/%FF", PathError::InvalidUtf8),
            ("/caf\u{e9}", PathError::RawNonAscii),
            ("/a\u{ff0f}admin", PathError::RawNonAscii),
            ("/a b", PathError::RawNonAscii),
            ("/a\u{7f}", PathError::RawNonAscii),
        ];
        for (path, want) in cases {
            assert_eq!(check(path), Err(want), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "/",
            "/sales/",
            "/sales",
            "/a/b",
            "/a/%20b",
            "/a/..b",
            "/a/.well-known",
            "/a/b.json",
            "/a/%25",
            "/a/%25zz",
            "/a/%3B",
            "/a/%3a%40",
            "/caf%C3%A9/%E2%82%AC",
            "/a/%F0%9F%98%80",
            "/a/b~c_d-e",
            "/a/-",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn reasons_are_distinct_snake_case() {
        let all = [
            PathError::NotAbsolute,
            PathError::DotSegment,
            PathError::EmptySegment,
            PathError::TrailingDot,
            PathError::TrailingSpace,
            PathError::Semicolon,
            PathError::Backslash,
            PathError::Nul,
            PathError::BadPercentEncoding,
            PathError::EncodedSeparator,
            PathError::EncodedUnreserved,
            PathError::DoubleEncoding,
            PathError::InvalidUtf8,
            PathError::RawNonAscii,
        ];
        let mut seen = std::collections::HashSet::new();
        for e in all {
            let r = e.reason();
            assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'), "{r}");
            assert!(seen.insert(r), "{r}");
        }
    }
}
