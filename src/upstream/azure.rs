//! The bridge to `azure_identity`: an `azure_core` HTTP transport on airgate's own hyper-util +
//! rustls client (no reqwest, no OpenSSL), and a [`TokenSource`] that asks the SDK credential of
//! the configured kind for one fresh token.
//!
//! azure_identity's credentials each keep a token cache that only refreshes in the last 300 s
//! before expiry, inline and under a write lock, and that returns an error instead of its still
//! valid token when that refresh fails. airgate owns the schedule instead
//! ([`super::credential`]), so every fetch here builds a *fresh* SDK credential: its cache is
//! empty, the request really goes to the identity endpoint, and the client secret and the
//! federated token file are re-read on every fetch (rotation needs no restart). Building one is
//! cheap: a pipeline around the shared transport.

use super::credential::{Issued, TokenSource};
use crate::client::{ClientSettings, FetchClient, fetch, fetch_client};
use crate::config::{
    Secret, SecretRef,
    credential::{ClientSecret, Credential, IdentityTransport, ManagedIdentity, UserAssigned, WorkloadIdentity},
};
use azure_core::{
    cloud::{CloudConfiguration, CustomConfiguration},
    credentials::TokenCredential,
    error::ErrorKind,
    http::{
        AsyncRawResponse, Body, ClientOptions, HttpClient, Request, RetryOptions, StatusCode, Transport, Url,
        headers::Headers,
    },
    time::OffsetDateTime,
};
use azure_identity::{
    ClientAssertionCredentialOptions, ClientSecretCredential, ClientSecretCredentialOptions, ManagedIdentityCredential,
    ManagedIdentityCredentialOptions, UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use http_body_util::Full;
use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

/// The address azure_identity hard-codes for IMDS.
pub const IMDS_HOST: &str = "169.254.169.254";
/// Deadline of one HTTP exchange with an identity endpoint (the caller adds an outer deadline
/// around the whole `get_token`, whose retries can take much longer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Token responses are small; anything bigger is not a token response.
const MAX_RESPONSE: usize = 256 * 1024;

/// An `azure_core` [`HttpClient`] on airgate's client, optionally trusting an extra CA and
/// sending IMDS requests elsewhere (tests).
pub struct AzureTransport {
    client: FetchClient,
    imds_endpoint: Option<Url>,
}

impl fmt::Debug for AzureTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureTransport").field("imds_endpoint", &self.imds_endpoint).finish_non_exhaustive()
    }
}

impl AzureTransport {
    /// Builds the transport.
    pub fn new(settings: &IdentityTransport) -> Result<Self, String> {
        let client = fetch_client(&ClientSettings {
            ca_file: settings.ca_file.as_deref(),
            // The SDK speaks HTTP/1.1 to identity endpoints; IMDS only speaks HTTP/1.1.
            enable_http2: false,
            ..ClientSettings::default()
        })?;
        Ok(AzureTransport { client, imds_endpoint: settings.imds_endpoint.clone() })
    }

    fn target(&self, url: &Url) -> Url {
        let mut url = url.clone();
        if let Some(to) = &self.imds_endpoint
            && url.host_str() == Some(IMDS_HOST)
        {
            // Both are http URLs with a host (checked by the config), so none of these can fail.
            let _ = url.set_scheme(to.scheme());
            let _ = url.set_host(to.host_str());
            let _ = url.set_port(to.port_or_known_default());
        }
        url
    }
}

fn io_error(message: String) -> azure_core::Error {
    azure_core::Error::with_message(ErrorKind::Io, message)
}

#[async_trait::async_trait]
impl HttpClient for AzureTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let url = self.target(request.url());
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.clone(),
            Body::SeekableStream(_) => return Err(io_error("streamed request bodies are not supported".into())),
        };
        let mut builder = http::Request::builder()
            .method(
                http::Method::from_bytes(request.method().as_str().as_bytes()).map_err(|e| io_error(e.to_string()))?,
            )
            .uri(url.as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        // The error names the part that is wrong, never a header value (which may be a secret).
        let req = builder.body(Full::new(body)).map_err(|_| io_error("invalid identity request".into()))?;
        // Io: the SDK's retry policy (where one is active, IMDS) treats it as transient.
        let fetched = fetch(&self.client, req, REQUEST_TIMEOUT, MAX_RESPONSE)
            .await
            .map_err(|e| io_error(format!("{} {}: {e}", url.scheme(), url.host_str().unwrap_or_default())))?;
        let mut headers = Headers::new();
        for (name, value) in &fetched.headers {
            if let Ok(value) = value.to_str() {
                headers.insert(name.as_str().to_owned(), value.to_owned());
            }
        }
        Ok(AsyncRawResponse::from_bytes(StatusCode::from(fetched.status.as_u16()), headers, fetched.body))
    }
}

/// Fetches tokens with azure_identity for one upstream's Azure credential.
#[derive(Debug)]
pub struct AzureTokenSource {
    scope: String,
    builder: Arc<Builder>,
}

#[derive(Debug)]
enum Builder {
    Managed { user_assigned: Option<UserAssigned>, options: Options },
    Workload { tenant_id: String, client_id: String, token_file: PathBuf, options: Options },
    Secret { tenant_id: String, client_id: String, secret: SecretRef, options: Options },
}

/// What every SDK credential gets: our transport, no SDK retries (the refresh loop retries
/// with its own backoff; IMDS overrides this with its own policy), and the authority.
#[derive(Debug, Clone)]
struct Options {
    transport: Arc<AzureTransport>,
    cloud: Option<Arc<CloudConfiguration>>,
}

impl Options {
    fn new(transport: &IdentityTransport, authority_host: Option<&Url>) -> Result<Self, String> {
        let cloud = authority_host.map(|host| {
            let mut custom = CustomConfiguration::default();
            custom.authority_host = host.as_str().trim_end_matches('/').to_owned();
            Arc::new(CloudConfiguration::Custom(custom))
        });
        Ok(Options { transport: Arc::new(AzureTransport::new(transport)?), cloud })
    }

    fn client_options(&self) -> ClientOptions {
        ClientOptions {
            transport: Some(Transport::new(self.transport.clone())),
            retry: RetryOptions::none(),
            cloud: self.cloud.clone(),
            ..ClientOptions::default()
        }
    }
}

impl AzureTokenSource {
    /// Prepares the source for an Azure kind (`None` for `none` and `static`). Fails when the
    /// SDK credential cannot be built (missing workload identity settings, unreadable secret,
    /// an App Service resource ID), so a misconfiguration stops the start, not the first request.
    pub fn new(credential: &Credential) -> Result<Option<Self>, String> {
        let (scope, builder) = match credential {
            Credential::None | Credential::Static { .. } => return Ok(None),
            Credential::ManagedIdentity(ManagedIdentity { scope, user_assigned, transport }) => (
                scope,
                Builder::Managed { user_assigned: user_assigned.clone(), options: Options::new(transport, None)? },
            ),
            Credential::WorkloadIdentity(w) => (&w.scope, workload(w)?),
            Credential::ClientSecret(ClientSecret {
                scope,
                tenant_id,
                client_id,
                secret,
                authority_host,
                transport,
            }) => (
                scope,
                Builder::Secret {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    secret: secret.clone(),
                    options: Options::new(transport, authority_host.as_ref())?,
                },
            ),
        };
        builder.build()?;
        Ok(Some(AzureTokenSource { scope: scope.clone(), builder: Arc::new(builder) }))
    }
}

/// Resolves the workload identity settings, falling back to the variables the AKS webhook sets.
fn workload(w: &WorkloadIdentity) -> Result<Builder, String> {
    let env = |name: &str, what: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("workload identity needs {what} or {name}"))
    };
    Ok(Builder::Workload {
        tenant_id: match &w.tenant_id {
            Some(t) => t.clone(),
            None => env("AZURE_TENANT_ID", "tenant_id")?,
        },
        client_id: match &w.client_id {
            Some(c) => c.clone(),
            None => env("AZURE_CLIENT_ID", "client_id")?,
        },
        token_file: match &w.token_file {
            Some(f) => f.clone(),
            None => env("AZURE_FEDERATED_TOKEN_FILE", "token_file")?.into(),
        },
        options: Options::new(&w.transport, w.authority_host.as_ref())?,
    })
}

impl Builder {
    /// A fresh SDK credential (empty cache). Reads the client secret or the federated token file.
    fn build(&self) -> Result<Arc<dyn TokenCredential>, String> {
        let built: azure_core::Result<Arc<dyn TokenCredential>> = match self {
            Builder::Managed { user_assigned, options } => {
                let user_assigned_id = user_assigned.clone().map(|id| match id {
                    UserAssigned::ClientId(id) => UserAssignedId::ClientId(id),
                    UserAssigned::ObjectId(id) => UserAssignedId::ObjectId(id),
                    UserAssigned::ResourceId(id) => UserAssignedId::ResourceId(id),
                });
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    client_options: options.client_options(),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Builder::Workload { tenant_id, client_id, token_file, options } => {
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions { client_options: options.client_options() },
                    client_id: Some(client_id.clone()),
                    tenant_id: Some(tenant_id.clone()),
                    token_file_path: Some(token_file.clone()),
                }))
                .map(|c| c as Arc<dyn TokenCredential>)
            }
            Builder::Secret { tenant_id, client_id, secret, options } => {
                let value = secret.load()?;
                let value = value.expose_str().ok_or_else(|| format!("client secret {secret} is not UTF-8"))?;
                ClientSecretCredential::new(
                    tenant_id,
                    client_id.clone(),
                    value.to_owned().into(),
                    Some(ClientSecretCredentialOptions { client_options: options.client_options() }),
                )
                .map(|c| c as Arc<dyn TokenCredential>)
            }
        };
        built.map_err(|e| describe(&e))
    }
}

#[async_trait::async_trait]
impl TokenSource for AzureTokenSource {
    async fn fetch(&self) -> Result<Issued, String> {
        let builder = self.builder.clone();
        // Building reads files (client secret, federated token): keep that off the runtime.
        let credential = tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(|e| format!("credential builder failed: {e}"))??;
        let token = credential.get_token(&[&self.scope], None).await.map_err(|e| describe(&e))?;
        // The SDK gives a wall-clock expiry; what is left of it becomes a duration right away, so
        // the refresh loop runs on its own monotonic clock.
        let left = token.expires_on - OffsetDateTime::now_utc();
        Ok(Issued {
            token: Secret::new(token.token.secret().as_bytes()),
            expires_in: Duration::try_from(left).unwrap_or(Duration::ZERO),
        })
    }
}

/// An SDK error as one log line. SDK messages carry endpoint answers and hints, not our secrets.
fn describe(e: &azure_core::Error) -> String {
    let mut text: String = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    if text.len() > 500 {
        let mut cut = 500;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_requests_go_to_the_override() {
        let settings =
            IdentityTransport { ca_file: None, imds_endpoint: Some(Url::parse("http://127.0.0.1:4321").unwrap()) };
        let t = AzureTransport::new(&settings).unwrap();
        let imds = Url::parse("http://169.254.169.254/metadata/identity/oauth2/token?api-version=2019-08-01").unwrap();
        assert_eq!(
            t.target(&imds).as_str(),
            "http://127.0.0.1:4321/metadata/identity/oauth2/token?api-version=2019-08-01"
        );
        let other = Url::parse("https://login.microsoftonline.com/t/oauth2/v2.0/token").unwrap();
        assert_eq!(t.target(&other), other);
    }

    #[test]
    fn none_and_static_have_no_azure_source() {
        assert!(AzureTokenSource::new(&Credential::None).unwrap().is_none());
    }

    #[test]
    fn long_errors_are_cut_on_one_line() {
        let e = azure_core::Error::with_message(ErrorKind::Other, format!("a\nb {}", "é".repeat(400)));
        let d = describe(&e);
        assert!(d.starts_with("a b "));
        assert!(d.len() <= 504 && !d.contains('\n'));
    }
}
