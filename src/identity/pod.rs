//! Kubernetes pod identity (contract §9): the pod-bound claims of a projected service-account
//! token, the identity the KubernetesExecutor's annotations give, and the pod cache — keyed by pod
//! UID, fresh for `pod_cache_ttl` but never past the filling token's `exp`, bounded, one lookup
//! per pod however many requests wait, and kept through an API outage until that `exp`.

use super::{
    Identity,
    kube_api::{KubeApi, Pod, PodAnswer},
};
use crate::config::kubernetes::{self, Kubernetes};
use arc_swap::ArcSwapOption;
use prometheus::IntCounter;
use serde_json::{Map, Value};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::time::Instant;

/// Most pods remembered at once.
const MAX_PODS: u64 = 50_000;

/// How long after a failed lookup a stale (but still usable) entry is served without asking again.
const STALE_BACKOFF: Duration = Duration::from_secs(1);

/// The `kubernetes.io` claim of a pod-bound token, as the kube-apiserver's TokenRequest writes it:
/// `{"namespace", "pod": {"name", "uid"}, "serviceaccount": {"name", "uid"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodClaims {
    /// `kubernetes.io.namespace`.
    pub namespace: Box<str>,
    /// `kubernetes.io.pod.name`.
    pub name: Box<str>,
    /// `kubernetes.io.pod.uid`.
    pub uid: Box<str>,
    /// `kubernetes.io.serviceaccount.name`.
    pub service_account: Box<str>,
    /// `<namespace>/<name>` for the audit log.
    pub display: Arc<str>,
}

fn text(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Reads the pod binding; `None` when the token is not pod-bound (a plain or legacy token).
pub(crate) fn pod_claims(claims: &Map<String, Value>) -> Option<PodClaims> {
    let k = claims.get("kubernetes.io")?.as_object()?;
    let namespace = text(k.get("namespace"))?;
    let pod = k.get("pod")?.as_object()?;
    let name = text(pod.get("name"))?;
    let uid = text(pod.get("uid"))?;
    let service_account = text(k.get("serviceaccount")?.as_object()?.get("name"))?;
    // The names go into an API path: only what the API itself would accept.
    if !kubernetes::is_object_name(namespace) || !kubernetes::is_object_name(name) {
        return None;
    }
    Some(PodClaims {
        namespace: namespace.into(),
        name: name.into(),
        uid: uid.into(),
        service_account: service_account.into(),
        display: format!("{namespace}/{name}").into(),
    })
}

/// What a looked-up pod says about the task running in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodFacts {
    /// `metadata.uid`.
    pub uid: String,
    /// `status.phase` is `Succeeded` or `Failed`.
    pub finished: bool,
    /// Annotation `dag_id` (absent: not an executor task pod).
    pub pipeline: Option<String>,
    /// Annotation `task_id`.
    pub task: Option<String>,
    /// Annotation `run_id`.
    pub run_id: Option<String>,
    /// Annotation `try_number`.
    pub try_number: Option<String>,
    /// Annotation `map_index` (absent: not mapped).
    pub map_index: Option<String>,
    /// The annotation named by `team_annotation`.
    pub team: Option<String>,
}

/// Maps a pod to its facts: the KubernetesExecutor's annotations, raw (labels are shortened to
/// 63 characters and never read).
pub(crate) fn facts(pod: Pod, team_annotation: Option<&str>) -> PodFacts {
    let mut a = pod.metadata.annotations;
    let mut take = |key: &str| a.remove(key).filter(|v| !v.is_empty());
    PodFacts {
        pipeline: take("dag_id"),
        task: take("task_id"),
        run_id: take("run_id"),
        try_number: take("try_number"),
        map_index: take("map_index"),
        team: team_annotation.and_then(&mut take),
        uid: pod.metadata.uid,
        finished: matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed")),
    }
}

impl PodFacts {
    /// The identity of a request from this pod with a token whose own identity is `token`
    /// (issuer, principal = `sub`, `jti`, `exp`).
    pub(crate) fn identity(&self, token: &Identity, pod: &PodClaims) -> Identity {
        Identity {
            issuer: Arc::clone(&token.issuer),
            principal: token.principal.clone(),
            pipeline: self.pipeline.clone().unwrap_or_default(),
            task: self.task.clone(),
            run_id: self.run_id.clone(),
            try_number: self.try_number.clone(),
            map_index: self.map_index.clone(),
            team: self.team.clone(),
            roles: Vec::new(),
            jti: token.jti.clone(),
            expires_at: token.expires_at,
            pod: Some(Arc::clone(&pod.display)),
            upstream_values: Default::default(),
        }
    }
}

/// Why a pod gives no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PodError {
    /// The pod of that name has another UID (replaced): 401 `pod_mismatch`.
    Mismatch,
    /// No such pod: 401 `pod_not_found`.
    NotFound,
    /// `Succeeded` or `Failed`: 401 `pod_not_running`.
    NotRunning,
    /// The API cannot answer and the pod is not cached: 503 `identity_unavailable`.
    Unavailable,
}

/// One remembered pod.
#[derive(Debug)]
struct Entry {
    facts: Arc<PodFacts>,
    /// Served without a lookup until then: `pod_cache_ttl`, capped by the filling token's `exp`.
    fresh_until: Instant,
    /// Served while the API is down until then: the filling token's `exp`.
    usable_until: Instant,
}

/// A cache slot: the entry, and the lock that makes its lookups single flight.
#[derive(Debug, Default)]
struct Slot {
    entry: ArcSwapOption<Entry>,
    lookup: tokio::sync::Mutex<()>,
}

impl Slot {
    fn fresh(&self, now: Instant) -> Option<Arc<PodFacts>> {
        self.entry.load().as_ref().filter(|e| now < e.fresh_until).map(|e| Arc::clone(&e.facts))
    }

    fn usable(&self, now: Instant) -> Option<Arc<PodFacts>> {
        self.entry.load().as_ref().filter(|e| now < e.usable_until).map(|e| Arc::clone(&e.facts))
    }
}

/// `airgate_pod_lookups_total{issuer,result}`, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct LookupCounters {
    /// Served from the cache (single-flight waiters included).
    pub cached: IntCounter,
    /// The API returned the pod.
    pub fetched: IntCounter,
    /// The API returned a pod with another UID.
    pub mismatch: IntCounter,
    /// 404.
    pub not_found: IntCounter,
    /// Unreachable, timeout, 5xx, 401/403, unreadable.
    pub error: IntCounter,
}

impl LookupCounters {
    /// The children of `family` for `issuer`.
    pub(crate) fn new(family: &prometheus::IntCounterVec, issuer: &str) -> Self {
        let c = |result: &str| family.with_label_values(&[issuer, result]);
        LookupCounters {
            cached: c("cached"),
            fetched: c("fetched"),
            mismatch: c("mismatch"),
            not_found: c("not_found"),
            error: c("error"),
        }
    }
}

/// The pod cache. Generic over the lookup so it can be tested without an API server.
pub(crate) struct PodCache {
    issuer: Arc<str>,
    slots: moka::sync::Cache<Box<str>, Arc<Slot>>,
    ttl: Duration,
    counters: LookupCounters,
    /// Until then stale entries are served without a lookup (the API just failed).
    backoff_until: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for PodCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCache").field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

/// A lookup's answer: the pod's facts, `None` for 404, or why the API could not answer.
pub(crate) type Looked = Result<Option<PodFacts>, String>;

fn running(facts: Arc<PodFacts>) -> Result<Arc<PodFacts>, PodError> {
    if facts.finished { Err(PodError::NotRunning) } else { Ok(facts) }
}

impl PodCache {
    /// An empty cache whose entries are fresh for `ttl`.
    pub(crate) fn new(issuer: Arc<str>, ttl: Duration, counters: LookupCounters) -> Self {
        // Slots idle for a day hold nothing usable any more (projected tokens live 24 h at most).
        let slots =
            moka::sync::Cache::builder().max_capacity(MAX_PODS).time_to_idle(Duration::from_secs(86_400)).build();
        PodCache { issuer, slots, ttl, counters, backoff_until: Mutex::new(None) }
    }

    fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.lock().map(|b| b.is_some_and(|t| now < t)).unwrap_or(false)
    }

    /// Records a failed lookup; true when it starts an outage (worth one log line).
    fn failed(&self, now: Instant) -> bool {
        let Ok(mut b) = self.backoff_until.lock() else { return false };
        let new = b.is_none_or(|t| now >= t + STALE_BACKOFF * 4);
        *b = Some(now + STALE_BACKOFF);
        new
    }

    /// The facts of the pod `claims` names, for a token expiring at unix second `exp`; `lookup`
    /// asks the API, at most once at a time per pod (waiters then take the answer from the cache).
    pub(crate) async fn get<F, Fut>(&self, claims: &PodClaims, exp: u64, lookup: F) -> Result<Arc<PodFacts>, PodError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Looked>,
    {
        let slot = match self.slots.get(&*claims.uid) {
            Some(s) => s,
            None => self.slots.get_with(claims.uid.clone(), || Arc::new(Slot::default())),
        };
        if let Some(f) = slot.fresh(Instant::now()) {
            self.counters.cached.inc();
            return running(f);
        }
        let _single_flight = slot.lookup.lock().await;
        let now = Instant::now();
        if let Some(f) = slot.fresh(now).or_else(|| slot.usable(now).filter(|_| self.backing_off(now))) {
            self.counters.cached.inc();
            return running(f);
        }
        let looked = lookup().await;
        let now = Instant::now();
        match looked {
            Ok(Some(facts)) if *facts.uid != *claims.uid => {
                self.counters.mismatch.inc();
                slot.entry.store(None);
                Err(PodError::Mismatch)
            }
            Ok(Some(facts)) => {
                self.counters.fetched.inc();
                let facts = Arc::new(facts);
                let until = now + Duration::from_secs(exp.saturating_sub(super::verify::unix_now()));
                let entry =
                    Entry { facts: Arc::clone(&facts), fresh_until: until.min(now + self.ttl), usable_until: until };
                slot.entry.store(Some(Arc::new(entry)));
                running(facts)
            }
            Ok(None) => {
                self.counters.not_found.inc();
                slot.entry.store(None);
                Err(PodError::NotFound)
            }
            Err(why) => {
                self.counters.error.inc();
                let stale = slot.usable(now);
                if self.failed(now) {
                    tracing::warn!(
                        issuer = %self.issuer,
                        "pod lookup failed: {why}; cached pods keep working until their token expires, \
                         uncached pods get 503"
                    );
                }
                stale.map_or(Err(PodError::Unavailable), running)
            }
        }
    }
}

/// One Kubernetes issuer's pods: the API client and the cache in front of it.
#[derive(Debug)]
pub(crate) struct PodSource {
    /// The issuer's `[issuers.kubernetes]`, to carry the source over an unchanged reload.
    pub config: Kubernetes,
    api: KubeApi,
    cache: PodCache,
}

impl PodSource {
    /// Connects nothing yet: resolves the API address, reads the CA and airgate's token.
    pub(crate) fn new(issuer: &Arc<str>, k: &Kubernetes, counters: LookupCounters) -> Result<Self, String> {
        let api = KubeApi::new(issuer, k)?;
        Ok(PodSource { config: k.clone(), api, cache: PodCache::new(Arc::clone(issuer), k.pod_cache_ttl, counters) })
    }

    /// The facts of the pod a verified token is bound to.
    pub(crate) async fn resolve(&self, claims: &PodClaims, exp: u64) -> Result<Arc<PodFacts>, PodError> {
        let team = self.config.team_annotation.as_deref();
        self.cache
            .get(claims, exp, || async {
                match self.api.pod(&claims.namespace, &claims.name).await {
                    PodAnswer::Pod(pod) => Ok(Some(facts(pod, team))),
                    PodAnswer::NotFound => Ok(None),
                    PodAnswer::Unavailable(why) => Err(why),
                }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn map(v: Value) -> Map<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    /// The claims of a pod-bound projected token, exactly as the TokenRequest API writes them.
    fn bound() -> Map<String, Value> {
        map(json!({
            "aud": ["urn:airgate"], "exp": 1, "iat": 0, "nbf": 0, "iss": "https://oidc", "jti": "j",
            "sub": "system:serviceaccount:airflow:airflow-worker",
            "kubernetes.io": {
                "namespace": "airflow",
                "node": {"name": "aks-node-0", "uid": "n-1"},
                "pod": {"name": "sales-daily-load-1a2b3c4d", "uid": "p-1"},
                "serviceaccount": {"name": "airflow-worker", "uid": "s-1"},
                "warnafter": 3
            }
        }))
    }

    #[test]
    fn pod_bound_tokens_name_their_pod_and_plain_ones_do_not() {
        let c = pod_claims(&bound()).unwrap();
        assert_eq!(&*c.namespace, "airflow");
        assert_eq!(&*c.name, "sales-daily-load-1a2b3c4d");
        assert_eq!(&*c.uid, "p-1");
        assert_eq!(&*c.service_account, "airflow-worker");
        assert_eq!(&*c.display, "airflow/sales-daily-load-1a2b3c4d");

        // A service-account token without a pod (TokenRequest for the account, or a legacy
        // Secret-bound token) is not pod-bound.
        let mut plain = bound();
        plain["kubernetes.io"].as_object_mut().unwrap().remove("pod");
        assert!(pod_claims(&plain).is_none());
        let mut secret_bound = plain.clone();
        secret_bound["kubernetes.io"]["secret"] = json!({"name": "s", "uid": "u"});
        assert!(pod_claims(&secret_bound).is_none());
        assert!(pod_claims(&map(json!({"sub": "x"}))).is_none());
        for broken in [
            json!({"namespace": "airflow", "pod": {"name": "p"}, "serviceaccount": {"name": "sa"}}),
            json!({"namespace": "", "pod": {"name": "p", "uid": "u"}, "serviceaccount": {"name": "sa"}}),
            json!({"namespace": "airflow", "pod": {"name": "p", "uid": "u"}}),
            json!({"namespace": "airflow", "pod": {"name": "../../secrets", "uid": "u"}, "serviceaccount": {"name": "sa"}}),
            json!({"namespace": "a/b", "pod": {"name": "p", "uid": "u"}, "serviceaccount": {"name": "sa"}}),
        ] {
            let mut c = bound();
            c["kubernetes.io"] = broken.clone();
            assert!(pod_claims(&c).is_none(), "{broken}");
        }
    }

    fn pod(annotations: Value, phase: &str) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"uid": "p-1", "annotations": annotations}, "status": {"phase": phase}}),
        )
        .unwrap()
    }

    #[test]
    fn annotations_map_raw_to_the_identity() {
        let long = format!("finance_{}", "x".repeat(240));
        let f = facts(
            pod(
                json!({"dag_id": long, "task_id": "group.transform", "run_id": "manual__2026-03-01T06:00:00.123456+00:00",
                       "try_number": "3", "map_index": "12", "team.example/name": "finance"}),
                "Running",
            ),
            Some("team.example/name"),
        );
        assert_eq!(f.pipeline.as_deref(), Some(long.as_str()));
        assert_eq!(f.task.as_deref(), Some("group.transform"));
        assert_eq!(f.run_id.as_deref(), Some("manual__2026-03-01T06:00:00.123456+00:00"));
        assert_eq!(f.try_number.as_deref(), Some("3"));
        assert_eq!(f.map_index.as_deref(), Some("12"));
        assert_eq!(f.team.as_deref(), Some("finance"));
        assert!(!f.finished);

        let unmapped =
            facts(pod(json!({"dag_id": "d", "run_id": "scheduled__2026-03-01T06:00:00+00:00"}), "Pending"), None);
        assert_eq!(unmapped.map_index, None);
        assert_eq!(unmapped.team, None);
        assert_eq!(unmapped.run_id.as_deref(), Some("scheduled__2026-03-01T06:00:00+00:00"));
        let celery = facts(pod(json!({}), "Running"), Some("team"));
        assert_eq!(celery.pipeline, None);
        assert!(facts(pod(json!({}), "Succeeded"), None).finished);
        assert!(facts(pod(json!({}), "Failed"), None).finished);
        assert!(!facts(pod(json!({}), "Unknown"), None).finished);

        let claims = pod_claims(&bound()).unwrap();
        let token = Identity {
            issuer: "aks".into(),
            principal: Some("system:serviceaccount:airflow:airflow-worker".into()),
            jti: Some("j".into()),
            expires_at: 9,
            ..Identity::default()
        };
        let id = f.identity(&token, &claims);
        assert_eq!(id.pipeline, long);
        assert_eq!(id.principal, token.principal);
        assert_eq!(id.pod.as_deref(), Some("airflow/sales-daily-load-1a2b3c4d"));
        assert_eq!((id.jti.as_deref(), id.expires_at), (Some("j"), 9));
    }

    fn counters() -> (prometheus::IntCounterVec, LookupCounters) {
        let family = prometheus::IntCounterVec::new(prometheus::Opts::new("t", "t"), &["issuer", "result"]).unwrap();
        let c = LookupCounters::new(&family, "aks");
        (family, c)
    }

    fn running_facts(uid: &str) -> PodFacts {
        PodFacts {
            uid: uid.into(),
            finished: false,
            pipeline: Some("d".into()),
            task: None,
            run_id: None,
            try_number: None,
            map_index: None,
            team: None,
        }
    }

    struct Api {
        calls: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl Api {
        fn new() -> Self {
            Api { calls: AtomicUsize::new(0), down: false.into() }
        }
        async fn get(&self, uid: &str) -> Looked {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            if self.down.load(Ordering::SeqCst) { Err("down".into()) } else { Ok(Some(running_facts(uid))) }
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    fn claims() -> PodClaims {
        pod_claims(&bound()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_is_capped_by_the_filling_tokens_exp() {
        let (_f, c) = counters();
        let cache = PodCache::new("aks".into(), Duration::from_secs(300), c.clone());
        let api = Api::new();
        let claims = claims();
        // The token expires in 60 s, well inside pod_cache_ttl.
        let exp = super::super::verify::unix_now() + 60;
        cache.get(&claims, exp, || api.get("p-1")).await.unwrap();
        tokio::time::advance(Duration::from_secs(59)).await;
        cache.get(&claims, exp, || api.get("p-1")).await.unwrap();
        assert_eq!(api.calls(), 1, "fresh within exp");
        tokio::time::advance(Duration::from_secs(2)).await;
        // A newer token of the same pod comes: the entry is past the old exp, so it is looked up.
        let later = super::super::verify::unix_now() + 3600;
        cache.get(&claims, later, || api.get("p-1")).await.unwrap();
        assert_eq!(api.calls(), 2);
        // Now the TTL (300 s) is the shorter bound.
        tokio::time::advance(Duration::from_secs(299)).await;
        cache.get(&claims, later, || api.get("p-1")).await.unwrap();
        assert_eq!(api.calls(), 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.get(&claims, later, || api.get("p-1")).await.unwrap();
        assert_eq!(api.calls(), 3);
        assert_eq!((c.fetched.get(), c.cached.get()), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn outages_serve_cached_pods_until_exp_and_refuse_new_ones() {
        let (_f, c) = counters();
        let cache = PodCache::new("aks".into(), Duration::from_secs(10), c.clone());
        let api = Api::new();
        let claims = claims();
        let exp = super::super::verify::unix_now() + 100;
        cache.get(&claims, exp, || api.get("p-1")).await.unwrap();
        api.down.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_secs(20)).await;
        // Past the TTL: the refresh fails, the cached pod is still served.
        assert!(cache.get(&claims, exp, || api.get("p-1")).await.is_ok());
        assert_eq!(c.error.get(), 1);
        // Within the backoff no second lookup is tried.
        assert!(cache.get(&claims, exp, || api.get("p-1")).await.is_ok());
        assert_eq!(api.calls(), 2);
        // A pod nobody cached: 503.
        let mut other = claims.clone();
        other.uid = "p-2".into();
        assert_eq!(cache.get(&other, exp, || api.get("p-2")).await, Err(PodError::Unavailable));
        // Past the filling token's exp the cached pod is not usable any more.
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(cache.get(&claims, exp + 1000, || api.get("p-1")).await, Err(PodError::Unavailable));
        api.down.store(false, Ordering::SeqCst);
        assert!(cache.get(&claims, exp + 1000, || api.get("p-1")).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_first_requests_share_one_lookup_and_mismatches_are_not_cached() {
        let (_f, c) = counters();
        let cache = PodCache::new("aks".into(), Duration::from_secs(300), c.clone());
        let api = Api::new();
        let claims = claims();
        let exp = super::super::verify::unix_now() + 600;
        // Three first requests at once (the end-to-end test runs twenty over sockets).
        let (a, b, d) = tokio::join!(
            cache.get(&claims, exp, || api.get("p-1")),
            cache.get(&claims, exp, || api.get("p-1")),
            cache.get(&claims, exp, || api.get("p-1"))
        );
        assert!(a.is_ok() && b.is_ok() && d.is_ok());
        assert_eq!(api.calls(), 1);
        assert_eq!((c.fetched.get(), c.cached.get()), (1, 2));

        let mut replaced = claims.clone();
        replaced.uid = "p-old".into();
        assert_eq!(cache.get(&replaced, exp, || api.get("p-new")).await, Err(PodError::Mismatch));
        assert_eq!(cache.get(&replaced, exp, || api.get("p-new")).await, Err(PodError::Mismatch));
        assert_eq!(c.mismatch.get(), 2);
    }
}
