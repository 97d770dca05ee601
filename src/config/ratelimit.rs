//! `[rate_limits]`: the rate-limit backend and the named policies routes refer to (contract §4),
//! parsed once into typed settings with compiled override globs.

use super::{Problems, SecretRef, duration_or, join, units::Rate};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use std::{fmt, num::NonZeroU32, sync::Arc, time::Duration};

/// Default `redis_key_prefix`.
pub const DEFAULT_KEY_PREFIX: &str = "airgate:";
/// Default `redis_timeout`: the most a request waits for a Redis decision.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(50);

/// `[rate_limits]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawRateLimits {
    /// `local` (default) or `redis`.
    pub backend: Option<String>,
    /// `redis://host:port[/db]` or `rediss://…` (TLS); no password in it.
    pub redis_url: Option<String>,
    /// Secret reference to the Redis password (Azure Cache for Redis access key).
    pub redis_password: Option<String>,
    /// PEM CA certificate(s) that sign the Redis server's certificate, instead of the public roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Prefix of every key airgate writes.
    pub redis_key_prefix: Option<String>,
    /// Deadline of one Redis decision.
    pub redis_timeout: Option<String>,
    /// `redis_url` is a seed node of a Redis Cluster (topology discovered, `MOVED`/`ASK` followed).
    pub redis_cluster: Option<bool>,
    /// `local` (default), `allow` or `deny`.
    pub on_backend_error: Option<String>,
    /// `[[rate_limits.policies]]`.
    pub policies: Vec<RawPolicy>,
}

/// One `[[rate_limits.policies]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawPolicy {
    /// Name routes refer to.
    pub name: Option<String>,
    /// `pipeline` (default), `team`, `principal` or `pipeline_route`.
    pub key: Option<String>,
    /// `"20/s"`, `"3000/min"`.
    pub rate: Option<String>,
    /// Requests allowed at once; defaults to the rate's count.
    pub burst: Option<i64>,
    /// Per-pipeline exceptions, first match wins.
    pub overrides: Vec<RawOverride>,
    /// Count and audit decisions, never enforce them.
    pub shadow: Option<bool>,
}

/// One entry of a policy's `overrides` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawOverride {
    /// Pipeline globs this override applies to.
    pub pipelines: Vec<String>,
    /// Rate for those pipelines.
    pub rate: Option<String>,
    /// Burst for those pipelines; defaults to the rate's count.
    pub burst: Option<i64>,
}

/// Validated rate-limit settings.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    /// Where decisions are made.
    pub backend: Backend,
    /// What to do when the backend cannot decide.
    pub on_backend_error: OnBackendError,
    /// Policies, in file order; names are unique.
    pub policies: Vec<Policy>,
}

impl RateLimits {
    /// True when a policy of that name exists.
    pub fn has_policy(&self, name: &str) -> bool {
        self.policy(name).is_some()
    }

    /// The policy of that name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| *p.name == *name)
    }

    /// One line per fact for `airgate check`: the backend, then each policy. Never a secret.
    pub fn summary_lines(&self) -> Vec<String> {
        let backend = match &self.backend {
            Backend::Local => "local".to_owned(),
            Backend::Redis(r) => format!(
                "redis{} {}://{}{} (prefix {:?}, timeout {:?})",
                if r.cluster { " cluster" } else { "" },
                r.url.scheme(),
                r.url.host_str().unwrap_or("?"),
                r.url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                r.key_prefix,
                r.timeout
            ),
        };
        let mode = match self.on_backend_error {
            OnBackendError::Local => "local",
            OnBackendError::Allow => "allow",
            OnBackendError::Deny => "deny",
        };
        std::iter::once(format!("rate limits: backend {backend}, on_backend_error {mode}"))
            .chain(self.policies.iter().map(|p| format!("  {p}")))
            .collect()
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = match self.rate.per.as_secs() {
            1 if self.rate.per.subsec_nanos() == 0 => "s".to_owned(),
            60 if self.rate.per.subsec_nanos() == 0 => "min".to_owned(),
            3600 if self.rate.per.subsec_nanos() == 0 => "h".to_owned(),
            _ => humantime::format_duration(self.rate.per).to_string(),
        };
        write!(f, "{}/{per} burst {}", self.rate.count, self.burst)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} per {}", self.name, self.limit, self.key.as_str())?;
        for o in &self.overrides {
            write!(f, "; {} -> {}", o.pipelines.join(","), o.limit)?;
        }
        if self.shadow {
            f.write_str(" (shadow: counted, not enforced)")?;
        }
        Ok(())
    }
}

/// Where rate-limit decisions are made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Backend {
    /// In this process: each replica limits on its own.
    #[default]
    Local,
    /// In Redis: one limit shared by every replica.
    Redis(RedisSettings),
}

impl Backend {
    /// The `backend` metric label value.
    pub fn label(&self) -> &'static str {
        match self {
            Backend::Local => "local",
            Backend::Redis(_) => "redis",
        }
    }
}

/// Connection settings of the Redis backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL without a password.
    pub url: url::Url,
    /// The password, when the server requires one.
    pub password: Option<SecretRef>,
    /// Trust anchors for `rediss://` instead of the public roots (a private CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Prefix of every key (lets deployments and tests share one Redis).
    pub key_prefix: String,
    /// Deadline of one decision.
    pub timeout: Duration,
    /// `url` is a seed node of a Redis Cluster.
    pub cluster: bool,
}

/// `on_backend_error`: what a decision is when the backend cannot make it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnBackendError {
    /// Decide with this replica's in-process limiter.
    #[default]
    Local,
    /// Let the request through unlimited.
    Allow,
    /// Refuse with 503 and `Retry-After`.
    Deny,
}

/// What identifies one bucket of a policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// One bucket per pipeline (DAG).
    #[default]
    Pipeline,
    /// One bucket per team; identities without a team fall back to their pipeline.
    Team,
    /// One bucket per principal; identities without one fall back to their pipeline.
    Principal,
    /// One bucket per pipeline and route.
    PipelineRoute,
}

impl KeyKind {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyKind::Pipeline => "pipeline",
            KeyKind::Team => "team",
            KeyKind::Principal => "principal",
            KeyKind::PipelineRoute => "pipeline_route",
        }
    }
}

/// A GCRA limit: `burst` requests at once, then `rate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Sustained rate.
    pub rate: Rate,
    /// Requests allowed at once from a fully recovered bucket.
    pub burst: NonZeroU32,
}

impl Limit {
    /// The emission interval: one request's share of time at the sustained rate (never zero).
    pub fn interval(&self) -> Duration {
        self.rate.interval().max(Duration::from_nanos(1))
    }

    /// Time an empty bucket takes to recover its whole burst.
    pub fn recovery(&self) -> Duration {
        self.interval().saturating_mul(self.burst.get())
    }
}

/// One named policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Name routes refer to (also the `RateLimit-Policy` item name).
    pub name: Arc<str>,
    /// What identifies a bucket.
    pub key: KeyKind,
    /// The default limit.
    pub limit: Limit,
    /// Exceptions by pipeline glob; the first that matches applies.
    pub overrides: Vec<Override>,
    /// Decisions are counted and audited but never enforced.
    pub shadow: bool,
}

impl Policy {
    /// True when `other` has the same buckets: name, key and limits. `shadow` is deliberately not
    /// compared, so a reload that only flips it keeps the limiter state (nobody gets a fresh burst).
    pub fn same_buckets(&self, other: &Policy) -> bool {
        self.name == other.name
            && self.key == other.key
            && self.limit == other.limit
            && self.overrides == other.overrides
    }

    /// The index of the first override whose globs match `pipeline`.
    pub fn override_for(&self, pipeline: &str) -> Option<usize> {
        self.overrides.iter().position(|o| o.matcher.is_match(pipeline))
    }
}

/// A per-pipeline exception to a policy's limit.
#[derive(Debug, Clone)]
pub struct Override {
    /// The globs as written (for display and comparison).
    pub pipelines: Vec<String>,
    /// The globs, compiled.
    pub matcher: GlobSet,
    /// The limit for matching pipelines.
    pub limit: Limit,
}

impl PartialEq for Override {
    fn eq(&self, other: &Self) -> bool {
        self.pipelines == other.pipelines && self.limit == other.limit
    }
}

/// Compiles glob patterns written at `at` (`…pipelines`), recording bad ones.
pub(crate) fn compile_globs(patterns: &[String], at: &str, p: &mut Problems) -> Option<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    let mut ok = true;
    for (i, pattern) in patterns.iter().enumerate() {
        match Glob::new(pattern) {
            Ok(glob) => {
                builder.add(glob);
            }
            Err(e) => {
                ok = false;
                p.push(format!("{at}[{i}]"), format!("not a glob: {}", e.kind()));
            }
        }
    }
    if !ok {
        return None;
    }
    builder.build().map_err(|e| p.push(at, format!("globs do not compile: {e}"))).ok()
}

/// Validates `[rate_limits]`.
pub fn validate(raw: RawRateLimits, at: &str, p: &mut Problems) -> RateLimits {
    let on_backend_error = match raw.on_backend_error.as_deref() {
        None | Some("local") => OnBackendError::Local,
        Some("allow") => OnBackendError::Allow,
        Some("deny") => OnBackendError::Deny,
        Some(other) => {
            p.push(
                join(at, "on_backend_error"),
                format!("unknown mode {other:?}; use \"local\", \"allow\" or \"deny\""),
            );
            OnBackendError::Local
        }
    };
    let timeout = duration_or(raw.redis_timeout, DEFAULT_REDIS_TIMEOUT, at, "redis_timeout", p);
    if timeout.is_zero() {
        p.push(join(at, "redis_timeout"), "must be longer than zero");
    }
    let password =
        raw.redis_password.and_then(|s| SecretRef::parse(&s).map_err(|e| p.push(join(at, "redis_password"), e)).ok());
    let key_prefix = raw.redis_key_prefix.unwrap_or_else(|| DEFAULT_KEY_PREFIX.to_owned());
    let backend = match raw.backend.as_deref() {
        None | Some("local") => {
            for (key, set) in [
                ("redis_url", raw.redis_url.is_some()),
                ("redis_password", password.is_some()),
                ("redis_ca_file", raw.redis_ca_file.is_some()),
                ("redis_cluster", raw.redis_cluster == Some(true)),
            ] {
                if set {
                    p.push(join(at, key), "only applies to backend = \"redis\"");
                }
            }
            Backend::Local
        }
        Some("redis") => match raw.redis_url {
            None => {
                p.push(join(at, "redis_url"), "is required when backend = \"redis\"");
                Backend::Local
            }
            Some(text) => match redis_url(&text) {
                Ok(url) => {
                    if raw.redis_ca_file.is_some() && url.scheme() != "rediss" {
                        p.push(join(at, "redis_ca_file"), "only applies to a rediss:// (TLS) redis_url");
                    }
                    if raw.redis_cluster == Some(true) && !matches!(url.path(), "" | "/" | "/0") {
                        p.push(join(at, "redis_url"), "a Redis Cluster has only database 0; drop the /N path");
                    }
                    Backend::Redis(RedisSettings {
                        url,
                        password,
                        ca_file: raw.redis_ca_file,
                        key_prefix,
                        timeout,
                        cluster: raw.redis_cluster.unwrap_or(false),
                    })
                }
                Err(e) => {
                    p.push(join(at, "redis_url"), e);
                    Backend::Local
                }
            },
        },
        Some(other) => {
            p.push(join(at, "backend"), format!("unknown backend {other:?}; use \"local\" or \"redis\""));
            Backend::Local
        }
    };
    let mut seen = std::collections::HashSet::new();
    let mut policies = Vec::with_capacity(raw.policies.len());
    for (i, raw) in raw.policies.into_iter().enumerate() {
        let at = format!("{}[{i}]", join(at, "policies"));
        let Some(policy) = policy(raw, &at, p) else { continue };
        if !seen.insert(Arc::clone(&policy.name)) {
            p.push(join(&at, "name"), format!("duplicate name {:?}", policy.name));
        }
        policies.push(policy);
    }
    RateLimits { backend, on_backend_error, policies }
}

/// Parses `redis_url`; never echoes it, since a mistyped URL may hold a password.
fn redis_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text)
        .map_err(|e| format!("not a URL ({e}); example: \"rediss://cache.redis.cache.windows.net:6380\""))?;
    if url.scheme() != "redis" && url.scheme() != "rediss" {
        return Err("scheme must be redis:// or rediss:// (TLS)".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("needs a host".into());
    }
    if url.password().is_some() {
        return Err("must not contain a password; put a secret reference in redis_password".into());
    }
    Ok(url)
}

fn policy(raw: RawPolicy, at: &str, p: &mut Problems) -> Option<Policy> {
    let name = super::required(raw.name, at, "name", p);
    if let Some(name) = &name
        && (name.is_empty() || !name.bytes().all(|b| (0x20..0x7f).contains(&b)))
    {
        // The name is sent in the RateLimit headers, which carry printable ASCII only.
        p.push(join(at, "name"), "must be non-empty printable ASCII (it is sent in RateLimit headers)");
    }
    let key = match raw.key.as_deref() {
        None | Some("pipeline") => KeyKind::Pipeline,
        Some("team") => KeyKind::Team,
        Some("principal") => KeyKind::Principal,
        Some("pipeline_route") => KeyKind::PipelineRoute,
        Some(other) => {
            p.push(
                join(at, "key"),
                format!("unknown key {other:?}; use \"pipeline\", \"team\", \"principal\" or \"pipeline_route\""),
            );
            KeyKind::Pipeline
        }
    };
    let default = limit(raw.rate, raw.burst, at, p);
    let overrides: Vec<Option<Override>> = raw
        .overrides
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let at = format!("{}[{i}]", join(at, "overrides"));
            if o.pipelines.is_empty() {
                p.push(join(&at, "pipelines"), "must list at least one pipeline glob");
            }
            let matcher = compile_globs(&o.pipelines, &join(&at, "pipelines"), p);
            let limit = limit(o.rate, o.burst, &at, p);
            Some(Override { pipelines: o.pipelines, matcher: matcher?, limit: limit? })
        })
        .collect();
    let overrides = overrides.into_iter().collect::<Option<Vec<_>>>();
    Some(Policy {
        name: name?.into(),
        key,
        limit: default?,
        overrides: overrides?,
        shadow: raw.shadow.unwrap_or(false),
    })
}

fn limit(rate: Option<String>, burst: Option<i64>, at: &str, p: &mut Problems) -> Option<Limit> {
    let rate = super::required(rate, at, "rate", p)
        .and_then(|text| Rate::parse(&text).map_err(|e| p.push(join(at, "rate"), e)).ok());
    let burst = match burst {
        None => rate.and_then(|r| NonZeroU32::new(r.count)),
        Some(b) => match u32::try_from(b).ok().and_then(NonZeroU32::new) {
            Some(b) => Some(b),
            None => {
                p.push(join(at, "burst"), format!("must be between 1 and {}", u32::MAX));
                None
            }
        },
    };
    Some(Limit { rate: rate?, burst: burst? })
}

#[cfg(test)]
mod tests {
    use crate::config::{Problems, section};

    use super::*;

    fn check(text: &str) -> (RateLimits, Vec<String>) {
        let mut p = Problems::default();
        let value: toml::Value = text.parse::<toml::Table>().unwrap().into();
        let raw: RawRateLimits = section(value, "rate_limits", &mut p).unwrap_or_default();
        let v = validate(raw, "rate_limits", &mut p);
        (v, p.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn full_policy_parses_with_defaults() {
        let (rl, problems) = check(
            r#"
            [[policies]]
            name = "per-dag"
            rate = "20/s"
            burst = 40
            overrides = [{ pipelines = ["sales_backfill*"], rate = "2/s", burst = 4 }]
            [[policies]]
            name = "per-team"
            key = "team"
            rate = "3000/min"
            "#,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(rl.backend, Backend::Local);
        assert_eq!(rl.on_backend_error, OnBackendError::Local);
        let dag = rl.policy("per-dag").unwrap();
        assert_eq!(dag.key, KeyKind::Pipeline);
        assert_eq!(dag.limit.burst.get(), 40);
        assert_eq!(dag.limit.recovery(), Duration::from_secs(2));
        assert_eq!(dag.override_for("sales_backfill_2024"), Some(0));
        assert_eq!(dag.override_for("sales_daily"), None);
        let team = rl.policy("per-team").unwrap();
        assert_eq!(team.key, KeyKind::Team);
        assert_eq!(team.limit.burst.get(), 3000, "burst defaults to the rate's count");
        assert!(rl.has_policy("per-team") && !rl.has_policy("nope"));
        assert_eq!(
            rl.summary_lines(),
            [
                "rate limits: backend local, on_backend_error local",
                "  per-dag: 20/s burst 40 per pipeline; sales_backfill* -> 2/s burst 4",
                "  per-team: 3000/min burst 3000 per team",
            ]
        );
    }

    #[test]
    fn shadow_is_parsed_and_not_part_of_the_buckets() {
        let text = "[[policies]]\nname = \"new-limit\"\nrate = \"5/s\"\nshadow = true\n";
        let (shadow, problems) = check(text);
        assert!(problems.is_empty(), "{problems:?}");
        let (enforced, _) = check(&text.replace("shadow = true", "shadow = false"));
        let (s, e) = (shadow.policy("new-limit").unwrap(), enforced.policy("new-limit").unwrap());
        assert!(s.shadow && !e.shadow);
        assert!(s.same_buckets(e), "flipping shadow keeps the buckets");
        let (faster, _) = check(&text.replace("5/s", "6/s"));
        assert!(!s.same_buckets(faster.policy("new-limit").unwrap()));
        assert_eq!(shadow.summary_lines()[1], "  new-limit: 5/s burst 5 per pipeline (shadow: counted, not enforced)");
    }

    #[test]
    fn problems_have_zero_based_paths() {
        let (_, problems) = check(
            r#"
            backend = "memcached"
            on_backend_error = "panic"
            [[policies]]
            name = "a"
            rate = "1/s"
            [[policies]]
            name = "b"
            key = "dag"
            rate = "2/s"
            burst = 0
            overrides = [{ pipelines = ["x"], rate = "fast" }, { pipelines = [], rate = "1/s" }]
            [[policies]]
            name = "a"
            rate = "1/s"
            [[policies]]
            name = "pér-dag"
            rate = "1/s"
            "#,
        );
        let has = |prefix: &str| problems.iter().any(|p| p.starts_with(prefix));
        assert!(has("rate_limits.backend: unknown backend"), "{problems:?}");
        assert!(has("rate_limits.on_backend_error"), "{problems:?}");
        assert!(has("rate_limits.policies[1].key"), "{problems:?}");
        assert!(has("rate_limits.policies[1].burst: must be between 1"), "{problems:?}");
        assert!(has("rate_limits.policies[1].overrides[0].rate: not a rate"), "{problems:?}");
        assert!(has("rate_limits.policies[1].overrides[1].pipelines"), "{problems:?}");
        assert!(has("rate_limits.policies[2].name: duplicate"), "{problems:?}");
        assert!(has("rate_limits.policies[3].name: must be non-empty printable ASCII"), "{problems:?}");
        assert!(!has("rate_limits.policies[0]"), "{problems:?}");
    }

    #[test]
    fn missing_rate_and_unknown_keys_are_reported() {
        let (_, problems) = check("[[policies]]\nname = \"a\"\nburts = 3\n");
        assert!(problems.iter().any(|p| p.starts_with("rate_limits.policies[0].rate: is required")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("rate_limits.policies[0].burts: unknown key")), "{problems:?}");
    }

    #[test]
    fn redis_settings() {
        let (rl, problems) = check(
            "backend = \"redis\"\nredis_url = \"rediss://cache.example:6380/2\"\nredis_password = \"env:REDIS_KEY\"\nredis_timeout = \"20ms\"\non_backend_error = \"deny\"\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let Backend::Redis(r) = &rl.backend else { panic!("not redis") };
        assert_eq!(r.url.scheme(), "rediss");
        assert_eq!(r.key_prefix, DEFAULT_KEY_PREFIX);
        assert_eq!(r.timeout, Duration::from_millis(20));
        assert_eq!(r.password, Some(SecretRef::Env("REDIS_KEY".into())));
        assert_eq!(rl.on_backend_error, OnBackendError::Deny);

        let (_, problems) = check("backend = \"redis\"\n");
        assert!(problems.iter().any(|p| p.starts_with("rate_limits.redis_url: is required")), "{problems:?}");
        let (_, problems) = check("backend = \"redis\"\nredis_url = \"https://x\"\n");
        assert!(problems.iter().any(|p| p.contains("redis:// or rediss://")), "{problems:?}");
        let (_, problems) = check("backend = \"redis\"\nredis_url = \"redis://:hunter2@x\"\n");
        assert!(problems.iter().any(|p| p.contains("must not contain a password")), "{problems:?}");
        assert!(problems.iter().all(|p| !p.contains("hunter2")), "{problems:?}");
        let (_, problems) = check("backend = \"redis\"\nredis_url = \"redis://x\"\nredis_ca_file = \"/ca.pem\"\n");
        assert!(
            problems.iter().any(|p| p.starts_with("rate_limits.redis_ca_file: only applies to a rediss")),
            "{problems:?}"
        );
        assert!(!r.cluster, "redis_cluster defaults to false");
        let (rl, problems) = check("backend = \"redis\"\nredis_url = \"redis://seed:7000\"\nredis_cluster = true\n");
        assert!(problems.is_empty(), "{problems:?}");
        let Backend::Redis(r) = &rl.backend else { panic!("not redis") };
        assert!(r.cluster);
        assert!(
            rl.summary_lines()[0].starts_with("rate limits: backend redis cluster redis://seed:7000"),
            "{:?}",
            rl.summary_lines()
        );
        let (_, problems) = check("backend = \"redis\"\nredis_url = \"redis://seed:7000/2\"\nredis_cluster = true\n");
        assert!(problems.iter().any(|p| p.contains("only database 0")), "{problems:?}");
        let (_, problems) = check("redis_cluster = true\n");
        assert!(problems.iter().any(|p| p.starts_with("rate_limits.redis_cluster: only applies")), "{problems:?}");
        let (_, problems) = check("redis_url = \"redis://x\"\n");
        assert!(problems.iter().any(|p| p.starts_with("rate_limits.redis_url: only applies")), "{problems:?}");
    }
}
