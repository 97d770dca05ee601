//! `[[issuers]]`: who may sign caller tokens (contract §2), parsed once into a typed [`Issuer`].
//!
//! Every rule that can be decided from the file alone is decided here: the Airflow Execution API
//! audience is refused, `none` is never an algorithm, `HS*` goes only with a `shared_secret` and
//! never with public keys, exactly one key source, secrets only as references.

use super::{
    AIRFLOW_EXECUTION_AUDIENCE, Problems, SecretRef, duration_or, join,
    kubernetes::{self, Kubernetes, RawKubernetes},
    required, units,
};
use globset::{Glob, GlobSet, GlobSetBuilder};
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use std::{collections::BTreeMap, path::PathBuf, str::FromStr, sync::Arc, time::Duration};
use url::Url;

/// One issuer as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawIssuer {
    /// Configuration name.
    pub name: Option<String>,
    /// Exact `iss` value.
    pub issuer: Option<String>,
    /// Accepted `aud` values (any of).
    pub audiences: Option<Vec<String>>,
    /// Allowed `alg` values.
    pub algorithms: Option<Vec<String>>,
    /// JWKS endpoint.
    pub jwks_url: Option<String>,
    /// OpenID configuration document whose `jwks_uri` names the JWKS.
    pub discovery_url: Option<String>,
    /// JWKS on disk.
    pub jwks_file: Option<PathBuf>,
    /// HMAC secret reference.
    pub shared_secret: Option<String>,
    /// PEM private key reference (development).
    pub signing_key: Option<String>,
    /// Extra CA for fetching the JWKS over https.
    pub ca_file: Option<PathBuf>,
    /// Scope the token must carry.
    pub required_scope: Option<String>,
    /// Clock skew allowed on `exp`, `nbf`, `iat`.
    pub leeway: Option<String>,
    /// Largest `exp - iat`.
    pub max_lifetime: Option<String>,
    /// Largest token accepted.
    pub max_token_bytes: Option<String>,
    /// JWKS refresh period.
    pub refresh_interval: Option<String>,
    /// How long the last good JWKS is used when refreshes fail.
    pub max_stale: Option<String>,
    /// Minimum time between two unknown-`kid` refetches (undocumented; tests).
    pub unknown_kid_cooldown: Option<String>,
    /// Take the pipeline from `X-Airflow-Dag-Id`.
    pub pipeline_from_header: Option<bool>,
    /// principal → pipeline globs, for `pipeline_from_header` issuers.
    pub principal_pipelines: Option<BTreeMap<String, Vec<String>>>,
    /// Claim names.
    pub claims: Option<RawClaims>,
    /// Identity from Kubernetes task pods (contract §9).
    pub kubernetes: Option<RawKubernetes>,
}

/// `[issuers.claims]`: which claim carries which identity field.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawClaims {
    /// Default `dag_id`.
    pub pipeline: Option<String>,
    /// Default `task_id`.
    pub task: Option<String>,
    /// Default `run_id`.
    pub run: Option<String>,
    /// Default `try_number`.
    #[serde(rename = "try")]
    pub try_number: Option<String>,
    /// Default `map_index`.
    pub map_index: Option<String>,
    /// Default `team`.
    pub team: Option<String>,
    /// Default `sub`.
    pub principal: Option<String>,
    /// Default `roles`.
    pub roles: Option<String>,
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A JWKS endpoint, refreshed in the background.
    JwksUrl(Url),
    /// An OpenID configuration document; its `jwks_uri` is fetched like a `jwks_url`.
    Discovery(Url),
    /// A JWKS file, re-read when it changes.
    JwksFile(PathBuf),
    /// An HMAC secret (`HS256/384/512`); also lets `airgate token` mint.
    SharedSecret(SecretRef),
    /// A PEM private key (development): verification uses its public half; `airgate token` mints.
    SigningKey(SecretRef),
}

impl KeySource {
    /// True for sources fetched over the network (refresh, cooldown and staleness apply).
    pub fn is_remote(&self) -> bool {
        matches!(self, KeySource::JwksUrl(_) | KeySource::Discovery(_))
    }
}

/// Claim names of the identity fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimMap {
    /// DAG id.
    pub pipeline: Box<str>,
    /// Task id.
    pub task: Box<str>,
    /// Run id.
    pub run: Box<str>,
    /// Try number.
    pub try_number: Box<str>,
    /// Map index.
    pub map_index: Box<str>,
    /// Team.
    pub team: Box<str>,
    /// Principal.
    pub principal: Box<str>,
    /// Roles (array, or space-separated string).
    pub roles: Box<str>,
}

impl Default for ClaimMap {
    fn default() -> Self {
        ClaimMap {
            pipeline: "dag_id".into(),
            task: "task_id".into(),
            run: "run_id".into(),
            try_number: "try_number".into(),
            map_index: "map_index".into(),
            team: "team".into(),
            principal: "sub".into(),
            roles: "roles".into(),
        }
    }
}

/// One principal's grant for a `pipeline_from_header` issuer.
#[derive(Debug, Clone)]
pub struct PrincipalGrant {
    /// The principal (value of the principal claim).
    pub principal: String,
    /// The globs as written (for display).
    pub patterns: Vec<String>,
    /// The compiled globs.
    pub globs: GlobSet,
}

/// One validated issuer.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Configuration name (metrics, audit).
    pub name: Arc<str>,
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted audiences; never empty, never the Airflow Execution API audience.
    pub audiences: Vec<String>,
    /// Allowed algorithms; all `HS*` (with a shared secret) or none of them.
    pub algorithms: Vec<Algorithm>,
    /// Key source.
    pub keys: KeySource,
    /// Extra CA for `https` key fetches.
    pub ca_file: Option<PathBuf>,
    /// Scope the token must carry, when set.
    pub required_scope: Option<String>,
    /// Clock skew allowed.
    pub leeway: Duration,
    /// Largest `exp - iat`.
    pub max_lifetime: Duration,
    /// Largest token in bytes.
    pub max_token_bytes: usize,
    /// JWKS refresh period (remote sources).
    pub refresh_interval: Duration,
    /// Last good key set usable this long without a successful refresh (remote sources).
    pub max_stale: Duration,
    /// Minimum time between two unknown-`kid` refetches.
    pub unknown_kid_cooldown: Duration,
    /// The pipeline comes from `X-Airflow-Dag-Id` (team-level trust).
    pub pipeline_from_header: bool,
    /// Grants for `pipeline_from_header`, in principal order.
    pub principal_pipelines: Vec<PrincipalGrant>,
    /// Claim names.
    pub claims: ClaimMap,
    /// Identity from the pod the token is bound to (contract §9), instead of from claims.
    pub kubernetes: Option<Kubernetes>,
}

impl Issuer {
    /// True when the two issuers fetch the same keys the same way (hot reload keeps the key set).
    pub fn same_keys(&self, other: &Issuer) -> bool {
        self.issuer == other.issuer
            && self.keys == other.keys
            && self.ca_file == other.ca_file
            && self.refresh_interval == other.refresh_interval
            && self.max_stale == other.max_stale
            && self.unknown_kid_cooldown == other.unknown_kid_cooldown
    }

    /// A development issuer holding its own signing key (`airgate demo`, tests): defaults as in
    /// the file, `required_scope = "egress"`, algorithms from the key type at verification.
    pub fn development(name: &str, issuer: &str, audience: &str, signing_key: super::Secret) -> Issuer {
        Issuer {
            name: name.into(),
            issuer: issuer.to_owned(),
            audiences: vec![audience.to_owned()],
            algorithms: DEFAULT_ALGORITHMS.to_vec(),
            keys: KeySource::SigningKey(SecretRef::Inline(signing_key)),
            ca_file: None,
            required_scope: Some("egress".to_owned()),
            leeway: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(15 * 60),
            max_token_bytes: 8 << 10,
            refresh_interval: Duration::from_secs(5 * 60),
            max_stale: Duration::from_secs(24 * 3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            pipeline_from_header: false,
            principal_pipelines: Vec::new(),
            claims: ClaimMap::default(),
            kubernetes: None,
        }
    }

    /// The globs granted to `principal`, if any.
    pub fn grant(&self, principal: &str) -> Option<&GlobSet> {
        self.principal_pipelines.iter().find(|g| g.principal == principal).map(|g| &g.globs)
    }
}

/// Algorithms accepted when `algorithms` is not set (public-key issuers).
pub const DEFAULT_ALGORITHMS: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::RS256, Algorithm::ES256];

const MIN_DURATION: Duration = Duration::from_secs(1);

/// True for `HS256/384/512`.
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// Validates one issuer at `at` (`issuers[0]`).
pub fn validate(raw: RawIssuer, at: &str, p: &mut Problems, warnings: &mut Vec<String>) -> Option<Issuer> {
    let before = p.len();
    let keys = key_source(&raw, at, p);
    let name = required(raw.name, at, "name", p);
    let label = name.clone().unwrap_or_else(|| at.to_owned());

    let issuer = required(raw.issuer, at, "issuer", p);
    if issuer.as_deref().is_some_and(str::is_empty) {
        p.push(join(at, "issuer"), "must not be empty");
    }

    let audiences = required(raw.audiences, at, "audiences", p);
    if audiences.as_ref().is_some_and(Vec::is_empty) {
        p.push(join(at, "audiences"), "must list at least one audience");
    }
    let audiences = audiences.unwrap_or_default();
    for (i, aud) in audiences.iter().enumerate() {
        if aud == AIRFLOW_EXECUTION_AUDIENCE {
            p.push(
                format!("{at}.audiences[{i}]"),
                format!(
                    "{AIRFLOW_EXECUTION_AUDIENCE:?} is the audience of Airflow's Execution API tokens, which unlock \
                     every DAG's connections and must never leave Airflow; use an audience of your own, \
                     e.g. \"urn:airgate\""
                ),
            );
        } else if aud.is_empty() {
            p.push(format!("{at}.audiences[{i}]"), "must not be empty");
        }
    }

    let algorithms = algorithms(raw.algorithms, keys.as_ref(), at, p);

    if let Some(KeySource::SigningKey(_)) = &keys {
        warnings.push(format!(
            "issuer {label}: signing_key is for development and tests; in production the minter holds the \
             private key and airgate reads the public keys from jwks_url or jwks_file"
        ));
    }
    if let Some(KeySource::JwksUrl(url) | KeySource::Discovery(url)) = &keys
        && url.scheme() == "http"
        && !is_loopback(url)
    {
        warnings.push(format!(
            "issuer {label}: keys are fetched over plain http from {}; anyone on the path can substitute them",
            url.host_str().unwrap_or("?")
        ));
    }
    let remote = keys.as_ref().is_some_and(KeySource::is_remote);
    for (key, set) in [
        ("ca_file", raw.ca_file.is_some()),
        ("refresh_interval", raw.refresh_interval.is_some()),
        ("max_stale", raw.max_stale.is_some()),
        ("unknown_kid_cooldown", raw.unknown_kid_cooldown.is_some()),
    ] {
        if set && keys.is_some() && !remote {
            p.push(join(at, key), "only applies to keys fetched from jwks_url or discovery_url");
        }
    }

    let leeway = duration_or(raw.leeway, Duration::from_secs(10), at, "leeway", p);
    if leeway > Duration::from_secs(300) {
        p.push(join(at, "leeway"), "must be at most 5m");
    }
    let max_lifetime = duration_or(raw.max_lifetime, Duration::from_secs(15 * 60), at, "max_lifetime", p);
    if max_lifetime < MIN_DURATION {
        p.push(join(at, "max_lifetime"), "must be at least 1s");
    }
    let max_token_bytes = match raw.max_token_bytes {
        None => 8 << 10,
        Some(text) => match units::byte_size(&text) {
            Ok(n) if (256..=(64 << 10)).contains(&n) => usize::try_from(n).unwrap_or(8 << 10),
            Ok(_) => {
                p.push(join(at, "max_token_bytes"), "must be between 256B and 64KiB");
                8 << 10
            }
            Err(e) => {
                p.push(join(at, "max_token_bytes"), e);
                8 << 10
            }
        },
    };
    let refresh_interval = duration_or(raw.refresh_interval, Duration::from_secs(5 * 60), at, "refresh_interval", p);
    let max_stale = duration_or(raw.max_stale, Duration::from_secs(24 * 3600), at, "max_stale", p);
    let unknown_kid_cooldown =
        duration_or(raw.unknown_kid_cooldown, Duration::from_secs(30), at, "unknown_kid_cooldown", p);
    for (key, d) in [
        ("refresh_interval", refresh_interval),
        ("max_stale", max_stale),
        ("unknown_kid_cooldown", unknown_kid_cooldown),
    ] {
        if d < MIN_DURATION {
            p.push(join(at, key), "must be at least 1s");
        }
    }
    if max_stale < refresh_interval {
        p.push(join(at, "max_stale"), "must be at least refresh_interval");
    }

    let required_scope = raw.required_scope;
    if let Some(scope) = &required_scope
        && (scope.is_empty() || scope.contains(char::is_whitespace))
    {
        p.push(join(at, "required_scope"), "must be one scope token (no spaces), e.g. \"egress\"");
    }

    let pipeline_from_header = raw.pipeline_from_header.unwrap_or(false);
    let principal_pipelines = grants(raw.principal_pipelines, pipeline_from_header, at, p);
    let kubernetes = raw.kubernetes.and_then(|k| {
        // The pod is the identity: nothing in the token may name the pipeline or mark its kind.
        for (key, set) in [
            ("required_scope", required_scope.is_some()),
            ("claims", raw.claims.is_some()),
            ("shared_secret", raw.shared_secret.is_some()),
            ("signing_key", raw.signing_key.is_some()),
        ] {
            if set {
                p.push(join(at, key), "does not apply to a kubernetes issuer: the pod is the identity, and its keys come from the cluster's OIDC issuer (discovery_url, jwks_url or jwks_file)");
            }
        }
        kubernetes::validate(k, &join(at, "kubernetes"), p)
    });
    let claims = claim_map(raw.claims, pipeline_from_header, at, p);

    if p.len() != before {
        return None;
    }
    Some(Issuer {
        name: name?.into(),
        issuer: issuer?,
        audiences,
        algorithms: algorithms?,
        keys: keys?,
        ca_file: raw.ca_file,
        required_scope,
        leeway,
        max_lifetime,
        max_token_bytes,
        refresh_interval,
        max_stale,
        unknown_kid_cooldown,
        pipeline_from_header,
        principal_pipelines,
        claims,
        kubernetes,
    })
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn key_source(raw: &RawIssuer, at: &str, p: &mut Problems) -> Option<KeySource> {
    let mut found: Vec<(&str, KeySource)> = Vec::new();
    let mut bad = false;
    let mut url = |key: &'static str, value: &Option<String>, p: &mut Problems| -> Option<Url> {
        let text = value.as_deref()?;
        // Never echoed: the query may be a SAS token, the userinfo a password.
        match Url::parse(text) {
            Ok(u) if !super::urls::refuse_userinfo(&u, &join(at, key), p) => {
                bad = true;
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            Ok(u) => {
                p.push(join(at, key), format!("not an http(s) URL: {}", super::urls::Redacted(&u)));
                bad = true;
                None
            }
            Err(e) => {
                p.push(join(at, key), format!("not a URL ({e})"));
                bad = true;
                None
            }
        }
    };
    if let Some(u) = url("jwks_url", &raw.jwks_url, p) {
        found.push(("jwks_url", KeySource::JwksUrl(u)));
    }
    if let Some(u) = url("discovery_url", &raw.discovery_url, p) {
        found.push(("discovery_url", KeySource::Discovery(u)));
    }
    if let Some(path) = &raw.jwks_file {
        found.push(("jwks_file", KeySource::JwksFile(path.clone())));
    }
    for (key, value) in [("shared_secret", &raw.shared_secret), ("signing_key", &raw.signing_key)] {
        if let Some(text) = value {
            match SecretRef::parse(text) {
                Ok(r) => found.push((
                    key,
                    if key == "shared_secret" { KeySource::SharedSecret(r) } else { KeySource::SigningKey(r) },
                )),
                Err(e) => {
                    p.push(join(at, key), e);
                    bad = true;
                }
            }
        }
    }
    match found.len() {
        0 if !bad => {
            p.push(
                at,
                "needs exactly one key source: jwks_url, discovery_url, jwks_file, shared_secret or signing_key",
            );
            None
        }
        1 => found.pop().map(|(_, k)| k),
        _ if found.len() > 1 => {
            let names: Vec<&str> = found.iter().map(|(k, _)| *k).collect();
            p.push(join(at, found[1].0), format!("only one key source per issuer; found {}", names.join(", ")));
            None
        }
        _ => None,
    }
}

fn algorithms(
    raw: Option<Vec<String>>,
    keys: Option<&KeySource>,
    at: &str,
    p: &mut Problems,
) -> Option<Vec<Algorithm>> {
    let hmac_source = matches!(keys, Some(KeySource::SharedSecret(_)));
    let Some(list) = raw else {
        return Some(if hmac_source { vec![Algorithm::HS256] } else { DEFAULT_ALGORITHMS.to_vec() });
    };
    if list.is_empty() {
        p.push(join(at, "algorithms"), "must list at least one algorithm (leave it out for the default)");
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, name) in list.iter().enumerate() {
        let path = format!("{at}.algorithms[{i}]");
        if name.eq_ignore_ascii_case("none") {
            p.push(path, "`none` (unsigned tokens) is never accepted");
            ok = false;
            continue;
        }
        let Ok(alg) = Algorithm::from_str(name) else {
            p.push(
                path,
                format!(
                    "unknown algorithm {name:?}; use EdDSA, RS256/384/512, PS256/384/512, ES256/384 or HS256/384/512"
                ),
            );
            ok = false;
            continue;
        };
        if is_hmac(alg) && !hmac_source {
            p.push(path, format!("{name} needs shared_secret as the key source (and only HS* algorithms then)"));
            ok = false;
        } else if !is_hmac(alg) && hmac_source {
            p.push(
                path,
                format!("{name} cannot be mixed with shared_secret: an HMAC issuer accepts only HS256/384/512"),
            );
            ok = false;
        } else if !out.contains(&alg) {
            out.push(alg);
        }
    }
    ok.then_some(out)
}

fn grants(
    raw: Option<BTreeMap<String, Vec<String>>>,
    from_header: bool,
    at: &str,
    p: &mut Problems,
) -> Vec<PrincipalGrant> {
    let Some(table) = raw else {
        if from_header {
            p.push(
                join(at, "principal_pipelines"),
                "is required with pipeline_from_header: it says which pipelines each principal may name",
            );
        }
        return Vec::new();
    };
    if !from_header {
        p.push(join(at, "principal_pipelines"), "only applies with pipeline_from_header = true");
        return Vec::new();
    }
    let mut out = Vec::new();
    for (principal, patterns) in table {
        let mut builder = GlobSetBuilder::new();
        for (i, pattern) in patterns.iter().enumerate() {
            match Glob::new(pattern) {
                Ok(g) => {
                    builder.add(g);
                }
                Err(e) => {
                    p.push(format!("{at}.principal_pipelines.{principal}[{i}]"), format!("bad glob: {}", e.kind()))
                }
            }
        }
        if patterns.is_empty() {
            p.push(format!("{at}.principal_pipelines.{principal}"), "must list at least one pipeline glob");
        }
        match builder.build() {
            Ok(globs) => out.push(PrincipalGrant { principal, patterns, globs }),
            Err(e) => p.push(format!("{at}.principal_pipelines.{principal}"), format!("bad glob: {e}")),
        }
    }
    out
}

fn claim_map(raw: Option<RawClaims>, from_header: bool, at: &str, p: &mut Problems) -> ClaimMap {
    let d = ClaimMap::default();
    let Some(raw) = raw else { return d };
    if from_header && raw.pipeline.is_some() {
        p.push(format!("{at}.claims.pipeline"), "does not apply with pipeline_from_header = true");
    }
    let mut pick = |value: Option<String>, default: Box<str>, key: &str| -> Box<str> {
        match value {
            Some(v) if v.is_empty() => {
                p.push(format!("{at}.claims.{key}"), "must not be empty");
                default
            }
            Some(v) => v.into(),
            None => default,
        }
    };
    ClaimMap {
        pipeline: pick(raw.pipeline, d.pipeline, "pipeline"),
        task: pick(raw.task, d.task, "task"),
        run: pick(raw.run, d.run, "run"),
        try_number: pick(raw.try_number, d.try_number, "try"),
        map_index: pick(raw.map_index, d.map_index, "map_index"),
        team: pick(raw.team, d.team, "team"),
        principal: pick(raw.principal, d.principal, "principal"),
        roles: pick(raw.roles, d.roles, "roles"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> (Option<Issuer>, Vec<String>, Vec<String>) {
        let mut p = Problems::default();
        let mut warnings = Vec::new();
        let value: toml::Value = toml::from_str(toml_text).unwrap();
        let raw: RawIssuer = crate::config::section(value, "issuers[0]", &mut p).unwrap();
        let issuer = validate(raw, "issuers[0]", &mut p, &mut warnings);
        (issuer, p.iter().map(ToString::to_string).collect(), warnings)
    }

    const BASE: &str = "name = \"a\"\nissuer = \"https://idp\"\naudiences = [\"urn:airgate\"]\n";

    #[test]
    fn minimal_jwks_issuer_gets_the_defaults() {
        let (i, p, w) = check(&format!("{BASE}jwks_url = \"https://idp/jwks\"\n"));
        assert!(p.is_empty(), "{p:?}");
        assert!(w.is_empty());
        let i = i.unwrap();
        assert_eq!(i.algorithms, DEFAULT_ALGORITHMS.to_vec());
        assert_eq!(i.leeway, Duration::from_secs(10));
        assert_eq!(i.max_lifetime, Duration::from_secs(900));
        assert_eq!(i.max_token_bytes, 8192);
        assert_eq!(i.refresh_interval, Duration::from_secs(300));
        assert_eq!(i.unknown_kid_cooldown, Duration::from_secs(30));
        assert_eq!(&*i.claims.pipeline, "dag_id");
        assert_eq!(&*i.claims.principal, "sub");
    }

    #[test]
    fn airflow_execution_audience_is_rejected() {
        let text = "name = \"a\"\nissuer = \"x\"\naudiences = [\"urn:airflow.apache.org:task\"]\njwks_file = \"/k\"\n";
        let (i, p, _) = check(text);
        assert!(i.is_none());
        assert!(p.iter().any(|m| m.starts_with("issuers[0].audiences[0]") && m.contains("Execution API")), "{p:?}");
    }

    #[test]
    fn none_is_never_an_algorithm() {
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\nalgorithms = [\"none\"]\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].algorithms[0]") && m.contains("never")), "{p:?}");
    }

    #[test]
    fn hmac_only_with_shared_secret_and_never_mixed() {
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\nalgorithms = [\"HS256\"]\n"));
        assert!(p.iter().any(|m| m.contains("needs shared_secret")), "{p:?}");
        let (_, p, _) = check(&format!("{BASE}shared_secret = \"env:S\"\nalgorithms = [\"HS256\", \"RS256\"]\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].algorithms[1]") && m.contains("cannot be mixed")), "{p:?}");
        let (i, p, _) = check(&format!("{BASE}shared_secret = \"env:S\"\n"));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(i.unwrap().algorithms, vec![Algorithm::HS256]);
    }

    #[test]
    fn audiences_are_required_and_not_empty() {
        let (_, p, _) = check("name = \"a\"\nissuer = \"x\"\njwks_file = \"/k\"\n");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].audiences") && m.contains("required")), "{p:?}");
        let (_, p, _) = check("name = \"a\"\nissuer = \"x\"\naudiences = []\n");
        assert!(p.iter().any(|m| m.contains("at least one audience")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("exactly one key source")), "{p:?}");
    }

    #[test]
    fn exactly_one_key_source() {
        let (_, p, _) = check(BASE);
        assert!(p.iter().any(|m| m.contains("exactly one key source")), "{p:?}");
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\njwks_url = \"https://idp/k\"\n"));
        assert!(p.iter().any(|m| m.contains("only one key source")), "{p:?}");
    }

    #[test]
    fn signing_key_alone_is_allowed_with_a_warning() {
        let (i, p, w) = check(&format!("{BASE}signing_key = \"file:/k.pem\"\n"));
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(i.unwrap().keys, KeySource::SigningKey(_)));
        assert!(w.iter().any(|w| w.contains("development")), "{w:?}");
    }

    #[test]
    fn secrets_must_be_references() {
        let (_, p, _) = check(&format!("{BASE}shared_secret = \"hunter2hunter2\"\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].shared_secret") && !m.contains("hunter2")), "{p:?}");
        let (_, p, _) = check(&format!("{BASE}signing_key = \"-----BEGIN PRIVATE KEY-----\"\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].signing_key")), "{p:?}");
    }

    #[test]
    fn principal_pipelines_only_with_pipeline_from_header() {
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\nprincipal_pipelines = {{ a = [\"x_*\"] }}\n"));
        assert!(p.iter().any(|m| m.contains("only applies with pipeline_from_header")), "{p:?}");
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\npipeline_from_header = true\n"));
        assert!(p.iter().any(|m| m.contains("is required with pipeline_from_header")), "{p:?}");
        let (i, p, _) = check(&format!(
            "{BASE}jwks_file = \"/k\"\npipeline_from_header = true\nprincipal_pipelines = {{ app1 = [\"team_a_*\"] }}\n"
        ));
        assert!(p.is_empty(), "{p:?}");
        let i = i.unwrap();
        assert!(i.grant("app1").unwrap().is_match("team_a_daily"));
        assert!(!i.grant("app1").unwrap().is_match("team_b_daily"));
        assert!(i.grant("app2").is_none());
    }

    #[test]
    fn remote_only_settings_are_refused_for_local_keys() {
        let (_, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\nrefresh_interval = \"1m\"\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].refresh_interval")), "{p:?}");
    }

    #[test]
    fn durations_and_sizes_are_checked() {
        let (_, p, _) = check(&format!(
            "{BASE}jwks_url = \"https://idp/k\"\nrefresh_interval = \"10ms\"\nleeway = \"soon\"\nmax_token_bytes = \"1MiB\"\n"
        ));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].refresh_interval")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].leeway")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("issuers[0].max_token_bytes")), "{p:?}");
    }

    #[test]
    fn plain_http_keys_warn_unless_loopback() {
        let (_, p, w) = check(&format!("{BASE}jwks_url = \"http://airflow.svc/jwks\"\n"));
        assert!(p.is_empty());
        assert!(w.iter().any(|w| w.contains("plain http")), "{w:?}");
        let (_, _, w) = check(&format!("{BASE}jwks_url = \"http://127.0.0.1:8080/jwks\"\n"));
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn claim_map_overrides() {
        let (i, p, _) = check(&format!("{BASE}jwks_file = \"/k\"\n[claims]\nprincipal = \"oid\"\ntry = \"attempt\"\n"));
        assert!(p.is_empty(), "{p:?}");
        let i = i.unwrap();
        assert_eq!(&*i.claims.principal, "oid");
        assert_eq!(&*i.claims.try_number, "attempt");
        assert_eq!(&*i.claims.pipeline, "dag_id");
    }

    #[test]
    fn kubernetes_issuers_take_no_scope_claims_or_private_keys() {
        let k8s = "[kubernetes]\nnamespaces = [\"airflow\"]\n";
        let (i, p, _) = check(&format!("{BASE}jwks_url = \"https://idp/k\"\n{k8s}"));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(i.unwrap().kubernetes.unwrap().namespaces, vec!["airflow"]);
        let (_, p, _) = check(&format!("{BASE}jwks_url = \"https://idp/k\"\nrequired_scope = \"egress\"\n{k8s}"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].required_scope") && m.contains("kubernetes")), "{p:?}");
        let (_, p, _) = check(&format!("{BASE}shared_secret = \"env:S\"\n{k8s}"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].shared_secret")), "{p:?}");
        let (_, p, _) =
            check(&format!("{BASE}jwks_url = \"https://idp/k\"\n[kubernetes]\nnamespaces = [\"a\"]\nttl = \"1m\"\n"));
        assert!(p.iter().any(|m| m.starts_with("issuers[0].kubernetes.ttl") && m.contains("unknown key")), "{p:?}");
    }
}
