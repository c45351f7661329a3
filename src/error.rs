//! Errors a call can end in, and the one place that turns them into a response in the store's
//! own error shape, so an app's existing error handling keeps working.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::config::Dialect;

/// The store's legacy throttle status, `509 Bandwidth Limit Exceeded`.
pub const BANDWIDTH_LIMIT_EXCEEDED: u16 = 509;

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
    /// The request body is larger than `listen.max_body`.
    #[error("request body larger than the proxy's limit of {0} bytes (listen.max_body)")]
    BodyTooLarge(u64),
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

/// What a throttled app is told about when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// How long until a retry may succeed.
    pub retry_after: Duration,
    /// The window the quota applies to (oauth headers).
    pub window: Duration,
    /// Requests per window (oauth headers).
    pub quota: u64,
}

impl Throttle {
    /// Whole seconds, at least 1: a 0 or missing value sends some clients into a tight loop.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
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

    /// The status the app gets.
    pub fn status(&self, dialect: Dialect) -> StatusCode {
        match self {
            CallError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CallError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            CallError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            CallError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            CallError::Unreachable(_) | CallError::Tls(_) | CallError::BadGateway(_) => {
                StatusCode::BAD_GATEWAY
            }
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Throttled(_) => match dialect {
                Dialect::Legacy => StatusCode::from_u16(BANDWIDTH_LIMIT_EXCEEDED)
                    .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
                Dialect::Oauth => StatusCode::TOO_MANY_REQUESTS,
            },
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
            CallError::Throttled(t) => {
                let secs = t.retry_after_secs();
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
                match dialect {
                    Dialect::Legacy => {
                        headers.insert("x-bc-apilimit-remaining", HeaderValue::from(0));
                    }
                    Dialect::Oauth => {
                        headers.insert("x-retry-after", HeaderValue::from(secs));
                        headers.insert(
                            "x-rate-limit-time-window-ms",
                            HeaderValue::from(t.window.as_millis() as u64),
                        );
                        headers.insert(
                            "x-rate-limit-time-reset-ms",
                            HeaderValue::from(t.retry_after.as_millis().max(1) as u64),
                        );
                        headers.insert("x-rate-limit-requests-quota", HeaderValue::from(t.quota));
                        headers.insert("x-rate-limit-requests-left", HeaderValue::from(0));
                    }
                }
            }
            _ => {}
        }
    }
}

/// The error body shapes the store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `[{"status":N,"message":"..."}]`
    LegacyJson,
    /// `<errors><error><status>N</status><message>...</message></error></errors>`
    LegacyXml,
    /// `{"status":N,"title":"...","type":"...","errors":{}}` on `/v3/` paths.
    V3,
}

impl ErrorShape {
    /// The shape the store would use for this request: v3 on `/v3/` paths, XML when a
    /// legacy app asked for XML (`.xml` suffix or `Accept`), else legacy JSON.
    pub fn for_request(path: &str, accept: Option<&HeaderValue>) -> ErrorShape {
        if path.split('/').any(|segment| segment == "v3") {
            return ErrorShape::V3;
        }
        if wants_xml(path, accept) {
            ErrorShape::LegacyXml
        } else {
            ErrorShape::LegacyJson
        }
    }

    /// Content type and body of an error in this shape.
    pub fn render(self, status: StatusCode, message: &str) -> (HeaderValue, Bytes) {
        let code = status.as_u16();
        match self {
            ErrorShape::LegacyJson => {
                let body = serde_json::json!([{ "status": code, "message": message }]);
                (
                    HeaderValue::from_static("application/json"),
                    Bytes::from(body.to_string()),
                )
            }
            ErrorShape::LegacyXml => {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<errors><error><status>{code}</status><message>{}</message></error></errors>",
                    quick_xml::escape::escape(message)
                );
                (
                    HeaderValue::from_static("application/xml"),
                    Bytes::from(body),
                )
            }
            ErrorShape::V3 => {
                let body = serde_json::json!({
                    "status": code,
                    "title": message,
                    "type": "https://developer.bigcommerce.com/api-docs/getting-started/api-status-codes",
                    "errors": {},
                });
                (
                    HeaderValue::from_static("application/json"),
                    Bytes::from(body.to_string()),
                )
            }
        }
    }
}

/// True when the request asks for XML: a `.xml` suffix on the path, or an `Accept` that names
/// an XML type before (or without) JSON.
pub fn wants_xml(path: &str, accept: Option<&HeaderValue>) -> bool {
    if path.ends_with(".xml") {
        return true;
    }
    if path.ends_with(".json") {
        return false;
    }
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    match (accept.find("xml"), accept.find("json")) {
        (Some(x), Some(j)) => x < j,
        (Some(_), None) => true,
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_follows_path_and_accept() {
        let xml = HeaderValue::from_static("application/xml");
        let both = HeaderValue::from_static("application/json, application/xml;q=0.5");
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", None),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products.xml", None),
            ErrorShape::LegacyXml
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", Some(&xml)),
            ErrorShape::LegacyXml
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products", Some(&both)),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/api/v2/products.json", Some(&xml)),
            ErrorShape::LegacyJson
        );
        assert_eq!(
            ErrorShape::for_request("/stores/abc/v3/catalog/products", Some(&xml)),
            ErrorShape::V3
        );
    }

    #[test]
    fn bodies_have_the_store_shapes() {
        let (ct, body) = ErrorShape::LegacyJson.render(StatusCode::BAD_GATEWAY, "a \"b\"");
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{"status": 502, "message": "a \"b\""}])
        );
        let (ct, body) = ErrorShape::LegacyXml.render(StatusCode::PAYLOAD_TOO_LARGE, "x < y");
        assert_eq!(ct, "application/xml");
        assert!(std::str::from_utf8(&body).unwrap().contains(
            "<errors><error><status>413</status><message>x &lt; y</message></error></errors>"
        ));
        let (_, body) = ErrorShape::V3.render(StatusCode::GATEWAY_TIMEOUT, "slow");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 504);
        assert_eq!(v["title"], "slow");
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        let t = |ms| Throttle {
            retry_after: Duration::from_millis(ms),
            window: Duration::ZERO,
            quota: 1,
        };
        assert_eq!(t(0).retry_after_secs(), 1);
        assert_eq!(t(1).retry_after_secs(), 1);
        assert_eq!(t(1000).retry_after_secs(), 1);
        assert_eq!(t(1001).retry_after_secs(), 2);
    }
}
