//! Errors a call can end in, and how each becomes the status and headers the app gets; the
//! body is the store's own error shape ([`crate::dialect::ErrorShape`]), so an app's existing
//! error handling keeps working.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};

pub use crate::dialect::Throttle;
use crate::dialect::{Dialect, ErrorShape};

/// Why the proxy answered a call itself instead of relaying the store's answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request cannot be forwarded as it is.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The app did not present a credential of a configured `[[clients]]` entry.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// The request's headers are larger than the proxy accepts.
    #[error("request headers larger than the proxy's limit of {0} bytes")]
    HeadersTooLarge(usize),
    /// The request has more header fields than the proxy accepts.
    #[error("more than {0} request header fields")]
    TooManyHeaders(usize),
    /// The request body is larger than `listen.max_body`.
    #[error("request body larger than the proxy's limit of {0} bytes (listen.max_body)")]
    BodyTooLarge(u64),
    /// The app paused longer than `listen.body_timeout` while sending its body.
    #[error("no byte of the request body for {} (listen.body_timeout)", humantime::format_duration(*.0))]
    BodyTimeout(Duration),
    /// The app went away before its request was whole (logged as 499).
    #[error("{0}")]
    ClientGone(String),
    /// Request bodies being received already hold `listen.body_memory`.
    #[error("the proxy is receiving too many request bodies at once; retry shortly")]
    Busy,
    /// No connection to the store could be made.
    #[error("the store is unreachable: {0}")]
    Unreachable(String),
    /// The TLS handshake with the store failed.
    #[error("TLS failure talking to the store: {0}")]
    Tls(String),
    /// The store broke the exchange (closed the connection, spoke bad HTTP).
    #[error("the store failed to answer: {0}")]
    BadGateway(String),
    /// The store did not send its response headers within `upstream.timeout`.
    #[error("the store did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The call could not be served within `budget.max_wait`.
    #[error("the proxy could not serve this call in time; retry after {}s", .0.retry_after_secs())]
    Throttled(Throttle),
}

/// How the store failed a call (the `kind` of `bcproxy_upstream_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection could be made.
    Unreachable = 0,
    /// The TLS handshake failed.
    Tls = 1,
    /// The store closed the connection or spoke bad HTTP.
    BadAnswer = 2,
    /// No response headers within `upstream.timeout`.
    Timeout = 3,
}

impl UpstreamFailure {
    /// Every kind, in index order.
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Unreachable,
        UpstreamFailure::Tls,
        UpstreamFailure::BadAnswer,
        UpstreamFailure::Timeout,
    ];

    /// Its name in metrics and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Unreachable => "unreachable",
            UpstreamFailure::Tls => "tls",
            UpstreamFailure::BadAnswer => "bad_answer",
            UpstreamFailure::Timeout => "timeout",
        }
    }
}

impl CallError {
    /// True for failures a GET or HEAD may be tried again after: the store could not be
    /// reached, broke the exchange or did not answer in time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CallError::Unreachable(_) | CallError::BadGateway(_) | CallError::Timeout(_)
        )
    }

    /// True when the store failed the call (the proxy answers 502/504).
    pub fn is_upstream(&self) -> bool {
        self.upstream_kind().is_some()
    }

    /// How the store failed the call, when it did.
    pub fn upstream_kind(&self) -> Option<UpstreamFailure> {
        match self {
            CallError::Unreachable(_) => Some(UpstreamFailure::Unreachable),
            CallError::Tls(_) => Some(UpstreamFailure::Tls),
            CallError::BadGateway(_) => Some(UpstreamFailure::BadAnswer),
            CallError::Timeout(_) => Some(UpstreamFailure::Timeout),
            _ => None,
        }
    }

    /// The status the app gets.
    pub fn status(&self, dialect: Dialect) -> StatusCode {
        match self {
            CallError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CallError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CallError::HeadersTooLarge(_) | CallError::TooManyHeaders(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            CallError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            CallError::ClientGone(_) => {
                StatusCode::from_u16(crate::call::CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST)
            }
            CallError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            CallError::Unreachable(_) | CallError::Tls(_) | CallError::BadGateway(_) => {
                StatusCode::BAD_GATEWAY
            }
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Throttled(_) => dialect.throttle_status(),
        }
    }

    /// Headers the status calls for (`WWW-Authenticate`, the throttle waits).
    pub fn headers(&self, dialect: Dialect, headers: &mut HeaderMap) {
        match self {
            CallError::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"bcproxy\""),
                );
            }
            CallError::Throttled(t) => dialect.throttle_headers(t, headers),
            CallError::Busy => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1));
            }
            _ => {}
        }
    }
}

/// Sets `Content-Type` and returns the body for an error in the given shape.
pub fn error_body(
    shape: ErrorShape,
    status: StatusCode,
    message: &str,
    headers: &mut HeaderMap,
) -> Bytes {
    let (content_type, body) = shape.render(status, message);
    headers.insert(CONTENT_TYPE, content_type);
    body
}
