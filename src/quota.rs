//! The IETF httpapi `RateLimit-Policy` / `RateLimit` header values of one rate-limit decision:
//! made by `ratelimit`, sent on a forwarded response by the stack and on a 429
//! by `error`. A leaf module (it names no other), so both can use it.

use http::{HeaderMap, HeaderName, HeaderValue};

const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The IETF httpapi `RateLimit-Policy` and `RateLimit` header values of one decision.
#[derive(Debug, Clone)]
pub struct Quota {
    /// `RateLimit-Policy: "per-dag";q=40;w=1`.
    pub policy: HeaderValue,
    /// `RateLimit: "per-dag";r=0;t=2`.
    pub state: HeaderValue,
}

impl Quota {
    /// The `RateLimit` value `{name};r={remaining};t={reset_secs}` (`name` already an RFC 8941
    /// string). Made on every allowed request of a limited route, so written straight into one
    /// buffer of the exact size (one allocation, no formatting machinery).
    pub fn state_value(name: &str, remaining: u32, reset_secs: u64) -> HeaderValue {
        let remaining = u64::from(remaining);
        let mut out = Vec::with_capacity(name.len() + 6 + digits(remaining) + digits(reset_secs));
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b";r=");
        push_decimal(&mut out, remaining);
        out.extend_from_slice(b";t=");
        push_decimal(&mut out, reset_secs);
        // Config names are validated printable ASCII and the rest is digits: this cannot fail.
        HeaderValue::from_maybe_shared(bytes::Bytes::from(out))
            .unwrap_or_else(|_| HeaderValue::from_static("\"invalid\""))
    }

    /// Adds both headers to a response.
    pub fn apply(self, h: &mut HeaderMap) {
        // Constant names: a `&str` name is parsed and validated again on every insert.
        h.insert(RATELIMIT_POLICY, self.policy);
        h.insert(RATELIMIT, self.state);
    }
}

fn digits(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 10 {
        v /= 10;
        n += 1;
    }
    n
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::Quota;

    #[test]
    fn the_state_value_reads_as_formatted() {
        for (r, t) in [(0, 0), (9, 10), (40, 2), (u32::MAX, u64::MAX), (1_000_000, 999)] {
            let v = Quota::state_value("\"per-dag\"", r, t);
            assert_eq!(v, format!("\"per-dag\";r={r};t={t}").as_str());
        }
    }
}
