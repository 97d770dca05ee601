//! Request → route (contract §3): refuse path forms an upstream could read differently
//! ([`crate::path`]), then the longest `path_prefix` owns its whole subtree — prefixes match whole
//! segments, ignoring ASCII case — and among the routes of that one prefix the method chooses
//! (405 with `Allow` when none takes it; never a fall-back to a shorter prefix). Also the
//! `rewrite_prefix` path rewrite. The upstream is never derived from `Host`.

use crate::{config::Route, path::PathError};
use http::{HeaderValue, Method};
use std::collections::HashMap;

/// Why no route takes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// The path is in a form an upstream could read differently (400).
    BadPath(PathError),
    /// No prefix matches (404).
    NoRoute,
    /// The owning prefix's routes take only the methods in `allow` (405).
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: HeaderValue,
    },
}

/// All routes of one configuration, grouped by prefix for longest-prefix matching.
#[derive(Debug)]
pub struct RouteTable {
    /// One group per distinct prefix (configuration refuses prefixes equal but for case),
    /// longest first.
    groups: Vec<Group>,
    /// Indices into `groups` (ascending: longest prefix first) by the prefix's first path
    /// segment, ASCII-lowercased. A prefix can only match a path with the same first segment
    /// (matches are whole segments), so a lookup reads these, not every group.
    by_segment: HashMap<Box<[u8]>, Vec<usize>, foldhash::fast::RandomState>,
    /// Groups whose prefix has no first segment (`/`): candidates for every path.
    everywhere: Vec<usize>,
}

/// Longest first segment looked up in [`RouteTable::by_segment`]; a longer one is compared with
/// every group (no prefix in a real configuration has one).
const MAX_SEGMENT: usize = 128;

/// The first segment of an absolute path (`sales` of `/sales/x`), or `None` when the path does
/// not start with `/` or its first segment is empty.
fn first_segment(path: &[u8]) -> Option<&[u8]> {
    let rest = path.strip_prefix(b"/")?;
    let segment = &rest[..rest.iter().position(|&b| b == b'/').unwrap_or(rest.len())];
    (!segment.is_empty()).then_some(segment)
}

/// The routes sharing one `path_prefix`.
#[derive(Debug)]
struct Group {
    prefix: Box<str>,
    /// Routes that list `methods`, in file order: `(index into Config::routes, methods)`.
    by_method: Vec<(usize, Vec<Method>)>,
    /// The first route of this prefix without `methods` (takes every other method).
    any_method: Option<usize>,
    /// `Allow` for a 405: the methods this prefix takes (only when no route takes them all).
    allow: HeaderValue,
}

impl RouteTable {
    /// Builds the table for `routes`.
    pub fn new(routes: &[Route]) -> Self {
        let mut groups: Vec<Group> = Vec::new();
        for (index, route) in routes.iter().enumerate() {
            let prefix = route.path_prefix.as_str();
            let at = match groups.iter().position(|g| g.prefix.eq_ignore_ascii_case(prefix)) {
                Some(at) => at,
                None => {
                    groups.push(Group {
                        prefix: prefix.into(),
                        by_method: Vec::new(),
                        any_method: None,
                        allow: HeaderValue::from_static(""),
                    });
                    groups.len() - 1
                }
            };
            let group = &mut groups[at];
            match &route.methods {
                Some(list) => group.by_method.push((index, list.clone())),
                None => {
                    group.any_method.get_or_insert(index);
                }
            }
        }
        for group in &mut groups {
            let mut methods: Vec<&str> =
                group.by_method.iter().flat_map(|(_, m)| m.iter().map(Method::as_str)).collect();
            methods.sort_unstable();
            methods.dedup();
            group.allow = HeaderValue::from_str(&methods.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""));
        }
        // Stable: equal lengths keep file order (they cannot both match one path anyway).
        groups.sort_by_key(|g| std::cmp::Reverse(g.prefix.len()));
        let (mut by_segment, mut everywhere) = (HashMap::<_, Vec<usize>, _>::default(), Vec::new());
        for (at, group) in groups.iter().enumerate() {
            match first_segment(group.prefix.as_bytes()).filter(|s| s.len() <= MAX_SEGMENT) {
                Some(segment) => by_segment.entry(segment.to_ascii_lowercase().into()).or_default().push(at),
                None => everywhere.push(at),
            }
        }
        RouteTable { groups, by_segment, everywhere }
    }

    /// The group of the longest prefix matching `path`, among the groups of its first segment
    /// and those without one.
    fn owner(&self, path: &str) -> Option<&Group> {
        let listed: &[usize] = match first_segment(path.as_bytes()) {
            Some(segment) if segment.len() <= MAX_SEGMENT => {
                let mut key = [0u8; MAX_SEGMENT];
                let key = &mut key[..segment.len()];
                key.copy_from_slice(segment);
                key.make_ascii_lowercase();
                self.by_segment.get(&*key).map_or(&[], Vec::as_slice)
            }
            // Longer than any indexed prefix segment: only an unindexed group can match.
            Some(_) | None => &[],
        };
        // Of the candidates that match, the lowest index is the longest prefix.
        let at = listed
            .iter()
            .chain(&self.everywhere)
            .copied()
            .filter(|&at| prefix_matches(&self.groups[at].prefix, path))
            .min()?;
        Some(&self.groups[at])
    }

    /// Finds the route for `method` and `path` (the raw, still-encoded request path).
    pub fn find(&self, method: &Method, path: &str) -> Result<usize, RouteError> {
        crate::path::check(path).map_err(RouteError::BadPath)?;
        // The longest matching prefix owns the path: only its routes are considered.
        let group = self.owner(path).ok_or(RouteError::NoRoute)?;
        // A route naming the method is more specific than one taking every method.
        if let Some((index, _)) = group.by_method.iter().find(|(_, list)| list.contains(method)) {
            return Ok(*index);
        }
        group.any_method.ok_or_else(|| RouteError::MethodNotAllowed { allow: group.allow.clone() })
    }
}

/// Whole-segment, ASCII-case-insensitive prefix match: `/sales` matches `/sales`, `/SALES/x` and
/// `/sales/x`, not `/salesforce`; `/sales/` matches `/sales/x` only.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (p, b) = (prefix.as_bytes(), path.as_bytes());
    b.len() >= p.len()
        && b[..p.len()].eq_ignore_ascii_case(p)
        && (p.ends_with(b"/") || b.len() == p.len() || b[p.len()] == b'/')
}

/// The path toward the upstream: `base_path` + (`rewrite_prefix` replacing `path_prefix`) + rest.
/// The prefix is replaced in whatever case the client sent it, so the upstream sees the
/// configured spelling (of `rewrite_prefix`, else of `path_prefix`) of the route it was
/// authorised for; the rest of the path is passed as sent.
pub fn rewrite(route: &Route, base_path: &str, path: &str, query: Option<&str>) -> String {
    let prefix = route.path_prefix.as_str();
    // `rest` is empty or starts with `/`: a prefix's own trailing slash belongs to the rest, so
    // `/sales/` → `/v2` and `/sales/` → `/v2/` both join as `/v2/…`.
    let cut = if prefix.ends_with('/') { prefix.len() - 1 } else { prefix.len() };
    let rest = path.get(cut.min(path.len())..).unwrap_or("");
    let head = route.rewrite_prefix.as_deref().unwrap_or(prefix);
    let head = if rest.is_empty() { head } else { head.trim_end_matches('/') };
    let mut out = String::with_capacity(base_path.len() + head.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(base_path);
    out.push_str(head);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A path-like string from a small alphabet that makes segment boundaries and case collide.
    fn random_path(rng: &mut fastrand::Rng) -> String {
        let mut s = String::from("/");
        for _ in 0..rng.usize(0..6) {
            s.push(['a', 'A', 'b', '/', 'x'][rng.usize(0..5)]);
        }
        s
    }

    #[test]
    fn the_segment_index_finds_what_a_scan_of_every_prefix_finds() {
        let mut rng = fastrand::Rng::with_seed(13);
        let long = format!("/{}", "s".repeat(MAX_SEGMENT + 1));
        for _ in 0..500 {
            let mut prefixes: Vec<String> = (0..rng.usize(1..12)).map(|_| random_path(&mut rng)).collect();
            // An over-long first segment and the root now and then: both unindexed.
            if rng.bool() {
                prefixes.push(format!("{long}/"));
            }
            if rng.bool() {
                prefixes.push("/".into());
            }
            let routes: Vec<Route> = prefixes.iter().map(|p| route(p, None, None)).collect();
            let table = RouteTable::new(&routes);
            for _ in 0..50 {
                let path = match rng.usize(0..10) {
                    0 => format!("{long}/x"),
                    1 => "x".into(),
                    _ => random_path(&mut rng),
                };
                let scanned = table.groups.iter().find(|g| prefix_matches(&g.prefix, &path)).map(|g| &*g.prefix);
                assert_eq!(table.owner(&path).map(|g| &*g.prefix), scanned, "{path:?} against {prefixes:?}");
            }
        }
    }

    fn route(prefix: &str, rewrite: Option<&str>, methods: Option<Vec<Method>>) -> Route {
        Route {
            name: prefix.into(),
            path_prefix: prefix.into(),
            rewrite_prefix: rewrite.map(Into::into),
            methods,
            upstream: 0,
            rate_limit: None,
            allow: crate::config::allow::Allow::compile(
                crate::config::raw::RawAllow { pipelines: vec!["*".into()], ..Default::default() },
                "allow",
                &[],
                &mut crate::config::Problems::default(),
            )
            .unwrap(),
            dry_run: false,
        }
    }

    #[test]
    fn longest_prefix_wins_segment_wise() {
        let routes = vec![route("/", None, None), route("/sales", None, None), route("/sales/v2/", None, None)];
        let t = RouteTable::new(&routes);
        assert_eq!(t.find(&Method::GET, "/sales/v2/x").unwrap(), 2);
        assert_eq!(t.find(&Method::GET, "/sales/x").unwrap(), 1);
        assert_eq!(t.find(&Method::GET, "/sales").unwrap(), 1);
        assert_eq!(t.find(&Method::GET, "/salesforce").unwrap(), 0);
    }

    #[test]
    fn prefixes_ignore_ascii_case() {
        let routes = vec![route("/sales/", None, None), route("/sales/admin/", None, None)];
        let t = RouteTable::new(&routes);
        assert_eq!(t.find(&Method::GET, "/SALES/x").unwrap(), 0);
        assert_eq!(t.find(&Method::GET, "/Sales/Admin/users").unwrap(), 1, "case cannot dodge the nested route");
        assert_eq!(t.find(&Method::GET, "/sales/ADMIN").unwrap(), 0, "`/sales/admin/` needs its slash");
        assert!(matches!(t.find(&Method::GET, "/SALESx"), Err(RouteError::NoRoute)));
    }

    #[test]
    fn the_longest_prefix_owns_its_subtree_405_never_falls_back() {
        let routes = vec![route("/a/", None, Some(vec![Method::GET])), route("/a/b/", None, Some(vec![Method::POST]))];
        let t = RouteTable::new(&routes);
        assert_eq!(t.find(&Method::POST, "/a/b/c").unwrap(), 1);
        for m in [Method::GET, Method::DELETE] {
            match t.find(&m, "/a/b/c") {
                Err(RouteError::MethodNotAllowed { allow }) => assert_eq!(allow, "POST", "{m}"),
                other => panic!("{m}: {other:?}"),
            }
        }
        assert_eq!(t.find(&Method::GET, "/a/x").unwrap(), 0);
        assert!(matches!(t.find(&Method::GET, "/zzz"), Err(RouteError::NoRoute)));
        // Even a catch-all outer route does not take what the nested prefix refuses.
        let routes = vec![route("/", None, None), route("/a/b/", None, Some(vec![Method::GET]))];
        let t = RouteTable::new(&routes);
        assert!(matches!(t.find(&Method::DELETE, "/a/b/c"), Err(RouteError::MethodNotAllowed { .. })));
    }

    #[test]
    fn routes_sharing_a_prefix_are_chosen_by_method() {
        let routes = vec![
            route("/a/", None, Some(vec![Method::GET, Method::HEAD])),
            route("/a/", None, Some(vec![Method::POST])),
            route("/b/", None, Some(vec![Method::PUT])),
            route("/b/", None, None),
            route("/b/", None, Some(vec![Method::GET])),
        ];
        let t = RouteTable::new(&routes);
        assert_eq!(t.find(&Method::HEAD, "/a/x").unwrap(), 0);
        assert_eq!(t.find(&Method::POST, "/A/x").unwrap(), 1);
        match t.find(&Method::DELETE, "/a/x") {
            Err(RouteError::MethodNotAllowed { allow }) => assert_eq!(allow, "GET, HEAD, POST"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.find(&Method::PUT, "/b/x").unwrap(), 2);
        assert_eq!(t.find(&Method::GET, "/b/x").unwrap(), 4, "a route naming the method beats the catch-all");
        assert_eq!(t.find(&Method::DELETE, "/b/x").unwrap(), 3);
    }

    #[test]
    fn unsafe_paths_are_400_with_their_class() {
        let routes = vec![route("/", None, None)];
        let t = RouteTable::new(&routes);
        for (p, reason) in
            [("/sales//admin/users", "empty_segment"), ("/a/%61", "encoded_unreserved"), ("/a;b", "semicolon_in_path")]
        {
            match t.find(&Method::GET, p) {
                Err(RouteError::BadPath(e)) => assert_eq!(e.reason(), reason, "{p}"),
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn rewrites_prefix_and_keeps_query() {
        let r = route("/sales/", Some("/sales/v2/"), None);
        assert_eq!(rewrite(&r, "", "/sales/orders/1", Some("a=1")), "/sales/v2/orders/1?a=1");
        assert_eq!(rewrite(&r, "/api", "/sales/", None), "/api/sales/v2/");
        assert_eq!(rewrite(&r, "", "/SaLeS/orders", None), "/sales/v2/orders", "the prefix is replaced in any case");
        let r = route("/x", Some("/"), None);
        assert_eq!(rewrite(&r, "", "/x/y", None), "/y");
        assert_eq!(rewrite(&r, "", "/x", None), "/");
        assert_eq!(rewrite(&r, "", "/X/y", None), "/y");
        let r = route("/keep/", None, None);
        assert_eq!(rewrite(&r, "", "/keep/a", None), "/keep/a");
        assert_eq!(rewrite(&r, "", "/KEEP/a", None), "/keep/a", "the configured spelling reaches the upstream");
        let r = route("/sales/", Some("/v2"), None);
        assert_eq!(rewrite(&r, "", "/sales/a", None), "/v2/a", "slashes join once");
        assert_eq!(rewrite(&r, "", "/sales/", None), "/v2/");
        let r = route("/a", Some("/b/"), None);
        assert_eq!(rewrite(&r, "", "/a", None), "/b/");
        assert_eq!(rewrite(&r, "", "/a/c", None), "/b/c");
    }
}
