//! RBAC: identity × route → [`Permit`]. A route's `allow` rule ([`Allow`], compiled with the
//! configuration) is matched any-of per request.

use crate::{config::allow::Allow, identity::Identity, metrics::Metrics};
use std::{fmt::Write, sync::Arc};

impl Allow {
    /// True when the identity matches any of the rule's lists.
    pub fn matches(&self, id: &Identity) -> bool {
        // Cheapest tests first; the glob set is the one that costs.
        self.issuers.contains(&*id.issuer)
            || id.team.as_ref().is_some_and(|t| self.teams.contains(t))
            || id.principal.as_ref().is_some_and(|p| self.principals.contains(p))
            || id.roles.iter().any(|r| self.roles.contains(r))
            || (!self.pipeline_globs.is_empty() && self.pipelines.is_match(&id.pipeline))
    }

    /// Why `id` is not allowed on `route`: names the identity's attributes this rule looks at.
    /// Identifiers only — never a token or claim value beyond them.
    pub fn denial(&self, id: &Identity, route: &str) -> String {
        let mut what = Vec::new();
        if !self.pipeline_globs.is_empty() {
            what.push(format!("pipeline {}", id.pipeline));
        }
        if !self.teams.is_empty() {
            what.push(format!("team {}", id.team.as_deref().unwrap_or("(none)")));
        }
        if !self.roles.is_empty() {
            let roles = if id.roles.is_empty() { "(none)".to_owned() } else { id.roles.join(",") };
            what.push(format!("roles {roles}"));
        }
        if !self.principals.is_empty() {
            what.push(format!("principal {}", id.principal.as_deref().unwrap_or("(none)")));
        }
        if !self.issuers.is_empty() {
            what.push(format!("issuer {}", id.issuer));
        }
        let mut reason = what.join(", ");
        let _ = write!(reason, " not allowed on route {route}");
        reason
    }
}

/// The audit `reason` of an allowed request a `dry_run` route would have denied starts with this,
/// followed by the denial reason (`dry_run:pipeline marketing not allowed on route sales`).
pub const DRY_RUN_REASON_PREFIX: &str = "dry_run:";

/// Proof that an identity may use a route; the forwarder takes one.
#[derive(Debug, Clone)]
pub struct Permit {
    identity: Arc<Identity>,
    dry_run_denied: Option<Box<str>>,
}

impl Permit {
    /// The identity the permit was issued to.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// On a `dry_run` route, the reason the request would have been denied.
    pub fn dry_run_denied(&self) -> Option<&str> {
        self.dry_run_denied.as_deref()
    }
}

/// A refusal by a route's `allow` rule (403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Denied {
    /// Names what failed ([`Allow::denial`]): identifiers only.
    pub reason: String,
}

/// Decides whether `identity` may use route `route` under its `allow` rule.
///
/// Denied → [`Denied`], whose reason names what failed. On a `dry_run` route a denial is counted
/// in `airgate_policy_dry_run_denials_total{route}`, logged, and permitted; the stack records
/// [`Permit::dry_run_denied`] in the audit `reason` ([`DRY_RUN_REASON_PREFIX`]).
pub fn authorize(
    route: &str,
    allow: &Allow,
    dry_run: bool,
    identity: Arc<Identity>,
    metrics: &Metrics,
) -> Result<Permit, Denied> {
    if allow.matches(&identity) {
        return Ok(Permit { identity, dry_run_denied: None });
    }
    let reason = allow.denial(&identity, route);
    if dry_run {
        metrics.dry_run_denials.with_label_values(&[route]).inc();
        tracing::info!(%route, pipeline = %identity.pipeline, %reason, "dry run: request would be denied");
        return Ok(Permit { identity, dry_run_denied: Some(reason.into()) });
    }
    Err(Denied { reason })
}

#[cfg(test)]
impl Permit {
    /// A permit without a route's rule, for the unit tests of the phases after policy.
    pub(crate) fn for_tests(identity: Identity) -> Permit {
        Permit { identity: Arc::new(identity), dry_run_denied: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        allow::tests::{compile as allow, strings},
        raw::RawAllow,
    };

    fn id(pipeline: &str) -> Identity {
        Identity { issuer: "airflow".into(), pipeline: pipeline.into(), ..Identity::default() }
    }

    /// `authorize` on route `sales`.
    fn on_sales(allow: &Allow, dry_run: bool, id: Identity, m: &Metrics) -> Result<Permit, Denied> {
        authorize("sales", allow, dry_run, Arc::new(id), m)
    }

    #[test]
    fn pipeline_globs_match() {
        let a = allow(RawAllow { pipelines: strings(&["sales_*", "finance_daily"]), ..RawAllow::default() }).unwrap();
        assert!(a.matches(&id("sales_eu")));
        assert!(a.matches(&id("finance_daily")));
        assert!(!a.matches(&id("finance_daily_2")));
        assert!(!a.matches(&id("marketing")));
        assert!(!a.matches(&id("Sales_eu")), "globs are case-sensitive like DAG ids");
    }

    #[test]
    fn any_of_teams_roles_principals_issuers() {
        let a = allow(RawAllow {
            teams: strings(&["finance"]),
            roles: strings(&["reader"]),
            principals: strings(&["svc-a"]),
            issuers: strings(&["entra"]),
            ..RawAllow::default()
        })
        .unwrap();
        assert!(!a.matches(&id("x")));
        assert!(a.matches(&Identity { team: Some("finance".into()), ..id("x") }));
        assert!(a.matches(&Identity { roles: strings(&["writer", "reader"]), ..id("x") }));
        assert!(a.matches(&Identity { principal: Some("svc-a".into()), ..id("x") }));
        assert!(a.matches(&Identity { issuer: "entra".into(), ..id("x") }));
        assert!(!a.matches(&Identity { team: Some("fin".into()), principal: Some("svc-b".into()), ..id("x") }));
    }

    #[test]
    fn authorize_denies_with_a_reason() {
        let m = Metrics::new(10);
        let r = allow(RawAllow { pipelines: strings(&["sales_*"]), ..RawAllow::default() }).unwrap();
        let permit = on_sales(&r, false, id("sales_eu"), &m).unwrap();
        assert_eq!(permit.identity().pipeline, "sales_eu");
        assert_eq!(permit.dry_run_denied(), None);
        match on_sales(&r, false, id("marketing"), &m) {
            Err(Denied { reason }) => {
                assert_eq!(reason, "pipeline marketing not allowed on route sales")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn dry_run_counts_and_permits() {
        let m = Metrics::new(10);
        let r = allow(RawAllow { pipelines: strings(&["sales_*"]), teams: strings(&["t"]), ..RawAllow::default() })
            .unwrap();
        let permit = on_sales(&r, true, id("marketing"), &m).unwrap();
        assert_eq!(permit.dry_run_denied(), Some("pipeline marketing, team (none) not allowed on route sales"));
        assert!(on_sales(&r, true, id("sales_x"), &m).unwrap().dry_run_denied().is_none());
        assert_eq!(m.dry_run_denials.with_label_values(&["sales"]).get(), 1);
    }
}
