//! A route's `allow` rule, compiled once per configuration: one glob set for its pipelines, hash
//! sets for the rest. Matching an identity against it is `policy`'s job.

use super::{Problems, join, ratelimit::compile_globs, raw::RawAllow};
use globset::GlobSet;
use std::{collections::HashSet, sync::Arc};

/// A route's compiled `allow` rule: an identity is allowed when it matches any one list.
#[derive(Debug, Clone)]
pub struct Allow {
    /// The pipeline globs as written (empty: the rule does not look at pipelines).
    pub(crate) pipeline_globs: Vec<String>,
    /// `pipeline_globs`, compiled.
    pub(crate) pipelines: GlobSet,
    pub(crate) teams: HashSet<String>,
    pub(crate) roles: HashSet<String>,
    pub(crate) principals: HashSet<String>,
    pub(crate) issuers: HashSet<Arc<str>>,
}

impl Allow {
    /// Compiles `routes[i].allow` written at `at`; `issuers` are the configured issuer names.
    pub fn compile(raw: RawAllow, at: &str, issuers: &[&str], p: &mut Problems) -> Option<Allow> {
        let RawAllow { pipelines, teams, roles, principals, issuers: allowed_issuers } = raw;
        if pipelines.is_empty()
            && teams.is_empty()
            && roles.is_empty()
            && principals.is_empty()
            && allowed_issuers.is_empty()
        {
            p.push(at, "allows nobody: list pipelines, teams, roles, principals or issuers");
            return None;
        }
        let mut ok = true;
        for (i, name) in allowed_issuers.iter().enumerate() {
            if !issuers.contains(&name.as_str()) {
                ok = false;
                p.push(format!("{}[{i}]", join(at, "issuers")), format!("no issuer named {name:?}"));
            }
        }
        for (key, list) in [("teams", &teams), ("roles", &roles), ("principals", &principals)] {
            for (i, value) in list.iter().enumerate() {
                if value.is_empty() {
                    ok = false;
                    p.push(format!("{}[{i}]", join(at, key)), "must not be empty");
                }
            }
        }
        let compiled = compile_globs(&pipelines, &join(at, "pipelines"), p);
        let compiled = compiled.filter(|_| ok)?;
        Some(Allow {
            pipeline_globs: pipelines,
            pipelines: compiled,
            teams: teams.into_iter().collect(),
            roles: roles.into_iter().collect(),
            principals: principals.into_iter().collect(),
            issuers: allowed_issuers.into_iter().map(Into::into).collect(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Compiles `raw` with the issuers `airflow` and `entra` configured; the problems on failure.
    pub(crate) fn compile(raw: RawAllow) -> Result<Allow, Vec<String>> {
        let mut p = Problems::default();
        Allow::compile(raw, "routes[0].allow", &["airflow", "entra"], &mut p)
            .ok_or_else(|| p.iter().map(ToString::to_string).collect())
    }

    pub(crate) fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn config_errors() {
        let e = compile(RawAllow::default()).unwrap_err();
        assert!(e[0].starts_with("routes[0].allow: allows nobody"), "{e:?}");
        let e = compile(RawAllow { issuers: strings(&["airflow", "okta"]), ..RawAllow::default() }).unwrap_err();
        assert!(e.iter().any(|p| p.starts_with("routes[0].allow.issuers[1]: no issuer named \"okta\"")), "{e:?}");
        let e = compile(RawAllow { pipelines: strings(&["ok", "bad[", "x"]), ..RawAllow::default() }).unwrap_err();
        assert!(e.iter().any(|p| p.starts_with("routes[0].allow.pipelines[1]: not a glob")), "{e:?}");
    }
}
