//! `[server]` and `[admin]`: the two listeners — address, TLS files, size and time limits,
//! connection cap, trusted proxies.

use super::{Problems, duration_or, join, raw, units};
use ipnet::IpNet;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// `[server]`: the proxy listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Address to bind.
    pub listen: SocketAddr,
    /// TLS termination files, when set.
    pub tls: Option<TlsFiles>,
    /// Largest request body forwarded (413 beyond).
    pub max_request_body: u64,
    /// Largest request head (431 beyond).
    pub max_header_bytes: usize,
    /// Deadline for one whole request, gateway to upstream and back.
    pub request_timeout: Duration,
    /// Deadline for a client to send a request head, also between keep-alive requests (slowloris
    /// guard and idle timeout).
    pub header_read_timeout: Duration,
    /// An HTTP/2 connection with no open stream for this long is closed with GOAWAY.
    pub idle_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Concurrent client connections at most; further connections wait in the kernel backlog.
    pub max_connections: usize,
}

/// PEM files for TLS termination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address of the metrics and probes listener.
    pub listen: SocketAddr,
}

fn size_or(value: Option<String>, default: u64, at: &str, key: &str, p: &mut Problems) -> u64 {
    match value {
        None => default,
        Some(text) => units::byte_size(&text).unwrap_or_else(|e| {
            p.push(join(at, key), e);
            default
        }),
    }
}

fn addr_or(value: Option<String>, default: &str, at: &str, p: &mut Problems) -> SocketAddr {
    let text = value.unwrap_or_else(|| default.to_owned());
    text.parse().unwrap_or_else(|_| {
        p.push(join(at, "listen"), format!("not a socket address: {text:?} (example: \"0.0.0.0:8080\")"));
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// `[server]`, with its defaults.
pub(super) fn validate(raw: raw::RawServer, p: &mut Problems) -> Server {
    let at = "server";
    let trusted_proxies = raw
        .trusted_proxies
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| p.push(format!("{at}.trusted_proxies[{i}]"), format!("not an address or CIDR: {s:?}")))
                .ok()
        })
        .collect();
    let max_header_bytes = size_or(raw.max_header_bytes, 64 << 10, at, "max_header_bytes", p);
    if max_header_bytes < 1024 {
        p.push("server.max_header_bytes", "must be at least 1KiB");
    }
    let idle_timeout = duration_or(raw.idle_timeout, Duration::from_secs(60), at, "idle_timeout", p);
    if idle_timeout.is_zero() {
        p.push("server.idle_timeout", "must be more than 0s");
    }
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        p.push("server.max_connections", "must be at least 1");
    }
    Server {
        listen: addr_or(raw.listen, "0.0.0.0:8080", at, p),
        tls: raw.tls.map(|t| TlsFiles { cert: t.cert, key: t.key }),
        max_request_body: size_or(raw.max_request_body, 10 << 20, at, "max_request_body", p),
        max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
        request_timeout: duration_or(raw.request_timeout, Duration::from_secs(60), at, "request_timeout", p),
        header_read_timeout: duration_or(
            raw.header_read_timeout,
            Duration::from_secs(10),
            at,
            "header_read_timeout",
            p,
        ),
        idle_timeout,
        shutdown_grace: duration_or(raw.shutdown_grace, Duration::from_secs(30), at, "shutdown_grace", p),
        trusted_proxies,
        max_connections,
    }
}

/// `[admin]`, with its default.
pub(super) fn validate_admin(raw: raw::RawAdmin, p: &mut Problems) -> Admin {
    Admin { listen: addr_or(raw.listen, "127.0.0.1:9090", "admin", p) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::problems;

    #[test]
    fn idle_timeout_is_a_positive_duration_defaulting_to_a_minute() {
        let got = problems("[server]\nidle_timeout = \"soon\"\n");
        assert!(got.iter().any(|p| p.starts_with("server.idle_timeout") && p.contains("not a duration")), "{got:?}");
        let got = problems("[server]\nidle_timeout = \"0s\"\n");
        assert!(got.iter().any(|p| p.starts_with("server.idle_timeout") && p.contains("more than 0s")), "{got:?}");
        let mut p = Problems::default();
        let server = validate(raw::RawServer::default(), &mut p);
        assert_eq!(server.idle_timeout, Duration::from_secs(60));
        let raw = raw::RawServer { idle_timeout: Some("90s".into()), ..Default::default() };
        assert_eq!(validate(raw, &mut p).idle_timeout, Duration::from_secs(90));
    }
}
