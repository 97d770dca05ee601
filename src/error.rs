//! The gateway error: every answer airgate makes itself, with an exhaustive status mapping and
//! one renderer (problem+json, RFC 9457; `WWW-Authenticate` per RFC 6750; `Retry-After`; `Allow`).
//! Clients get stable generic text; the precise reason goes to the audit log and metrics only.

use crate::{body::Body, quota::Quota};
use http::{HeaderValue, Response, StatusCode, header};
use std::borrow::Cow;

/// What happened to a request, as the `outcome` metric label and audit field (contract §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Forwarded to the upstream, whatever it answered.
    Allowed,
    /// No acceptable identity.
    Unauthenticated,
    /// Identity not allowed, or asserted headers contradict it.
    Forbidden,
    /// Refused by a rate limit.
    RateLimited,
    /// The rate-limit backend is down and the policy says deny.
    RatelimitUnavailable,
    /// No route for the path.
    NoRoute,
    /// The path's routes take other methods.
    MethodNotAllowed,
    /// Malformed request.
    BadRequest,
    /// Upstream refused, reset or answered nonsense.
    UpstreamError,
    /// Upstream did not answer in time.
    UpstreamTimeout,
    /// No valid upstream credential.
    CredentialUnavailable,
    /// The caller's pod cannot be looked up (Kubernetes API down) and is not cached.
    IdentityUnavailable,
    /// The gateway is shutting down.
    Draining,
    /// The client went away before an answer (recorded with status 499).
    ClientClosed,
    /// The client did not send its request body within `request_timeout`.
    ClientTimeout,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Unauthenticated => "unauthenticated",
            Outcome::Forbidden => "forbidden",
            Outcome::RateLimited => "rate_limited",
            Outcome::RatelimitUnavailable => "ratelimit_unavailable",
            Outcome::NoRoute => "no_route",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::BadRequest => "bad_request",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UpstreamTimeout => "upstream_timeout",
            Outcome::CredentialUnavailable => "credential_unavailable",
            Outcome::IdentityUnavailable => "identity_unavailable",
            Outcome::Draining => "draining",
            Outcome::ClientClosed => "client_closed",
            Outcome::ClientTimeout => "client_timeout",
        }
    }
}

/// Every refusal or failure the gateway answers itself.
#[derive(Debug)]
pub enum GatewayError {
    /// 400: malformed request line, headers or path. `reason` is for the audit log.
    BadRequest {
        /// Audit reason, e.g. `dot_segment`.
        reason: &'static str,
    },
    /// 431: request head over `max_header_bytes`.
    HeadersTooLarge,
    /// 413: body over `max_request_body`.
    PayloadTooLarge,
    /// 408: the request body was not complete within `request_timeout` (stalled or dripped).
    ClientTimeout,
    /// 404: no route.
    NoRoute,
    /// 405: the path's routes take only the methods in `allow`.
    MethodNotAllowed {
        /// Value of the `Allow` header.
        allow: HeaderValue,
    },
    /// 401: no token, or a token that does not verify.
    Unauthenticated {
        /// Audit reason (`expired`, `bad_signature`, …).
        reason: &'static str,
        /// A token was sent (adds `error="invalid_token"`).
        token_sent: bool,
    },
    /// 403: identity not allowed (`forbidden`, `identity_mismatch`, …).
    Forbidden {
        /// Audit reason, naming what failed.
        reason: Cow<'static, str>,
    },
    /// 429: rate limited.
    RateLimited {
        /// Whole seconds until a retry can succeed (≥ 1).
        retry_after: u64,
        /// `RateLimit-Policy` / `RateLimit` header values.
        quota: Quota,
    },
    /// 503: the rate-limit backend is down and `on_backend_error = "deny"`.
    RateLimitUnavailable {
        /// Whole seconds to wait.
        retry_after: u64,
    },
    /// 502: upstream refused, reset or sent an invalid response.
    UpstreamError {
        /// Audit reason (`connect`, `reset`, …).
        reason: &'static str,
    },
    /// 504: upstream did not answer within its `timeout`.
    UpstreamTimeout,
    /// 503: no valid credential for the upstream.
    CredentialUnavailable {
        /// Whole seconds to wait.
        retry_after: u64,
    },
    /// 503: the caller's identity needs a pod lookup the Kubernetes API cannot answer now.
    IdentityUnavailable {
        /// Whole seconds to wait.
        retry_after: u64,
    },
    /// 503: shutting down.
    Draining,
}

impl GatewayError {
    /// The status code. Exhaustive on purpose: a new variant must decide its code here.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            GatewayError::NoRoute => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden { .. } => StatusCode::FORBIDDEN,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::RateLimitUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamError { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::CredentialUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::IdentityUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The outcome label.
    pub fn outcome(&self) -> Outcome {
        match self {
            GatewayError::BadRequest { .. } | GatewayError::HeadersTooLarge | GatewayError::PayloadTooLarge => {
                Outcome::BadRequest
            }
            GatewayError::ClientTimeout => Outcome::ClientTimeout,
            GatewayError::NoRoute => Outcome::NoRoute,
            GatewayError::MethodNotAllowed { .. } => Outcome::MethodNotAllowed,
            GatewayError::Unauthenticated { .. } => Outcome::Unauthenticated,
            GatewayError::Forbidden { .. } => Outcome::Forbidden,
            GatewayError::RateLimited { .. } => Outcome::RateLimited,
            GatewayError::RateLimitUnavailable { .. } => Outcome::RatelimitUnavailable,
            GatewayError::UpstreamError { .. } => Outcome::UpstreamError,
            GatewayError::UpstreamTimeout => Outcome::UpstreamTimeout,
            GatewayError::CredentialUnavailable { .. } => Outcome::CredentialUnavailable,
            GatewayError::IdentityUnavailable { .. } => Outcome::IdentityUnavailable,
            GatewayError::Draining => Outcome::Draining,
        }
    }

    /// The precise reason for the audit log.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            GatewayError::BadRequest { reason }
            | GatewayError::Unauthenticated { reason, .. }
            | GatewayError::UpstreamError { reason } => Cow::Borrowed(reason),
            GatewayError::Forbidden { reason } => reason.clone(),
            GatewayError::HeadersTooLarge => Cow::Borrowed("headers_too_large"),
            GatewayError::PayloadTooLarge => Cow::Borrowed("body_too_large"),
            GatewayError::ClientTimeout => Cow::Borrowed("body_timeout"),
            GatewayError::NoRoute => Cow::Borrowed("no_route"),
            GatewayError::MethodNotAllowed { .. } => Cow::Borrowed("method_not_allowed"),
            GatewayError::RateLimited { .. } => Cow::Borrowed("rate_limited"),
            GatewayError::RateLimitUnavailable { .. } => Cow::Borrowed("ratelimit_backend_down"),
            GatewayError::UpstreamTimeout => Cow::Borrowed("upstream_timeout"),
            GatewayError::CredentialUnavailable { .. } => Cow::Borrowed("no_valid_upstream_token"),
            GatewayError::IdentityUnavailable { .. } => Cow::Borrowed("identity_unavailable"),
            GatewayError::Draining => Cow::Borrowed("draining"),
        }
    }

    /// `(type slug, title, detail)`: stable text for clients, never a token or internal detail.
    fn text(&self) -> (&'static str, &'static str, &'static str) {
        match self {
            GatewayError::BadRequest { .. } => {
                ("bad-request", "Bad Request", "The request line, headers or path are malformed.")
            }
            GatewayError::HeadersTooLarge => (
                "headers-too-large",
                "Request Header Fields Too Large",
                "The request headers exceed the gateway's limit.",
            ),
            GatewayError::PayloadTooLarge => {
                ("payload-too-large", "Content Too Large", "The request body exceeds the gateway's limit.")
            }
            GatewayError::ClientTimeout => {
                ("client-timeout", "Request Timeout", "The request body was not received in time.")
            }
            GatewayError::NoRoute => ("no-route", "Not Found", "No route matches this path."),
            GatewayError::MethodNotAllowed { .. } => {
                ("method-not-allowed", "Method Not Allowed", "The routes for this path do not take this method.")
            }
            GatewayError::Unauthenticated { token_sent: false, .. } => {
                ("unauthenticated", "Unauthorized", "A bearer token naming the calling pipeline is required.")
            }
            GatewayError::Unauthenticated { token_sent: true, .. } => {
                ("invalid-token", "Unauthorized", "The bearer token is invalid, expired or not accepted here.")
            }
            GatewayError::Forbidden { .. } => {
                ("forbidden", "Forbidden", "The calling identity may not use this route.")
            }
            GatewayError::RateLimited { .. } => (
                "rate-limited",
                "Too Many Requests",
                "The pipeline's rate limit for this route is exhausted; retry later.",
            ),
            GatewayError::RateLimitUnavailable { .. } => {
                ("ratelimit-unavailable", "Service Unavailable", "The rate-limit backend is unavailable; retry later.")
            }
            GatewayError::UpstreamError { .. } => {
                ("upstream-error", "Bad Gateway", "The upstream refused the connection or sent an invalid response.")
            }
            GatewayError::UpstreamTimeout => {
                ("upstream-timeout", "Gateway Timeout", "The upstream did not answer in time.")
            }
            GatewayError::CredentialUnavailable { .. } => (
                "credential-unavailable",
                "Service Unavailable",
                "The gateway holds no valid credential for the upstream; retry later.",
            ),
            GatewayError::IdentityUnavailable { .. } => (
                "identity-unavailable",
                "Service Unavailable",
                "The caller's identity cannot be established right now; retry later.",
            ),
            GatewayError::Draining => {
                ("draining", "Service Unavailable", "The gateway is shutting down; retry on another replica.")
            }
        }
    }

    /// Renders the problem+json answer with its protocol headers.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let (slug, title, detail) = self.text();
        let body = serde_json::json!({
            "type": format!("urn:airgate:problem:{slug}"),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
            "request_id": request_id,
        });
        let mut resp = Response::new(Body::full(body.to_string()));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            GatewayError::Unauthenticated { token_sent, .. } => {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(if token_sent {
                        r#"Bearer realm="airgate", error="invalid_token""#
                    } else {
                        r#"Bearer realm="airgate""#
                    }),
                );
            }
            GatewayError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, allow);
            }
            GatewayError::RateLimited { retry_after, quota } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
                quota.apply(h);
            }
            GatewayError::RateLimitUnavailable { retry_after }
            | GatewayError::CredentialUnavailable { retry_after }
            | GatewayError::IdentityUnavailable { retry_after } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            GatewayError::Draining => {
                h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            // The rest of the body is unread: the connection cannot carry another request.
            GatewayError::ClientTimeout => {
                h.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            GatewayError::BadRequest { .. }
            | GatewayError::HeadersTooLarge
            | GatewayError::PayloadTooLarge
            | GatewayError::NoRoute
            | GatewayError::Forbidden { .. }
            | GatewayError::UpstreamError { .. }
            | GatewayError::UpstreamTimeout => {}
        }
        resp
    }
}
