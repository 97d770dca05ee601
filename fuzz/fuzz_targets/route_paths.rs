//! Path sanitiser + route table against contract §3. For a fixed table with nested prefixes
//! (`/sales/`, `/sales/admin/`, a method-restricted `/sales/reports/`, a mixed-case `/Public`):
//!
//! 1. every path form the 400 row names is refused;
//! 2. any other 400 is one of the stricter refusals docs/configuration.md ("Path forms airgate
//!    refuses") documents — a raw `\` or byte outside visible ASCII, `%25XX`, percent-encoded
//!    bytes that are not UTF-8, a segment ending in `%20` — never an ordinary path;
//! 3. an accepted path is routed as the contract says: the longest ASCII-case-insensitive
//!    whole-segment prefix owns it, the method chooses among that prefix's routes, else 405 —
//!    never a shorter prefix;
//! 4. an upstream that routes by the same prefixes after any normalisation it might apply
//!    (percent-decoding unreserved characters or everything, once or twice, merging `//`,
//!    resolving `.`/`..`, stripping `;params`, Windows' trailing dots and spaces, case folding,
//!    `\` → `/`, and all of them in a server's order) picks the route airgate authorised by.
//!    The normalised path is judged by the contract model, not by airgate: what the upstream
//!    makes of it is not a request airgate ever sees.
//!
//! Only paths the HTTP layer lets through (a valid `http::Uri` path) are considered.
#![no_main]

use airgate::route::{RouteError, RouteTable};
use http::Method;
use libfuzzer_sys::fuzz_target;
use std::{fmt::Write, sync::OnceLock};

/// `(path_prefix, methods)`, in file order.
const ROUTES: [(&str, Option<&[&str]>); 6] = [
    ("/", None),
    ("/sales/", None),
    ("/sales/admin/", None),
    ("/sales/reports/", Some(&["GET"])),
    ("/sales/reports/", Some(&["POST"])),
    ("/Public", None),
];

const METHODS: [&str; 4] = ["GET", "POST", "DELETE", "PUT"];

/// The table of a configuration file declaring [`ROUTES`], through the real loader (so the
/// target does not depend on how a `Route` is built).
fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut text = String::from(
            "[[issuers]]\nname = \"a\"\nissuer = \"https://a.invalid\"\naudiences = [\"urn:airgate\"]\n\
             jwks_file = \"/nonexistent/jwks.json\"\n[[upstreams]]\nname = \"u\"\nurl = \"http://127.0.0.1:9\"\n",
        );
        for (i, (prefix, methods)) in ROUTES.iter().enumerate() {
            let _ = writeln!(text, "[[routes]]\nname = \"r{i}\"\npath_prefix = {prefix:?}\nupstream = \"u\"");
            let _ = writeln!(text, "allow = {{ pipelines = [\"*\"] }}");
            if let Some(m) = methods {
                let _ = writeln!(text, "methods = {m:?}");
            }
        }
        let config = airgate::config::parse(&text).unwrap_or_else(|p| panic!("the route table config: {p}"));
        RouteTable::new(&config.routes)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Bad,
    NoRoute,
    NotAllowed,
    Route(usize),
}

fn outcome(method: &Method, path: &str) -> Outcome {
    match table().find(method, path) {
        Ok(i) => Outcome::Route(i),
        Err(RouteError::BadPath(_)) => Outcome::Bad,
        Err(RouteError::NoRoute) => Outcome::NoRoute,
        Err(RouteError::MethodNotAllowed { .. }) => Outcome::NotAllowed,
    }
}

/// Contract §3: the longest case-insensitive whole-segment prefix owns the path.
fn model(method: &Method, path: &str) -> Outcome {
    let matches = |prefix: &str| {
        let (p, q) = (prefix.as_bytes(), path.as_bytes());
        q.len() >= p.len()
            && q[..p.len()].eq_ignore_ascii_case(p)
            && (prefix.ends_with('/') || q.len() == p.len() || q[p.len()] == b'/')
    };
    let Some(owner) = ROUTES.iter().map(|r| r.0).filter(|p| matches(p)).max_by_key(|p| p.len()) else {
        return Outcome::NoRoute;
    };
    ROUTES
        .iter()
        .position(|(p, m)| p.eq_ignore_ascii_case(owner) && m.is_none_or(|m| m.contains(&method.as_str())))
        .map_or(Outcome::NotAllowed, Outcome::Route)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The §3 400 row, for the path alone.
fn contract_refuses(path: &str) -> Option<&'static str> {
    let b = path.as_bytes();
    if path.contains("//") {
        return Some("empty segment");
    }
    if path.contains(';') {
        return Some("`;` in the path");
    }
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) else {
                return Some("invalid percent-encoding");
            };
            let c = hi << 4 | lo;
            if c == 0 {
                return Some("NUL");
            }
            if unreserved(c) {
                return Some("percent-encoded unreserved character");
            }
            if c == b'/' || c == b'\\' {
                return Some("percent-encoded separator");
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    for seg in path.split('/') {
        if seg == "." || seg == ".." {
            return Some("dot segment");
        }
        if seg.ends_with('.') {
            return Some("segment ending in `.`");
        }
    }
    None
}

/// The stricter refusals the docs add to the contract's 400 row (property 2).
fn documented_refuses(path: &str) -> Option<&'static str> {
    let b = path.as_bytes();
    if b.contains(&b'\\') {
        return Some("raw `\\`");
    }
    if b.iter().any(|c| !(0x21..=0x7e).contains(c)) {
        return Some("raw byte outside visible ASCII");
    }
    if b.windows(5).any(|w| w[..3].eq_ignore_ascii_case(b"%25") && hex(w[3]).is_some() && hex(w[4]).is_some()) {
        return Some("double percent-encoding");
    }
    if path.split('/').any(|seg| seg.ends_with("%20")) {
        return Some("segment ending in `%20`");
    }
    if std::str::from_utf8(&percent_decode(path)).is_err() {
        return Some("percent-encoded bytes that are not UTF-8");
    }
    None
}

/// Every valid `%XX` for which `which` holds decoded, as bytes (the rest passes through).
fn percent_decode_where(p: &str, which: impl Fn(u8) -> bool) -> Vec<u8> {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
            && which(hi << 4 | lo)
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

fn percent_decode(p: &str) -> Vec<u8> {
    percent_decode_where(p, |_| true)
}

fn decode_all(p: &str) -> String {
    String::from_utf8_lossy(&percent_decode(p)).into_owned()
}

fn decode_twice(p: &str) -> String {
    decode_all(&decode_all(p))
}

/// Windows drops trailing dots and spaces of a segment (after decoding).
fn windows_trailing(p: &str) -> String {
    decode_all(p).split('/').map(|s| s.trim_end_matches(['.', ' '])).collect::<Vec<_>>().join("/")
}

fn decode_unreserved(p: &str) -> String {
    String::from_utf8(percent_decode_where(p, unreserved)).unwrap_or_else(|_| p.to_owned())
}

fn merge_slashes(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for c in p.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// RFC 3986 §5.2.4 on whole segments.
fn resolve_dots(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = p.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

fn strip_params(p: &str) -> String {
    p.split('/').map(|s| s.split(';').next().unwrap_or("")).collect::<Vec<_>>().join("/")
}

fn strip_trailing_dots(p: &str) -> String {
    p.split('/').map(|s| s.trim_end_matches('.')).collect::<Vec<_>>().join("/")
}

fn fold_case(p: &str) -> String {
    p.to_ascii_lowercase()
}

fn backslashes(p: &str) -> String {
    p.replace('\\', "/")
}

/// A server's order: `\` as `/`, path parameters split off before decoding (Tomcat, Spring:
/// why an encoded `%3B` is harmless), decode, Windows trimming, `//`, dot segments, case.
fn everything(p: &str) -> String {
    fold_case(&resolve_dots(&merge_slashes(&windows_trailing(&strip_params(&backslashes(p))))))
}

const NORMALISERS: [(&str, fn(&str) -> String); 11] = [
    ("decode unreserved", decode_unreserved),
    ("merge //", merge_slashes),
    ("resolve dots", resolve_dots),
    ("strip ;params", strip_params),
    ("strip trailing dots", strip_trailing_dots),
    ("fold case", fold_case),
    ("backslash to slash", backslashes),
    ("decode everything", decode_all),
    ("decode twice", decode_twice),
    ("windows trailing dots and spaces", windows_trailing),
    ("all of them", everything),
];

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else { return };
    let method: Method = METHODS[usize::from(m) % METHODS.len()].parse().unwrap();
    // What the HTTP layer hands the gateway: a path that makes a valid URI.
    let Ok(uri) = http::Uri::builder().path_and_query(rest).build() else { return };
    let path = uri.path();
    if !path.starts_with('/') {
        return;
    }
    let got = outcome(&method, path);
    if let Some(why) = contract_refuses(path) {
        assert_eq!(got, Outcome::Bad, "{method} {path:?}: {why} must be 400");
        return;
    }
    if got == Outcome::Bad {
        assert!(
            documented_refuses(path).is_some(),
            "{method} {path:?} is 400, but neither the contract nor the docs refuse it"
        );
        return;
    }
    let expected = model(&method, path);
    assert_eq!(got, expected, "{method} {path:?}: routed {got:?}, contract §3 says {expected:?}");
    if let Outcome::Route(r) = got {
        for (name, normalise) in NORMALISERS {
            let other = normalise(path);
            if other != path && other.starts_with('/') {
                let there = model(&method, &other);
                assert_eq!(
                    there,
                    Outcome::Route(r),
                    "{method} {path:?} is routed to {}, but after `{name}` an upstream sees {other:?} ({there:?})",
                    ROUTES[r].0
                );
            }
        }
    }
});
