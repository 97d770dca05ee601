//! Verified claims → [`Identity`]: registered-claim time checks (`exp`, `nbf`, `iat`, lifetime),
//! the scope check, and the issuer's claim map. `try_number` and `map_index` may be JSON numbers
//! or strings; both become decimal text.

use super::{Identity, reason};
use crate::config::issuer::Issuer;
use http::HeaderValue;
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// The `X-Airflow-*` values an identity is forwarded with (dag, task, run, try, map index),
/// percent-encoded once per identity — so once per verified token, not per request — by the
/// forwarder that sends them. Empty until first used. A clone or a default starts empty again, so
/// an identity built from another (`Identity { pipeline, ..other.clone() }`) never carries the
/// other's values; `==` ignores it.
#[derive(Default)]
pub struct UpstreamValues(OnceLock<[Option<HeaderValue>; 5]>);

impl UpstreamValues {
    /// The values, from `compute` on first use.
    pub fn get_or_init(&self, compute: impl FnOnce() -> [Option<HeaderValue>; 5]) -> &[Option<HeaderValue>; 5] {
        self.0.get_or_init(compute)
    }
}

impl Clone for UpstreamValues {
    fn clone(&self) -> Self {
        UpstreamValues::default()
    }
}

impl PartialEq for UpstreamValues {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for UpstreamValues {}

impl std::fmt::Debug for UpstreamValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "UpstreamValues(ready)" } else { "UpstreamValues(empty)" })
    }
}

/// The token's validity window, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Times {
    /// `exp`.
    pub exp: u64,
    /// `iat`.
    pub iat: u64,
    /// `nbf`.
    pub nbf: Option<u64>,
}

fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, &'static str> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => Ok(Some(v)),
            // NumericDate may carry fractions; negative or huge values are nonsense.
            (None, Some(f)) if (0.0..1e15).contains(&f) => Ok(Some(f.floor() as u64)),
            _ => Err(reason::MALFORMED),
        },
        Some(_) => Err(reason::MALFORMED),
    }
}

/// Reads `exp`, `iat` (required) and `nbf`.
pub(crate) fn times(claims: &Map<String, Value>) -> Result<Times, &'static str> {
    let exp = numeric_date(claims, "exp")?.ok_or(reason::MISSING_CLAIM)?;
    let iat = numeric_date(claims, "iat")?.ok_or(reason::MISSING_CLAIM)?;
    let nbf = numeric_date(claims, "nbf")?;
    Ok(Times { exp, iat, nbf })
}

/// Checks the window at `now` with `leeway` seconds of skew. Also runs on every cache hit.
pub(crate) fn check_window(t: &Times, now: u64, leeway: u64) -> Result<(), &'static str> {
    if now >= t.exp.saturating_add(leeway) {
        return Err(reason::EXPIRED);
    }
    if t.nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) || t.iat > now.saturating_add(leeway) {
        return Err(reason::NOT_YET_VALID);
    }
    Ok(())
}

/// Checks `exp - iat` against the issuer's `max_lifetime`.
pub(crate) fn check_lifetime(t: &Times, max_lifetime: u64) -> Result<(), &'static str> {
    if t.exp < t.iat || t.exp - t.iat > max_lifetime {
        return Err(reason::LIFETIME_TOO_LONG);
    }
    Ok(())
}

/// `scope` equal to, or a space-separated list containing, `required`.
pub(crate) fn check_scope(claims: &Map<String, Value>, required: Option<&str>) -> Result<(), &'static str> {
    let Some(required) = required else { return Ok(()) };
    match claims.get("scope") {
        Some(Value::String(s)) if s.split(' ').any(|x| x == required) => Ok(()),
        _ => Err(reason::WRONG_SCOPE),
    }
}

fn text(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, &'static str> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(reason::MALFORMED),
    }
}

/// An integer claim as decimal text: a JSON integer, or a string of an optional `-` and digits.
fn integer(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, &'static str> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        Some(Value::String(s)) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(reason::MALFORMED);
            }
            Ok(Some(s.clone()))
        }
        Some(_) => Err(reason::MALFORMED),
    }
}

fn roles(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, &'static str> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(' ').filter(|r| !r.is_empty()).map(str::to_owned).collect()),
        Some(Value::Array(list)) => {
            list.iter().map(|v| v.as_str().map(str::to_owned).ok_or(reason::MALFORMED)).collect()
        }
        Some(_) => Err(reason::MALFORMED),
    }
}

/// Maps verified claims to an identity. For `pipeline_from_header` issuers `pipeline` is left
/// empty: it is filled per request from `X-Airflow-Dag-Id`.
pub(crate) fn identity(issuer: &Issuer, claims: &Map<String, Value>, exp: u64) -> Result<Identity, &'static str> {
    let c = &issuer.claims;
    // Kubernetes issuers: the pipeline (and the rest) comes from the pod, only `sub` from the token.
    if issuer.kubernetes.is_some() {
        return Ok(Identity {
            issuer: Arc::clone(&issuer.name),
            principal: text(claims, "sub")?,
            jti: text(claims, "jti")?,
            expires_at: exp,
            ..Identity::default()
        });
    }
    let pipeline = if issuer.pipeline_from_header {
        String::new()
    } else {
        match claims.get(&*c.pipeline) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::String(_)) | None | Some(Value::Null) => return Err(reason::MISSING_PIPELINE),
            Some(_) => return Err(reason::MALFORMED),
        }
    };
    Ok(Identity {
        issuer: Arc::clone(&issuer.name),
        principal: text(claims, &c.principal)?,
        pipeline,
        task: text(claims, &c.task)?,
        run_id: text(claims, &c.run)?,
        try_number: integer(claims, &c.try_number)?,
        map_index: integer(claims, &c.map_index)?,
        team: text(claims, &c.team)?,
        roles: roles(claims, &c.roles)?,
        jti: text(claims, "jti")?,
        expires_at: exp,
        pod: None,
        upstream_values: UpstreamValues::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn window_with_leeway() {
        let t = Times { exp: 100, iat: 50, nbf: Some(60) };
        assert_eq!(check_window(&t, 70, 10), Ok(()));
        assert_eq!(check_window(&t, 109, 10), Ok(()));
        assert_eq!(check_window(&t, 110, 10), Err(reason::EXPIRED));
        assert_eq!(check_window(&t, 50, 10), Ok(()));
        assert_eq!(check_window(&t, 49, 10), Err(reason::NOT_YET_VALID));
        let future_iat = Times { exp: 1000, iat: 500, nbf: None };
        assert_eq!(check_window(&future_iat, 100, 10), Err(reason::NOT_YET_VALID));
    }

    #[test]
    fn lifetime_and_required_times() {
        assert_eq!(check_lifetime(&Times { exp: 1000, iat: 100, nbf: None }, 900), Ok(()));
        assert_eq!(check_lifetime(&Times { exp: 1001, iat: 100, nbf: None }, 900), Err(reason::LIFETIME_TOO_LONG));
        assert_eq!(times(&map(json!({"iat": 1}))), Err(reason::MISSING_CLAIM));
        assert_eq!(times(&map(json!({"exp": 1}))), Err(reason::MISSING_CLAIM));
        assert_eq!(times(&map(json!({"exp": "1", "iat": 1}))), Err(reason::MALFORMED));
        assert_eq!(times(&map(json!({"exp": 2.5, "iat": 1}))).unwrap().exp, 2);
    }

    #[test]
    fn scope_equal_or_contained() {
        assert_eq!(check_scope(&map(json!({"scope": "egress"})), Some("egress")), Ok(()));
        assert_eq!(check_scope(&map(json!({"scope": "read egress"})), Some("egress")), Ok(()));
        assert_eq!(check_scope(&map(json!({"scope": "egress2"})), Some("egress")), Err(reason::WRONG_SCOPE));
        assert_eq!(check_scope(&map(json!({})), Some("egress")), Err(reason::WRONG_SCOPE));
        assert_eq!(check_scope(&map(json!({})), None), Ok(()));
    }

    #[test]
    fn numbers_or_strings_become_decimal_text() {
        let m = map(json!({"a": 3, "b": "-1", "c": "x", "d": 1.5}));
        assert_eq!(integer(&m, "a").unwrap().as_deref(), Some("3"));
        assert_eq!(integer(&m, "b").unwrap().as_deref(), Some("-1"));
        assert_eq!(integer(&m, "c"), Err(reason::MALFORMED));
        assert_eq!(integer(&m, "d"), Err(reason::MALFORMED));
        assert_eq!(integer(&m, "e"), Ok(None));
    }

    #[test]
    fn roles_from_array_or_space_separated_string() {
        assert_eq!(roles(&map(json!({"r": ["a", "b"]})), "r").unwrap(), vec!["a", "b"]);
        assert_eq!(roles(&map(json!({"r": "a  b"})), "r").unwrap(), vec!["a", "b"]);
        assert_eq!(roles(&map(json!({"r": [1]})), "r"), Err(reason::MALFORMED));
    }
}
