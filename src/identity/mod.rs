//! Identity: who is calling. Bearer extraction → verification (with a cache) → claim mapping →
//! `X-Airflow-*` assertions → header-derived pipelines for issuers without pipeline claims.
//!
//! The issuer is chosen by the token's unverified `iss` (and `aud` when several issuers share an
//! `iss`); everything is then verified against that issuer's configuration. A token whose header
//! carries `jwk`, `jku`, `x5u` or `x5c` is refused outright (`embedded_key`): airgate never takes a
//! key from the token, and a token that offers one is not from a minter airgate trusts.

mod bearer;
mod cache;
mod claims;
mod jose;
mod keys;
mod kube_api;
pub mod mint;
mod pod;
mod signature;
mod verify;

use crate::carry::{CarryOver, carry_over};
use crate::{
    config::issuer::{Issuer, KeySource},
    metrics::Metrics,
};
pub use claims::UpstreamValues;
use http::{HeaderMap, HeaderName};
use keys::KeyStore;
use std::sync::Arc;
use tokio::sync::watch;

/// A verified caller; handed down the stack in an `Arc`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The issuer's configuration name.
    pub issuer: Arc<str>,
    /// The principal claim (`sub` by default; `oid`/`azp`/`appid` for Entra ID).
    pub principal: Option<String>,
    /// DAG id (from `X-Airflow-Dag-Id` for `pipeline_from_header` issuers).
    pub pipeline: String,
    /// Task id.
    pub task: Option<String>,
    /// Run id.
    pub run_id: Option<String>,
    /// Try number, decimal text as claimed.
    pub try_number: Option<String>,
    /// Map index, decimal text as claimed.
    pub map_index: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// Roles.
    pub roles: Vec<String>,
    /// Token id.
    pub jti: Option<String>,
    /// `exp`, unix seconds.
    pub expires_at: u64,
    /// `<namespace>/<name>` of the pod a Kubernetes token is bound to (audit `pod`).
    pub pod: Option<Arc<str>>,
    /// Its `X-Airflow-*` header values, made once by the forwarder (empty in a new identity).
    pub upstream_values: UpstreamValues,
}

/// The reasons a request has no acceptable identity: audit `reason` and metric label values.
pub mod reason {
    /// No `Authorization` header.
    pub const MISSING_TOKEN: &str = "missing_token";
    /// A scheme other than `Bearer`.
    pub const BAD_SCHEME: &str = "bad_scheme";
    /// More than one `Authorization` header or token.
    pub const MULTIPLE_TOKENS: &str = "multiple_tokens";
    /// Over `max_token_bytes`.
    pub const TOKEN_TOO_LARGE: &str = "token_too_large";
    /// Not a compact JWS of JSON objects (also: duplicate member names, wrongly typed claims).
    pub const MALFORMED: &str = "malformed";
    /// `alg` not allowed for the issuer or not fitting the key (`none` always).
    pub const ALG_NOT_ALLOWED: &str = "alg_not_allowed";
    /// `iss` names no configured issuer.
    pub const UNKNOWN_ISSUER: &str = "unknown_issuer";
    /// `kid` missing or not in the issuer's key set after a refetch.
    pub const UNKNOWN_KID: &str = "unknown_kid";
    /// Signature does not verify.
    pub const BAD_SIGNATURE: &str = "bad_signature";
    /// `iss` not exactly the issuer's (reserved: issuers are chosen by `iss`).
    pub const WRONG_ISSUER: &str = "wrong_issuer";
    /// `aud` names none of the issuer's audiences.
    pub const WRONG_AUDIENCE: &str = "wrong_audience";
    /// `aud` contains Airflow's Execution API audience: such a token must never leave Airflow.
    pub const AIRFLOW_EXECUTION_TOKEN: &str = "airflow_execution_token";
    /// Past `exp` (plus leeway).
    pub const EXPIRED: &str = "expired";
    /// Before `nbf` or `iat` (minus leeway).
    pub const NOT_YET_VALID: &str = "not_yet_valid";
    /// `exp`, `iat` or `iss` missing.
    pub const MISSING_CLAIM: &str = "missing_claim";
    /// `exp - iat` over `max_lifetime`.
    pub const LIFETIME_TOO_LONG: &str = "lifetime_too_long";
    /// `scope` lacks `required_scope`.
    pub const WRONG_SCOPE: &str = "wrong_scope";
    /// No pipeline claim.
    pub const MISSING_PIPELINE: &str = "missing_pipeline";
    /// The issuer has no usable key set (never fetched, or older than `max_stale`).
    pub const KEYS_UNAVAILABLE: &str = "keys_unavailable";
    /// The header has `crit`.
    pub const CRIT_HEADER: &str = "crit_header";
    /// The header carries `jwk`, `jku`, `x5u` or `x5c`.
    pub const EMBEDDED_KEY: &str = "embedded_key";
    /// An `X-Airflow-*` header contradicts the verified identity (403).
    pub const IDENTITY_MISMATCH: &str = "identity_mismatch";
    /// `principal_pipelines` does not grant the header's pipeline to the principal (403).
    pub const PIPELINE_NOT_GRANTED: &str = "pipeline_not_granted";
    /// A `pipeline_from_header` issuer's token came without one valid `X-Airflow-Dag-Id` (403).
    pub const MISSING_PIPELINE_HEADER: &str = "missing_pipeline_header";
    /// A Kubernetes issuer's token without the `kubernetes.io` pod binding (§9).
    pub const NOT_POD_BOUND: &str = "not_pod_bound";
    /// The token's pod is in a namespace not in `namespaces` (403).
    pub const NAMESPACE_NOT_ALLOWED: &str = "namespace_not_allowed";
    /// The token's service account is not in `service_accounts` (403).
    pub const SERVICE_ACCOUNT_NOT_ALLOWED: &str = "service_account_not_allowed";
    /// The pod of that name has another UID: it was replaced.
    pub const POD_MISMATCH: &str = "pod_mismatch";
    /// The pod does not exist.
    pub const POD_NOT_FOUND: &str = "pod_not_found";
    /// The pod has `Succeeded` or `Failed`.
    pub const POD_NOT_RUNNING: &str = "pod_not_running";
    /// The pod has no `dag_id` annotation and the issuer does not take the pipeline from the header.
    pub const NO_PIPELINE: &str = "no_pipeline";
    /// The Kubernetes API cannot answer for an uncached pod (503).
    pub const IDENTITY_UNAVAILABLE: &str = "identity_unavailable";
}

/// 401 or 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectionKind {
    /// No acceptable token: 401.
    Unauthenticated,
    /// A valid token whose identity is not acceptable here: 403.
    Forbidden,
    /// The identity cannot be established right now (the Kubernetes API is down): 503.
    Unavailable,
}

/// Why a request has no acceptable identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 401 or 403.
    pub kind: RejectionKind,
    /// One of [`reason`].
    pub reason: &'static str,
    /// The issuer, when one was chosen.
    pub issuer: Option<Arc<str>>,
    /// A token was sent (RFC 6750 `error="invalid_token"`).
    pub token_sent: bool,
    /// The pod a verified Kubernetes token named (audit `pod`, refusals included).
    pub pod: Option<Arc<str>>,
}

impl Rejection {
    pub(crate) fn unauthenticated(reason: &'static str, issuer: Option<&Arc<str>>, token_sent: bool) -> Self {
        Rejection { kind: RejectionKind::Unauthenticated, reason, issuer: issuer.cloned(), token_sent, pod: None }
    }

    pub(crate) fn forbidden(reason: &'static str, issuer: &Arc<str>) -> Self {
        Rejection {
            kind: RejectionKind::Forbidden,
            reason,
            issuer: Some(Arc::clone(issuer)),
            token_sent: true,
            pod: None,
        }
    }

    fn with_pod(self, pod: &pod::PodClaims) -> Self {
        Rejection { pod: Some(Arc::clone(&pod.display)), ..self }
    }
}

/// `Retry-After` of a 503 `identity_unavailable`, seconds.
pub const IDENTITY_RETRY_AFTER: u64 = 2;

/// One configured issuer at run time.
struct Runtime {
    config: Issuer,
    keys: Arc<KeyStore>,
    /// The task pods of a Kubernetes issuer.
    pods: Option<Arc<pod::PodSource>>,
}

impl CarryOver for Runtime {
    fn carry_key(&self) -> &str {
        &self.config.name
    }
}

/// Verifies callers against every configured issuer.
pub struct Authenticator {
    issuers: Vec<Runtime>,
    cache: cache::TokenCache,
    metrics: Arc<Metrics>,
    /// Largest `max_token_bytes` of any issuer: the cap before parsing.
    max_token_bytes: usize,
    // Dropping the sender stops every background refresh task of this authenticator.
    _shutdown: watch::Sender<()>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.issuers.iter().map(|i| &*i.config.name).collect();
        f.debug_struct("Authenticator").field("issuers", &names).finish_non_exhaustive()
    }
}

const X_DAG: HeaderName = HeaderName::from_static("x-airflow-dag-id");
const X_TASK: HeaderName = HeaderName::from_static("x-airflow-task-id");
const X_RUN: HeaderName = HeaderName::from_static("x-airflow-run-id");
const X_TRY: HeaderName = HeaderName::from_static("x-airflow-try-number");
const X_MAP: HeaderName = HeaderName::from_static("x-airflow-map-index");

impl Authenticator {
    /// Builds key sets for every issuer and starts their background refresh (the tasks hold only a
    /// `Weak` and stop when the authenticator is dropped). `previous`: key sets of issuers whose
    /// key configuration is unchanged are carried over (hot reload) instead of refetched.
    /// Needs a tokio runtime when any issuer fetches or polls its keys.
    pub fn new(issuers: &[Issuer], metrics: Arc<Metrics>, previous: Option<&Authenticator>) -> Result<Self, String> {
        let (shutdown, rx) = watch::channel(());
        let mut runtimes = Vec::with_capacity(issuers.len());
        for issuer in issuers {
            let before = previous.into_iter().flat_map(|p| &p.issuers);
            let carried =
                carry_over(before.clone(), &issuer.name, |r| r.config.keys.is_remote() && r.config.same_keys(issuer))
                    .map(|r| Arc::clone(&r.keys));
            let keys = match &carried {
                Some(k) => Arc::clone(k),
                None => {
                    let store = KeyStore::new(issuer).map_err(|e| format!("issuer {}: {e}", issuer.name))?;
                    // Same remote key source, other refresh settings: keep verifying with the old
                    // set while the new store fetches, instead of starting empty.
                    if let Some(prev) = carry_over(before, &issuer.name, |r| {
                        issuer.keys.is_remote()
                            && r.config.keys == issuer.keys
                            && r.config.algorithms == issuer.algorithms
                    }) {
                        store.seed_from(&prev.keys);
                    }
                    Arc::new(store)
                }
            };
            if issuer.keys.is_remote() || matches!(issuer.keys, KeySource::JwksFile(_)) {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err("the authenticator needs a tokio runtime to refresh keys".into());
                }
                KeyStore::spawn_refresh(&keys, Arc::clone(&metrics), rx.clone(), carried.is_some());
            }
            let pods = match &issuer.kubernetes {
                None => None,
                // An unchanged cluster keeps its client, token watch and cached pods over a reload.
                Some(k) => match previous
                    .and_then(|p| p.issuers.iter().find(|r| r.config.name == issuer.name).and_then(|r| r.pods.as_ref()))
                {
                    Some(prev) if prev.config == *k => Some(Arc::clone(prev)),
                    _ => {
                        let counters = pod::LookupCounters::new(&metrics.pod_lookups, &issuer.name);
                        Some(Arc::new(pod::PodSource::new(&issuer.name, k, counters)?))
                    }
                },
            };
            runtimes.push(Runtime { config: issuer.clone(), keys, pods });
        }
        let max_token_bytes = issuers.iter().map(|i| i.max_token_bytes).max().unwrap_or(8 << 10);
        Ok(Authenticator {
            issuers: runtimes,
            cache: cache::TokenCache::new(),
            metrics,
            max_token_bytes,
            _shutdown: shutdown,
        })
    }

    /// Bearer extraction → verification (cache) → claim mapping → `X-Airflow-*` assertions (403
    /// `identity_mismatch`) → `pipeline_from_header`/`principal_pipelines` (403). Counts
    /// `airgate_auth_failures_total{issuer,reason}` (issuer `_unknown` when none matched).
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Identity>, Rejection> {
        self.authenticate_with(headers, true).await
    }

    /// [`Authenticator::authenticate`] without the verified-token cache (benchmarks).
    #[doc(hidden)]
    pub async fn authenticate_uncached(&self, headers: &HeaderMap) -> Result<Arc<Identity>, Rejection> {
        self.authenticate_with(headers, false).await
    }

    async fn authenticate_with(&self, headers: &HeaderMap, use_cache: bool) -> Result<Arc<Identity>, Rejection> {
        let result = self.authenticate_inner(headers, use_cache).await;
        if let Err(r) = &result {
            let issuer = r.issuer.as_deref().unwrap_or("_unknown");
            self.metrics.auth_failures.with_label_values(&[issuer, r.reason]).inc();
        }
        result
    }

    async fn authenticate_inner(&self, headers: &HeaderMap, use_cache: bool) -> Result<Arc<Identity>, Rejection> {
        let token = bearer::extract(headers, self.max_token_bytes)?;
        let now = verify::unix_now();
        let hit = if use_cache { self.cached(token, now) } else { None };
        let verified = match hit {
            Some(v) => v,
            None => {
                let token = bearer::token68(token)?;
                let v = Arc::new(self.verify(token, now).await?);
                // Tokens expiring within the second are not worth remembering.
                if use_cache && v.times.exp > now {
                    self.cache.insert(token, Arc::clone(&v));
                }
                v
            }
        };
        let Some(rt) = self.issuers.get(verified.issuer) else {
            return Err(Rejection::unauthenticated(reason::UNKNOWN_ISSUER, None, true));
        };
        match (&rt.pods, &verified.pod) {
            (Some(pods), Some(binding)) => self.finish_pod(rt, pods, &verified, binding, headers).await,
            _ => self.finish(&rt.config, &verified.identity, headers, rt.config.pipeline_from_header),
        }
    }

    /// A Kubernetes token: allow-lists (no lookup for a refused pod), then the pod (cache or API),
    /// then the identity its annotations give, then the `X-Airflow-*` rules as for any issuer.
    async fn finish_pod(
        &self,
        rt: &Runtime,
        pods: &pod::PodSource,
        verified: &cache::Verified,
        binding: &cache::PodBinding,
        headers: &HeaderMap,
    ) -> Result<Arc<Identity>, Rejection> {
        let name = &rt.config.name;
        let claims = &binding.claims;
        let refuse = |r: Rejection| r.with_pod(claims);
        if !pods.config.namespace_allowed(&claims.namespace) {
            return Err(refuse(Rejection::forbidden(reason::NAMESPACE_NOT_ALLOWED, name)));
        }
        if !pods.config.service_account_allowed(&claims.service_account) {
            return Err(refuse(Rejection::forbidden(reason::SERVICE_ACCOUNT_NOT_ALLOWED, name)));
        }
        let facts = pods.resolve(claims, verified.times.exp).await.map_err(|e| {
            let (kind, reason) = match e {
                pod::PodError::Mismatch => (RejectionKind::Unauthenticated, reason::POD_MISMATCH),
                pod::PodError::NotFound => (RejectionKind::Unauthenticated, reason::POD_NOT_FOUND),
                pod::PodError::NotRunning => (RejectionKind::Unauthenticated, reason::POD_NOT_RUNNING),
                pod::PodError::Unavailable => (RejectionKind::Unavailable, reason::IDENTITY_UNAVAILABLE),
            };
            Rejection {
                kind,
                reason,
                issuer: Some(Arc::clone(name)),
                token_sent: true,
                pod: Some(Arc::clone(&claims.display)),
            }
        })?;
        let from_header = facts.pipeline.is_none();
        if from_header && !rt.config.pipeline_from_header {
            return Err(refuse(Rejection::unauthenticated(reason::NO_PIPELINE, Some(name), true)));
        }
        let identity = binding.identity(&facts, &verified.identity);
        self.finish(&rt.config, &identity, headers, from_header).map_err(refuse)
    }

    /// A cache hit that still holds: inside its window and its key still in the set.
    fn cached(&self, token: &[u8], now: u64) -> Option<Arc<cache::Verified>> {
        let v = self.cache.get(token)?;
        let rt = self.issuers.get(v.issuer)?;
        if claims::check_window(&v.times, now, rt.config.leeway.as_secs()).is_err() {
            // Re-verify to get the precise reason (expired, not yet valid) on the slow path.
            return None;
        }
        let set = rt.keys.current();
        let still = set
            .as_ref()
            .is_some_and(|s| s.usable(tokio::time::Instant::now()) && s.still_has(v.kid.as_deref(), &v.fingerprint));
        if !still {
            self.cache.remove(token);
            return None;
        }
        Some(v)
    }

    /// Applies the request's `X-Airflow-*` headers to a verified identity: assertions, or with
    /// `from_header` the team-level pipeline of `principal_pipelines`.
    fn finish(
        &self,
        issuer: &Issuer,
        identity: &Arc<Identity>,
        headers: &HeaderMap,
        from_header: bool,
    ) -> Result<Arc<Identity>, Rejection> {
        let name = &issuer.name;
        if !from_header {
            // Most requests assert nothing: one pass over the names instead of five lookups
            // (each hashes an `x-airflow-*` name, ~1.1 k instructions per request together).
            if !headers.keys().any(|k| k.as_str().starts_with("x-airflow-")) {
                return Ok(Arc::clone(identity));
            }
            let asserted = [
                (X_DAG, Some(identity.pipeline.as_str())),
                (X_TASK, identity.task.as_deref()),
                (X_RUN, identity.run_id.as_deref()),
                (X_TRY, identity.try_number.as_deref()),
                (X_MAP, identity.map_index.as_deref()),
            ];
            for (header, claim) in &asserted {
                if !assertion_holds(headers, header, *claim) {
                    return Err(Rejection::forbidden(reason::IDENTITY_MISMATCH, name));
                }
            }
            return Ok(Arc::clone(identity));
        }
        // Team-level trust: the token proves the principal; the principal names the pipeline.
        let pipeline = single_header(headers, &X_DAG)
            .filter(|p| is_dag_id(p))
            .ok_or_else(|| Rejection::forbidden(reason::MISSING_PIPELINE_HEADER, name))?;
        let granted =
            identity.principal.as_deref().and_then(|p| issuer.grant(p)).is_some_and(|globs| globs.is_match(pipeline));
        if !granted {
            return Err(Rejection::forbidden(reason::PIPELINE_NOT_GRANTED, name));
        }
        let mut out = Identity { pipeline: pipeline.to_owned(), ..Identity::clone(identity) };
        // Claims the token has are asserted; the rest is taken from the headers at the same trust.
        for (header, field) in [
            (X_TASK, &mut out.task),
            (X_RUN, &mut out.run_id),
            (X_TRY, &mut out.try_number),
            (X_MAP, &mut out.map_index),
        ] {
            match field {
                Some(claim) => {
                    if !assertion_holds(headers, &header, Some(claim)) {
                        return Err(Rejection::forbidden(reason::IDENTITY_MISMATCH, name));
                    }
                }
                None => {
                    if headers.contains_key(&header) {
                        let value = single_header(headers, &header)
                            .filter(|v| !v.is_empty())
                            .ok_or_else(|| Rejection::forbidden(reason::IDENTITY_MISMATCH, name))?;
                        *field = Some(value.to_owned());
                    }
                }
            }
        }
        Ok(Arc::new(out))
    }

    /// Issuers without usable keys (for `/readyz`), e.g. `issuer airflow-prod: no key set yet`.
    pub fn not_ready(&self) -> Vec<String> {
        self.issuers.iter().filter_map(|r| r.keys.not_ready(&self.metrics)).collect()
    }
}

/// Every value of `header` equals `claim` (no values: nothing asserted).
fn assertion_holds(headers: &HeaderMap, header: &HeaderName, claim: Option<&str>) -> bool {
    headers.get_all(header).iter().all(|v| claim.is_some_and(|c| v.as_bytes() == c.as_bytes()))
}

/// A DAG id as Airflow allows it: 1–250 of `[A-Za-z0-9_.-]` (so never a list, never a glob).
/// Header-named pipelines are metric labels and rate-limit keys: only real DAG ids may mint them.
fn is_dag_id(value: &str) -> bool {
    (1..=250).contains(&value.len())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The one value of `header` as visible ASCII text; `None` when absent, repeated or not text.
fn single_header<'a>(headers: &'a HeaderMap, header: &HeaderName) -> Option<&'a str> {
    let mut values = headers.get_all(header).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}
