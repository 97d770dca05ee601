//! Request → route (contract §3): refuse path forms an upstream could read differently
//! ([`crate::path`]), then the longest `path_prefix` owns its whole subtree — prefixes match whole
//! segments, ignoring ASCII case — and among the routes of that one prefix the method chooses
//! (405 with `Allow` when none takes it; never a fall-back to a shorter prefix). Also the
//! `rewrite_prefix` path rewrite. The upstream is never derived from `Host`.

use crate::{config::Route, path::PathError};
use http::{HeaderValue, Method};

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
        RouteTable { groups }
    }

    /// Finds the route for `method` and `path` (the raw, still-encoded request path).
    pub fn find(&self, method: &Method, path: &str) -> Result<usize, RouteError> {
        crate::path::check(path).map_err(RouteError::BadPath)?;
        // The longest matching prefix owns the path: only its routes are considered.
        let group = self.groups.iter().find(|g| prefix_matches(&g.prefix, path)).ok_or(RouteError::NoRoute)?;
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
