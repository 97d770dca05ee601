//! Request → route: path sanity (400 for `..`/`.` segments, NUL, bad percent-encoding), longest
//! segment-wise `path_prefix`, then `methods` (405 with `Allow` when only other methods match),
//! and the `rewrite_prefix` path rewrite. The upstream is never derived from `Host`.

use crate::{config::Route, error::GatewayError};
use http::{HeaderValue, Method};

/// All routes of one configuration, ordered for longest-prefix matching.
#[derive(Debug)]
pub struct RouteTable {
    /// `(path_prefix, index into Config::routes)`, longest prefix first, file order among equals.
    order: Vec<(Box<str>, usize)>,
    /// Per route: methods taken (`None` = all).
    methods: Vec<Option<Vec<Method>>>,
}

impl RouteTable {
    /// Builds the table for `routes`.
    pub fn new(routes: &[Route]) -> Self {
        let mut order: Vec<(Box<str>, usize)> =
            routes.iter().enumerate().map(|(i, r)| (r.path_prefix.as_str().into(), i)).collect();
        order.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        RouteTable { order, methods: routes.iter().map(|r| r.methods.clone()).collect() }
    }

    /// Finds the route for `method` and `path` (the raw, still-encoded request path).
    pub fn find(&self, method: &Method, path: &str) -> Result<usize, GatewayError> {
        check_path(path)?;
        let mut matched_any = false;
        for (prefix, index) in &self.order {
            if !prefix_matches(prefix, path) {
                continue;
            }
            match &self.methods[*index] {
                None => return Ok(*index),
                Some(list) if list.contains(method) => return Ok(*index),
                Some(_) => matched_any = true,
            }
        }
        if !matched_any {
            return Err(GatewayError::NoRoute);
        }
        Err(GatewayError::MethodNotAllowed { allow: self.allow_header(path) })
    }

    fn allow_header(&self, path: &str) -> HeaderValue {
        let mut methods: Vec<&str> = Vec::new();
        for (prefix, index) in &self.order {
            if prefix_matches(prefix, path)
                && let Some(list) = &self.methods[*index]
            {
                methods.extend(list.iter().map(Method::as_str));
            }
        }
        methods.sort_unstable();
        methods.dedup();
        HeaderValue::from_str(&methods.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Segment-wise prefix match: `/sales` matches `/sales` and `/sales/x`, not `/salesforce`;
/// `/sales/` matches `/sales/x` only.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (prefix.ends_with('/') || path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
}

/// Refuses paths that could be normalised into another route somewhere downstream.
pub fn check_path(path: &str) -> Result<(), GatewayError> {
    if !path.starts_with('/') {
        return Err(GatewayError::BadRequest { reason: "path_not_absolute" });
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment).ok_or(GatewayError::BadRequest { reason: "bad_percent_encoding" })?;
        if decoded.contains(&0) {
            return Err(GatewayError::BadRequest { reason: "nul_in_path" });
        }
        if *decoded == *b".." || *decoded == *b"." {
            return Err(GatewayError::BadRequest { reason: "dot_segment" });
        }
        // A `%2F` smuggles a separator that a downstream may decode into a `..` traversal.
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(GatewayError::BadRequest { reason: "encoded_separator" });
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes; `None` for an invalid escape. Borrow-free for segments without `%`.
fn percent_decode(segment: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
    let bytes = segment.as_bytes();
    if !bytes.contains(&b'%') {
        return Some(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(std::borrow::Cow::Owned(out))
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path toward the upstream: `base_path` + (`rewrite_prefix` replacing `path_prefix`) + rest.
pub fn rewrite(route: &Route, base_path: &str, path: &str, query: Option<&str>) -> String {
    let rest = &path[route.path_prefix.len().min(path.len())..];
    let head = route.rewrite_prefix.as_deref().unwrap_or(&route.path_prefix);
    let mut out = String::with_capacity(base_path.len() + head.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(base_path);
    // Avoid `//` where a rewrite prefix ending in `/` meets a rest starting with `/`.
    if head.ends_with('/') && rest.starts_with('/') {
        out.push_str(&head[..head.len() - 1]);
    } else {
        out.push_str(head);
    }
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
            allow: crate::policy::Allow::compile(
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
    fn other_methods_give_405_with_allow() {
        let routes = vec![route("/a/", None, Some(vec![Method::GET])), route("/a/b/", None, Some(vec![Method::POST]))];
        let t = RouteTable::new(&routes);
        assert_eq!(t.find(&Method::GET, "/a/b/c").unwrap(), 0, "falls back to the shorter prefix taking GET");
        match t.find(&Method::DELETE, "/a/b/c") {
            Err(GatewayError::MethodNotAllowed { allow }) => assert_eq!(allow, "GET, POST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(t.find(&Method::GET, "/zzz"), Err(GatewayError::NoRoute)));
    }

    #[test]
    fn unsafe_paths_are_400() {
        for p in ["/a/../b", "/a/%2e%2E/b", "/a/./b", "/a/%00", "/a/%zz", "/a/%4", "/a/%2fetc", "relative"] {
            assert!(matches!(check_path(p), Err(GatewayError::BadRequest { .. })), "{p}");
        }
        for p in ["/", "/a/b", "/a/%20b", "/a/..b", "/a/.well-known"] {
            assert!(check_path(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn rewrites_prefix_and_keeps_query() {
        let r = route("/sales/", Some("/sales/v2/"), None);
        assert_eq!(rewrite(&r, "", "/sales/orders/1", Some("a=1")), "/sales/v2/orders/1?a=1");
        assert_eq!(rewrite(&r, "/api", "/sales/", None), "/api/sales/v2/");
        let r = route("/x", Some("/"), None);
        assert_eq!(rewrite(&r, "", "/x/y", None), "/y");
        assert_eq!(rewrite(&r, "", "/x", None), "/");
        let r = route("/keep/", None, None);
        assert_eq!(rewrite(&r, "", "/keep/a", None), "/keep/a");
    }
}
