//! Path sanitiser + route table against contract §3. For a fixed table with nested prefixes
//! (`/sales/`, `/sales/admin/`, a method-restricted `/sales/reports/`, a mixed-case `/Public`):
//!
//! 1. every path form the 400 row names is refused;
//! 2. an accepted path is routed as the contract says: the longest ASCII-case-insensitive
//!    whole-segment prefix owns it, the method chooses among that prefix's routes, else 405 —
//!    never a shorter prefix;
//! 3. a path routed to route R is routed to R after every normalisation an upstream might
//!    apply (percent-decoding unreserved characters, merging `//`, resolving `.`/`..`,
//!    stripping `;params`, stripping trailing dots, case folding, `\` → `/`, and all of them).
//!
//! Only paths the HTTP layer lets through (a valid `http::Uri` path) are considered.
#![no_main]

use airgate::{
    config::{Problems, Route, raw::RawAllow},
    error::GatewayError,
    policy::Allow,
    route::RouteTable,
};
use http::Method;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

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

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let routes: Vec<Route> = ROUTES
            .iter()
            .enumerate()
            .map(|(i, (prefix, methods))| Route {
                name: format!("r{i}").into(),
                path_prefix: (*prefix).into(),
                rewrite_prefix: None,
                methods: methods.map(|m| m.iter().map(|s| s.parse().unwrap()).collect()),
                upstream: 0,
                rate_limit: None,
                allow: Allow::compile(
                    RawAllow { pipelines: vec!["*".into()], ..Default::default() },
                    "allow",
                    &[],
                    &mut Problems::default(),
                )
                .unwrap(),
                dry_run: false,
            })
            .collect();
        RouteTable::new(&routes)
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
        Err(GatewayError::BadRequest { .. }) => Outcome::Bad,
        Err(GatewayError::NoRoute) => Outcome::NoRoute,
        Err(GatewayError::MethodNotAllowed { .. }) => Outcome::NotAllowed,
        Err(other) => panic!("find gave {other:?}"),
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

fn decode_unreserved(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(hi), Some(lo)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c)))
            && unreserved(hi << 4 | lo)
        {
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| p.to_owned())
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

fn everything(p: &str) -> String {
    fold_case(&resolve_dots(&merge_slashes(&strip_trailing_dots(&strip_params(&decode_unreserved(&backslashes(p)))))))
}

const NORMALISERS: [(&str, fn(&str) -> String); 8] = [
    ("decode unreserved", decode_unreserved),
    ("merge //", merge_slashes),
    ("resolve dots", resolve_dots),
    ("strip ;params", strip_params),
    ("strip trailing dots", strip_trailing_dots),
    ("fold case", fold_case),
    ("backslash to slash", backslashes),
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
        return;
    }
    let expected = model(&method, path);
    assert_eq!(got, expected, "{method} {path:?}: routed {got:?}, contract §3 says {expected:?}");
    if let Outcome::Route(r) = got {
        for (name, normalise) in NORMALISERS {
            let other = normalise(path);
            if other != path && other.starts_with('/') {
                let there = outcome(&method, &other);
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
