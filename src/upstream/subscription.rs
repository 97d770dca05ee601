//! APIM subscription key. PLACEHOLDER until the credentials issue lands.

use crate::{config::SecretRef, metrics::Metrics};
use http::{HeaderName, HeaderValue};
use std::sync::Arc;

/// The subscription key of one upstream.
#[derive(Debug)]
pub struct SubscriptionKey {
    header: HeaderName,
    value: HeaderValue,
}

impl SubscriptionKey {
    /// Loads the key.
    pub fn start(
        _upstream: Arc<str>,
        header: HeaderName,
        secret: &SecretRef,
        _metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let s = secret.load()?;
        let mut value =
            HeaderValue::from_bytes(s.expose()).map_err(|_| "subscription key is not a valid header value")?;
        value.set_sensitive(true);
        Ok(Arc::new(SubscriptionKey { header, value }))
    }

    /// The header to add.
    pub fn header(&self) -> Option<(&HeaderName, HeaderValue)> {
        Some((&self.header, self.value.clone()))
    }
}
