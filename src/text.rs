//! Text forms the request path writes for every request, without `core::fmt`: an IP address
//! (the `X-Forwarded-For` value, the audit record's `client_ip`), an RFC 3339 UTC timestamp
//! with milliseconds (the audit record's `ts`) and lowercase hex (request and trace ids).
//! `Display` costs ~900 instructions for each of the first two; these cost a tenth of that.
//! Tests check them against `Display`, humantime and `format!("{:x}")`.

use std::{
    net::IpAddr,
    time::{SystemTime, UNIX_EPOCH},
};

/// The longest text form of an address: an IPv4-mapped IPv6 address, 45 characters.
pub const IP_MAX: usize = 45;

/// `ip` as `Display` writes it, into `buf`.
pub fn ip(ip: IpAddr, buf: &mut [u8; IP_MAX]) -> &[u8] {
    match ip {
        IpAddr::V4(v4) => {
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            &buf[..n]
        }
        IpAddr::V6(v6) => {
            // Rare here (the listeners are IPv4 in every deployment we know); `Display` it is.
            let mut rest = &mut buf[..];
            let _ = std::io::Write::write_fmt(&mut rest, format_args!("{v6}"));
            let len = IP_MAX - rest.len();
            &buf[..len]
        }
    }
}

/// `t` as `2026-12-03T08:20:00.123Z` (humantime's `format_rfc3339_millis`), into `buf`. Times
/// before 1970 are written as the epoch (the gateway stamps records with the current time).
pub fn rfc3339_millis(t: SystemTime, buf: &mut [u8; 24]) -> &[u8] {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, month, 2);
    put(8, day, 2);
    put(11, rem / 3600, 2);
    put(14, rem / 60 % 60, 2);
    put(17, rem % 60, 2);
    put(20, u64::from(since.subsec_millis()), 3);
    for (at, sep) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')] {
        buf[at] = sep;
    }
    &buf[..]
}

/// The lowercase hex digits.
pub const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lowercase hex into `out` (two digits per byte; `out` is twice as long).
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX_DIGITS[usize::from(b >> 4)];
        pair[1] = HEX_DIGITS[usize::from(b & 0xf)];
    }
}

/// A W3C trace id's 32 lowercase hex digits, held inline (no allocation per request); empty
/// until a request has one.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct TraceId(Option<[u8; 32]>);

impl TraceId {
    /// The id whose digits are `hex`, when they are 32 lowercase hex digits (checked without
    /// branches).
    pub fn from_hex(hex: &[u8]) -> Option<Self> {
        let digits: [u8; 32] = hex.try_into().ok()?;
        let ok = digits.iter().fold(true, |ok, &c| ok & ((c.wrapping_sub(b'0') < 10) | (c.wrapping_sub(b'a') < 6)));
        ok.then_some(TraceId(Some(digits)))
    }

    /// The digits, or `""` when there is no id.
    pub fn as_str(&self) -> &str {
        self.0.as_ref().and_then(|d| std::str::from_utf8(d).ok()).unwrap_or("")
    }
}

/// The proleptic Gregorian date of day `days` since 1970-01-01 (H. Hinnant's algorithm,
/// eras of 400 years from 0000-03-01).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for addr in ["0.0.0.0", "10.0.0.1", "127.0.0.1", "192.168.100.9", "255.255.255.255", "::1", "2001:db8::1"]
            .map(|s| s.parse::<IpAddr>().unwrap())
            .into_iter()
            .chain([IpAddr::V6("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".parse().unwrap())])
        {
            assert_eq!(ip(addr, &mut [0; IP_MAX]), addr.to_string().as_bytes(), "{addr}");
        }
    }

    #[test]
    fn timestamps_read_as_humantime_writes_them() {
        // Every day boundary and leap rule: 1970, 2000 (divisible by 400), 2024, 2100 (not a
        // leap year), 2400, the end of 9999; plus arbitrary instants with milliseconds.
        let mut instants: Vec<u64> = (0..=400 * 366).map(|day| day * 86_400 * 7 + 86_399).collect();
        instants.extend([0, 951_782_400, 951_868_800, 4_107_542_400, 4_107_628_800, 253_402_300_799]);
        for secs in instants.into_iter().filter(|&s| s <= 253_402_300_799) {
            for millis in [0, 7, 999] {
                let t = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis);
                let expected = humantime::format_rfc3339_millis(t).to_string();
                assert_eq!(rfc3339_millis(t, &mut [0; 24]), expected.as_bytes(), "{secs}");
            }
        }
    }

    #[test]
    fn hex_reads_as_format_writes_it() {
        for v in [0u128, 1, 0xdead_beef, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let mut out = [0u8; 32];
            hex(&v.to_be_bytes(), &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{v:032x}"));
        }
    }

    #[test]
    fn trace_ids_are_32_lowercase_hex_digits() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(TraceId::from_hex(id.as_bytes()).unwrap().as_str(), id);
        assert_eq!(TraceId::from_hex(b"4BF92F3577B34DA6A3CE929D0E0E4736"), None);
        assert_eq!(TraceId::from_hex(&id.as_bytes()[1..]), None);
        assert_eq!(TraceId::from_hex(b"4bf92f3577b34da6a3ce929d0e0e473g"), None);
        assert_eq!(TraceId::default().as_str(), "");
    }
}
