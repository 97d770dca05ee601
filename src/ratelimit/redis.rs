//! The Redis backend: one GCRA decision per request made atomically in Redis by a Lua script (one
//! round trip), so every replica shares one limit. A background prober keeps the connection
//! (both connection kinds reconnect on their own) and the reachability that `/readyz` and the
//! request path read.
//!
//! Two connection kinds behind one [`Connection`]: a standalone server (or a proxy that routes
//! keys itself) through a `ConnectionManager`, and a Redis Cluster (`redis_cluster = true`) through
//! the crate's async cluster client, which discovers the topology from the seed node, follows
//! `MOVED`/`ASK` and rebuilds its slot map after a failover.
//!
//! Keys are `{prefix}{policy}:{key}` (overrides: `{prefix}{policy}:o{n}:{key}`), holding the
//! bucket's theoretical arrival time in microseconds of Redis server time, with a TTL equal to the
//! time until the bucket is full again — after that the key is indistinguishable from a missing
//! one, so Redis holds only keys active within one recovery time.
//!
//! Redis Cluster: each decision touches exactly one key, so a script never crosses hash slots and
//! no hash tag is needed. airgate deliberately adds none: a shared tag (`{airgate}`) would put
//! every bucket in one slot and make a single shard hot. Keep `{`/`}` out of `redis_key_prefix`.

use super::Decision;
use crate::config::ratelimit::{Limit, RedisSettings};
use redis::{
    Client, ConnectionInfo, IntoConnectionInfo, RedisResult, Script, ScriptInvocation, TlsCertificates,
    aio::{ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
};
use std::{
    sync::{
        Arc, OnceLock, Weak,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

/// GCRA with the same semantics as the in-process limiter: allowed when `now ≥ tat − (burst−1)·T`,
/// then `tat = max(tat, now) + T`. Time is Redis server time (`TIME`), so replicas with skewed
/// clocks agree. Returns `{allowed, remaining, retry_after_µs, reset_µs}`.
const GCRA_LUA: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local t = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tau = t * (burst - 1)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local earliest = tat - tau
if now < earliest then
  return {0, 0, earliest - now, tat - now}
end
local new_tat = tat + t
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, math.floor((now + tau + t - new_tat) / t), 0, new_tat - now}
";

/// How often the prober checks Redis while it is reachable.
const PROBE_UP: Duration = Duration::from_secs(1);
/// How often the prober retries while Redis is unreachable (the request path is on the fallback).
const PROBE_DOWN: Duration = Duration::from_millis(250);
/// Deadline of a probe, which may include connecting and a TLS handshake.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The cluster client's own retries of one command (`MOVED`, `ASK`, a reconnect): enough to follow
/// a redirection; `redis_timeout` bounds the whole decision anyway.
const CLUSTER_RETRIES: u32 = 3;

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Why Redis could not decide.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BackendError {
    /// Redis is known to be unreachable; the prober is on it.
    #[error("redis is unreachable")]
    Down,
    /// No answer within `redis_timeout`.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The call failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The script answered something unexpected.
    #[error("unexpected script reply")]
    Reply,
    /// The cluster reports it cannot serve every slot (`cluster_state:fail`), e.g. mid-failover.
    #[error("redis cluster state is not ok")]
    ClusterState,
}

/// The client a connection is made from.
// One per backend, inside its Arc: the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Clients {
    Standalone(Client),
    Cluster(ClusterClient),
}

/// A connection of either kind; both are cheap handles to one multiplexed connection (per node).
#[derive(Clone)]
enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn invoke(&mut self, invocation: &ScriptInvocation<'_>) -> RedisResult<Vec<i64>> {
        match self {
            Connection::Standalone(c) => invocation.invoke_async(c).await,
            Connection::Cluster(c) => invocation.invoke_async(c).await,
        }
    }

    /// Standalone: `PING`. Cluster: `CLUSTER INFO` of some node says `cluster_state:ok`, i.e. the
    /// cluster itself considers every slot served (false from failure detection to failover end).
    async fn probe(&mut self) -> Result<(), BackendError> {
        match self {
            Connection::Standalone(c) => redis::cmd("PING").query_async::<String>(c).await.map(drop)?,
            Connection::Cluster(c) => {
                let info = redis::cmd("CLUSTER").arg("INFO").query_async::<String>(c).await?;
                if !info.lines().any(|l| l.trim_end() == "cluster_state:ok") {
                    return Err(BackendError::ClusterState);
                }
            }
        }
        Ok(())
    }
}

/// The shared connection and its health.
pub(crate) struct RedisBackend {
    pub(crate) settings: RedisSettings,
    client: Clients,
    connection: OnceLock<Connection>,
    script: Script,
    state: AtomicU8,
}

impl RedisBackend {
    /// Builds the client; connects lazily (see [`RedisBackend::start`]). Reads the password now.
    pub(crate) fn new(settings: RedisSettings) -> Result<Arc<Self>, String> {
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("rate_limits.redis_url: {:?}", e.kind()))?;
        if let Some(password) = &settings.password {
            let secret = password.load().map_err(|e| format!("rate_limits.redis_password: {e}"))?;
            let password =
                secret.expose_str().ok_or_else(|| format!("rate_limits.redis_password: {password} is not UTF-8"))?;
            info = info.clone().set_redis_settings(info.redis_settings().clone().set_password(password));
        }
        let root_cert = match &settings.ca_file {
            None => None,
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("rate_limits.redis_ca_file: cannot read {}: {}", path.display(), e.kind()))?,
            ),
        };
        let client =
            if settings.cluster { cluster_client(info, root_cert) } else { standalone_client(info, root_cert) }
                .map_err(|e| format!("rate_limits.redis_url: {:?}", e.kind()))?;
        Ok(Arc::new(RedisBackend {
            settings,
            client,
            connection: OnceLock::new(),
            script: Script::new(GCRA_LUA),
            state: AtomicU8::new(UNKNOWN),
        }))
    }

    /// Creates the connection and the prober. Needs a tokio runtime; a no-op when started or
    /// outside one (then the first [`RedisBackend::decide`] starts it). Both kinds connect lazily.
    pub(crate) fn start(self: &Arc<Self>) {
        if self.connection.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let connection = match &self.client {
            Clients::Standalone(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(PROBE_TIMEOUT))
                    .set_response_timeout(Some(PROBE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                match ConnectionManager::new_lazy_with_config(client.clone(), config) {
                    Ok(m) => Connection::Standalone(m),
                    Err(e) => {
                        tracing::error!(error = %e, "rate-limit backend redis: cannot create the connection manager");
                        return;
                    }
                }
            }
            Clients::Cluster(client) => {
                let config =
                    ClusterConfig::new().set_connection_timeout(PROBE_TIMEOUT).set_response_timeout(PROBE_TIMEOUT);
                Connection::Cluster(client.get_pending_async_connection_with_config(config))
            }
        };
        if self.connection.set(connection).is_ok() {
            tokio::spawn(probe(Arc::downgrade(self)));
        }
    }

    /// True when the last call or probe reached Redis.
    pub(crate) fn is_up(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UP
    }

    fn mark(&self, up: bool, error: Option<&BackendError>) {
        let new = if up { UP } else { DOWN };
        let old = self.state.swap(new, Ordering::Relaxed);
        if old != new {
            let host = self.settings.url.host_str().unwrap_or("?");
            match error {
                None => tracing::info!(%host, "rate-limit backend redis is reachable"),
                Some(e) => tracing::warn!(%host, error = %e, "rate-limit backend redis is unreachable"),
            }
        }
    }

    /// Decides one request for `key` under `limit`, in one round trip bounded by `redis_timeout`.
    pub(crate) async fn decide(self: &Arc<Self>, key: &str, limit: &Limit) -> Result<Decision, BackendError> {
        self.start();
        if self.state.load(Ordering::Relaxed) == DOWN {
            // Known down: answer from the fallback at once instead of waiting out a timeout per
            // request; the prober brings us back within PROBE_DOWN of Redis returning.
            return Err(BackendError::Down);
        }
        let Some(connection) = self.connection.get() else { return Err(BackendError::Down) };
        let mut conn = connection.clone();
        let t = u64::try_from(limit.interval().as_micros()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.script.key(key);
        invocation.arg(t).arg(limit.burst.get());
        let result = match tokio::time::timeout(self.settings.timeout, conn.invoke(&invocation)).await {
            Err(_) => Err(BackendError::Timeout(self.settings.timeout)),
            Ok(Err(e)) => Err(BackendError::Redis(e)),
            Ok(Ok(reply)) => parse(&reply),
        };
        match &result {
            Ok(_) => self.mark(true, None),
            Err(e) => self.mark(false, Some(e)),
        }
        result
    }
}

fn parse(reply: &[i64]) -> Result<Decision, BackendError> {
    let &[allowed, remaining, retry_us, reset_us] = reply else { return Err(BackendError::Reply) };
    let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
    Ok(Decision {
        allowed: allowed == 1,
        remaining: u32::try_from(remaining).unwrap_or(0),
        retry_after: micros(retry_us),
        reset: micros(reset_us),
    })
}

/// The client of a standalone server (or of a proxy that routes keys itself).
fn standalone_client(info: ConnectionInfo, root_cert: Option<Vec<u8>>) -> RedisResult<Clients> {
    match root_cert {
        None => Client::open(info),
        Some(pem) => Client::build_with_tls(info, TlsCertificates { client_tls: None, root_cert: Some(pem) }),
    }
    .map(Clients::Standalone)
}

/// The client of a Redis Cluster with `info` as its seed node. TLS (`rediss://`) and the password
/// carry over to every node it discovers.
fn cluster_client(info: ConnectionInfo, root_cert: Option<Vec<u8>>) -> RedisResult<Clients> {
    let mut builder = ClusterClient::builder([info])
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(5)
        .max_retry_wait(100)
        .connection_timeout(PROBE_TIMEOUT)
        .response_timeout(PROBE_TIMEOUT);
    if let Some(pem) = root_cert {
        builder = builder.certs(TlsCertificates { client_tls: None, root_cert: Some(pem) });
    }
    builder.build().map(Clients::Cluster)
}

/// Probes Redis until the backend is dropped: drives reconnection and keeps the reachability fresh.
async fn probe(backend: Weak<RedisBackend>) {
    loop {
        let Some(b) = backend.upgrade() else { return };
        let Some(mut conn) = b.connection.get().cloned() else { return };
        let wait = match tokio::time::timeout(PROBE_TIMEOUT, conn.probe()).await {
            Ok(Ok(())) => {
                b.mark(true, None);
                PROBE_UP
            }
            Ok(Err(e)) => {
                b.mark(false, Some(&e));
                PROBE_DOWN
            }
            Err(_) => {
                b.mark(false, Some(&BackendError::Timeout(PROBE_TIMEOUT)));
                PROBE_DOWN
            }
        };
        drop(b);
        tokio::time::sleep(wait).await;
    }
}
