//! The production [`KeyFetcher`]: `jwks_url` / `discovery_url` fetched over HTTP(S), with a
//! deadline, a size cap, and the response's `Cache-Control: max-age`.

use super::{AlgSet, FetchedKeys, KeyFetcher, jwk::parse_jwks};
use crate::client::{FetchClient, Fetched, fetch};
use crate::config::urls::Redacted;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use serde::Deserialize;
use std::time::Duration;
use url::Url;

/// Deadline of one JWKS or discovery fetch.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest JWKS or discovery document read.
const MAX_DOCUMENT: usize = 1 << 20;

fn max_age(headers: &http::HeaderMap) -> Option<Duration> {
    let cc = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.trim().parse().ok().map(Duration::from_secs))
}

/// `jwks_url` / `discovery_url` over HTTP(S).
pub(super) struct HttpKeys {
    pub(super) client: FetchClient,
    pub(super) url: Url,
    /// `url` is a discovery document naming the JWKS.
    pub(super) discovery: bool,
}

#[async_trait::async_trait]
impl KeyFetcher for HttpKeys {
    async fn fetch(&self, issuer: &str, allowed: AlgSet) -> Result<FetchedKeys, String> {
        let HttpKeys { client, url, discovery } = self;
        let jwks_url = if *discovery {
            let doc = get(client, url).await?;
            #[derive(Deserialize)]
            struct Discovery {
                jwks_uri: String,
            }
            let d: Discovery = serde_json::from_slice(&doc.body)
                .map_err(|e| format!("discovery document from {}: {e}", Redacted(url)))?;
            let u = Url::parse(&d.jwks_uri).map_err(|e| format!("jwks_uri: {e}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err("jwks_uri is not http(s)".to_owned());
            }
            u
        } else {
            url.clone()
        };
        let fetched = get(client, &jwks_url).await?;
        let keys = parse_jwks(issuer, &fetched.body, allowed).map_err(|e| format!("{}: {e}", Redacted(&jwks_url)))?;
        Ok((keys, max_age(&fetched.headers)))
    }
}

async fn get(client: &FetchClient, url: &Url) -> Result<Fetched, String> {
    let req = Request::get(url.as_str())
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{}: {e}", Redacted(url)))?;
    let resp = fetch(client, req, FETCH_TIMEOUT, MAX_DOCUMENT).await.map_err(|e| format!("{}: {e}", Redacted(url)))?;
    if !resp.status.is_success() {
        return Err(format!("{}: HTTP {}", Redacted(url), resp.status));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CACHE_CONTROL, "public, max-age=120".parse().unwrap());
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
    }
}
