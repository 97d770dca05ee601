//! `[upstreams.credential]`: how airgate obtains its own token for an upstream (contract §5).
//! Raw TOML fields are checked per kind into a [`Credential`] that holds only references to
//! secrets ([`SecretRef`]), never their values, so it can be compared across reloads and printed.

use super::SecretRef;
use super::{Problems, join, required};
use serde::Deserialize;
use std::path::PathBuf;
use url::Url;

/// The credential as written.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RawCredential {
    /// `managed_identity`, `workload_identity`, `client_secret`, `static` or `none`.
    pub kind: Option<String>,
    /// Token scope, e.g. `api://<app-id>/.default` (Azure kinds).
    pub scope: Option<String>,
    /// Client (application) ID: a user-assigned managed identity, the workload identity's app,
    /// or the service principal.
    pub client_id: Option<String>,
    /// Object (principal) ID of a user-assigned managed identity.
    pub object_id: Option<String>,
    /// Azure resource ID of a user-assigned managed identity (IMDS only).
    pub resource_id: Option<String>,
    /// Entra ID tenant (workload identity, client secret).
    pub tenant_id: Option<String>,
    /// Federated token file (workload identity; default `AZURE_FEDERATED_TOKEN_FILE`).
    pub token_file: Option<PathBuf>,
    /// Client secret reference (client secret).
    pub secret: Option<String>,
    /// Token reference (static).
    pub token: Option<String>,
    /// Entra ID authority for sovereign clouds, `https://…` (default `AZURE_AUTHORITY_HOST`, else
    /// `https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
    /// Extra PEM trust anchors for the identity endpoint (a TLS-inspecting proxy; tests).
    pub ca_file: Option<PathBuf>,
    /// Testing only: send IMDS requests (`169.254.169.254`) to this `http://host:port` instead.
    pub imds_endpoint: Option<String>,
}

/// A validated credential. Holds secret references only, never secret values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Credential {
    /// Forward no credential.
    #[default]
    None,
    /// An Azure managed identity (App Service endpoint when `IDENTITY_ENDPOINT` is set, else IMDS).
    ManagedIdentity(ManagedIdentity),
    /// AKS workload identity: a federated service-account token exchanged at Entra ID.
    WorkloadIdentity(WorkloadIdentity),
    /// A service principal with a client secret.
    ClientSecret(ClientSecret),
    /// A fixed bearer token (development); a `file:` reference is re-read when it changes.
    Static {
        /// Where the token is.
        token: SecretRef,
    },
}

impl Credential {
    /// The configuration name of the kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::None => "none",
            Credential::ManagedIdentity(_) => "managed_identity",
            Credential::WorkloadIdentity(_) => "workload_identity",
            Credential::ClientSecret(_) => "client_secret",
            Credential::Static { .. } => "static",
        }
    }
}

/// Which user-assigned managed identity to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAssigned {
    /// By client ID.
    ClientId(String),
    /// By object (principal) ID.
    ObjectId(String),
    /// By Azure resource ID.
    ResourceId(String),
}

/// How airgate reaches the identity endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityTransport {
    /// Extra PEM trust anchors besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Testing only: where requests for the IMDS address go instead (`http://127.0.0.1:port`).
    pub imds_endpoint: Option<Url>,
}

/// `kind = "managed_identity"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedIdentity {
    /// Token scope.
    pub scope: String,
    /// A user-assigned identity; `None` is the system-assigned one.
    pub user_assigned: Option<UserAssigned>,
    /// Transport settings.
    pub transport: IdentityTransport,
}

/// `kind = "workload_identity"`. Absent fields fall back to the variables the AKS webhook sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadIdentity {
    /// Token scope.
    pub scope: String,
    /// Tenant; default `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// Client ID; default `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// Federated token file; default `AZURE_FEDERATED_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// Authority; default `AZURE_AUTHORITY_HOST`, else the public cloud.
    pub authority_host: Option<Url>,
    /// Transport settings.
    pub transport: IdentityTransport,
}

/// `kind = "client_secret"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSecret {
    /// Token scope.
    pub scope: String,
    /// Tenant.
    pub tenant_id: String,
    /// Application (client) ID.
    pub client_id: String,
    /// Where the client secret is.
    pub secret: SecretRef,
    /// Authority; default `AZURE_AUTHORITY_HOST`, else the public cloud.
    pub authority_host: Option<Url>,
    /// Transport settings.
    pub transport: IdentityTransport,
}

const KINDS: &str = "\"managed_identity\", \"workload_identity\", \"client_secret\", \"static\" or \"none\"";

/// Validates an upstream's credential; absent means [`Credential::None`].
pub fn validate(raw: Option<RawCredential>, at: &str, p: &mut Problems) -> Option<Credential> {
    let Some(raw) = raw else { return Some(Credential::None) };
    let before = p.len();
    let kind = required(raw.kind.clone(), at, "kind", p)?;
    let credential = match kind.as_str() {
        "none" => {
            not_applicable(&raw, &[], "none", at, p);
            Some(Credential::None)
        }
        "static" => {
            not_applicable(&raw, &["token"], "static", at, p);
            let token = secret_ref(raw.token, at, "token", p);
            token.map(|token| Credential::Static { token })
        }
        "managed_identity" => {
            not_applicable(
                &raw,
                &["scope", "client_id", "object_id", "resource_id", "ca_file", "imds_endpoint"],
                "managed_identity",
                at,
                p,
            );
            let scope = scope(raw.scope, at, p);
            let ids = [
                raw.client_id.map(UserAssigned::ClientId),
                raw.object_id.map(UserAssigned::ObjectId),
                raw.resource_id.map(UserAssigned::ResourceId),
            ];
            let mut ids = ids.into_iter().flatten();
            let user_assigned = ids.next();
            if ids.next().is_some() {
                p.push(at, "set at most one of client_id, object_id and resource_id");
            }
            if let Some(UserAssigned::ClientId(id) | UserAssigned::ObjectId(id) | UserAssigned::ResourceId(id)) =
                &user_assigned
                && id.trim().is_empty()
            {
                p.push(at, "a user-assigned identity must not be empty");
            }
            let transport = transport(raw.ca_file, raw.imds_endpoint, at, p);
            Some(Credential::ManagedIdentity(ManagedIdentity { scope: scope?, user_assigned, transport }))
        }
        "workload_identity" => {
            not_applicable(
                &raw,
                &["scope", "tenant_id", "client_id", "token_file", "authority_host", "ca_file"],
                "workload_identity",
                at,
                p,
            );
            let scope = scope(raw.scope, at, p);
            let tenant_id = raw.tenant_id.and_then(|t| tenant(t, at, p));
            let client_id = raw.client_id.and_then(|c| non_empty(c, at, "client_id", p));
            let authority_host = raw.authority_host.and_then(|a| authority(&a, at, p));
            let transport = transport(raw.ca_file, None, at, p);
            Some(Credential::WorkloadIdentity(WorkloadIdentity {
                scope: scope?,
                tenant_id,
                client_id,
                token_file: raw.token_file,
                authority_host,
                transport,
            }))
        }
        "client_secret" => {
            not_applicable(
                &raw,
                &["scope", "tenant_id", "client_id", "secret", "authority_host", "ca_file"],
                "client_secret",
                at,
                p,
            );
            let scope = scope(raw.scope, at, p);
            let tenant_id = required(raw.tenant_id, at, "tenant_id", p).and_then(|t| tenant(t, at, p));
            let client_id = required(raw.client_id, at, "client_id", p).and_then(|c| non_empty(c, at, "client_id", p));
            let secret = secret_ref(raw.secret, at, "secret", p);
            let authority_host = raw.authority_host.and_then(|a| authority(&a, at, p));
            let transport = transport(raw.ca_file, None, at, p);
            Some(Credential::ClientSecret(ClientSecret {
                scope: scope?,
                tenant_id: tenant_id?,
                client_id: client_id?,
                secret: secret?,
                authority_host,
                transport,
            }))
        }
        other => {
            p.push(join(at, "kind"), format!("unknown kind {other:?}; use {KINDS}"));
            None
        }
    };
    if p.len() > before { None } else { credential }
}

/// Records every field that is set but means nothing for `kind`.
fn not_applicable(raw: &RawCredential, allowed: &[&str], kind: &str, at: &str, p: &mut Problems) {
    let set = [
        ("scope", raw.scope.is_some()),
        ("client_id", raw.client_id.is_some()),
        ("object_id", raw.object_id.is_some()),
        ("resource_id", raw.resource_id.is_some()),
        ("tenant_id", raw.tenant_id.is_some()),
        ("token_file", raw.token_file.is_some()),
        ("secret", raw.secret.is_some()),
        ("token", raw.token.is_some()),
        ("authority_host", raw.authority_host.is_some()),
        ("ca_file", raw.ca_file.is_some()),
        ("imds_endpoint", raw.imds_endpoint.is_some()),
    ];
    for (key, is_set) in set {
        if is_set && !allowed.contains(&key) {
            p.push(join(at, key), format!("does not apply to kind = {kind:?}"));
        }
    }
}

fn scope(value: Option<String>, at: &str, p: &mut Problems) -> Option<String> {
    let scope = required(value, at, "scope", p)?;
    if scope.is_empty() || scope.chars().any(char::is_whitespace) {
        p.push(join(at, "scope"), "must be one scope such as \"api://<app-id>/.default\"");
        return None;
    }
    Some(scope)
}

fn tenant(value: String, at: &str, p: &mut Problems) -> Option<String> {
    // The same rule azure_identity applies; checked here so `check` reports it.
    if value.is_empty() || !value.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
        p.push(join(at, "tenant_id"), "must be a tenant ID (a GUID) or a domain name");
        return None;
    }
    Some(value)
}

fn non_empty(value: String, at: &str, key: &str, p: &mut Problems) -> Option<String> {
    if value.trim().is_empty() {
        p.push(join(at, key), "must not be empty");
        return None;
    }
    Some(value)
}

fn secret_ref(value: Option<String>, at: &str, key: &str, p: &mut Problems) -> Option<SecretRef> {
    let text = required(value, at, key, p)?;
    SecretRef::parse(&text).map_err(|e| p.push(join(at, key), e)).ok()
}

fn authority(text: &str, at: &str, p: &mut Problems) -> Option<Url> {
    match Url::parse(text) {
        Ok(url) if !super::urls::refuse_userinfo(&url, &join(at, "authority_host"), p) => None,
        Ok(url) if url.scheme() == "https" && url.host().is_some() => Some(url),
        _ => {
            p.push(join(at, "authority_host"), "must be an https URL such as \"https://login.microsoftonline.us\"");
            None
        }
    }
}

fn transport(ca_file: Option<PathBuf>, imds_endpoint: Option<String>, at: &str, p: &mut Problems) -> IdentityTransport {
    let imds_endpoint = imds_endpoint.and_then(|text| match Url::parse(&text) {
        Ok(url) if !super::urls::refuse_userinfo(&url, &join(at, "imds_endpoint"), p) => None,
        Ok(url) if url.scheme() == "http" && url.host().is_some() && matches!(url.path(), "" | "/") => Some(url),
        _ => {
            p.push(join(at, "imds_endpoint"), "must be an http://host:port URL (testing only)");
            None
        }
    });
    IdentityTransport { ca_file, imds_endpoint }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml: &str) -> (Option<Credential>, Vec<String>) {
        let raw: RawCredential = toml::from_str(toml).unwrap();
        let mut p = Problems::default();
        let c = validate(Some(raw), "upstreams[0].credential", &mut p);
        (c, p.iter().map(|pr| pr.to_string()).collect())
    }

    #[test]
    fn absent_is_none() {
        let mut p = Problems::default();
        assert_eq!(validate(None, "x", &mut p), Some(Credential::None));
    }

    #[test]
    fn managed_identity_needs_a_scope_and_one_id() {
        let (c, p) = check("kind = \"managed_identity\"\nscope = \"api://a/.default\"\nclient_id = \"c\"");
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c,
            Some(Credential::ManagedIdentity(ManagedIdentity {
                scope: "api://a/.default".into(),
                user_assigned: Some(UserAssigned::ClientId("c".into())),
                transport: IdentityTransport::default(),
            }))
        );
        let (c, p) = check("kind = \"managed_identity\"\nclient_id = \"c\"\nobject_id = \"o\"");
        assert_eq!(c, None);
        assert!(p.contains(&"upstreams[0].credential.scope: is required".to_owned()), "{p:?}");
        assert!(p.iter().any(|m| m.contains("at most one")), "{p:?}");
    }

    #[test]
    fn unknown_kind_is_located() {
        let (c, p) = check("kind = \"kerberos\"");
        assert_eq!(c, None);
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("upstreams[0].credential.kind: unknown kind \"kerberos\""), "{p:?}");
    }

    #[test]
    fn client_secret_needs_a_reference_not_a_literal() {
        let (c, p) = check(
            "kind = \"client_secret\"\nscope = \"s\"\ntenant_id = \"t\"\nclient_id = \"c\"\nsecret = \"hunter2\"",
        );
        assert_eq!(c, None);
        assert!(p.iter().any(|m| m.starts_with("upstreams[0].credential.secret:")), "{p:?}");
        assert!(p.iter().all(|m| !m.contains("hunter2")), "{p:?}");
        let (c, p) =
            check("kind = \"client_secret\"\nscope = \"s\"\ntenant_id = \"t\"\nclient_id = \"c\"\nsecret = \"env:S\"");
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(c, Some(Credential::ClientSecret(ClientSecret { secret: SecretRef::Env(_), .. }))));
    }

    #[test]
    fn authority_host_must_be_https() {
        let (_, p) = check("kind = \"workload_identity\"\nscope = \"s\"\nauthority_host = \"http://login.example\"");
        assert!(p.iter().any(|m| m.starts_with("upstreams[0].credential.authority_host:")), "{p:?}");
        let (c, p) = check("kind = \"workload_identity\"\nscope = \"s\"\nauthority_host = \"https://login.example\"");
        assert!(p.is_empty(), "{p:?}");
        assert!(matches!(c, Some(Credential::WorkloadIdentity(WorkloadIdentity { authority_host: Some(_), .. }))));
    }

    #[test]
    fn fields_of_other_kinds_are_refused() {
        let (c, p) = check("kind = \"static\"\ntoken = \"env:T\"\nscope = \"s\"");
        assert_eq!(c, None);
        assert_eq!(p, vec!["upstreams[0].credential.scope: does not apply to kind = \"static\"".to_owned()]);
        let (c, p) = check("kind = \"none\"");
        assert_eq!((c, p.len()), (Some(Credential::None), 0));
    }

    #[test]
    fn debug_shows_references_only() {
        let (c, _) = check("kind = \"static\"\ntoken = \"file:/run/token\"");
        assert_eq!(format!("{c:?}"), "Some(Static { token: file:/run/token })");
    }

    #[test]
    fn the_contract_example_parses_into_workload_identity() {
        let text = r#"
            [[upstreams]]
            name = "apim"
            url = "https://contoso.azure-api.net"
            subscription_key = "file:/mnt/secrets-store/apim-subscription-key"
            [upstreams.credential]
            kind = "workload_identity"
            scope = "api://00000000-0000-0000-0000-000000000000/.default"
        "#;
        let config = crate::config::parse(text).unwrap();
        let credential = &config.upstreams[0].credential;
        assert_eq!(credential.kind(), "workload_identity");
        let text = text.replace("workload_identity", "kerberos");
        let problems = crate::config::parse(&text).unwrap_err();
        assert!(problems.to_string().contains("upstreams[0].credential.kind"), "{problems}");
    }
}
