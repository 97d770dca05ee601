//! `Authorization: Bearer` extraction: exactly one header, the `Bearer` scheme, exactly one
//! token68, and a size cap checked before anything looks inside the token.

use super::{Rejection, reason};
use http::{HeaderMap, header::AUTHORIZATION};

/// The single bearer token of a request, or why there is none: one header, the `Bearer` scheme,
/// the size cap. Its characters are not looked at here: a token the verified-token cache holds
/// passed [`token68`] before it was inserted, and the cache compares byte for byte, so only a
/// miss needs the check (a refused token is never in the cache, so its reason is the same).
pub(crate) fn extract(headers: &HeaderMap, max_token_bytes: usize) -> Result<&[u8], Rejection> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Rejection::unauthenticated(reason::MISSING_TOKEN, None, false));
    };
    if values.next().is_some() {
        return Err(Rejection::unauthenticated(reason::MULTIPLE_TOKENS, None, true));
    }
    let bytes = value.as_bytes();
    // "Bearer " plus the largest token any issuer accepts, plus some whitespace slack: anything
    // longer is refused before it is split or decoded.
    if bytes.len() > max_token_bytes.saturating_add(64) {
        return Err(Rejection::unauthenticated(reason::TOKEN_TOO_LARGE, None, true));
    }
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        let reason = if bytes.eq_ignore_ascii_case(b"bearer") { reason::MALFORMED } else { reason::BAD_SCHEME };
        return Err(Rejection::unauthenticated(reason, None, true));
    };
    let (scheme, rest) = bytes.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(Rejection::unauthenticated(reason::BAD_SCHEME, None, true));
    }
    let blank = |b: &u8| matches!(b, b' ' | b'\t');
    let start = rest.iter().position(|b| !blank(b)).unwrap_or(rest.len());
    let end = rest.iter().rposition(|b| !blank(b)).map_or(start, |i| i + 1);
    let token = &rest[start..end];
    if token.is_empty() {
        return Err(Rejection::unauthenticated(reason::MALFORMED, None, true));
    }
    if token.len() > max_token_bytes {
        return Err(Rejection::unauthenticated(reason::TOKEN_TOO_LARGE, None, true));
    }
    Ok(token)
}

/// The token as text when it is one token68 as compact JWS uses it: base64url characters and the
/// two dots. A separator inside means a second token. A branch-free fold over the bytes; only a
/// refused token is scanned again for the byte that names the reason.
pub(crate) fn token68(token: &[u8]) -> Result<&str, Rejection> {
    if token.iter().fold(true, |ok, &b| ok & token68_byte(b))
        && let Ok(text) = std::str::from_utf8(token)
    {
        return Ok(text);
    }
    let bad = token.iter().copied().find(|&b| !token68_byte(b)).unwrap_or(0);
    let reason = if matches!(bad, b' ' | b'\t' | b',') { reason::MULTIPLE_TOKENS } else { reason::MALFORMED };
    Err(Rejection::unauthenticated(reason, None, true))
}

/// A base64url character or `.`, without branches.
fn token68_byte(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26) | (b.wrapping_sub(b'0') < 10) | (b == b'-') | (b == b'_') | (b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn run(values: &[&str]) -> Result<String, &'static str> {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        extract(&h, 100).and_then(token68).map(str::to_owned).map_err(|r| r.reason)
    }

    #[test]
    fn one_bearer_token() {
        assert_eq!(run(&["Bearer a.b.c"]).unwrap(), "a.b.c");
        assert_eq!(run(&["bearer   a.b.c "]).unwrap(), "a.b.c");
    }

    #[test]
    fn everything_else_is_refused_with_its_reason() {
        assert_eq!(run(&[]), Err(reason::MISSING_TOKEN));
        assert_eq!(run(&["Basic dXNlcjpwYXNz"]), Err(reason::BAD_SCHEME));
        assert_eq!(run(&["Bearer"]), Err(reason::MALFORMED));
        assert_eq!(run(&["Bearer "]), Err(reason::MALFORMED));
        assert_eq!(run(&["Bearer a.b.c", "Bearer d.e.f"]), Err(reason::MULTIPLE_TOKENS));
        assert_eq!(run(&["Bearer a.b.c d.e.f"]), Err(reason::MULTIPLE_TOKENS));
        assert_eq!(run(&["Bearer a.b.c,d.e.f"]), Err(reason::MULTIPLE_TOKENS));
        assert_eq!(run(&["Bearer a.b+c"]), Err(reason::MALFORMED));
        assert_eq!(run(&[&format!("Bearer {}", "a".repeat(101))]), Err(reason::TOKEN_TOO_LARGE));
        assert_eq!(run(&[&format!("Bearer {}", "a".repeat(1000))]), Err(reason::TOKEN_TOO_LARGE));
    }
}
