//! The gateway error: every answer airgate makes itself, with an exhaustive status mapping and
//! one renderer (problem+json, RFC 9457; `WWW-Authenticate` per RFC 6750; `Retry-After`; `Allow`).
//! Clients get stable generic text; the precise reason goes to the audit log and metrics only.

use crate::{
    body::Body,
    identity::{IDENTITY_RETRY_AFTER, Rejection, RejectionKind},
    policy::Denied,
    quota::Quota,
    ratelimit::Refused,
    route::RouteError,
    upstream::ForwardError,
};
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

/// What a client and the audit log are told about one kind of refusal: everything about a
/// [`GatewayError`] variant except the values it carries. One constant per variant, chosen in one
/// exhaustive match ([`GatewayError::descriptor`]), so a new variant is decided in one place.
#[derive(Debug)]
pub struct Descriptor {
    /// The status code.
    pub status: StatusCode,
    /// The outcome label.
    pub outcome: Outcome,
    /// The audit reason when the variant carries none of its own.
    pub reason: &'static str,
    /// Problem type slug (`urn:airgate:problem:<slug>`).
    pub slug: &'static str,
    /// Problem title.
    pub title: &'static str,
    /// Problem detail: stable text, never a token or internal detail.
    pub detail: &'static str,
}

const BAD_REQUEST: Descriptor = Descriptor {
    status: StatusCode::BAD_REQUEST,
    outcome: Outcome::BadRequest,
    reason: "bad_request",
    slug: "bad-request",
    title: "Bad Request",
    detail: "The request line, headers or path are malformed.",
};
const HEADERS_TOO_LARGE: Descriptor = Descriptor {
    status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    outcome: Outcome::BadRequest,
    reason: "headers_too_large",
    slug: "headers-too-large",
    title: "Request Header Fields Too Large",
    detail: "The request headers exceed the gateway's limit.",
};
const PAYLOAD_TOO_LARGE: Descriptor = Descriptor {
    status: StatusCode::PAYLOAD_TOO_LARGE,
    outcome: Outcome::BadRequest,
    reason: "body_too_large",
    slug: "payload-too-large",
    title: "Content Too Large",
    detail: "The request body exceeds the gateway's limit.",
};
const CLIENT_TIMEOUT: Descriptor = Descriptor {
    status: StatusCode::REQUEST_TIMEOUT,
    outcome: Outcome::ClientTimeout,
    reason: "body_timeout",
    slug: "client-timeout",
    title: "Request Timeout",
    detail: "The request body was not received in time.",
};
const NO_ROUTE: Descriptor = Descriptor {
    status: StatusCode::NOT_FOUND,
    outcome: Outcome::NoRoute,
    reason: "no_route",
    slug: "no-route",
    title: "Not Found",
    detail: "No route matches this path.",
};
const METHOD_NOT_ALLOWED: Descriptor = Descriptor {
    status: StatusCode::METHOD_NOT_ALLOWED,
    outcome: Outcome::MethodNotAllowed,
    reason: "method_not_allowed",
    slug: "method-not-allowed",
    title: "Method Not Allowed",
    detail: "The routes for this path do not take this method.",
};
const UNAUTHENTICATED: Descriptor = Descriptor {
    status: StatusCode::UNAUTHORIZED,
    outcome: Outcome::Unauthenticated,
    reason: "unauthenticated",
    slug: "unauthenticated",
    title: "Unauthorized",
    detail: "A bearer token naming the calling pipeline is required.",
};
const INVALID_TOKEN: Descriptor = Descriptor {
    status: StatusCode::UNAUTHORIZED,
    outcome: Outcome::Unauthenticated,
    reason: "invalid_token",
    slug: "invalid-token",
    title: "Unauthorized",
    detail: "The bearer token is invalid, expired or not accepted here.",
};
const FORBIDDEN: Descriptor = Descriptor {
    status: StatusCode::FORBIDDEN,
    outcome: Outcome::Forbidden,
    reason: "forbidden",
    slug: "forbidden",
    title: "Forbidden",
    detail: "The calling identity may not use this route.",
};
const RATE_LIMITED: Descriptor = Descriptor {
    status: StatusCode::TOO_MANY_REQUESTS,
    outcome: Outcome::RateLimited,
    reason: "rate_limited",
    slug: "rate-limited",
    title: "Too Many Requests",
    detail: "The pipeline's rate limit for this route is exhausted; retry later.",
};
const RATELIMIT_UNAVAILABLE: Descriptor = Descriptor {
    status: StatusCode::SERVICE_UNAVAILABLE,
    outcome: Outcome::RatelimitUnavailable,
    reason: "ratelimit_backend_down",
    slug: "ratelimit-unavailable",
    title: "Service Unavailable",
    detail: "The rate-limit backend is unavailable; retry later.",
};
const UPSTREAM_ERROR: Descriptor = Descriptor {
    status: StatusCode::BAD_GATEWAY,
    outcome: Outcome::UpstreamError,
    reason: "upstream_error",
    slug: "upstream-error",
    title: "Bad Gateway",
    detail: "The upstream refused the connection or sent an invalid response.",
};
const UPSTREAM_TIMEOUT: Descriptor = Descriptor {
    status: StatusCode::GATEWAY_TIMEOUT,
    outcome: Outcome::UpstreamTimeout,
    reason: "upstream_timeout",
    slug: "upstream-timeout",
    title: "Gateway Timeout",
    detail: "The upstream did not answer in time.",
};
const CREDENTIAL_UNAVAILABLE: Descriptor = Descriptor {
    status: StatusCode::SERVICE_UNAVAILABLE,
    outcome: Outcome::CredentialUnavailable,
    reason: "no_valid_upstream_token",
    slug: "credential-unavailable",
    title: "Service Unavailable",
    detail: "The gateway holds no valid credential for the upstream; retry later.",
};
const IDENTITY_UNAVAILABLE: Descriptor = Descriptor {
    status: StatusCode::SERVICE_UNAVAILABLE,
    outcome: Outcome::IdentityUnavailable,
    reason: "identity_unavailable",
    slug: "identity-unavailable",
    title: "Service Unavailable",
    detail: "The caller's identity cannot be established right now; retry later.",
};
const DRAINING: Descriptor = Descriptor {
    status: StatusCode::SERVICE_UNAVAILABLE,
    outcome: Outcome::Draining,
    reason: "draining",
    slug: "draining",
    title: "Service Unavailable",
    detail: "The gateway is shutting down; retry on another replica.",
};

impl GatewayError {
    /// Status, outcome, default reason and client text of this error. Exhaustive on purpose: a new
    /// variant must decide all of them here.
    pub fn descriptor(&self) -> &'static Descriptor {
        match self {
            GatewayError::BadRequest { .. } => &BAD_REQUEST,
            GatewayError::HeadersTooLarge => &HEADERS_TOO_LARGE,
            GatewayError::PayloadTooLarge => &PAYLOAD_TOO_LARGE,
            GatewayError::ClientTimeout => &CLIENT_TIMEOUT,
            GatewayError::NoRoute => &NO_ROUTE,
            GatewayError::MethodNotAllowed { .. } => &METHOD_NOT_ALLOWED,
            GatewayError::Unauthenticated { token_sent: false, .. } => &UNAUTHENTICATED,
            GatewayError::Unauthenticated { token_sent: true, .. } => &INVALID_TOKEN,
            GatewayError::Forbidden { .. } => &FORBIDDEN,
            GatewayError::RateLimited { .. } => &RATE_LIMITED,
            GatewayError::RateLimitUnavailable { .. } => &RATELIMIT_UNAVAILABLE,
            GatewayError::UpstreamError { .. } => &UPSTREAM_ERROR,
            GatewayError::UpstreamTimeout => &UPSTREAM_TIMEOUT,
            GatewayError::CredentialUnavailable { .. } => &CREDENTIAL_UNAVAILABLE,
            GatewayError::IdentityUnavailable { .. } => &IDENTITY_UNAVAILABLE,
            GatewayError::Draining => &DRAINING,
        }
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.descriptor().status
    }

    /// The outcome label.
    pub fn outcome(&self) -> Outcome {
        self.descriptor().outcome
    }

    /// The precise reason for the audit log: the one the variant carries, else its descriptor's.
    pub fn reason(&self) -> Cow<'static, str> {
        match self {
            GatewayError::BadRequest { reason }
            | GatewayError::Unauthenticated { reason, .. }
            | GatewayError::UpstreamError { reason } => Cow::Borrowed(reason),
            GatewayError::Forbidden { reason } => reason.clone(),
            // Exhaustive, so a new variant that carries a reason cannot fall back silently.
            GatewayError::HeadersTooLarge
            | GatewayError::PayloadTooLarge
            | GatewayError::ClientTimeout
            | GatewayError::NoRoute
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::RateLimitUnavailable { .. }
            | GatewayError::UpstreamTimeout
            | GatewayError::CredentialUnavailable { .. }
            | GatewayError::IdentityUnavailable { .. }
            | GatewayError::Draining => Cow::Borrowed(self.descriptor().reason),
        }
    }

    /// Renders the problem+json answer with its protocol headers.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let d = self.descriptor();
        let status = d.status;
        let body = serde_json::json!({
            "type": format!("urn:airgate:problem:{}", d.slug),
            "title": d.title,
            "status": status.as_u16(),
            "detail": d.detail,
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
            // No protocol headers beyond the problem body.
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

// Each phase refuses with its own error; these are the only places they become gateway errors.

impl From<RouteError> for GatewayError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::BadPath(path) => GatewayError::BadRequest { reason: path.reason() },
            RouteError::NoRoute => GatewayError::NoRoute,
            RouteError::MethodNotAllowed { allow } => GatewayError::MethodNotAllowed { allow },
        }
    }
}

impl From<Rejection> for GatewayError {
    fn from(r: Rejection) -> Self {
        match r.kind {
            RejectionKind::Unauthenticated => {
                GatewayError::Unauthenticated { reason: r.reason, token_sent: r.token_sent }
            }
            RejectionKind::Forbidden => GatewayError::Forbidden { reason: Cow::Borrowed(r.reason) },
            RejectionKind::Unavailable => GatewayError::IdentityUnavailable { retry_after: IDENTITY_RETRY_AFTER },
        }
    }
}

impl From<Denied> for GatewayError {
    fn from(d: Denied) -> Self {
        GatewayError::Forbidden { reason: Cow::Owned(d.reason) }
    }
}

impl From<Refused> for GatewayError {
    fn from(r: Refused) -> Self {
        match r {
            Refused::Limited { retry_after, quota } => GatewayError::RateLimited { retry_after, quota },
            Refused::BackendDown { retry_after } => GatewayError::RateLimitUnavailable { retry_after },
        }
    }
}

impl From<ForwardError> for GatewayError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NoCredential(c) => GatewayError::CredentialUnavailable { retry_after: c.retry_after },
            ForwardError::Unrepresentable => GatewayError::BadRequest { reason: "unrepresentable_path" },
            ForwardError::BodyTooLarge => GatewayError::PayloadTooLarge,
            ForwardError::ClientBody { incomplete: true } => GatewayError::BadRequest { reason: "body_incomplete" },
            ForwardError::ClientBody { incomplete: false } => GatewayError::BadRequest { reason: "malformed_body" },
            ForwardError::ClientTimeout => GatewayError::ClientTimeout,
            ForwardError::Timeout => GatewayError::UpstreamTimeout,
            ForwardError::Connect => GatewayError::UpstreamError { reason: "upstream_connect" },
            ForwardError::Reset => GatewayError::UpstreamError { reason: "upstream_reset" },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_variant_has_its_own_problem_type_and_the_contract_status() {
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (GatewayError::BadRequest { reason: "dot_segment" }, 400, "dot_segment"),
            (GatewayError::HeadersTooLarge, 431, "headers_too_large"),
            (GatewayError::PayloadTooLarge, 413, "body_too_large"),
            (GatewayError::ClientTimeout, 408, "body_timeout"),
            (GatewayError::NoRoute, 404, "no_route"),
            (GatewayError::MethodNotAllowed { allow: HeaderValue::from_static("GET") }, 405, "method_not_allowed"),
            (GatewayError::Unauthenticated { reason: "missing_token", token_sent: false }, 401, "missing_token"),
            (GatewayError::Unauthenticated { reason: "expired", token_sent: true }, 401, "expired"),
            (GatewayError::Forbidden { reason: "identity_mismatch".into() }, 403, "identity_mismatch"),
            (GatewayError::RateLimitUnavailable { retry_after: 1 }, 503, "ratelimit_backend_down"),
            (GatewayError::UpstreamError { reason: "upstream_reset" }, 502, "upstream_reset"),
            (GatewayError::UpstreamTimeout, 504, "upstream_timeout"),
            (GatewayError::CredentialUnavailable { retry_after: 1 }, 503, "no_valid_upstream_token"),
            (GatewayError::IdentityUnavailable { retry_after: 2 }, 503, "identity_unavailable"),
            (GatewayError::Draining, 503, "draining"),
        ];
        let mut slugs = std::collections::HashSet::new();
        for (err, status, reason) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.reason(), reason, "{err:?}");
            assert!(slugs.insert(err.descriptor().slug), "{err:?} shares its problem type");
        }
    }

    #[test]
    fn rejections_become_401_403_or_503() {
        let rejection = |kind, token_sent| Rejection { kind, reason: "r", issuer: None, token_sent, pod: None };
        let e = GatewayError::from(rejection(RejectionKind::Unauthenticated, false));
        assert_eq!((e.status().as_u16(), e.descriptor().slug), (401, "unauthenticated"));
        let e = GatewayError::from(rejection(RejectionKind::Unauthenticated, true));
        assert_eq!((e.status().as_u16(), e.descriptor().slug), (401, "invalid-token"));
        let e = GatewayError::from(rejection(RejectionKind::Forbidden, true));
        assert_eq!((e.status().as_u16(), &*e.reason()), (403, "r"));
        let e = GatewayError::from(rejection(RejectionKind::Unavailable, true));
        assert_eq!((e.status().as_u16(), e.outcome()), (503, Outcome::IdentityUnavailable));
    }

    #[test]
    fn forward_errors_keep_the_fault_where_it_is() {
        let cases = [
            (ForwardError::ClientBody { incomplete: true }, 400, "body_incomplete"),
            (ForwardError::ClientBody { incomplete: false }, 400, "malformed_body"),
            (ForwardError::BodyTooLarge, 413, "body_too_large"),
            (ForwardError::ClientTimeout, 408, "body_timeout"),
            (ForwardError::Timeout, 504, "upstream_timeout"),
            (ForwardError::Connect, 502, "upstream_connect"),
            (ForwardError::Reset, 502, "upstream_reset"),
            (ForwardError::Unrepresentable, 400, "unrepresentable_path"),
        ];
        for (err, status, reason) in cases {
            let e = GatewayError::from(err);
            assert_eq!((e.status().as_u16(), &*e.reason()), (status, reason), "{err:?}");
        }
    }
}
