//! A running gateway: builds the first snapshot, binds both listeners, starts the audit writer,
//! the proxy and admin servers and the configuration file watch, and drains in order on
//! shutdown. `airgate run`, `airgate demo` and the end-to-end tests all start the gateway
//! through [`start`].
//!
//! The other background tasks belong to the parts that need them and end when those are
//! dropped: key refresh and `jwks_file` watches (identity), token refresh and secret-file
//! watches (upstream), idle-key sweeping and Redis probing (ratelimit), the TLS file watches
//! (server).

use crate::{
    admin,
    audit::Auditor,
    config::Config,
    metrics::Metrics,
    reload, server,
    stack::{Gateway, Snapshot},
    watch::{FileWatch, PERIOD},
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{sync::watch, task::JoinHandle};

/// Options that are not part of the configuration file.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often the configuration file is checked for changes (`None`: never). The default is
    /// the period of every file watch, [`PERIOD`].
    pub watch_config: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options { watch_config: Some(PERIOD) }
    }
}

/// A gateway that is serving.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens (the real port when the config said 0).
    pub proxy_addr: SocketAddr,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// The gateway, for reloads and inspection.
    pub gateway: Arc<Gateway>,
    shutdown: watch::Sender<bool>,
    proxy: JoinHandle<Result<bool, String>>,
    admin: JoinHandle<()>,
    audit: crate::audit::Closer,
    watcher: Option<FileWatch>,
}

/// Builds everything and starts serving.
pub async fn start(config: Config, options: Options) -> Result<Running, String> {
    let metrics = Metrics::new(config.metrics.max_pipelines);
    let (auditor, audit) = Auditor::start(&config.audit, metrics.clone())?;
    let source = config.source.clone();
    let server_settings = config.server.clone();
    let proxy_listener = server::bind(config.server.listen, "proxy").await?;
    let admin_listener = server::bind(config.admin.listen, "admin").await?;
    let proxy_addr = proxy_listener.local_addr().map_err(|e| e.to_string())?;
    let admin_addr = admin_listener.local_addr().map_err(|e| e.to_string())?;

    for issuer in &config.issuers {
        tracing::info!(issuer = %issuer.name, "issuer configured");
    }
    for u in &config.upstreams {
        tracing::info!(upstream = %u.name, url = %format_args!("{}://{}{}", u.scheme, u.authority, u.base_path), "upstream configured");
    }
    let snapshot = Snapshot::build(config, &metrics, None)?;
    let gateway = Gateway::new(snapshot, metrics, auditor);

    let (shutdown, rx) = watch::channel(false);
    let proxy = tokio::spawn(server::serve(proxy_listener, gateway.clone(), server_settings, rx.clone()));
    let admin = tokio::spawn(admin::serve(admin_listener, gateway.clone(), rx));
    let watcher = match (source, options.watch_config) {
        (Some(path), Some(every)) => Some(reload::watch(gateway.clone(), path, every)),
        _ => None,
    };
    tracing::info!(listen = %proxy_addr, "proxy listening");
    tracing::info!(listen = %admin_addr, "admin listening (/metrics, /healthz, /readyz)");
    Ok(Running { proxy_addr, admin_addr, gateway, shutdown, proxy, admin, audit, watcher })
}

impl Running {
    /// Reloads the configuration file now (SIGHUP).
    pub fn reload(&self) -> Result<(), reload::ReloadError> {
        let snap = self.gateway.snapshot();
        match &snap.config.source {
            Some(path) => reload::reload_now(&self.gateway, path, self.watcher.as_ref()),
            None => Ok(()),
        }
    }

    /// Stops accepting, drains in-flight requests within `shutdown_grace`, stops the admin
    /// listener, and flushes the audit stream. Returns true when the drain finished in time.
    pub async fn shutdown(self) -> bool {
        let _ = self.shutdown.send(true);
        self.gateway.start_draining();
        let drained = matches!(self.proxy.await, Ok(Ok(true)));
        self.admin.abort();
        drop(self.watcher);
        self.audit.close(Duration::from_secs(5)).await;
        drained
    }
}
