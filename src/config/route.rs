//! `[[routes]]`: one path prefix → one upstream, with its methods, rewrite, rate-limit policy and
//! who may call (`allow`, compiled by [`super::allow`]). Prefixes must be paths a request could
//! match, and no two may differ only in case.

use super::{Problems, Upstream, allow, join, ratelimit, raw, required};
use http::Method;
use std::sync::Arc;

/// One `[[routes]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Configuration name (metrics, audit).
    pub name: Arc<str>,
    /// Matched segment-wise against the request path; starts with `/`.
    pub path_prefix: String,
    /// Replaces `path_prefix` toward the upstream.
    pub rewrite_prefix: Option<String>,
    /// Methods taken; `None` takes every method.
    pub methods: Option<Vec<Method>>,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Name of the rate-limit policy, when limited.
    pub rate_limit: Option<Arc<str>>,
    /// Who may call.
    pub allow: allow::Allow,
    /// Count and log denials but let them through.
    pub dry_run: bool,
}

/// A prefix the route table can match: a path airgate would accept from a client (no `//`,
/// `..`, `;`, needless percent-encoding, …), so that no request can meet it in another spelling.
fn route_path(value: &str, at: &str, p: &mut Problems) {
    if !value.starts_with('/') {
        p.push(at, "must start with `/`");
    } else if !value.is_ascii() {
        p.push(at, "must be ASCII: percent-encode other characters as UTF-8 (`caf%C3%A9`)");
    } else if let Err(e) = crate::path::check(value) {
        p.push(at, format!("is a path form airgate refuses in requests: {e}"));
    }
}

/// Prefixes match ignoring ASCII case, so two that differ only in case would be one prefix with
/// two spellings: refused, naming the later route.
pub(super) fn prefixes_differing_in_case(routes: &[Route], p: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let other = routes[..i]
            .iter()
            .position(|r| r.path_prefix != route.path_prefix && r.path_prefix.eq_ignore_ascii_case(&route.path_prefix));
        if let Some(j) = other {
            p.push(
                format!("routes[{i}].path_prefix"),
                format!(
                    "{:?} differs from routes[{j}].path_prefix {:?} only in case; prefixes ignore ASCII case, \
                     so spell them the same",
                    route.path_prefix, routes[j].path_prefix
                ),
            );
        }
    }
}

/// Routes of one prefix must take different methods (contract §3): a method taken twice, or a
/// second route without `methods`, would make a route that can never be chosen — refused, naming
/// the later route and the earlier one that wins.
pub(super) fn methods_taken_twice(routes: &[Route], p: &mut Problems) {
    for (i, route) in routes.iter().enumerate() {
        let earlier = routes[..i].iter().enumerate().filter(|(_, r)| r.path_prefix == route.path_prefix);
        for (j, other) in earlier {
            match (&route.methods, &other.methods) {
                (None, None) => p.push(
                    format!("routes[{i}]"),
                    format!(
                        "routes[{j}] already takes every method on {:?}; give one of them `methods`",
                        route.path_prefix
                    ),
                ),
                (Some(mine), Some(theirs)) => {
                    if let Some(m) = mine.iter().find(|m| theirs.contains(m)) {
                        p.push(
                            format!("routes[{i}].methods"),
                            format!("{m} on {:?} is already taken by routes[{j}]", route.path_prefix),
                        );
                    }
                }
                // A route without `methods` takes the methods no other route of its prefix lists.
                (None, Some(_)) | (Some(_), None) => {}
            }
        }
    }
}

/// One `[[routes]]` entry at `at`, its `upstream`, `rate_limit` and `allow` checked against the
/// sections they name; `None` when it cannot be used.
pub(super) fn validate(
    raw: raw::RawRoute,
    at: &str,
    upstreams: &[Upstream],
    rate_limits: &ratelimit::RateLimits,
    issuers: &[&str],
    p: &mut Problems,
) -> Option<Route> {
    let name = required(raw.name, at, "name", p);
    let prefix = required(raw.path_prefix, at, "path_prefix", p);
    for (key, value) in [("path_prefix", &prefix), ("rewrite_prefix", &raw.rewrite_prefix)] {
        if let Some(value) = value {
            route_path(value, &join(at, key), p);
        }
    }
    let methods = raw.methods.map(|list| {
        list.iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                Method::from_bytes(upper.as_bytes())
                    .map_err(|_| p.push(format!("{at}.methods[{i}]"), format!("not an HTTP method: {m:?}")))
                    .ok()
            })
            .collect::<Vec<_>>()
    });
    if methods.as_ref().is_some_and(Vec::is_empty) {
        p.push(join(at, "methods"), "must list at least one method (leave it out to take every method)");
    }
    let upstream = required(raw.upstream, at, "upstream", p).and_then(|u| {
        let found = upstreams.iter().position(|x| *x.name == *u);
        if found.is_none() {
            p.push(join(at, "upstream"), format!("no upstream named {u:?}"));
        }
        found
    });
    if let Some(policy) = &raw.rate_limit
        && !rate_limits.has_policy(policy)
    {
        p.push(join(at, "rate_limit"), format!("no rate-limit policy named {policy:?}"));
    }
    let allow = match raw.allow {
        None => {
            p.push(
                join(at, "allow"),
                "is required: say who may call this route (pipelines, teams, roles, principals or issuers)",
            );
            None
        }
        Some(allow) => allow::Allow::compile(allow, &join(at, "allow"), issuers, p),
    };
    Some(Route {
        name: name?.into(),
        path_prefix: prefix?,
        rewrite_prefix: raw.rewrite_prefix,
        methods,
        upstream: upstream?,
        rate_limit: raw.rate_limit.map(Into::into),
        allow: allow?,
        dry_run: raw.dry_run.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;

    #[test]
    fn route_problems_name_their_keys() {
        let got = problems(
            "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n[[routes]]\nname = \"r\"\npath_prefix = \"x\"\nupstream = \"b\"\n",
        );
        assert!(got.iter().any(|p| p.starts_with("routes[0].path_prefix")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("routes[0].upstream") && p.contains("no upstream named")), "{got:?}");
        assert!(got.iter().any(|p| p.starts_with("routes[0].allow") && p.contains("required")), "{got:?}");
    }

    const ROUTES: &str = "[[upstreams]]\nname = \"a\"\nurl = \"http://x\"\n";

    fn route(name: &str, prefix: &str, extra: &str) -> String {
        format!(
            "[[routes]]\nname = \"{name}\"\npath_prefix = \"{prefix}\"\nupstream = \"a\"\nallow = {{ pipelines = [\"*\"] }}\n{extra}\n"
        )
    }

    #[test]
    fn prefixes_differing_only_in_case_are_refused() {
        let got = problems(&format!("{ROUTES}{}{}", route("a", "/sales/", ""), route("b", "/Sales/", "")));
        assert!(got.iter().any(|p| p.starts_with("routes[1].path_prefix") && p.contains("only in case")), "{got:?}");
        // The same prefix twice, chosen by method, is fine.
        let same = format!(
            "{ROUTES}{}{}",
            route("a", "/sales/", "methods = [\"GET\"]"),
            route("b", "/sales/", "methods = [\"POST\"]")
        );
        assert_eq!(problems(&same), Vec::<String>::new());
    }

    #[test]
    fn a_route_that_could_never_be_chosen_is_refused() {
        let two = |a: &str, b: &str| problems(&format!("{ROUTES}{}{}", route("a", "/s/", a), route("b", "/s/", b)));
        let got = two("methods = [\"GET\", \"PUT\"]", "methods = [\"POST\", \"PUT\"]");
        assert!(
            got.iter().any(|p| p.starts_with("routes[1].methods") && p.contains("PUT") && p.contains("routes[0]")),
            "{got:?}"
        );
        let got = two("", "");
        assert!(got.iter().any(|p| p.starts_with("routes[1]") && p.contains("every method")), "{got:?}");
        // One route with methods and one without: the method chooses, the other takes the rest.
        assert_eq!(two("methods = [\"GET\"]", ""), Vec::<String>::new());
        assert_eq!(two("", "methods = [\"GET\"]"), Vec::<String>::new());
        // Other prefixes do not interfere.
        let got = problems(&format!("{ROUTES}{}{}", route("a", "/s/", ""), route("b", "/t/", "")));
        assert_eq!(got, Vec::<String>::new());
    }

    #[test]
    fn prefixes_must_be_paths_a_request_could_match() {
        for bad in ["/a//b/", "/a/../b", "/a;b/", "/%61/", "/a./", "/café/"] {
            let got = problems(&format!("{ROUTES}{}", route("a", bad, "")));
            assert!(got.iter().any(|p| p.starts_with("routes[0].path_prefix")), "{bad}: {got:?}");
        }
        let got = problems(&format!("{ROUTES}{}", route("a", "/a/", "rewrite_prefix = \"/b//\"")));
        assert!(got.iter().any(|p| p.starts_with("routes[0].rewrite_prefix")), "{got:?}");
    }
}
